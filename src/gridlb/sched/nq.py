"""Never queue (ip_vs_nq.c): the first idle destination (activeconns == 0), otherwise the sed choice."""

from __future__ import annotations

from collections.abc import Sequence

from gridlb.sched._kernel import s32
from gridlb.sched.base import CandidateT, DestView, Flow, Scheduler, register_scheduler
from gridlb.table import RealKey


def nq_least(dests: Sequence[CandidateT]) -> CandidateT | None:
    """Return the never-queue choice among views or live destinations (each counter read once)."""
    least: CandidateT | None = None
    loh = lw = 0
    for d in dests:
        if d.overloaded:
            continue
        w = d.weight
        if w == 0:
            continue
        a = d.active
        if a == 0:
            return d
        doh = s32(a + 1)
        if least is None or loh * w > doh * lw:
            least, loh, lw = d, doh, w
    return least


@register_scheduler
class NeverQueue(Scheduler):
    """ipvsadm `-s nq`."""

    name = "nq"
    picks_live = True

    def pick(self, dests: Sequence[DestView], flow: Flow, now: float) -> RealKey | None:
        least = nq_least(dests)
        return least.key if least is not None else None

    def pick_live(self, dests: Sequence[CandidateT], flow: Flow, now: float) -> CandidateT | None:
        return nq_least(dests)
