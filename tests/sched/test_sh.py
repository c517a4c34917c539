"""Source hashing: kernel-exact against the C transcription, plus bucket fill and flags."""

from __future__ import annotations

from collections import Counter

from gridlb.sched import create_scheduler
from gridlb.sched.sh import SourceHashing
from tests.sched.common import PICKS_REQUIRED, flow, rk, view
from tests.sched.harness import check_scheduler


def test_sh_agrees_with_kernel_on_10000_picks() -> None:
    counts = check_scheduler("sh", examples=75, n_ops=200)
    assert counts.picks >= PICKS_REQUIRED


def test_sh_buckets_follow_weights_in_list_order() -> None:
    s = create_scheduler("sh")
    assert isinstance(s, SourceHashing)
    s.update([view(1, weight=3), view(2, weight=1), view(3, weight=0)])
    assert s.buckets[:6] == [rk(1), rk(1), rk(1), rk(2), rk(3), rk(1)]
    assert Counter(s.buckets) == {rk(1): 51 * 3 + 1, rk(2): 51, rk(3): 51}  # 256 = 51 cycles of 5 + 1


def test_sh_same_client_same_server_and_port_flag() -> None:
    s = create_scheduler("sh")
    dests = [view(i) for i in range(1, 9)]
    s.update(dests)
    assert len({s.pick(dests, flow(port=p), 0.0) for p in range(1000, 1100)}) == 1
    sp = create_scheduler("sh", frozenset({"sh-port"}))
    sp.update(dests)
    assert len({sp.pick(dests, flow(port=p), 0.0) for p in range(1000, 1100)}) > 1


def test_sh_fallback_finds_another_server() -> None:
    dests = [view(1), view(2)]
    s = create_scheduler("sh")
    s.update(dests)
    first = s.pick(dests, flow(), 0.0)
    down = [view(k.addr.packed[-1], weight=0 if k == first else 1) for k in (d.key for d in dests)]
    assert s.pick(down, flow(), 0.0) is None
    fb = create_scheduler("sh", frozenset({"sh-fallback"}))
    fb.update(dests)
    assert fb.pick(down, flow(), 0.0) not in (None, first)
