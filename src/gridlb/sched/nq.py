"""Never queue (ip_vs_nq.c): the first idle destination (activeconns == 0), otherwise the sed choice."""

from __future__ import annotations

from collections.abc import Sequence

from gridlb.sched._kernel import s32
from gridlb.sched.base import DestView, Flow, Scheduler, register_scheduler
from gridlb.table import RealKey


@register_scheduler
class NeverQueue(Scheduler):
    """ipvsadm `-s nq`."""

    name = "nq"

    def pick(self, dests: Sequence[DestView], flow: Flow, now: float) -> RealKey | None:
        least: DestView | None = None
        loh = 0
        for d in dests:
            if d.overloaded or d.weight == 0:
                continue
            doh = s32(d.active + 1)
            if d.active == 0:
                return d.key
            if least is None or loh * d.weight > doh * least.weight:
                least, loh = d, doh
        return least.key if least is not None else None
