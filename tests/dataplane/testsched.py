"""A weighted least-connection scheduler for the dataplane tests, registered under its own name.

It follows the kernel's ip_vs_wlc.c rule (overhead = active * 256 + inactive; first candidate in
list order that is neither overloaded nor weight 0; a later one wins only when strictly better by
cross-multiplication), so the tests can compute expected picks without the sched branch.
"""

from __future__ import annotations

from collections.abc import Sequence

from gridlb.sched.base import DestView, Flow, Scheduler, register_scheduler
from gridlb.table import RealKey

NAME = "test-wlc"


def overhead(d: DestView) -> int:
    """Return the kernel's wlc overhead of `d`."""
    return d.active * 256 + d.inactive


@register_scheduler
class TestWlc(Scheduler):
    """Kernel wlc, for tests only."""

    name = NAME

    def pick(self, dests: Sequence[DestView], flow: Flow, now: float) -> RealKey | None:
        best: DestView | None = None
        for d in dests:
            if d.overloaded or d.weight <= 0:
                continue
            if best is None or overhead(best) * d.weight > overhead(d) * best.weight:
                best = d
        return None if best is None else best.key
