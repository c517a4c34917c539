"""Weighted failover: kernel-exact against the C transcription, plus hand-checked picks."""

from __future__ import annotations

from gridlb.sched import create_scheduler
from tests.sched.common import PICKS_REQUIRED, flow, rk, view
from tests.sched.harness import check_scheduler


def test_fo_agrees_with_kernel_on_10000_picks() -> None:
    counts = check_scheduler("fo", examples=75, n_ops=200)
    assert counts.picks >= PICKS_REQUIRED


def test_fo_sends_everything_to_the_highest_weight_first_on_ties() -> None:
    s = create_scheduler("fo")
    dests = [view(1, weight=2, active=100), view(2, weight=5, active=900), view(3, weight=5)]
    assert s.pick(dests, flow(), 0.0) == rk(2)
    assert s.pick([view(2, weight=5, overloaded=True), view(1, weight=2)], flow(), 0.0) == rk(1)
    assert s.pick([view(1, weight=0)], flow(), 0.0) is None
