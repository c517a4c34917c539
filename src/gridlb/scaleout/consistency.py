"""Consistent scheduling across directors, measured: Maglev (`mh`) tables and how many flows a change moves.

Every scaled-out director builds its `mh` table from the same real servers, so a flow maps to the
same real server whichever director the router picks. These pure helpers build the table as the
kernel does (`gridlb.sched.mh`), and measure what a real-server change costs: the fraction of table
entries whose owner changes (a flow can move only if its entry did), the theoretical minimum (the
added server's share, or the removed one's), and the fraction of a sample of flows that moves.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address

from gridlb.sched.base import DestView, Flow
from gridlb.sched.mh import TAB_SIZE, MaglevHashing
from gridlb.table import RealKey

FLAGS = frozenset({"mh-port", "mh-fallback"})
SAMPLE_VIP = IPv4Address("10.0.0.100")


def build(dests: Sequence[tuple[RealKey, int]], flags: frozenset[str] = FLAGS) -> MaglevHashing:
    """Return an `mh` scheduler with its table built from (real server, weight) in kernel list order."""
    sched = MaglevHashing(flags)
    sched.update([DestView(k, w) for k, w in dests])
    return sched


def views(dests: Sequence[tuple[RealKey, int]]) -> list[DestView]:
    """Return the destinations as the scheduler reads them."""
    return [DestView(k, w) for k, w in dests]


@dataclass(frozen=True, slots=True)
class Disruption:
    """What one change of the real-server list did to the table and to a sample of flows."""

    entries_changed: float  # fraction of the table's entries whose real server changed
    minimum: float  # fraction that had to change: the added (or removed) server's share
    flows_moved: float  # fraction of the sampled flows that now map to another real server
    flows: int

    @property
    def excess(self) -> float:
        """Return how much more of the table changed than had to."""
        return self.entries_changed - self.minimum


def disruption(
    before: Sequence[tuple[RealKey, int]],
    after: Sequence[tuple[RealKey, int]],
    *,
    flows: int = 20_000,
    seed: int = 1,
    vip: IPv4Address = SAMPLE_VIP,
) -> Disruption:
    """Return the disruption of going from `before` to `after` (lists in kernel order)."""
    a, b = build(before), build(after)
    changed = sum(x != y for x, y in zip(a.lookup, b.lookup, strict=True)) / TAB_SIZE
    old, new = {k for k, _ in before}, {k for k, _ in after}
    gone, added = old - new, new - old
    share = sum(1 for k in a.lookup if k in gone) + sum(1 for k in b.lookup if k in added)
    rng = random.Random(seed)
    va, vb = views(before), views(after)
    moved = 0
    for _ in range(flows):
        flow = sample_flow(rng, vip)
        if a.pick(va, flow, 0.0) != b.pick(vb, flow, 0.0):
            moved += 1
    return Disruption(changed, share / TAB_SIZE, moved / flows, flows)


def sample_flow(rng: random.Random, vip: IPv4Address) -> Flow:
    """Return a random client flow to `vip`:2811 (address in 10/8, ephemeral port)."""
    client = IPv4Address((10 << 24) | rng.randrange(1 << 24))
    return Flow(client, rng.randrange(32768, 61000), vip, 2811)
