"""Weighted failover (ip_vs_fo.c): every new flow goes to the destination with the highest weight.

Overloaded destinations and weight 0 are skipped; among equal highest weights the first in kernel
order (the newest) wins. Connection counts play no part.
"""

from __future__ import annotations

from collections.abc import Sequence

from gridlb.sched.base import DestView, Flow, Scheduler, register_scheduler
from gridlb.table import RealKey


@register_scheduler
class WeightedFailover(Scheduler):
    """ipvsadm `-s fo`."""

    name = "fo"

    def pick(self, dests: Sequence[DestView], flow: Flow, now: float) -> RealKey | None:
        best: RealKey | None = None
        top = 0
        for d in dests:
            if not d.overloaded and d.weight > top:
                best, top = d.key, d.weight
        return best
