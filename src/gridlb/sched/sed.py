"""Shortest expected delay (ip_vs_sed.c): like wlc with overhead = activeconns + 1 (inactive ignored)."""

from __future__ import annotations

from collections.abc import Sequence

from gridlb.sched._kernel import s32
from gridlb.sched.base import CandidateT, DestView, Flow, Scheduler, register_scheduler
from gridlb.table import RealKey


def sed_least(dests: Sequence[CandidateT]) -> CandidateT | None:
    """Return the shortest-expected-delay choice among views or live destinations (counters read once)."""
    least: CandidateT | None = None
    loh = lw = 0
    for d in dests:
        if d.overloaded:
            continue
        w = d.weight
        if least is None:
            if w > 0:
                least, loh, lw = d, s32(d.active + 1), w
            continue
        doh = s32(d.active + 1)
        if loh * w > doh * lw:
            least, loh, lw = d, doh, w
    return least


@register_scheduler
class ShortestExpectedDelay(Scheduler):
    """ipvsadm `-s sed`."""

    name = "sed"
    picks_live = True

    def pick(self, dests: Sequence[DestView], flow: Flow, now: float) -> RealKey | None:
        least = sed_least(dests)
        return least.key if least is not None else None

    def pick_live(self, dests: Sequence[CandidateT], flow: Flow, now: float) -> CandidateT | None:
        return sed_least(dests)
