"""Maglev hashing (ip_vs_mh.c): a 4093-entry lookup table filled from per-destination permutations.

Each destination's permutation starts at hsiphash(addr, port, key1) % M and steps by
hsiphash(addr, port, key2) % (M - 1) + 1 (fixed keys, so every director builds the same table);
destinations take `(last_weight / gcd) >> rshift` turns. A flow looks up hsiphash(client address
[+ client port with mh-port]) % M; mh-fallback probes further offsets when that destination is
unavailable. Flags: `mh-fallback` (= flag-1), `mh-port` (= flag-2).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import gcd

from gridlb.sched._kernel import U32, addr_fold, hsiphash_u32, probe_table
from gridlb.sched.base import DestView, Flow, Scheduler, register_scheduler
from gridlb.table import IPAddress, RealKey

PRIMES = (251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071)
TAB_INDEX = 12  # CONFIG_IP_VS_MH_TAB_INDEX default
TAB_BITS = TAB_INDEX // 2
TAB_SIZE = PRIMES[TAB_INDEX - 8]  # 4093
KEY1 = 2654435761
KEY2 = 2654446892


def mh_hashkey(addr: IPAddress, port: int, key: int, offset: int) -> int:
    """Return ip_vs_mh_hashkey(): hsiphash of offset + port + folded address, both key words = `key`."""
    return hsiphash_u32((offset + port + addr_fold(addr)) & U32, key, key)


@register_scheduler
class MaglevHashing(Scheduler):
    """ipvsadm `-s mh` [`-b mh-fallback,mh-port`]."""

    name = "mh"

    def __init__(self, flags: frozenset[str] = frozenset()) -> None:
        super().__init__(flags)
        self.fallback = bool({"mh-fallback", "flag-1"} & flags)
        self.use_port = bool({"mh-port", "flag-2"} & flags)
        self.lookup: list[RealKey | None] = [None] * TAB_SIZE
        self.gcd = 0
        self.rshift = 0
        self._members: frozenset[RealKey | None] = frozenset({None})

    def update(self, dests: Sequence[DestView]) -> None:
        weights = [d.weight if d.last_weight < 0 else d.last_weight for d in dests]
        g = 0
        for w in weights:
            if w > 0:
                g = gcd(w, g) if g > 0 else w
        self.gcd = g
        self.rshift = max((max([0, *weights]) // g).bit_length() - TAB_BITS, 0) if g >= 1 else 0
        if len(dests) > TAB_SIZE:
            return  # -EINVAL: the kernel keeps the old table
        if g < 1:
            self.lookup = [None] * TAB_SIZE
            self._members = frozenset({None})
            return
        perms: list[int] = []
        setup: list[tuple[int, int, RealKey]] = []  # (skip, turns, key); perms[i] = next position
        for d, lw in zip(dests, weights, strict=True):
            perms.append(mh_hashkey(d.key.addr, d.key.port, KEY1, 0) % TAB_SIZE)
            skip = mh_hashkey(d.key.addr, d.key.port, KEY2, 0) % (TAB_SIZE - 1) + 1
            setup.append((skip, ((lw // g) >> self.rshift) or int(lw != 0), d.key))
        lookup: list[RealKey | None] = [None] * TAB_SIZE
        taken = bytearray(TAB_SIZE)
        n = 0
        while n < TAB_SIZE:
            for i, (skip, turns, key) in enumerate(setup):
                perm = perms[i]
                for _ in range(turns):
                    while taken[perm]:
                        perm += skip
                        if perm >= TAB_SIZE:
                            perm -= TAB_SIZE
                    taken[perm] = 1
                    lookup[perm] = key
                    n += 1
                    if n == TAB_SIZE:
                        break
                perms[i] = perm
                if n == TAB_SIZE:
                    break
        self.lookup = lookup
        self._members = frozenset(lookup)

    def pick(self, dests: Sequence[DestView], flow: Flow, now: float) -> RealKey | None:
        port = flow.client_port if self.use_port else 0
        return probe_table(
            self.lookup,
            dests,
            lambda offset: mh_hashkey(flow.client, port, KEY1, offset) % TAB_SIZE,
            fallback=self.fallback,
            members=self._members,
        )
