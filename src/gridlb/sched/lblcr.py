"""Locality-based least-connection with replication (ip_vs_lblcr.c): each destination address keeps servers.

A flow to a cached address goes to the set's weighted least-connection member (listed, weight > 0,
not overloaded) unless that member is "overloaded" in lblc's sense (more active connections than its
weight while some server has fewer than half its weight) or there is none; then the service's
weighted least-connection choice serves it and joins the set. When the set has more than one member
and has not changed for the expiration (24 h), its most loaded member (by overhead/weight, weight
> 0) is dropped first. Entries age out as described in `_locality.py` (`now` drives that clock).

A member deleted from the service stays in its sets, as in the kernel, until it is dropped as the
most loaded one or its entry ages out; for that comparison it keeps the weight and counters it had in
the last list this scheduler saw (the kernel reads the deleted server's live counters).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from gridlb.sched._kernel import conn_overhead, wlc_least
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


class LblcrEntry(CacheEntry):
    """A destination address's server set, newest member first, and when the set last changed."""

    __slots__ = ("lastmod", "members")

    def __init__(self, lastuse: int, first: RealKey) -> None:
        super().__init__(lastuse)
        self.members: list[RealKey] = [first]
        self.lastmod = lastuse

    def insert(self, key: RealKey, now: int) -> None:
        """ip_vs_dest_set_insert(check=true): add `key` at the head unless it is a member."""
        if key not in self.members:
            self.members.insert(0, key)
            self.lastmod = now

    def erase(self, key: RealKey, now: int) -> None:
        """ip_vs_dest_set_erase()."""
        if key in self.members:
            self.members.remove(key)
            self.lastmod = now


def _set_min(members: list[DestView]) -> DestView | None:
    """ip_vs_dest_set_min(): the least overhead/weight among listed non-overloaded members, weight > 0."""
    least: DestView | None = None
    loh = 0
    for v in members:
        if v.overloaded:
            continue
        if least is None:
            if v.weight > 0 and v.available:
                least, loh = v, conn_overhead(v.active, v.inactive)
            continue
        doh = conn_overhead(v.active, v.inactive)
        if loh * v.weight > doh * least.weight and v.available:
            least, loh = v, doh
    return least


def _set_max(members: list[DestView]) -> DestView | None:
    """ip_vs_dest_set_max(): the most overhead/weight among members with weight > 0 (listed or not)."""
    most: DestView | None = None
    moh = 0
    for v in members:
        if most is None:
            if v.weight > 0:
                most, moh = v, conn_overhead(v.active, v.inactive)
            continue
        doh = conn_overhead(v.active, v.inactive)
        if moh * v.weight < doh * most.weight and v.weight > 0:
            most, moh = v, doh
    return most


@register_scheduler
class LocalityBasedLeastConnectionReplication(Scheduler):
    """ipvsadm `-s lblcr`."""

    name = "lblcr"

    def __init__(
        self,
        flags: frozenset[str] = frozenset(),
        *,
        tab_bits: int = TAB_BITS,
        expiration_s: int = DEFAULT_EXPIRATION_S,
    ) -> None:
        super().__init__(flags)
        self.cache: LocalityCache[LblcrEntry] = LocalityCache(tab_bits, expiration_s)
        self._seen: Sequence[DestView] = ()  # the last list seen (update or pick)
        self._gone: dict[RealKey, DestView] = {}  # deleted members' last views, available=False

    def update(self, dests: Sequence[DestView]) -> None:
        listed = {d.key for d in dests}
        for v in self._seen:
            if v.key not in listed:
                self._gone[v.key] = replace(v, available=False)
        for key in listed & self._gone.keys():
            del self._gone[key]
        self._seen = dests

    def _views(self, members: list[RealKey], dests: Sequence[DestView]) -> list[DestView]:
        listed = {d.key: d for d in dests}
        out = []
        for key in members:
            v = listed.get(key) or self._gone.get(key)
            out.append(v if v is not None else DestView(key, 0, available=False))
        return out

    def pick(self, dests: Sequence[DestView], flow: Flow, now: float) -> RealKey | None:
        j = jiffies(now)
        cache = self.cache
        if cache.advance(j) and self._gone:
            referenced = {k for e in cache.values() for k in e.members}
            self._gone = {k: v for k, v in self._gone.items() if k in referenced}
        self._seen = dests
        addr = flow.vaddr
        en = cache.get(addr)
        if en is None:
            least = wlc_least(dests)
            if least is None:
                return None
            cache.put(addr, LblcrEntry(j, least.key))
            return least.key
        en.lastuse = j
        views = self._views(en.members, dests)
        dest = _set_min(views)
        if len(en.members) > 1 and j - (en.lastmod + cache.expiration) > 0:
            most = _set_max(views)
            if most is not None:
                en.erase(most.key, j)
        if dest is not None and not locality_overloaded(dest, dests):
            return dest.key
        least = wlc_least(dests)
        if least is None:
            return None
        en.insert(least.key, j)
        return least.key
