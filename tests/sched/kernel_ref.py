"""A line-by-line transcription of the kernel's IPVS schedulers into Python, for the property tests.

Written from net/netfilter/ipvs/ip_vs_{rr,wrr,lc,wlc,lblc,lblcr,sh,dh,mh,sed,nq,fo,ovf,twos}.c, the
destination-update path of ip_vs_ctl.c (__ip_vs_update_dest / __ip_vs_unlink_dest / the dest trash),
include/net/ip_vs.h (ip_vs_dest_conn_overhead), include/linux/hash.h (hash_32), lib/siphash.c (64-bit
hsiphash), drivers/char/random.c (__get_random_u32_below) and include/linux/jiffies.h (time_before,
time_after), as in Linux 6.x (read at intel-lab-lkp/linux 80aeb2c / 93f538a / 1406650 / 3338ca7,
torvalds/linux 0c8ea05 for lblcr, and torvalds/linux for history).
It models the kernel's data structures (a circular `list_head` with a sentinel, `struct ip_vs_dest`,
`svc->sched_data`, hlist buckets, a timer that fires at its `expires`), `jiffies` (HZ 250, starting at
INITIAL_JIFFIES), `get_random_u32()` as an injected source, and C integer semantics on x86_64 (the
kernel is built with -fno-strict-overflow: int arithmetic wraps). It shares no code with gridlb.sched:
the tests drive both with the same operations and compare every pick.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

# ---- C integer helpers --------------------------------------------------------------------------

U32_MASK = 0xFFFFFFFF
U64_MASK = 0xFFFFFFFFFFFFFFFF


def to_int(x: int) -> int:
    """(int) x: wrap to a signed 32-bit C int."""
    x &= U32_MASK
    return x - 0x100000000 if x >= 0x80000000 else x


def to_uint(x: int) -> int:
    """(unsigned int) x."""
    return x & U32_MASK


def to_long(x: int) -> int:
    """(long) x on x86_64: wrap to a signed 64-bit integer."""
    x &= U64_MASK
    return x - (1 << 64) if x >> 63 else x


def rol64(word: int, shift: int) -> int:
    return ((word << shift) | (word >> (64 - shift))) & U64_MASK


def c_gcd(a: int, b: int) -> int:
    """lib/math/gcd.c gcd(): the greatest common divisor of two unsigned longs."""
    while b:
        a, b = b, a % b
    return a


def fls(x: int) -> int:
    """fls(): 1-based index of the most significant set bit; fls(0) == 0."""
    r = 0
    while x:
        x >>= 1
        r += 1
    return r


# ---- include/linux/list.h -------------------------------------------------------------------------


class ListHead:
    """struct list_head."""

    def __init__(self) -> None:
        self.next: ListHead = self
        self.prev: ListHead = self
        self.owner: Dest | None = None  # list_entry(): the struct containing this node


def list_add_rcu(new: ListHead, head: ListHead) -> None:
    """list_add_rcu(new, head): insert right after head."""
    nxt = head.next
    new.next = nxt
    new.prev = head
    head.next = new
    nxt.prev = new


def list_del_rcu(entry: ListHead) -> None:
    """list_del_rcu(): unlink; entry->next stays valid, entry->prev is poisoned."""
    entry.next.prev = entry.prev
    entry.prev.next = entry.next
    entry.prev = None  # type: ignore[assignment]  # deliberate: LIST_POISON2, a later use fails


def list_empty(head: ListHead) -> bool:
    return head.next is head


# ---- struct ip_vs_dest / ip_vs_service ------------------------------------------------------------

IP_VS_DEST_F_AVAILABLE = 0x0001
IP_VS_DEST_F_OVERLOAD = 0x0002
IP_VS_SVC_F_SCHED1 = 0x0008
IP_VS_SVC_F_SCHED2 = 0x0010
AF_INET = 2
AF_INET6 = 10


@dataclass(eq=False)
class Dest:
    """struct ip_vs_dest (the fields schedulers read)."""

    af: int
    addr: bytes  # network order, 4 or 16 bytes
    port: int  # host order (ntohs(dest->port))
    weight: int = 0
    last_weight: int = 0
    flags: int = 0
    activeconns: int = 0
    inactconns: int = 0
    n_list: ListHead = field(default_factory=ListHead)

    def __post_init__(self) -> None:
        self.n_list.owner = self


# ---- include/linux/jiffies.h, kernel/time/timer.c, drivers/char/random.c ----------------------------

HZ = 250  # Debian's CONFIG_HZ
INITIAL_JIFFIES = to_uint(-300 * HZ)  # (unsigned long)(unsigned int)(-300*HZ) on 64-bit


def time_after(a: int, b: int) -> bool:
    """time_after(a, b): (long)((b) - (a)) < 0."""
    return to_long(b - a) < 0


def time_before(a: int, b: int) -> bool:
    """time_before(a, b) = time_after(b, a)."""
    return time_after(b, a)


@dataclass(eq=False)
class TimerList:
    """struct timer_list, modelled as firing exactly at `expires` (the wheel's slack left out)."""

    function: Any
    expires: int = 0
    pending: bool = False


@dataclass(eq=False)
class NetnsIpvs:
    """struct netns_ipvs (the parts schedulers read) plus the global clock, the RNG and Kconfig values."""

    jiffies: int = INITIAL_JIFFIES
    sysctl_lblc_expiration: int = 24 * 60 * 60 * HZ  # DEFAULT_EXPIRATION
    sysctl_lblcr_expiration: int = 24 * 60 * 60 * HZ
    random_u32: Any = None  # get_random_u32()
    lblc_tab_bits: int = 10  # CONFIG_IP_VS_LBLC_TAB_BITS
    lblcr_tab_bits: int = 10  # CONFIG_IP_VS_LBLCR_TAB_BITS
    timers: list[TimerList] = field(default_factory=list)


def mod_timer(ipvs: NetnsIpvs, timer: TimerList, expires: int) -> None:
    timer.expires = expires
    timer.pending = True
    if timer not in ipvs.timers:
        ipvs.timers.append(timer)


def run_timers_until(ipvs: NetnsIpvs, now: int) -> None:
    """Let time pass to `now`: every pending timer with expires <= now fires, in order, at its expires."""
    while True:
        due = [t for t in ipvs.timers if t.pending and not time_after(t.expires, now)]
        if not due:
            break
        t = min(due, key=lambda t: to_long(t.expires - now))
        ipvs.jiffies = t.expires
        t.pending = False
        t.function(t)
    ipvs.jiffies = now


def get_random_u32(ipvs: NetnsIpvs) -> int:
    return to_uint(ipvs.random_u32())


def __get_random_u32_below(ipvs: NetnsIpvs, ceil: int) -> int:
    """drivers/char/random.c (6.2+)."""
    rand = get_random_u32(ipvs)
    if not ceil:
        return rand
    mult = (ceil * rand) & U64_MASK  # (u64)ceil * rand
    if to_uint(mult) < ceil:
        bound = to_uint(-ceil) % ceil
        while to_uint(mult) < bound:
            mult = (ceil * get_random_u32(ipvs)) & U64_MASK
    return mult >> 32


def get_random_u32_below(ipvs: NetnsIpvs, ceil: int) -> int:
    """include/linux/random.h: a non-constant ceil goes to __get_random_u32_below()."""
    return __get_random_u32_below(ipvs, to_uint(ceil))


@dataclass(eq=False)
class Service:
    """struct ip_vs_service."""

    af: int
    scheduler: str
    flags: int = 0
    destinations: ListHead = field(default_factory=ListHead)
    num_dests: int = 0
    sched_data: Any = None
    ipvs: NetnsIpvs = field(default_factory=NetnsIpvs)


def list_entry(node: ListHead) -> Dest:
    assert node.owner is not None
    return node.owner


def dests_of(svc: Service) -> list[Dest]:
    """list_for_each_entry(dest, &svc->destinations, n_list)."""
    out = []
    p = svc.destinations.next
    while p is not svc.destinations:
        out.append(list_entry(p))
        p = p.next
    return out


def ip_vs_dest_conn_overhead(dest: Dest) -> int:
    """include/net/ip_vs.h: (activeconns << 8) + inactconns, as int."""
    return to_int(to_int(dest.activeconns << 8) + dest.inactconns)


def addr_fold_ntohl(af: int, addr: bytes) -> int:
    """__be32 addr_fold = addr->ip; for AF_INET6 the XOR of ip6[0..3]; then ntohl()."""
    words = [addr[i : i + 4] for i in range(0, len(addr), 4)]
    if af == AF_INET6:  # noqa: SIM108 - kept as the C if/else
        fold = bytes(a ^ b ^ c ^ d for a, b, c, d in zip(*words, strict=True))
    else:
        fold = words[0]
    return int.from_bytes(fold, "big")  # ntohl


def hash_32(val: int, bits: int) -> int:
    """include/linux/hash.h: __hash_32(val) >> (32 - bits), GOLDEN_RATIO_32 0x61C88647."""
    return to_uint(val * 0x61C88647) >> (32 - bits)


def hsiphash(data: bytes, key: tuple[int, int]) -> int:
    """lib/siphash.c, BITS_PER_LONG == 64: __hsiphash_unaligned (SipHash-1-3), returned as u32."""
    v0 = 0x736F6D6570736575
    v1 = 0x646F72616E646F6D
    v2 = 0x6C7967656E657261
    v3 = 0x7465646279746573
    b = (len(data) << 56) & U64_MASK
    v3 ^= key[1]
    v2 ^= key[0]
    v1 ^= key[1]
    v0 ^= key[0]

    def sipround() -> None:  # SIPHASH_PERMUTATION(v0, v1, v2, v3)
        nonlocal v0, v1, v2, v3
        v0 = (v0 + v1) & U64_MASK
        v1 = rol64(v1, 13)
        v1 ^= v0
        v0 = rol64(v0, 32)
        v2 = (v2 + v3) & U64_MASK
        v3 = rol64(v3, 16)
        v3 ^= v2
        v0 = (v0 + v3) & U64_MASK
        v3 = rol64(v3, 21)
        v3 ^= v0
        v2 = (v2 + v1) & U64_MASK
        v1 = rol64(v1, 17)
        v1 ^= v2
        v2 = rol64(v2, 32)

    end = len(data) - (len(data) % 8)
    left = len(data) & 7
    for i in range(0, end, 8):
        m = int.from_bytes(data[i : i + 8], "little")
        v3 ^= m
        sipround()
        v0 ^= m
    tail = data[end:]
    if left >= 4:
        for j in range(left - 1, 3, -1):
            b |= tail[j] << (8 * j)
        b |= int.from_bytes(tail[0:4], "little")
    else:
        if left == 3:
            b |= tail[2] << 16
        if left >= 2:
            b |= int.from_bytes(tail[0:2], "little")
        elif left == 1:
            b |= tail[0]
    # HPOSTAMBLE
    v3 ^= b
    sipround()
    v0 ^= b
    v2 ^= 0xFF
    sipround()
    sipround()
    sipround()
    return ((v0 ^ v1) ^ (v2 ^ v3)) & U32_MASK


# ---- ip_vs_rr.c -----------------------------------------------------------------------------------


def ip_vs_rr_init_svc(svc: Service) -> int:
    svc.sched_data = svc.destinations
    return 0


def ip_vs_rr_del_dest(svc: Service, dest: Dest) -> int:
    p = svc.sched_data
    if p is dest.n_list:
        svc.sched_data = p.next.prev
    return 0


def ip_vs_rr_schedule(svc: Service, iph: Iph) -> Dest | None:
    p: ListHead = svc.sched_data
    last = p  # last = dest = list_entry(p, ...): compared by node
    node = p
    passes = 0
    while True:
        node = node.next
        while node is not svc.destinations:  # list_for_each_entry_continue_rcu
            dest = list_entry(node)
            if not (dest.flags & IP_VS_DEST_F_OVERLOAD) and dest.weight > 0:
                svc.sched_data = dest.n_list  # out:
                return dest
            if node is last:
                return None  # stop:
            node = node.next
        passes += 1
        if not (passes < 2 and p is not svc.destinations):
            break
    return None


# ---- ip_vs_wrr.c ----------------------------------------------------------------------------------


@dataclass
class WrrMark:
    cl: ListHead
    cw: int
    mw: int
    di: int


def ip_vs_wrr_gcd_weight(svc: Service) -> int:
    g = 0
    for dest in dests_of(svc):
        weight = dest.weight
        if weight > 0:
            if g > 0:  # noqa: SIM108 - kept as the C if/else
                g = c_gcd(weight, g)
            else:
                g = weight
    return g if g else 1


def ip_vs_wrr_max_weight(svc: Service) -> int:
    weight = 0
    for dest in dests_of(svc):
        new_weight = dest.weight
        if new_weight > weight:
            weight = new_weight
    return weight


def ip_vs_wrr_init_svc(svc: Service) -> int:
    di = ip_vs_wrr_gcd_weight(svc)
    mw = ip_vs_wrr_max_weight(svc) - (di - 1)
    svc.sched_data = WrrMark(cl=svc.destinations, cw=mw, mw=mw, di=di)
    return 0


def ip_vs_wrr_dest_changed(svc: Service, dest: Dest) -> int:
    mark: WrrMark = svc.sched_data
    mark.cl = svc.destinations
    mark.di = ip_vs_wrr_gcd_weight(svc)
    mark.mw = ip_vs_wrr_max_weight(svc) - (mark.di - 1)
    if mark.cw > mark.mw or not mark.cw:
        mark.cw = mark.mw
    elif mark.di > 1:
        mark.cw = int(mark.cw / mark.di) * mark.di + 1  # C division truncates toward zero
    return 0


def ip_vs_wrr_schedule(svc: Service, iph: Iph) -> Dest | None:
    mark: WrrMark = svc.sched_data
    stop: ListHead | None = None
    last_pass = False
    restarted = False
    node = mark.cl
    if mark.mw == 0:
        mark.cl = node  # err_noavail
        return None
    last = node
    while True:
        node = node.next
        while node is not svc.destinations:
            dest = list_entry(node)
            if not (dest.flags & IP_VS_DEST_F_OVERLOAD) and dest.weight >= mark.cw:
                mark.cl = node  # found:
                return dest
            if node is stop:
                mark.cl = node  # err_over:
                return None
            node = node.next
        # node is now the head (list_for_each_entry_continue ended)
        mark.cw -= mark.di
        if mark.cw <= 0:
            mark.cw = mark.mw
            if last_pass or last is svc.destinations:
                mark.cl = node  # err_over: dest is the head entry
                return None
            restarted = True
        last_pass = mark.cw <= mark.di
        if last_pass and restarted and last is not svc.destinations:
            stop = last


# ---- ip_vs_lc.c / ip_vs_wlc.c / ip_vs_sed.c / ip_vs_nq.c --------------------------------------------


def ip_vs_lc_schedule(svc: Service, iph: Iph) -> Dest | None:
    least = None
    loh = 0  # unsigned int
    for dest in dests_of(svc):
        if (dest.flags & IP_VS_DEST_F_OVERLOAD) or dest.weight == 0:
            continue
        doh = to_uint(ip_vs_dest_conn_overhead(dest))
        if least is None or doh < loh:
            least = dest
            loh = doh
    return least


def ip_vs_wlc_schedule(svc: Service, iph: Iph) -> Dest | None:
    dests = dests_of(svc)
    i = 0
    while i < len(dests):
        dest = dests[i]
        if not (dest.flags & IP_VS_DEST_F_OVERLOAD) and dest.weight > 0:
            least = dest
            loh = ip_vs_dest_conn_overhead(least)
            break
        i += 1
    else:
        return None
    for dest in dests[i + 1 :]:  # nextstage: list_for_each_entry_continue_rcu
        if dest.flags & IP_VS_DEST_F_OVERLOAD:
            continue
        doh = ip_vs_dest_conn_overhead(dest)
        if loh * dest.weight > doh * least.weight:  # (__s64) products
            least = dest
            loh = doh
    return least


def ip_vs_sed_dest_overhead(dest: Dest) -> int:
    return to_int(dest.activeconns + 1)


def ip_vs_sed_schedule(svc: Service, iph: Iph) -> Dest | None:
    dests = dests_of(svc)
    i = 0
    while i < len(dests):
        dest = dests[i]
        if not (dest.flags & IP_VS_DEST_F_OVERLOAD) and dest.weight > 0:
            least = dest
            loh = ip_vs_sed_dest_overhead(least)
            break
        i += 1
    else:
        return None
    for dest in dests[i + 1 :]:
        if dest.flags & IP_VS_DEST_F_OVERLOAD:
            continue
        doh = ip_vs_sed_dest_overhead(dest)
        if loh * dest.weight > doh * least.weight:
            least = dest
            loh = doh
    return least


def ip_vs_nq_dest_overhead(dest: Dest) -> int:
    return to_int(dest.activeconns + 1)


def ip_vs_nq_schedule(svc: Service, iph: Iph) -> Dest | None:
    least = None
    loh = 0
    for dest in dests_of(svc):
        if dest.flags & IP_VS_DEST_F_OVERLOAD or not dest.weight:
            continue
        doh = ip_vs_nq_dest_overhead(dest)
        if dest.activeconns == 0:  # return the server directly if it is idle
            return dest
        if least is None or loh * dest.weight > doh * least.weight:
            least = dest
            loh = doh
    return least


# ---- ip_vs_sh.c -----------------------------------------------------------------------------------

IP_VS_SH_TAB_BITS = 8
IP_VS_SH_TAB_SIZE = 1 << IP_VS_SH_TAB_BITS
IP_VS_SH_TAB_MASK = IP_VS_SH_TAB_SIZE - 1
IP_VS_SVC_F_SCHED_SH_FALLBACK = IP_VS_SVC_F_SCHED1
IP_VS_SVC_F_SCHED_SH_PORT = IP_VS_SVC_F_SCHED2


def sh_is_unavailable(dest: Dest) -> bool:
    return dest.weight <= 0 or bool(dest.flags & IP_VS_DEST_F_OVERLOAD)


def ip_vs_sh_hashkey(af: int, addr: bytes, port: int, offset: int) -> int:
    return to_uint(offset + hash_32(to_uint(port + addr_fold_ntohl(af, addr)), IP_VS_SH_TAB_BITS)) & (
        IP_VS_SH_TAB_MASK
    )


def ip_vs_sh_get(svc: Service, s: list[Dest | None], addr: bytes, port: int) -> Dest | None:
    hash_ = ip_vs_sh_hashkey(svc.af, addr, port, 0)
    dest = s[hash_]
    return None if (dest is None or sh_is_unavailable(dest)) else dest


def ip_vs_sh_get_fallback(svc: Service, s: list[Dest | None], addr: bytes, port: int) -> Dest | None:
    ihash = ip_vs_sh_hashkey(svc.af, addr, port, 0)
    dest = s[ihash]
    if dest is None:
        return None
    if not sh_is_unavailable(dest):
        return dest
    for offset in range(IP_VS_SH_TAB_SIZE):
        roffset = (offset + ihash) % IP_VS_SH_TAB_SIZE
        hash_ = ip_vs_sh_hashkey(svc.af, addr, port, roffset)
        dest = s[hash_]
        if dest is None:
            break
        if not sh_is_unavailable(dest):
            return dest
    return None


def ip_vs_sh_reassign(s: list[Dest | None], svc: Service) -> int:
    p = svc.destinations
    empty = list_empty(p)
    d_count = 0
    for i in range(IP_VS_SH_TAB_SIZE):
        if empty:
            s[i] = None
        else:
            if p is svc.destinations:
                p = p.next
            dest = list_entry(p)
            s[i] = dest
            d_count += 1
            if d_count >= dest.weight:  # don't move to next dest until filling weight
                p = p.next
                d_count = 0
    return 0


def ip_vs_sh_init_svc(svc: Service) -> int:
    s: list[Dest | None] = [None] * IP_VS_SH_TAB_SIZE
    svc.sched_data = s
    ip_vs_sh_reassign(s, svc)
    return 0


def ip_vs_sh_dest_changed(svc: Service, dest: Dest) -> int:
    ip_vs_sh_reassign(svc.sched_data, svc)
    return 0


def ip_vs_sh_schedule(svc: Service, iph: Iph) -> Dest | None:
    port = 0
    hash_addr = iph.saddr
    if svc.flags & IP_VS_SVC_F_SCHED_SH_PORT:
        port = iph.sport  # ip_vs_sh_get_port(): ports[0] for TCP/UDP/SCTP
    s = svc.sched_data
    if svc.flags & IP_VS_SVC_F_SCHED_SH_FALLBACK:
        return ip_vs_sh_get_fallback(svc, s, hash_addr, port)
    return ip_vs_sh_get(svc, s, hash_addr, port)


# ---- ip_vs_dh.c -----------------------------------------------------------------------------------

IP_VS_DH_TAB_BITS = 8
IP_VS_DH_TAB_SIZE = 1 << IP_VS_DH_TAB_BITS


def ip_vs_dh_hashkey(af: int, addr: bytes) -> int:
    return hash_32(addr_fold_ntohl(af, addr), IP_VS_DH_TAB_BITS)


def ip_vs_dh_reassign(s: list[Dest | None], svc: Service) -> int:
    p = svc.destinations
    empty = list_empty(p)
    for i in range(IP_VS_DH_TAB_SIZE):
        if empty:
            s[i] = None
        else:
            if p is svc.destinations:
                p = p.next
            s[i] = list_entry(p)
            p = p.next
    return 0


def ip_vs_dh_init_svc(svc: Service) -> int:
    s: list[Dest | None] = [None] * IP_VS_DH_TAB_SIZE
    svc.sched_data = s
    ip_vs_dh_reassign(s, svc)
    return 0


def ip_vs_dh_dest_changed(svc: Service, dest: Dest) -> int:
    ip_vs_dh_reassign(svc.sched_data, svc)
    return 0


def ip_vs_dh_schedule(svc: Service, iph: Iph) -> Dest | None:
    s: list[Dest | None] = svc.sched_data
    dest = s[ip_vs_dh_hashkey(svc.af, iph.daddr)]
    if (
        dest is None
        or not (dest.flags & IP_VS_DEST_F_AVAILABLE)
        or dest.weight <= 0
        or (dest.flags & IP_VS_DEST_F_OVERLOAD)
    ):
        return None
    return dest


# ---- ip_vs_mh.c -----------------------------------------------------------------------------------

PRIMES = [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071]
CONFIG_IP_VS_MH_TAB_INDEX = 12
IP_VS_MH_TAB_BITS = CONFIG_IP_VS_MH_TAB_INDEX // 2
IP_VS_MH_TAB_INDEX = CONFIG_IP_VS_MH_TAB_INDEX - 8
IP_VS_MH_TAB_SIZE = PRIMES[IP_VS_MH_TAB_INDEX]
IP_VS_SVC_F_SCHED_MH_FALLBACK = IP_VS_SVC_F_SCHED1
IP_VS_SVC_F_SCHED_MH_PORT = IP_VS_SVC_F_SCHED2


@dataclass
class MhDestSetup:
    offset: int = 0
    skip: int = 0
    perm: int = 0
    turns: int = 0


@dataclass
class MhState:
    lookup: list[Dest | None]
    hash1: tuple[int, int] = (2654435761, 2654435761)  # generate_hash_secret()
    hash2: tuple[int, int] = (2654446892, 2654446892)
    gcd: int = 0
    rshift: int = 0
    dest_setup: list[MhDestSetup] | None = None


def mh_is_unavailable(dest: Dest) -> bool:
    return dest.weight <= 0 or bool(dest.flags & IP_VS_DEST_F_OVERLOAD)


def ip_vs_mh_hashkey(af: int, addr: bytes, port: int, key: tuple[int, int], offset: int) -> int:
    v = to_uint(offset + port + addr_fold_ntohl(af, addr))
    return hsiphash(v.to_bytes(4, "little"), key)  # &v on little-endian x86


def ip_vs_mh_reset(s: MhState) -> None:
    for i in range(IP_VS_MH_TAB_SIZE):
        s.lookup[i] = None


def ip_vs_mh_permutate(s: MhState, svc: Service) -> int:
    if s.gcd < 1:
        return 0
    assert s.dest_setup is not None
    for k, dest in enumerate(dests_of(svc)):
        ds = s.dest_setup[k]
        ds.offset = ip_vs_mh_hashkey(svc.af, dest.addr, dest.port, s.hash1, 0) % IP_VS_MH_TAB_SIZE
        ds.skip = ip_vs_mh_hashkey(svc.af, dest.addr, dest.port, s.hash2, 0) % (IP_VS_MH_TAB_SIZE - 1) + 1
        ds.perm = ds.offset
        lw = dest.last_weight
        ds.turns = ((int(lw / s.gcd)) >> s.rshift) or int(lw != 0)
    return 0


def ip_vs_mh_populate(s: MhState, svc: Service) -> int:
    if s.gcd < 1:
        ip_vs_mh_reset(s)
        return 0
    assert s.dest_setup is not None
    table = [False] * IP_VS_MH_TAB_SIZE
    p = svc.destinations
    n = 0
    dt_count = 0
    while n < IP_VS_MH_TAB_SIZE:
        if p is svc.destinations:
            p = p.next
        k = 0
        while p is not svc.destinations:
            ds = s.dest_setup[k]
            if ds.turns < 1:  # ignore added server with zero weight
                p = p.next
                k += 1
                continue
            c = ds.perm
            while table[c]:
                ds.perm += ds.skip
                if ds.perm >= IP_VS_MH_TAB_SIZE:
                    ds.perm -= IP_VS_MH_TAB_SIZE
                c = ds.perm
            table[c] = True
            s.lookup[c] = list_entry(p)
            n += 1
            if n == IP_VS_MH_TAB_SIZE:
                return 0
            dt_count += 1
            if dt_count >= ds.turns:
                dt_count = 0
                p = p.next
                k += 1
    return 0


def ip_vs_mh_reassign(s: MhState, svc: Service) -> int:
    if svc.num_dests > IP_VS_MH_TAB_SIZE:
        return -22  # -EINVAL
    if svc.num_dests >= 1:
        s.dest_setup = [MhDestSetup() for _ in range(svc.num_dests)]
    ip_vs_mh_permutate(s, svc)
    ret = ip_vs_mh_populate(s, svc)
    if svc.num_dests >= 1:
        s.dest_setup = None
    return ret


def ip_vs_mh_gcd_weight(svc: Service) -> int:
    g = 0
    for dest in dests_of(svc):
        weight = dest.last_weight
        if weight > 0:
            g = c_gcd(weight, g) if g > 0 else weight
    return g


def ip_vs_mh_shift_weight(svc: Service, gcd: int) -> int:
    if gcd < 1:
        return 0
    weight = 0
    for dest in dests_of(svc):
        new_weight = dest.last_weight
        if new_weight > weight:
            weight = new_weight
    mw = int(weight / gcd)
    shift = fls(mw) - IP_VS_MH_TAB_BITS
    return shift if shift >= 0 else 0


def ip_vs_mh_init_svc(svc: Service) -> int:
    s = MhState(lookup=[None] * IP_VS_MH_TAB_SIZE)
    s.gcd = ip_vs_mh_gcd_weight(svc)
    s.rshift = ip_vs_mh_shift_weight(svc, s.gcd)
    ret = ip_vs_mh_reassign(s, svc)
    if ret < 0:
        return ret
    svc.sched_data = s
    return 0


def ip_vs_mh_dest_changed(svc: Service, dest: Dest) -> int:
    s: MhState = svc.sched_data
    s.gcd = ip_vs_mh_gcd_weight(svc)
    s.rshift = ip_vs_mh_shift_weight(svc, s.gcd)
    return ip_vs_mh_reassign(s, svc)


def ip_vs_mh_get(svc: Service, s: MhState, addr: bytes, port: int) -> Dest | None:
    hash_ = ip_vs_mh_hashkey(svc.af, addr, port, s.hash1, 0) % IP_VS_MH_TAB_SIZE
    dest = s.lookup[hash_]
    return None if (dest is None or mh_is_unavailable(dest)) else dest


def ip_vs_mh_get_fallback(svc: Service, s: MhState, addr: bytes, port: int) -> Dest | None:
    ihash = ip_vs_mh_hashkey(svc.af, addr, port, s.hash1, 0) % IP_VS_MH_TAB_SIZE
    dest = s.lookup[ihash]
    if dest is None:
        return None
    if not mh_is_unavailable(dest):
        return dest
    for offset in range(IP_VS_MH_TAB_SIZE):
        roffset = (offset + ihash) % IP_VS_MH_TAB_SIZE
        hash_ = ip_vs_mh_hashkey(svc.af, addr, port, s.hash1, roffset) % IP_VS_MH_TAB_SIZE
        dest = s.lookup[hash_]
        if dest is None:
            break
        if not mh_is_unavailable(dest):
            return dest
    return None


def ip_vs_mh_schedule(svc: Service, iph: Iph) -> Dest | None:
    port = 0
    hash_addr = iph.saddr
    if svc.flags & IP_VS_SVC_F_SCHED_MH_PORT:
        port = iph.sport
    s = svc.sched_data
    if svc.flags & IP_VS_SVC_F_SCHED_MH_FALLBACK:
        return ip_vs_mh_get_fallback(svc, s, hash_addr, port)
    return ip_vs_mh_get(svc, s, hash_addr, port)


# ---- ip_vs_fo.c / ip_vs_ovf.c / ip_vs_twos.c --------------------------------------------------------


def ip_vs_fo_schedule(svc: Service, iph: Iph) -> Dest | None:
    hweight = None
    hw = 0  # track highest weight
    for dest in dests_of(svc):
        if not (dest.flags & IP_VS_DEST_F_OVERLOAD) and dest.weight > hw:
            hweight = dest
            hw = dest.weight
    if hweight is not None:
        return hweight
    return None  # ip_vs_scheduler_err()


def ip_vs_ovf_schedule(svc: Service, iph: Iph) -> Dest | None:
    h = None
    hw = 0
    for dest in dests_of(svc):
        w = dest.weight
        if (dest.flags & IP_VS_DEST_F_OVERLOAD) or dest.activeconns > w or w == 0:
            continue
        if h is None or w > hw:
            h = dest
            hw = w
    if h is not None:
        return h
    return None


def ip_vs_twos_schedule(svc: Service, iph: Iph) -> Dest | None:
    choice1 = None
    choice2 = None
    weight1 = -1
    weight2 = -1
    overhead1 = 0
    overhead2 = 0  # uninitialised in C; only read when choice2 is set
    total_weight = 0
    for dest in dests_of(svc):
        if not (dest.flags & IP_VS_DEST_F_OVERLOAD):
            weight = dest.weight
            if weight > 0:
                total_weight = to_int(total_weight + weight)
                choice1 = dest
    if choice1 is None:
        return None
    total_weight = to_int(total_weight + 1)
    rweight1 = to_int(get_random_u32_below(svc.ipvs, total_weight))
    rweight2 = to_int(get_random_u32_below(svc.ipvs, total_weight))
    for dest in dests_of(svc):
        if dest.flags & IP_VS_DEST_F_OVERLOAD:
            continue
        weight = dest.weight
        if weight <= 0:
            continue
        rweight1 = to_int(rweight1 - weight)
        rweight2 = to_int(rweight2 - weight)
        if rweight1 <= 0 and weight1 == -1:
            choice1 = dest
            weight1 = weight
            overhead1 = ip_vs_dest_conn_overhead(dest)
        if rweight2 <= 0 and weight2 == -1:
            choice2 = dest
            weight2 = weight
            overhead2 = ip_vs_dest_conn_overhead(dest)
        if weight1 != -1 and weight2 != -1:
            break  # goto nextstage
    if choice2 is not None and to_int(weight2 * overhead1) > to_int(weight1 * overhead2):
        choice1 = choice2
    return choice1


# ---- ip_vs_lblc.c -----------------------------------------------------------------------------------

CHECK_EXPIRE_INTERVAL = 60 * HZ
ENTRY_TIMEOUT = 6 * 60 * HZ
COUNT_FOR_FULL_EXPIRATION = 30


def ip_vs_addr_equal(af: int, a: bytes, b: bytes) -> bool:
    if af == AF_INET6:
        return a[:16] == b[:16]
    return a[:4] == b[:4]


def is_overloaded(dest: Dest, svc: Service) -> bool:
    """lblc's and lblcr's (identical) is_overloaded()."""
    if dest.activeconns > dest.weight:
        for d in dests_of(svc):
            if to_int(d.activeconns * 2) < d.weight:
                return True
    return False


def lblx_schedule_wlc(svc: Service) -> Dest | None:
    """__ip_vs_lblc_schedule() and __ip_vs_lblcr_schedule() (identical)."""
    dests = dests_of(svc)
    i = 0
    while i < len(dests):
        dest = dests[i]
        if dest.flags & IP_VS_DEST_F_OVERLOAD:
            i += 1
            continue
        if dest.weight > 0:
            least = dest
            loh = ip_vs_dest_conn_overhead(least)
            break
        i += 1
    else:
        return None
    for dest in dests[i + 1 :]:  # nextstage
        if dest.flags & IP_VS_DEST_F_OVERLOAD:
            continue
        doh = ip_vs_dest_conn_overhead(dest)
        if loh * dest.weight > doh * least.weight:
            least = dest
            loh = doh
    return least


@dataclass(eq=False)
class LblcEntry:
    af: int
    addr: bytes
    dest: Dest
    lastuse: int


E = TypeVar("E")  # the entry: LblcEntry or LblcrEntry


@dataclass(eq=False)
class LblcTable(Generic[E]):
    bits: int
    bucket: list[list[E]]  # hlist_head[]: index 0 is the first node
    periodic_timer: TimerList
    svc: Service
    entries: int = 0
    max_size: int = 0
    rover: int = 0
    counter: int = 1
    dead: bool = False


def ip_vs_lblc_hashkey(tbl: LblcTable[E], af: int, addr: bytes) -> int:
    return hash_32(addr_fold_ntohl(af, addr), tbl.bits)


def ip_vs_lblc_del(tbl: LblcTable[LblcEntry], en: LblcEntry, hash_: int) -> None:
    tbl.bucket[hash_].remove(en)  # hlist_del_rcu; the entry is freed after a grace period


def ip_vs_lblc_hash(tbl: LblcTable[LblcEntry], en: LblcEntry) -> None:
    h = ip_vs_lblc_hashkey(tbl, en.af, en.addr)
    tbl.bucket[h].insert(0, en)  # hlist_add_head_rcu
    tbl.entries += 1


def ip_vs_lblc_get(af: int, tbl: LblcTable[LblcEntry], addr: bytes) -> LblcEntry | None:
    h = ip_vs_lblc_hashkey(tbl, af, addr)
    for en in tbl.bucket[h]:
        if ip_vs_addr_equal(af, en.addr, addr):
            return en
    return None


def ip_vs_lblc_new(tbl: LblcTable[LblcEntry], daddr: bytes, af: int, dest: Dest) -> LblcEntry | None:
    en = ip_vs_lblc_get(af, tbl, daddr)
    if en is not None:
        if en.dest is dest:
            return en
        ip_vs_lblc_del(tbl, en, ip_vs_lblc_hashkey(tbl, af, daddr))  # no atomic_dec here
    en = LblcEntry(af=af, addr=daddr, dest=dest, lastuse=tbl.svc.ipvs.jiffies)
    ip_vs_lblc_hash(tbl, en)
    return en


def ip_vs_lblc_full_check(svc: Service) -> None:
    tbl: LblcTable[LblcEntry] = svc.sched_data
    now = svc.ipvs.jiffies
    mask = (1 << tbl.bits) - 1
    j = tbl.rover
    for _ in range(1 << tbl.bits):
        j = (j + 1) & mask
        for en in list(tbl.bucket[j]):  # hlist_for_each_entry_safe
            if time_before(now, en.lastuse + svc.ipvs.sysctl_lblc_expiration):
                continue
            ip_vs_lblc_del(tbl, en, j)
            tbl.entries -= 1
    tbl.rover = j


def ip_vs_lblc_check_expire(t: TimerList) -> None:
    tbl: LblcTable[LblcEntry] = t.function.tbl
    svc = tbl.svc
    now = svc.ipvs.jiffies
    mask = (1 << tbl.bits) - 1
    if tbl.counter % COUNT_FOR_FULL_EXPIRATION == 0:
        ip_vs_lblc_full_check(svc)
        tbl.counter = 1
    elif tbl.entries <= tbl.max_size:
        tbl.counter += 1
    else:
        goal = int((tbl.entries - tbl.max_size) * 4 / 3)
        if goal > int(tbl.max_size / 2):
            goal = int(tbl.max_size / 2)
        j = tbl.rover
        for _ in range(1 << tbl.bits):
            j = (j + 1) & mask
            for en in list(tbl.bucket[j]):
                if time_before(now, en.lastuse + ENTRY_TIMEOUT):
                    continue
                ip_vs_lblc_del(tbl, en, j)
                tbl.entries -= 1
                goal -= 1
            if goal <= 0:
                break
        tbl.rover = j
    mod_timer(svc.ipvs, tbl.periodic_timer, svc.ipvs.jiffies + CHECK_EXPIRE_INTERVAL)  # out:


class _TimerFn:
    """timer_setup(): the callback, with from_timer()'s way back to the table."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.tbl: Any = None

    def __call__(self, t: TimerList) -> None:
        self.fn(t)


def ip_vs_lblc_init_svc(svc: Service) -> int:
    bits = svc.ipvs.lblc_tab_bits
    fn = _TimerFn(ip_vs_lblc_check_expire)
    tbl: LblcTable[LblcEntry] = LblcTable(
        bits=bits, bucket=[[] for _ in range(1 << bits)], periodic_timer=TimerList(fn), svc=svc
    )
    fn.tbl = tbl
    svc.sched_data = tbl
    tbl.max_size = (1 << bits) * 16
    tbl.rover = 0
    tbl.counter = 1
    tbl.dead = False
    tbl.entries = 0
    mod_timer(svc.ipvs, tbl.periodic_timer, svc.ipvs.jiffies + CHECK_EXPIRE_INTERVAL)
    return 0


def ip_vs_lblc_schedule(svc: Service, iph: Iph) -> Dest | None:
    tbl: LblcTable[LblcEntry] = svc.sched_data
    en = ip_vs_lblc_get(svc.af, tbl, iph.daddr)
    dest: Dest | None
    if en is not None:
        en.lastuse = svc.ipvs.jiffies
        dest = en.dest
        if (dest.flags & IP_VS_DEST_F_AVAILABLE) and dest.weight > 0 and not is_overloaded(dest, svc):
            return dest  # goto out
    dest = lblx_schedule_wlc(svc)
    if dest is None:
        return None
    if not tbl.dead:
        ip_vs_lblc_new(tbl, iph.daddr, svc.af, dest)
    return dest


# ---- ip_vs_lblcr.c ----------------------------------------------------------------------------------


@dataclass(eq=False)
class DestSet:
    """struct ip_vs_dest_set: `list` holds the element dests, index 0 first (list_add_rcu at the head)."""

    size: int = 0
    lastmod: int = 0
    list: list[Dest] = field(default_factory=list)


def ip_vs_dest_set_insert(ipvs: NetnsIpvs, set_: DestSet, dest: Dest, check: bool) -> None:
    if check:
        for e in set_.list:
            if e is dest:
                return
    set_.list.insert(0, dest)
    set_.size += 1
    set_.lastmod = ipvs.jiffies


def ip_vs_dest_set_erase(ipvs: NetnsIpvs, set_: DestSet, dest: Dest) -> None:
    for e in set_.list:
        if e is dest:
            set_.size -= 1
            set_.lastmod = ipvs.jiffies
            set_.list.remove(e)
            break


def ip_vs_dest_set_min(set_: DestSet) -> Dest | None:
    elems = set_.list
    i = 0
    while i < len(elems):
        least = elems[i]
        if least.flags & IP_VS_DEST_F_OVERLOAD:
            i += 1
            continue
        if least.weight > 0 and (least.flags & IP_VS_DEST_F_AVAILABLE):
            loh = ip_vs_dest_conn_overhead(least)
            break
        i += 1
    else:
        return None
    for dest in elems[i + 1 :]:  # nextstage
        if dest.flags & IP_VS_DEST_F_OVERLOAD:
            continue
        doh = ip_vs_dest_conn_overhead(dest)
        if (loh * dest.weight > doh * least.weight) and (dest.flags & IP_VS_DEST_F_AVAILABLE):
            least = dest
            loh = doh
    return least


def ip_vs_dest_set_max(set_: DestSet | None) -> Dest | None:
    if set_ is None:
        return None
    elems = set_.list
    i = 0
    while i < len(elems):
        most = elems[i]
        if most.weight > 0:
            moh = ip_vs_dest_conn_overhead(most)
            break
        i += 1
    else:
        return None
    for dest in elems[i + 1 :]:
        doh = ip_vs_dest_conn_overhead(dest)
        if (moh * dest.weight < doh * most.weight) and (dest.weight > 0):
            most = dest
            moh = doh
    return most


@dataclass(eq=False)
class LblcrEntry:
    af: int
    addr: bytes
    set: DestSet
    lastuse: int


def ip_vs_lblcr_new(tbl: LblcTable[LblcrEntry], daddr: bytes, af: int, dest: Dest) -> LblcrEntry:
    ipvs = tbl.svc.ipvs
    en = ip_vs_lblcr_get(af, tbl, daddr)
    if en is None:
        en = LblcrEntry(af=af, addr=daddr, set=DestSet(), lastuse=ipvs.jiffies)
        ip_vs_dest_set_insert(ipvs, en.set, dest, False)
        h = ip_vs_lblc_hashkey(tbl, en.af, en.addr)  # ip_vs_lblcr_hashkey is the same hash_32
        tbl.bucket[h].insert(0, en)
        tbl.entries += 1
        return en
    ip_vs_dest_set_insert(ipvs, en.set, dest, True)
    return en


def ip_vs_lblcr_get(af: int, tbl: LblcTable[LblcrEntry], addr: bytes) -> LblcrEntry | None:
    h = ip_vs_lblc_hashkey(tbl, af, addr)
    for en in tbl.bucket[h]:
        if ip_vs_addr_equal(af, en.addr, addr):
            return en
    return None


def ip_vs_lblcr_free(tbl: LblcTable[LblcrEntry], en: LblcrEntry, hash_: int) -> None:
    tbl.bucket[hash_].remove(en)  # hlist_del_rcu + ip_vs_dest_set_eraseall


def ip_vs_lblcr_full_check(svc: Service) -> None:
    tbl: LblcTable[LblcrEntry] = svc.sched_data
    now = svc.ipvs.jiffies
    mask = (1 << tbl.bits) - 1
    j = tbl.rover
    for _ in range(1 << tbl.bits):
        j = (j + 1) & mask
        for en in list(tbl.bucket[j]):
            if time_after(en.lastuse + svc.ipvs.sysctl_lblcr_expiration, now):
                continue
            ip_vs_lblcr_free(tbl, en, j)
            tbl.entries -= 1
    tbl.rover = j


def ip_vs_lblcr_check_expire(t: TimerList) -> None:
    tbl: LblcTable[LblcrEntry] = t.function.tbl
    svc = tbl.svc
    now = svc.ipvs.jiffies
    mask = (1 << tbl.bits) - 1
    if tbl.counter % COUNT_FOR_FULL_EXPIRATION == 0:
        ip_vs_lblcr_full_check(svc)
        tbl.counter = 1
    elif tbl.entries <= tbl.max_size:
        tbl.counter += 1
    else:
        goal = int((tbl.entries - tbl.max_size) * 4 / 3)
        if goal > int(tbl.max_size / 2):
            goal = int(tbl.max_size / 2)
        j = tbl.rover
        for _ in range(1 << tbl.bits):
            j = (j + 1) & mask
            for en in list(tbl.bucket[j]):
                if time_before(now, en.lastuse + ENTRY_TIMEOUT):
                    continue
                ip_vs_lblcr_free(tbl, en, j)
                tbl.entries -= 1
                goal -= 1
            if goal <= 0:
                break
        tbl.rover = j
    mod_timer(svc.ipvs, tbl.periodic_timer, svc.ipvs.jiffies + CHECK_EXPIRE_INTERVAL)


def ip_vs_lblcr_init_svc(svc: Service) -> int:
    bits = svc.ipvs.lblcr_tab_bits
    fn = _TimerFn(ip_vs_lblcr_check_expire)
    tbl: LblcTable[LblcrEntry] = LblcTable(
        bits=bits, bucket=[[] for _ in range(1 << bits)], periodic_timer=TimerList(fn), svc=svc
    )
    fn.tbl = tbl
    svc.sched_data = tbl
    tbl.max_size = (1 << bits) * 16
    tbl.rover = 0
    tbl.counter = 1
    tbl.dead = False
    tbl.entries = 0
    mod_timer(svc.ipvs, tbl.periodic_timer, svc.ipvs.jiffies + CHECK_EXPIRE_INTERVAL)
    return 0


def ip_vs_lblcr_schedule(svc: Service, iph: Iph) -> Dest | None:
    tbl: LblcTable[LblcrEntry] = svc.sched_data
    ipvs = svc.ipvs
    en = ip_vs_lblcr_get(svc.af, tbl, iph.daddr)
    if en is not None:
        en.lastuse = ipvs.jiffies
        dest = ip_vs_dest_set_min(en.set)
        if en.set.size > 1 and time_after(ipvs.jiffies, en.set.lastmod + ipvs.sysctl_lblcr_expiration):  # noqa: SIM102
            if en.set.size > 1:  # checked again under svc->sched_lock
                m = ip_vs_dest_set_max(en.set)
                if m is not None:
                    ip_vs_dest_set_erase(ipvs, en.set, m)
        if dest is not None and not is_overloaded(dest, svc):
            return dest  # goto out
        dest = lblx_schedule_wlc(svc)
        if dest is None:
            return None
        if not tbl.dead:
            ip_vs_dest_set_insert(ipvs, en.set, dest, True)
        return dest
    dest = lblx_schedule_wlc(svc)
    if dest is None:
        return None
    if not tbl.dead:
        ip_vs_lblcr_new(tbl, iph.daddr, svc.af, dest)
    return dest


# ---- struct ip_vs_scheduler table and the ip_vs_ctl.c update path ----------------------------------


@dataclass(frozen=True)
class Iph:
    """The parts of struct ip_vs_iphdr / the skb that schedulers read (host-order ports)."""

    saddr: bytes
    sport: int
    daddr: bytes
    dport: int


@dataclass(frozen=True)
class SchedulerOps:
    """struct ip_vs_scheduler: the hooks a scheduler registers (None = not set)."""

    init_service: Any
    add_dest: Any
    del_dest: Any
    upd_dest: Any
    schedule: Any


SCHEDULERS = {
    "rr": SchedulerOps(ip_vs_rr_init_svc, None, ip_vs_rr_del_dest, None, ip_vs_rr_schedule),
    "wrr": SchedulerOps(
        ip_vs_wrr_init_svc,
        ip_vs_wrr_dest_changed,
        ip_vs_wrr_dest_changed,
        ip_vs_wrr_dest_changed,
        ip_vs_wrr_schedule,
    ),
    "lc": SchedulerOps(None, None, None, None, ip_vs_lc_schedule),
    "wlc": SchedulerOps(None, None, None, None, ip_vs_wlc_schedule),
    "sed": SchedulerOps(None, None, None, None, ip_vs_sed_schedule),
    "nq": SchedulerOps(None, None, None, None, ip_vs_nq_schedule),
    "sh": SchedulerOps(
        ip_vs_sh_init_svc,
        ip_vs_sh_dest_changed,
        ip_vs_sh_dest_changed,
        ip_vs_sh_dest_changed,
        ip_vs_sh_schedule,
    ),
    # ip_vs_dh.c registers add_dest and del_dest only (no upd_dest).
    "dh": SchedulerOps(
        ip_vs_dh_init_svc, ip_vs_dh_dest_changed, ip_vs_dh_dest_changed, None, ip_vs_dh_schedule
    ),
    "mh": SchedulerOps(
        ip_vs_mh_init_svc,
        ip_vs_mh_dest_changed,
        ip_vs_mh_dest_changed,
        ip_vs_mh_dest_changed,
        ip_vs_mh_schedule,
    ),
    "lblc": SchedulerOps(ip_vs_lblc_init_svc, None, None, None, ip_vs_lblc_schedule),
    "lblcr": SchedulerOps(ip_vs_lblcr_init_svc, None, None, None, ip_vs_lblcr_schedule),
    "fo": SchedulerOps(None, None, None, None, ip_vs_fo_schedule),
    "ovf": SchedulerOps(None, None, None, None, ip_vs_ovf_schedule),
    "twos": SchedulerOps(None, None, None, None, ip_vs_twos_schedule),
}


def ip_vs_bind_scheduler(svc: Service) -> None:
    """ip_vs_sched.c: call init_service when the service gets its scheduler."""
    ops = SCHEDULERS[svc.scheduler]
    if ops.init_service is not None:
        ops.init_service(svc)


def ip_vs_add_dest(svc: Service, dest: Dest, weight: int) -> None:
    """__ip_vs_update_dest(svc, dest, udest, add=1) for a new destination or one taken back from the
    trash (ip_vs_trash_get_dest: same address, port and service), with u_threshold 0."""
    dest.last_weight = weight  # keep the last_weight with latest non-0 weight (add)
    dest.weight = weight
    dest.flags |= IP_VS_DEST_F_AVAILABLE
    dest.flags &= ~IP_VS_DEST_F_OVERLOAD  # !udest->u_threshold
    list_add_rcu(dest.n_list, svc.destinations)
    svc.num_dests += 1
    ops = SCHEDULERS[svc.scheduler]
    if ops.add_dest is not None:
        ops.add_dest(svc, dest)


def ip_vs_edit_dest(svc: Service, dest: Dest, weight: int) -> None:
    """__ip_vs_update_dest(svc, dest, udest, add=0)."""
    if weight != 0:
        dest.last_weight = weight
    dest.weight = weight
    dest.flags |= IP_VS_DEST_F_AVAILABLE
    dest.flags &= ~IP_VS_DEST_F_OVERLOAD  # !udest->u_threshold
    ops = SCHEDULERS[svc.scheduler]
    if ops.upd_dest is not None:
        ops.upd_dest(svc, dest)


def ip_vs_del_dest(svc: Service, dest: Dest) -> None:
    """__ip_vs_unlink_dest(svc, dest, svcupd=1)."""
    list_del_rcu(dest.n_list)
    svc.num_dests -= 1
    dest.flags &= ~IP_VS_DEST_F_AVAILABLE
    ops = SCHEDULERS[svc.scheduler]
    if ops.del_dest is not None:
        ops.del_dest(svc, dest)


def ip_vs_schedule(svc: Service, iph: Iph) -> Dest | None:
    """svc->scheduler->schedule(svc, skb, iph)."""
    result: Dest | None = SCHEDULERS[svc.scheduler].schedule(svc, iph)
    return result
