"""Shortest expected delay (ip_vs_sed.c): like wlc with overhead = activeconns + 1 (inactive ignored)."""

from __future__ import annotations

from collections.abc import Sequence

from gridlb.sched._kernel import s32
from gridlb.sched.base import DestView, Flow, Scheduler, register_scheduler
from gridlb.table import RealKey


@register_scheduler
class ShortestExpectedDelay(Scheduler):
    """ipvsadm `-s sed`."""

    name = "sed"

    def pick(self, dests: Sequence[DestView], flow: Flow, now: float) -> RealKey | None:
        start = next((i for i, d in enumerate(dests) if not d.overloaded and d.weight > 0), None)
        if start is None:
            return None
        least = dests[start]
        loh = s32(least.active + 1)
        for d in dests[start + 1 :]:
            if d.overloaded:
                continue
            doh = s32(d.active + 1)
            if loh * d.weight > doh * least.weight:
                least, loh = d, doh
        return least.key
