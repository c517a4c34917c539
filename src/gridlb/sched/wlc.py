"""Weighted least-connection (ip_vs_wlc.c): minimise overhead / weight by cross-multiplication.

The first non-overloaded destination with weight > 0 starts as `least`; each later non-overloaded one
replaces it only when loh * weight > doh * least.weight (strict: the earlier destination wins ties).
"""

from __future__ import annotations

from collections.abc import Sequence

from gridlb.sched._kernel import wlc_least
from gridlb.sched.base import CandidateT, DestView, Flow, Scheduler, register_scheduler
from gridlb.table import RealKey


@register_scheduler
class WeightedLeastConnection(Scheduler):
    """ipvsadm `-s wlc` (the ipvsadm and keepalived default)."""

    name = "wlc"
    picks_live = True

    def pick(self, dests: Sequence[DestView], flow: Flow, now: float) -> RealKey | None:
        least = wlc_least(dests)
        return least.key if least is not None else None

    def pick_live(self, dests: Sequence[CandidateT], flow: Flow, now: float) -> CandidateT | None:
        return wlc_least(dests)
