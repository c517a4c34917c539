"""Least-connection (ip_vs_lc.c): the smallest activeconns * 256 + inactconns; the first one wins ties."""

from __future__ import annotations

from collections.abc import Sequence

from gridlb.sched._kernel import conn_overhead
from gridlb.sched.base import CandidateT, DestView, Flow, Scheduler, register_scheduler
from gridlb.table import RealKey


def lc_least(dests: Sequence[CandidateT]) -> CandidateT | None:
    """Return the least-connection choice among views or live destinations (each counter read once)."""
    least: CandidateT | None = None
    loh = 0
    for d in dests:
        if d.overloaded or d.weight == 0:
            continue
        doh = conn_overhead(d.active, d.inactive) & 0xFFFFFFFF  # compared as unsigned int
        if least is None or doh < loh:
            least, loh = d, doh
    return least


@register_scheduler
class LeastConnection(Scheduler):
    """ipvsadm `-s lc` (weights matter only as 0 = quiesced)."""

    name = "lc"
    picks_live = True

    def pick(self, dests: Sequence[DestView], flow: Flow, now: float) -> RealKey | None:
        least = lc_least(dests)
        return least.key if least is not None else None

    def pick_live(self, dests: Sequence[CandidateT], flow: Flow, now: float) -> CandidateT | None:
        return lc_least(dests)
