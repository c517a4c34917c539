"""The lblc/lblcr cache: destination address -> entry in 2**bits hash buckets, aged by the kernel's GC timer.

Time is kept in jiffies (HZ = 250, Debian's CONFIG_HZ) taken from the caller's monotonic seconds, so
that every "has it expired" comparison falls on the same side as in the kernel.

The garbage collector (ip_vs_lblc[r]_check_expire) runs every 60 s, the first time 60 s after the
scheduler's first pick (the kernel arms it when the scheduler is bound, and its timer wheel may fire
it up to 2 s late). While the table counts at most 16 * buckets entries, every 30th run drops each
entry unused for the expiration (the `lblc_expiration` / `lblcr_expiration` sysctl, 24 h); while it
counts more, each run instead drops entries unused for 6 minutes, bucket by bucket after a rover,
until (entries - max) * 4/3 (at most max/2) are gone. Runs that fall due between two picks are
replayed at their own times when the next pick comes, which is all a pick can observe.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Generic, TypeVar

from gridlb.sched._kernel import addr_fold, hash_32, s32
from gridlb.sched.base import DestView
from gridlb.table import IPAddress

HZ = 250
CHECK_EXPIRE_INTERVAL = 60 * HZ
ENTRY_TIMEOUT = 6 * 60 * HZ
COUNT_FOR_FULL_EXPIRATION = 30
TAB_BITS = 10  # CONFIG_IP_VS_LBLC_TAB_BITS / CONFIG_IP_VS_LBLCR_TAB_BITS default
DEFAULT_EXPIRATION_S = 24 * 60 * 60


def jiffies(now: float) -> int:
    """Return the jiffies count for `now` seconds."""
    return math.floor(now * HZ)


def locality_overloaded(dest: DestView, dests: Sequence[DestView]) -> bool:
    """Return lblc/lblcr's `is_overloaded`: more active connections than weight while some destination
    has fewer than half its weight (active * 2 < weight, C int arithmetic)."""
    if dest.active > dest.weight:
        return any(s32(d.active * 2) < d.weight for d in dests)
    return False


class CacheEntry:
    """One cached destination address; `lastuse` in jiffies."""

    __slots__ = ("lastuse",)

    def __init__(self, lastuse: int) -> None:
        self.lastuse = lastuse


E = TypeVar("E", bound=CacheEntry)


class LocalityCache(Generic[E]):
    """The hash table with its entry count, rover and GC timer (`struct ip_vs_lblc[r]_table`)."""

    def __init__(self, tab_bits: int = TAB_BITS, expiration_s: int = DEFAULT_EXPIRATION_S) -> None:
        self.bits = tab_bits
        self.size = 1 << tab_bits
        self.max_size = self.size * 16
        self.expiration = expiration_s * HZ
        self.buckets: dict[int, dict[IPAddress, E]] = {}
        self.entries = 0  # the kernel's counter; lblc lets it drift above len(self) (see lblc.py)
        self.rover = 0
        self.counter = 1
        self.next_run: int | None = None  # jiffies of the next GC run; armed by the first pick

    def __len__(self) -> int:
        return sum(len(b) for b in self.buckets.values())

    def values(self) -> list[E]:
        """Return every entry."""
        return [e for b in self.buckets.values() for e in b.values()]

    def _bucket(self, addr: IPAddress) -> int:
        return hash_32(addr_fold(addr), self.bits)

    def get(self, addr: IPAddress) -> E | None:
        """Return the entry for the destination address `addr`, if cached."""
        bucket = self.buckets.get(self._bucket(addr))
        return bucket.get(addr) if bucket else None

    def put(self, addr: IPAddress, entry: E) -> None:
        """Hash a new entry and count it."""
        self.buckets.setdefault(self._bucket(addr), {})[addr] = entry
        self.entries += 1

    def unlink(self, addr: IPAddress) -> None:
        """Unhash the entry for `addr` without counting it down (the caller decides)."""
        h = self._bucket(addr)
        bucket = self.buckets[h]
        del bucket[addr]
        if not bucket:
            del self.buckets[h]

    def advance(self, now: int) -> bool:
        """Run every GC pass due by `now` (jiffies); return True if any entry was dropped."""
        if self.next_run is None:
            self.next_run = now + CHECK_EXPIRE_INTERVAL
            return False
        dropped = False
        while self.next_run <= now:
            at = self.next_run
            if self.counter % COUNT_FOR_FULL_EXPIRATION == 0:
                dropped |= self._full_check(at)
                self.counter = 1
            elif self.entries <= self.max_size:
                # Nothing but the counter moves until the next full check: skip to it (or to now).
                step = min(
                    COUNT_FOR_FULL_EXPIRATION - self.counter % COUNT_FOR_FULL_EXPIRATION,
                    (now - at) // CHECK_EXPIRE_INTERVAL + 1,
                )
                self.counter += step
                self.next_run = at + step * CHECK_EXPIRE_INTERVAL
                continue
            else:
                dropped |= self._partial_check(at)
            self.next_run = at + CHECK_EXPIRE_INTERVAL
        return dropped

    def _full_check(self, now: int) -> bool:
        # Every bucket once, from rover + 1 round to rover: the rover ends where it started.
        dropped = False
        for h in list(self.buckets):
            bucket = self.buckets[h]
            for addr in [a for a, e in bucket.items() if now - (e.lastuse + self.expiration) >= 0]:
                del bucket[addr]
                self.entries -= 1
                dropped = True
            if not bucket:
                del self.buckets[h]
        return dropped

    def _partial_check(self, now: int) -> bool:
        goal = (self.entries - self.max_size) * 4 // 3
        goal = min(goal, self.max_size // 2)
        dropped = False
        j = self.rover
        mask = self.size - 1
        for _ in range(self.size):
            j = (j + 1) & mask
            bucket = self.buckets.get(j)
            if bucket:
                for addr in [a for a, e in bucket.items() if now - (e.lastuse + ENTRY_TIMEOUT) >= 0]:
                    del bucket[addr]
                    self.entries -= 1
                    goal -= 1
                    dropped = True
                if not bucket:
                    del self.buckets[j]
            if goal <= 0:
                break
        self.rover = j
        return dropped
