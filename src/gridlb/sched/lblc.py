"""Locality-based least-connection (ip_vs_lblc.c): each destination address keeps the server it got first.

A flow to a cached destination address goes to the cached server while that server is listed, has
weight > 0 and is not "overloaded" in lblc's own sense (more active connections than its weight
while some server has fewer than half its weight); the overloaded flag of the upper threshold is not
consulted for the cached server, as in the kernel. Otherwise the flow goes to the weighted
least-connection choice, which replaces the cache entry. Entries age out as described in
`_locality.py` (`now` drives that clock).

Kept for exactness: replacing an entry counts a new entry without counting the old one down (the
kernel's `ip_vs_lblc_new`), so a busy table reaches the 16 * buckets limit early and then ages its
entries after 6 minutes instead of 24 hours. Linux 6.x without the later cap that stops caching new
entries beyond that limit.
"""

from __future__ import annotations

from collections.abc import Sequence

from gridlb.sched._kernel import wlc_least
from gridlb.sched._locality import (
    DEFAULT_EXPIRATION_S,
    TAB_BITS,
    CacheEntry,
    LocalityCache,
    jiffies,
    locality_overloaded,
)
from gridlb.sched.base import DestView, Flow, Scheduler, register_scheduler
from gridlb.table import RealKey


class LblcEntry(CacheEntry):
    """A destination address's cached server."""

    __slots__ = ("dest",)

    def __init__(self, lastuse: int, dest: RealKey) -> None:
        super().__init__(lastuse)
        self.dest = dest


@register_scheduler
class LocalityBasedLeastConnection(Scheduler):
    """ipvsadm `-s lblc`."""

    name = "lblc"

    def __init__(
        self,
        flags: frozenset[str] = frozenset(),
        *,
        tab_bits: int = TAB_BITS,
        expiration_s: int = DEFAULT_EXPIRATION_S,
    ) -> None:
        super().__init__(flags)
        self.cache: LocalityCache[LblcEntry] = LocalityCache(tab_bits, expiration_s)

    def pick(self, dests: Sequence[DestView], flow: Flow, now: float) -> RealKey | None:
        j = jiffies(now)
        cache = self.cache
        cache.advance(j)
        addr = flow.vaddr
        en = cache.get(addr)
        if en is not None:
            en.lastuse = j
            cached = en.dest
            view = next((d for d in dests if d.key == cached), None)
            if (
                view is not None
                and view.available
                and view.weight > 0
                and not locality_overloaded(view, dests)
            ):
                return view.key
        least = wlc_least(dests)
        if least is None:
            return None
        if en is None or en.dest != least.key:
            if en is not None:
                cache.unlink(addr)  # not counted down: see the module docstring
            cache.put(addr, LblcEntry(j, least.key))
        return least.key
