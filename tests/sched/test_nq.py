"""Never queue: kernel-exact against the C transcription."""

from __future__ import annotations

from gridlb.sched import create_scheduler
from tests.sched.common import PICKS_REQUIRED, flow, rk, view
from tests.sched.harness import check_scheduler


def test_nq_agrees_with_kernel_on_10000_picks() -> None:
    counts = check_scheduler("nq", examples=75, n_ops=200)
    assert counts.picks >= PICKS_REQUIRED


def test_nq_prefers_the_first_idle_server() -> None:
    s = create_scheduler("nq")
    dests = [view(1, weight=10, active=1), view(2, weight=1, active=0), view(3, weight=1, active=0)]
    assert s.pick(dests, flow(), 0.0) == rk(2)
    assert s.pick([view(1, weight=1, active=2), view(2, weight=3, active=3)], flow(), 0.0) == rk(2)
