"""Weighted round-robin: kernel-exact against the C transcription, plus the 4:3:2 sequence."""

from __future__ import annotations

from gridlb.sched import create_scheduler
from tests.sched.common import PICKS_REQUIRED, flow, rk, view
from tests.sched.harness import check_scheduler


def test_wrr_agrees_with_kernel_on_10000_picks() -> None:
    counts = check_scheduler("wrr", examples=75, n_ops=200)
    assert counts.picks >= PICKS_REQUIRED


def test_wrr_weights_4_3_2_give_the_kernel_sequence() -> None:
    s = create_scheduler("wrr")
    a, b, c = view(1, weight=4), view(2, weight=3), view(3, weight=2)
    dests = [a, b, c]
    s.update(dests)
    names = {rk(1): "A", rk(2): "B", rk(3): "C"}
    picks = "".join(names[k] for k in (s.pick(dests, flow(), 0.0) for _ in range(18)) if k is not None)
    assert picks == "AABABCABC" * 2


def test_wrr_all_weights_zero_gives_none() -> None:
    s = create_scheduler("wrr")
    dests = [view(1, weight=0), view(2, weight=0)]
    s.update(dests)
    assert s.pick(dests, flow(), 0.0) is None
