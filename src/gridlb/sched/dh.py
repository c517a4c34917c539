"""Destination hashing (ip_vs_dh.c): 256 buckets assigned round-robin, keyed by the packet's destination.

Weights do not shape the table; a bucket whose destination is unavailable, quiesced (weight <= 0) or
overloaded yields no destination (there is no fallback).
"""

from __future__ import annotations

from collections.abc import Sequence

from gridlb.sched._kernel import addr_fold, hash_32
from gridlb.sched.base import DestView, Flow, Scheduler, register_scheduler
from gridlb.table import RealKey

TAB_BITS = 8
TAB_SIZE = 1 << TAB_BITS


@register_scheduler
class DestinationHashing(Scheduler):
    """ipvsadm `-s dh`."""

    name = "dh"

    def __init__(self, flags: frozenset[str] = frozenset()) -> None:
        super().__init__(flags)
        self.buckets: list[RealKey | None] = [None] * TAB_SIZE

    def update(self, dests: Sequence[DestView]) -> None:
        n = len(dests)
        self.buckets = [dests[i % n].key if n else None for i in range(TAB_SIZE)]

    def pick(self, dests: Sequence[DestView], flow: Flow, now: float) -> RealKey | None:
        key = self.buckets[hash_32(addr_fold(flow.vaddr), TAB_BITS)]
        view = next((d for d in dests if d.key == key), None)
        if view is None or not view.available or view.weight <= 0 or view.overloaded:
            return None
        return view.key
