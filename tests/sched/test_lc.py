"""Least-connection: kernel-exact against the C transcription, plus overhead and ties."""

from __future__ import annotations

from gridlb.sched import create_scheduler
from tests.sched.common import PICKS_REQUIRED, flow, rk, view
from tests.sched.harness import check_scheduler


def test_lc_agrees_with_kernel_on_10000_picks() -> None:
    counts = check_scheduler("lc", examples=75, n_ops=200)
    assert counts.picks >= PICKS_REQUIRED


def test_lc_counts_an_active_connection_as_256_inactive() -> None:
    s = create_scheduler("lc")
    assert s.pick([view(1, active=1), view(2, inactive=255)], flow(), 0.0) == rk(2)
    assert s.pick([view(1, active=1), view(2, inactive=256)], flow(), 0.0) == rk(1)  # tie: first wins


def test_lc_ignores_weight_except_zero() -> None:
    s = create_scheduler("lc")
    assert s.pick([view(1, weight=0), view(2, weight=1, active=5)], flow(), 0.0) == rk(2)
    assert s.pick([view(1, weight=1, active=1), view(2, weight=100, active=2)], flow(), 0.0) == rk(1)
