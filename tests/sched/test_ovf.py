"""Overflow connection: kernel-exact against the C transcription, plus hand-checked picks."""

from __future__ import annotations

from gridlb.sched import create_scheduler
from tests.sched.common import PICKS_REQUIRED, flow, rk, view
from tests.sched.harness import check_scheduler


def test_ovf_agrees_with_kernel_on_10000_picks() -> None:
    counts = check_scheduler("ovf", examples=75, n_ops=200)
    assert counts.picks >= PICKS_REQUIRED


def test_ovf_fills_the_heaviest_server_up_to_its_weight_then_overflows() -> None:
    s = create_scheduler("ovf")
    assert s.pick([view(1, weight=2), view(2, weight=4, active=4)], flow(), 0.0) == rk(2)
    assert s.pick([view(1, weight=2), view(2, weight=4, active=5)], flow(), 0.0) == rk(1)
    assert s.pick([view(1, weight=2, inactive=99), view(2, weight=2)], flow(), 0.0) == rk(1)  # tie: first
    assert s.pick([view(1, weight=2, active=3), view(2, weight=4, active=5)], flow(), 0.0) is None
