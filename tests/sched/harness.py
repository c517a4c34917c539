"""Drives a gridlb scheduler and the kernel transcription (kernel_ref) with the same random operations.

One hypothesis run per scheduler generates a service (address family, flags), an initial destination
list bound with init_service (as `ipvsadm -E -s NAME` does), then a sequence of destination adds,
deletes, weight edits, counter/overload changes and picks. The gridlb side keeps its own
destination list (newest first, last_weight as ip_vs_ctl.c keeps it) and sees only DestView values;
the reference side runs the transcribed C. Every pick must name the same destination.

Time passes only after a pick (each pick op carries the seconds to wait after it), so the
scheduler is bound, as in the kernel, at the time of the first pick, when gridlb's lblc/lblcr arm
their GC timer. A deleted destination goes to the kernel's trash and comes back from it (same
struct, same counters) when it is added again. Its counters stay as the scheduler last saw them in a
list (lblcr reads a deleted member's counters; gridlb knows them only from the lists it is given).
twos draws from two copies of one seeded stream of 32-bit numbers, one per side.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridlb.sched import DestView, Flow, Scheduler, create_scheduler
from gridlb.sched.lblc import LocalityBasedLeastConnection
from gridlb.sched.lblcr import LocalityBasedLeastConnectionReplication
from gridlb.sched.twos import TwoRandomChoices
from gridlb.table import IPAddress, RealKey
from tests.sched import kernel_ref as k

Op = tuple[object, ...]
FLAG_BITS = {"flag-1": k.IP_VS_SVC_F_SCHED1, "flag-2": k.IP_VS_SVC_F_SCHED2}
FLAG_NAMES = {
    "sh": ("sh-fallback", "sh-port"),
    "mh": ("mh-fallback", "mh-port"),
}


@dataclass
class Counts:
    """How many picks were compared (the acceptance asks for >= 10,000 per scheduler)."""

    picks: int = 0
    non_null: int = 0
    examples: int = 0
    picked: list[RealKey | None] = field(default_factory=list)  # kept only when `keep` is set
    keep: bool = False


@dataclass
class Mirror:
    """gridlb's side: its own destination list in kernel order and the scheduler under test."""

    dests: list[DestView] = field(default_factory=list)

    def index(self, key: RealKey) -> int:
        return next(i for i, d in enumerate(self.dests) if d.key == key)


def _weight(rng: random.Random, big: bool, zero_p: float) -> int:
    r = rng.random()
    if r < zero_p:
        return 0
    if big and r > 0.8:
        return rng.randint(1, 700)
    return rng.randint(1, 6)


def _counter(rng: random.Random, big: bool) -> int:
    r = rng.random()
    if big and r > 0.9:
        return rng.choice([rng.randint(0, 2**31 - 1), rng.randint(2**22, 2**24)])
    if r > 0.7:
        return rng.randint(0, 3000)
    return rng.randint(0, 12)


def _addr(rng: random.Random, af: int) -> IPAddress:
    if af == 4:
        return IPv4Address(
            0x0A000001 + rng.randint(0, 15) if rng.random() < 0.6 else rng.randint(1, 2**32 - 2)
        )
    if rng.random() < 0.6:
        return IPv6Address((0xFD00 << 112) + 1 + rng.randint(0, 15))
    return IPv6Address(rng.randint(1, 2**128 - 2))


def _port(rng: random.Random) -> int:
    return rng.choice([2811, 80]) if rng.random() < 0.5 else rng.randint(0, 65535)


def _dt(rng: random.Random, grid: bool) -> float:
    """Seconds to wait after a pick: mostly none or a little, sometimes past the GC and expiry times.

    On the `grid`, only whole steps, so that picks land on GC runs and expiry edges to the jiffy.
    """
    r = rng.random()
    if r < 0.4:
        return 0.0
    if rng.random() < 0.01:
        return 86400.0
    if grid or r < 0.6:
        return float(rng.choice([1, 5, 20, 20, 20, 20, 60, 60, 60, 120, 360, 360, 600, 1780, 1800]))
    if r < 0.8:
        return rng.uniform(0, 3)
    if r < 0.98:
        return rng.uniform(0, 900)
    return rng.uniform(0, 26 * 3600)


def draws(seed: int) -> Iterator[int]:
    """An endless stream of 32-bit numbers, with extremes that send get_random_u32_below to rejection."""
    rng = random.Random(seed)
    while True:
        yield rng.choice([0, 1, 2, 3, 0xFFFFFFFF]) if rng.random() < 0.2 else rng.getrandbits(32)


def gen_ops(
    rng: random.Random, af: int, n_initial: int, n_ops: int, churn: float, big: bool, zero_p: float
) -> list[Op]:
    """Return an initial destination list and `n_ops` operations.

    `churn` is the share of list changes, `zero_p` the chance of weight 0 (also of an overload).
    """
    grid = rng.random() < 0.5
    hot = [_addr(rng, af) for _ in range(3)] if rng.random() < 0.5 else []  # few virtual addresses (lblc)
    seq: list[Op] = [
        ("init", [("add", _addr(rng, af), _port(rng), _weight(rng, big, zero_p)) for _ in range(n_initial)])
    ]
    for _ in range(n_ops):
        r = rng.random()
        if r < churn:
            kind = rng.choice(["add", "add", "del", "edit"])
            if kind == "add":
                seq.append(("add", _addr(rng, af), _port(rng), _weight(rng, big, zero_p)))
            elif kind == "del":
                seq.append(("del", rng.randint(0, 63)))
            else:
                seq.append(("edit", rng.randint(0, 63), _weight(rng, big, zero_p)))
        elif r < churn + 0.15:
            over = rng.random() < zero_p * 1.5
            seq.append(("counters", rng.randint(0, 63), _counter(rng, big), _counter(rng, big), over))
        else:
            vaddr = rng.choice(hot) if hot and rng.random() < 0.8 else _addr(rng, af)
            seq.append(("pick", _addr(rng, af), _port(rng), vaddr, _port(rng), _dt(rng, grid)))
    return seq


def _added(op: Op) -> tuple[IPAddress, int, int]:
    """The (address, port, weight) of an "add" op."""
    _, addr, port, weight = op
    assert isinstance(addr, IPv4Address | IPv6Address) and isinstance(port, int) and isinstance(weight, int)
    return addr, port, weight


@dataclass(frozen=True)
class Setup:
    """Kernel settings of one scenario: lblc/lblcr table bits and expiration (s), twos' random stream."""

    tab_bits: int = 10
    expiration_s: int = 24 * 60 * 60
    draw_seed: int = 0


@st.composite
def scenarios(
    draw: st.DrawFn, name: str, n_ops: int, churn: float, zero_p: float
) -> tuple[int, frozenset[str], list[Op], Setup]:
    """A service (family, scheduler flags, settings) and an operation sequence grown from a drawn seed."""
    af = draw(st.sampled_from([4, 6]))
    names = FLAG_NAMES.get(name, ())
    flags = frozenset(draw(st.sets(st.sampled_from(names)))) if names else frozenset()
    n_initial = draw(st.one_of(st.integers(0, 4), st.integers(0, 12), st.integers(0, 40)))
    big = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    setup = Setup(
        tab_bits=draw(st.sampled_from([10, 1, 0])),
        expiration_s=draw(st.sampled_from([24 * 60 * 60, 600, 20])),
        draw_seed=draw(st.integers(0, 2**32 - 1)),
    )
    return af, flags, gen_ops(random.Random(seed), af, n_initial, n_ops, churn, big, zero_p), setup


def make_scheduler(name: str, flags: frozenset[str], setup: Setup) -> Scheduler:
    """gridlb's scheduler for `name`, built with the scenario's kernel settings where it has any."""
    if name == "lblc":
        return LocalityBasedLeastConnection(flags, tab_bits=setup.tab_bits, expiration_s=setup.expiration_s)
    if name == "lblcr":
        return LocalityBasedLeastConnectionReplication(
            flags, tab_bits=setup.tab_bits, expiration_s=setup.expiration_s
        )
    if name == "twos":
        return TwoRandomChoices(flags, random_u32=draws(setup.draw_seed).__next__)
    return create_scheduler(name, flags)


def _bits(name: str, flags: frozenset[str]) -> int:
    bits = 0
    for i, n in enumerate(FLAG_NAMES.get(name, ())):
        if n in flags:
            bits |= FLAG_BITS[f"flag-{i + 1}"]
    return bits


def _ref_key(dest: k.Dest | None) -> RealKey | None:
    if dest is None:
        return None
    return RealKey(ip_address(dest.addr), dest.port)


def run_scenario(
    name: str, af: int, flags: frozenset[str], seq: list[Op], counts: Counts, setup: Setup = Setup()
) -> None:
    """Apply `seq` to both sides and assert every pick agrees."""
    ipvs = k.NetnsIpvs(
        sysctl_lblc_expiration=setup.expiration_s * k.HZ,
        sysctl_lblcr_expiration=setup.expiration_s * k.HZ,
        random_u32=draws(setup.draw_seed).__next__,
        lblc_tab_bits=setup.tab_bits,
        lblcr_tab_bits=setup.tab_bits,
    )
    svc = k.Service(
        af=k.AF_INET if af == 4 else k.AF_INET6, scheduler=name, flags=_bits(name, flags), ipvs=ipvs
    )
    ref_dests: dict[RealKey, k.Dest] = {}
    trash: dict[RealKey, k.Dest] = {}
    seen: dict[RealKey, tuple[int, int]] = {}  # counters as the scheduler last saw them
    mine = Mirror()
    sched = make_scheduler(name, flags, setup)
    now = 0.0

    def shown() -> list[DestView]:
        views = list(mine.dests)
        seen.update((v.key, (v.active, v.inactive)) for v in views)
        return views

    def add(addr: IPAddress, port: int, weight: int, hooks: bool) -> None:
        key = RealKey(addr, port)
        if key in ref_dests:
            return  # "Destination already exists"
        dest = trash.pop(key, None) or k.Dest(af=svc.af, addr=addr.packed, port=port)
        ref_dests[key] = dest
        if hooks:
            k.ip_vs_add_dest(svc, dest, weight)
        else:  # before the scheduler is bound: plain list insertion as __ip_vs_update_dest does
            dest.weight = dest.last_weight = weight
            dest.flags |= k.IP_VS_DEST_F_AVAILABLE
            k.list_add_rcu(dest.n_list, svc.destinations)
            svc.num_dests += 1
        mine.dests.insert(0, DestView(key, weight, dest.activeconns, dest.inactconns, last_weight=weight))

    for op in seq:
        kind = op[0]
        if kind == "init":
            initial = op[1]
            assert isinstance(initial, list)
            for added in initial:
                add(*_added(added), hooks=False)
            k.ip_vs_bind_scheduler(svc)
            sched.update(shown())
        elif kind == "add":
            before = len(mine.dests)
            add(*_added(op), hooks=True)
            if len(mine.dests) != before:
                sched.update(shown())
        elif kind in ("del", "edit", "counters"):
            if not mine.dests:
                continue
            index = op[1]
            assert isinstance(index, int)
            i = index % len(mine.dests)
            view = mine.dests[i]
            dest = ref_dests[view.key]
            if kind == "del":
                del mine.dests[i]
                del ref_dests[view.key]
                k.ip_vs_del_dest(svc, dest)
                dest.activeconns, dest.inactconns = seen.get(view.key, (0, 0))
                trash[view.key] = dest
                sched.update(shown())
            elif kind == "edit":
                w = op[2]
                assert isinstance(w, int)
                k.ip_vs_edit_dest(svc, dest, w)
                last = w if w != 0 else view.last_weight
                mine.dests[i] = DestView(view.key, w, view.active, view.inactive, False, last)
                sched.update(shown())
            else:
                _, _, active, inactive, over = op
                assert isinstance(active, int) and isinstance(inactive, int)
                dest.activeconns, dest.inactconns = active, inactive
                dest.flags = (
                    (dest.flags | k.IP_VS_DEST_F_OVERLOAD) if over else dest.flags & ~k.IP_VS_DEST_F_OVERLOAD
                )
                mine.dests[i] = DestView(
                    view.key, view.weight, active, inactive, bool(over), view.last_weight
                )
        elif kind == "pick":
            _, caddr, cport, vaddr, vport, dt = op
            assert isinstance(caddr, IPv4Address | IPv6Address) and isinstance(
                vaddr, IPv4Address | IPv6Address
            )
            assert isinstance(cport, int) and isinstance(vport, int) and isinstance(dt, float)
            iph = k.Iph(saddr=caddr.packed, sport=cport, daddr=vaddr.packed, dport=vport)
            k.run_timers_until(ipvs, k.INITIAL_JIFFIES + math.floor(now * k.HZ))
            want = _ref_key(k.ip_vs_schedule(svc, iph))
            got = sched.pick(shown(), Flow(caddr, cport, vaddr, vport), now)
            assert got == want, f"{name}: picked {got}, kernel picks {want} (t={now:.3f} s)"
            counts.picks += 1
            counts.non_null += want is not None
            if counts.keep:
                counts.picked.append(got)
            now += dt
    # the two lists must also agree on kernel order
    assert [_ref_key(d) for d in k.dests_of(svc)] == [d.key for d in mine.dests]
    counts.examples += 1


def check_scheduler(
    name: str, *, examples: int, n_ops: int, churn: float = 0.1, zero_p: float = 0.15
) -> Counts:
    """Run one hypothesis property over `examples` scenarios; return how many picks were compared."""
    counts = Counts()

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(scenarios(name, n_ops, churn, zero_p))
    def prop(scenario: tuple[int, frozenset[str], list[Op], Setup]) -> None:
        af, flags, seq, setup = scenario
        run_scenario(name, af, flags, seq, counts, setup)

    prop()
    return counts
