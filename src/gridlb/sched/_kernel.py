"""Helpers shared by the schedulers: C int wrap-around, address folding, hash_32, hsiphash, table probing,
the weighted least-connection scan.

They reproduce what the kernel computes on x86_64 (little-endian, 64-bit `unsigned long`), so that
hash-based schedulers (sh, dh, mh) fill and probe their tables exactly as net/netfilter/ipvs does.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import TypeVar

from gridlb.sched.base import Candidate, DestView
from gridlb.table import IPAddress, RealKey

U32 = 0xFFFFFFFF
U64 = 0xFFFFFFFFFFFFFFFF
GOLDEN_RATIO_32 = 0x61C88647  # include/linux/hash.h
C = TypeVar("C", bound=Candidate)


def s32(value: int) -> int:
    """Return `value` wrapped to a C `int` (two's complement, 32 bits)."""
    value &= U32
    return value - (1 << 32) if value & 0x80000000 else value


def conn_overhead(active: int, inactive: int) -> int:
    """Return ip_vs_dest_conn_overhead(): activeconns * 256 + inactconns as a C int."""
    return s32(s32(active << 8) + inactive)


def wlc_least(dests: Sequence[C]) -> C | None:
    """Return the weighted least-connection choice (ip_vs_wlc.c, also __ip_vs_lblc[r]_schedule).

    The first non-overloaded destination with weight > 0 starts as `least`; each later non-overloaded
    one replaces it only when loh * weight > doh * least.weight (strict: the earlier one wins ties).
    `dests` are scheduler views or any objects with the same five fields (the proxy's live
    destinations). One pass, the overhead computed inline: `conn_overhead` runs only when a counter
    is outside the range where `active * 256 + inactive` cannot wrap a C int.
    """
    least: C | None = None
    loh = lw = 0
    for d in dests:
        if d.overloaded:
            continue
        a = d.active
        i = d.inactive
        doh = (a << 8) + i
        if not (-0x800000 <= a < 0x800000 and -0x80000000 <= doh <= 0x7FFFFFFF):
            doh = conn_overhead(a, i)
        w = d.weight
        if least is None:
            if w > 0:
                least, loh, lw = d, doh, w
        elif loh * w > doh * lw:
            least, loh, lw = d, doh, w
    return least


def addr_fold(addr: IPAddress) -> int:
    """Return ntohl(addr_fold): the IPv4 address, or the XOR of the four 32-bit words of an IPv6 one."""
    raw = addr.packed
    if len(raw) == 4:
        return int.from_bytes(raw, "big")
    fold = 0
    for i in range(0, 16, 4):
        fold ^= int.from_bytes(raw[i : i + 4], "big")
    return fold


def hash_32(value: int, bits: int) -> int:
    """Return hash_32(value, bits): the top `bits` bits of value * GOLDEN_RATIO_32 (mod 2**32)."""
    return ((value * GOLDEN_RATIO_32) & U32) >> (32 - bits)


def _rotl64(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & U64


def hsiphash_u32(value: int, key0: int, key1: int) -> int:
    """Return hsiphash(&value, 4, key) on a 64-bit kernel: SipHash-1-3 truncated to 32 bits.

    The four bytes of `value` are read little-endian (x86), as `hsiphash(&v, sizeof(v), key)` does.
    """
    v0 = 0x736F6D6570736575 ^ key0
    v1 = 0x646F72616E646F6D ^ key1
    v2 = 0x6C7967656E657261 ^ key0
    v3 = 0x7465646279746573 ^ key1
    b = (4 << 56) | (value & U32)

    def rounds(n: int) -> None:
        nonlocal v0, v1, v2, v3
        for _ in range(n):
            v0 = (v0 + v1) & U64
            v1 = _rotl64(v1, 13) ^ v0
            v0 = _rotl64(v0, 32)
            v2 = (v2 + v3) & U64
            v3 = _rotl64(v3, 16) ^ v2
            v0 = (v0 + v3) & U64
            v3 = _rotl64(v3, 21) ^ v0
            v2 = (v2 + v1) & U64
            v1 = _rotl64(v1, 17) ^ v2
            v2 = _rotl64(v2, 32)

    v3 ^= b
    rounds(1)
    v0 ^= b
    v2 ^= 0xFF
    rounds(3)
    return (v0 ^ v1 ^ v2 ^ v3) & U32


def siphash(data: bytes, key0: int, key1: int, c_rounds: int = 2, d_rounds: int = 4) -> int:
    """Return the 64-bit SipHash-c-d of `data` (reference SipHash; used to test the round function)."""
    v = [0x736F6D6570736575 ^ key0, 0x646F72616E646F6D ^ key1, 0x6C7967656E657261 ^ key0]
    v.append(0x7465646279746573 ^ key1)

    def rnd() -> None:
        v[0] = (v[0] + v[1]) & U64
        v[1] = _rotl64(v[1], 13) ^ v[0]
        v[0] = _rotl64(v[0], 32)
        v[2] = (v[2] + v[3]) & U64
        v[3] = _rotl64(v[3], 16) ^ v[2]
        v[0] = (v[0] + v[3]) & U64
        v[3] = _rotl64(v[3], 21) ^ v[0]
        v[2] = (v[2] + v[1]) & U64
        v[1] = _rotl64(v[1], 17) ^ v[2]
        v[2] = _rotl64(v[2], 32)

    full = len(data) - len(data) % 8
    for i in range(0, full, 8):
        m = int.from_bytes(data[i : i + 8], "little")
        v[3] ^= m
        for _ in range(c_rounds):
            rnd()
        v[0] ^= m
    b = ((len(data) & 0xFF) << 56) | int.from_bytes(data[full:], "little")
    v[3] ^= b
    for _ in range(c_rounds):
        rnd()
    v[0] ^= b
    v[2] ^= 0xFF
    for _ in range(d_rounds):
        rnd()
    return v[0] ^ v[1] ^ v[2] ^ v[3]


def available(weight: int, overloaded: bool) -> bool:
    """Return True unless the destination is quiesced (weight <= 0) or overloaded (sh/mh `is_unavailable`)."""
    return weight > 0 and not overloaded


def probe_table(
    table: Sequence[RealKey | None],
    dests: Sequence[DestView],
    index: Callable[[int], int],
    *,
    fallback: bool,
    members: Collection[RealKey | None] = (),
) -> RealKey | None:
    """Return the sh/mh choice: the destination in bucket `index(0)` if available, else with `fallback`
    the first available one in buckets `index((offset + index(0)) % len(table))`, offset = 0, 1, ...

    The probe gives up at an empty bucket or one naming a destination no longer listed (the kernel's
    `ip_vs_sh_get_fallback` / `ip_vs_mh_get_fallback`); `members` (every key in the table), when given,
    lets it give up at once when none of them is available.
    """
    views = {d.key: d for d in dests}

    def usable(key: RealKey | None) -> bool | None:
        if key is None or key not in views:
            return None
        v = views[key]
        return available(v.weight, v.overloaded)

    ihash = index(0)
    first = table[ihash]
    ok = usable(first)
    if ok:
        return first
    if not fallback or ok is None:
        return None
    if members and not any(usable(k) for k in members):
        return None  # the probe loop below could only end empty-handed
    size = len(table)
    for offset in range(size):
        key = table[index((offset + ihash) % size)]
        ok = usable(key)
        if ok is None:
            return None
        if ok:
            return key
    return None
