"""Overflow connection (ip_vs_ovf.c): the heaviest destination until its active count exceeds its weight.

A destination is a candidate while it is not overloaded, has weight > 0 and activeconns <= weight;
the candidate with the highest weight wins, the first in kernel order (the newest) on ties.
Inactive connections do not count.
"""

from __future__ import annotations

from collections.abc import Sequence

from gridlb.sched.base import DestView, Flow, Scheduler, register_scheduler
from gridlb.table import RealKey


@register_scheduler
class Overflow(Scheduler):
    """ipvsadm `-s ovf`."""

    name = "ovf"

    def pick(self, dests: Sequence[DestView], flow: Flow, now: float) -> RealKey | None:
        best: DestView | None = None
        for d in dests:
            w = d.weight
            if d.overloaded or d.active > w or w == 0:
                continue
            if best is None or w > best.weight:
                best = d
        return best.key if best is not None else None
