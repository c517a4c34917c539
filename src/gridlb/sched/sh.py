"""Source hashing (ip_vs_sh.c): 256 buckets filled in list order, `weight` buckets per destination.

The bucket of a flow is hash_32(client port (with sh-port) + folded client address, 8). With
sh-fallback an unavailable bucket (weight <= 0 or overloaded) probes the following offsets.
Flags: `sh-fallback` (= flag-1), `sh-port` (= flag-2).
"""

from __future__ import annotations

from collections.abc import Sequence

from gridlb.sched._kernel import U32, addr_fold, hash_32, probe_table
from gridlb.sched.base import DestView, Flow, Scheduler, register_scheduler
from gridlb.table import IPAddress, RealKey

TAB_BITS = 8
TAB_SIZE = 1 << TAB_BITS
TAB_MASK = TAB_SIZE - 1


def sh_hashkey(addr: IPAddress, port: int, offset: int) -> int:
    """Return ip_vs_sh_hashkey(af, addr, port, offset)."""
    return (offset + hash_32((port + addr_fold(addr)) & U32, TAB_BITS)) & TAB_MASK


@register_scheduler
class SourceHashing(Scheduler):
    """ipvsadm `-s sh` [`-b sh-fallback,sh-port`]."""

    name = "sh"

    def __init__(self, flags: frozenset[str] = frozenset()) -> None:
        super().__init__(flags)
        self.fallback = bool({"sh-fallback", "flag-1"} & flags)
        self.use_port = bool({"sh-port", "flag-2"} & flags)
        self.buckets: list[RealKey | None] = [None] * TAB_SIZE

    def update(self, dests: Sequence[DestView]) -> None:
        if not dests:
            self.buckets = [None] * TAB_SIZE
            return
        buckets: list[RealKey | None] = []
        i = count = 0
        while len(buckets) < TAB_SIZE:
            d = dests[i]
            buckets.append(d.key)
            count += 1
            if count >= d.weight:  # a destination fills `weight` buckets (at least one)
                i = (i + 1) % len(dests)
                count = 0
        self.buckets = buckets

    def pick(self, dests: Sequence[DestView], flow: Flow, now: float) -> RealKey | None:
        port = flow.client_port if self.use_port else 0
        return probe_table(
            self.buckets, dests, lambda offset: sh_hashkey(flow.client, port, offset), fallback=self.fallback
        )
