"""Weighted least-connection (ip_vs_wlc.c): minimise overhead / weight by cross-multiplication.

The first non-overloaded destination with weight > 0 starts as `least`; each later non-overloaded one
replaces it only when loh * weight > doh * least.weight (strict: the earlier destination wins ties).
"""

from __future__ import annotations

from collections.abc import Sequence

from gridlb.sched._kernel import conn_overhead
from gridlb.sched.base import DestView, Flow, Scheduler, register_scheduler
from gridlb.table import RealKey


@register_scheduler
class WeightedLeastConnection(Scheduler):
    """ipvsadm `-s wlc` (the ipvsadm and keepalived default)."""

    name = "wlc"

    def pick(self, dests: Sequence[DestView], flow: Flow) -> RealKey | None:
        start = next((i for i, d in enumerate(dests) if not d.overloaded and d.weight > 0), None)
        if start is None:
            return None
        least = dests[start]
        loh = conn_overhead(least.active, least.inactive)
        for d in dests[start + 1 :]:
            if d.overloaded:
                continue
            doh = conn_overhead(d.active, d.inactive)
            if loh * d.weight > doh * least.weight:
                least, loh = d, doh
        return least.key
