"""Maglev hashing: kernel-exact against the C transcription, plus table shape and hsiphash."""

from __future__ import annotations

from collections import Counter

from gridlb.sched import create_scheduler
from gridlb.sched._kernel import hsiphash_u32, siphash
from gridlb.sched.mh import TAB_SIZE, MaglevHashing
from tests.sched.common import PICKS_REQUIRED, flow, view
from tests.sched.harness import check_scheduler


def test_mh_agrees_with_kernel_on_10000_picks() -> None:
    counts = check_scheduler("mh", examples=22, n_ops=600, churn=0.02, zero_p=0.05)
    assert counts.picks >= PICKS_REQUIRED


def test_siphash_reference_vector_and_hsiphash_is_siphash_1_3() -> None:
    # SipHash-2-4 paper vector: key 00..0f, message 00..0e
    key0 = int.from_bytes(bytes(range(8)), "little")
    key1 = int.from_bytes(bytes(range(8, 16)), "little")
    assert siphash(bytes(range(15)), key0, key1) == 0xA129CA6149BE45E5
    for v in (0, 1, 0xDEADBEEF, 0xFFFFFFFF):
        full = siphash(v.to_bytes(4, "little"), 2654435761, 2654435761, 1, 3)
        assert hsiphash_u32(v, 2654435761, 2654435761) == full & 0xFFFFFFFF


def test_mh_table_is_full_and_weighted() -> None:
    s = create_scheduler("mh")
    assert isinstance(s, MaglevHashing)
    s.update([view(1, weight=3), view(2, weight=1)])
    share = Counter(s.lookup)
    assert sum(share.values()) == TAB_SIZE and None not in share
    assert 2.5 < share[view(1).key] / share[view(2).key] < 3.5


def test_mh_quiesced_server_keeps_its_slots_and_fallback_moves_on() -> None:
    dests = [view(1), view(2), view(3)]
    s = create_scheduler("mh", frozenset({"mh-fallback"}))
    s.update(dests)
    first = s.pick(dests, flow(), 0.0)
    assert first is not None
    quiet = [view(d.key.addr.packed[-1], weight=0 if d.key == first else 1) for d in dests]
    assert s.pick(quiet, flow(), 0.0) not in (None, first)
    plain = create_scheduler("mh")
    plain.update(dests)
    assert plain.pick(quiet, flow(), 0.0) is None
