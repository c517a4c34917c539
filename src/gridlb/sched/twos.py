"""Power of two choices (ip_vs_twos.c, Linux 6.2+): two weighted random draws, the less loaded one wins.

With W the sum of the weights of the non-overloaded destinations with weight > 0, two numbers r1, r2
are drawn uniformly from [0, W] (the kernel's get_random_u32_below(W + 1)); walking the list and
subtracting each weight, choice i is the first destination at which r_i drops to <= 0. The second
choice wins only when its overhead/weight is strictly smaller (weight1 * overhead2 < weight2 *
overhead1, C int arithmetic). The 32-bit random source is injectable so that a test can replay the
kernel's draws: `TwoRandomChoices(random_u32=draws.__next__)`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from gridlb.sched._kernel import U32, conn_overhead, s32
from gridlb.sched.base import DestView, Flow, Scheduler, register_scheduler
from gridlb.table import RealKey


def random_below(ceil: int, random_u32: Callable[[], int]) -> int:
    """Return get_random_u32_below(ceil): Lemire's multiply-shift with rejection, as drivers/char/random.c.

    Draws one 32-bit number, and more only in the rare case the product's low half is biased.
    """
    rand = random_u32() & U32
    if ceil == 0:
        return rand
    mult = ceil * rand
    if (mult & U32) < ceil:
        bound = ((1 << 32) - ceil) % ceil  # (-ceil) % ceil in u32
        while (mult & U32) < bound:
            mult = ceil * (random_u32() & U32)
    return mult >> 32


@register_scheduler
class TwoRandomChoices(Scheduler):
    """ipvsadm `-s twos`."""

    name = "twos"

    def __init__(
        self, flags: frozenset[str] = frozenset(), *, random_u32: Callable[[], int] | None = None
    ) -> None:
        super().__init__(flags)
        self.random_u32: Callable[[], int] = random_u32 or (lambda: random.getrandbits(32))

    def pick(self, dests: Sequence[DestView], flow: Flow, now: float) -> RealKey | None:
        total = 0
        found = False
        for d in dests:
            if not d.overloaded and d.weight > 0:
                total = s32(total + d.weight)
                found = True
        if not found:
            return None
        ceil = s32(total + 1) & U32
        r1 = s32(random_below(ceil, self.random_u32))
        r2 = s32(random_below(ceil, self.random_u32))
        first: DestView | None = None
        second: DestView | None = None
        for d in dests:
            if d.overloaded or d.weight <= 0:
                continue
            r1 = s32(r1 - d.weight)
            r2 = s32(r2 - d.weight)
            if r1 <= 0 and first is None:
                first = d
            if r2 <= 0 and second is None:
                second = d
            if first is not None and second is not None:
                break
        if first is None:  # only when the weights' sum wrapped around (the kernel keeps the last candidate)
            first = next(d for d in reversed(dests) if not d.overloaded and d.weight > 0)
            w1, oh1 = -1, 0
        else:
            w1, oh1 = first.weight, conn_overhead(first.active, first.inactive)
        if second is not None:
            oh2 = conn_overhead(second.active, second.inactive)
            if s32(second.weight * oh1) > s32(w1 * oh2):
                return second.key
        return first.key
