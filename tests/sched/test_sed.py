"""Shortest expected delay: kernel-exact against the C transcription."""

from __future__ import annotations

from gridlb.sched import create_scheduler
from tests.sched.common import PICKS_REQUIRED, flow, rk, view
from tests.sched.harness import check_scheduler


def test_sed_agrees_with_kernel_on_10000_picks() -> None:
    counts = check_scheduler("sed", examples=75, n_ops=200)
    assert counts.picks >= PICKS_REQUIRED


def test_sed_uses_active_plus_one_over_weight() -> None:
    s = create_scheduler("sed")
    # (1+1)/1 = 2 vs (3+1)/3 = 1.33 -> the heavier server, inactive ignored
    assert s.pick(
        [view(1, weight=1, active=1), view(2, weight=3, active=3, inactive=999)], flow(), 0.0
    ) == rk(2)
