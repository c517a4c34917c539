"""Weighted round-robin (ip_vs_wrr.c): passes over the list with a falling weight threshold `cw`.

State (the kernel's `ip_vs_wrr_mark`): cursor `cl` (a destination or the head), `cw` current weight,
`mw` maximum weight minus (gcd - 1), `di` gcd of the positive weights. Every add/delete/edit resets the
cursor to the head and recomputes di and mw (ip_vs_wrr_dest_changed).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import gcd

from gridlb.sched.base import DestView, Flow, Scheduler, register_scheduler
from gridlb.table import RealKey


@register_scheduler
class WeightedRoundRobin(Scheduler):
    """ipvsadm `-s wrr`."""

    name = "wrr"

    def __init__(self, flags: frozenset[str] = frozenset()) -> None:
        super().__init__(flags)
        self._cl: RealKey | None = None
        self._di = 1
        self._mw = 0
        self._cw = 0

    def update(self, dests: Sequence[DestView]) -> None:
        g = 0
        for d in dests:
            if d.weight > 0:
                g = gcd(d.weight, g) if g > 0 else d.weight
        self._cl = None
        self._di = g or 1
        self._mw = max([0, *(d.weight for d in dests)]) - (self._di - 1)
        if self._cw > self._mw or not self._cw:
            self._cw = self._mw
        elif self._di > 1:
            self._cw = (self._cw // self._di) * self._di + 1

    def pick(self, dests: Sequence[DestView], flow: Flow, now: float) -> RealKey | None:
        pos = -1  # -1 = the list head
        if self._cl is not None:
            pos = next((i for i, d in enumerate(dests) if d.key == self._cl), -1)
        if self._mw == 0:
            return None
        last = pos
        stop: int | None = None
        last_pass = restarted = False
        while True:
            for i in range(pos + 1, len(dests)):
                d = dests[i]
                if not d.overloaded and d.weight >= self._cw:
                    self._cl = d.key
                    return d.key
                if i == stop:
                    self._cl = d.key
                    return None
            pos = -1
            self._cw -= self._di
            if self._cw <= 0:
                self._cw = self._mw
                if last_pass or last == -1:
                    self._cl = None
                    return None
                restarted = True
            last_pass = self._cw <= self._di
            if last_pass and restarted and last != -1:
                stop = last
