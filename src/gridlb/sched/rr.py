"""Round-robin (ip_vs_rr.c): the next destination after the last one picked that has weight > 0.

The cursor is the last destination picked (or the list head). Destinations are added at the head
of the kernel list, so new ones are reached only after the scan wraps. When the cursor's destination
is deleted, the kernel moves the cursor to its predecessor (ip_vs_rr_del_dest).
"""

from __future__ import annotations

from collections.abc import Sequence

from gridlb.sched.base import DestView, Flow, Scheduler, register_scheduler
from gridlb.table import RealKey


@register_scheduler
class RoundRobin(Scheduler):
    """ipvsadm `-s rr`."""

    name = "rr"

    def __init__(self, flags: frozenset[str] = frozenset()) -> None:
        super().__init__(flags)
        self._cursor: RealKey | None = None  # None = the list head
        self._order: list[RealKey] = []

    def update(self, dests: Sequence[DestView]) -> None:
        keys = [d.key for d in dests]
        present = set(keys)
        if self._cursor is not None and self._cursor not in present:
            # Deleted: move to the nearest surviving predecessor (or the head).
            old = self._order
            i = old.index(self._cursor) if self._cursor in old else 0
            self._cursor = next((k for k in reversed(old[:i]) if k in present), None)
        self._order = keys

    def pick(self, dests: Sequence[DestView], flow: Flow, now: float) -> RealKey | None:
        start = -1
        if self._cursor is not None:
            start = next((i for i, d in enumerate(dests) if d.key == self._cursor), -1)
        n = len(dests)
        # From the cursor to the end, then (unless the cursor is the head) from the first to the cursor.
        order = list(range(start + 1, n)) + (list(range(0, start + 1)) if start >= 0 else [])
        for i in order:
            d = dests[i]
            if not d.overloaded and d.weight > 0:
                self._cursor = d.key
                return d.key
        return None
