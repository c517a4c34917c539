"""The IPVS table model: keyed services and destinations, observed counters, and `diff` into ops.

Every dataplane (kernel IPVS, userspace DR, proxy) dumps an `IpvsTable` and applies `Op`s;
the director builds the desired table purely and programs only the difference.
Destination order inside a service is the kernel's list order: most recently added first.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv6Address, ip_address

IPAddress = IPv4Address | IPv6Address


class Proto(enum.Enum):
    """Transport protocol of a virtual service, named as ipvsadm prints it."""

    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"

    def __str__(self) -> str:
        return self.value


class ForwardMethod(enum.Enum):
    """IPVS packet-forwarding method; values are the kernel's IP_VS_CONN_F_* numbers."""

    MASQ = 0
    LOCAL = 1
    TUNNEL = 2
    ROUTE = 3

    @property
    def ipvsadm_name(self) -> str:
        """Return the `Forward` column text of `ipvsadm -L`."""
        return {0: "Masq", 1: "Local", 2: "Tunnel", 3: "Route"}[self.value]


_PROTO_ORDER = {p: i for i, p in enumerate(Proto)}


def parse_address(text: str) -> IPAddress:
    """Return the address in `text`, accepting IPv6 in brackets."""
    return ip_address(text.strip().removeprefix("[").removesuffix("]"))


@functools.total_ordering
@dataclass(frozen=True, slots=True)
class ServiceKey:
    """Identity of a virtual service: (protocol, address, port) or a firewall mark (with its family)."""

    proto: Proto
    addr: IPAddress | None
    port: int
    fwmark: int = 0
    af: int = 4  # 4 or 6; taken from addr when addr is set
    # Computed once: keys are looked up in dicts many times per reconcile pass (ints only, so it is
    # the same in every process).
    _hash: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        if self.addr is not None and self.af != self.addr.version:
            object.__setattr__(self, "af", self.addr.version)
        addr = int(self.addr) if self.addr is not None else 0
        proto = _PROTO_ORDER[self.proto]
        object.__setattr__(self, "_hash", hash((proto, addr, self.port, self.fwmark, self.af)))

    def __hash__(self) -> int:
        return self._hash

    def _order(self) -> tuple[int, int, str, int, int]:
        addr = (self.addr.version, int(self.addr)) if self.addr is not None else (self.af, 0)
        return (self.fwmark, addr[0], self.proto.value, addr[1], self.port)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, ServiceKey):
            return NotImplemented
        return self._order() < other._order()

    def __str__(self) -> str:
        if self.fwmark:
            return f"FWM {self.fwmark}" + (" IPv6" if self.af == 6 else "")
        assert self.addr is not None
        host = f"[{self.addr}]" if self.addr.version == 6 else str(self.addr)
        return f"{self.proto} {host}:{self.port}"

    @classmethod
    def tcp(cls, addr: str, port: int) -> ServiceKey:
        """Return the key of a TCP service at `addr`:`port`."""
        return cls(Proto.TCP, parse_address(addr), port)


@functools.total_ordering
@dataclass(frozen=True, slots=True)
class RealKey:
    """Identity of a real server (destination) inside a service."""

    addr: IPAddress
    port: int

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, RealKey):
            return NotImplemented
        return (self.addr.version, int(self.addr), self.port) < (
            other.addr.version,
            int(other.addr),
            other.port,
        )

    def __str__(self) -> str:
        host = f"[{self.addr}]" if self.addr.version == 6 else str(self.addr)
        return f"{host}:{self.port}"

    @classmethod
    def parse(cls, text: str, default_port: int | None = None) -> RealKey:
        """Return the key written as `ADDR:PORT`, `[V6]:PORT` or bare `ADDR` (with `default_port`)."""
        text = text.strip()
        if text.startswith("["):
            host, bracket, rest = text[1:].partition("]")
            if not bracket or (rest and not rest.startswith(":")):
                raise ValueError(f"{text!r}: expected [V6ADDR]:PORT")
            port_text = rest.removeprefix(":")
        elif text.count(":") == 1:
            host, _, port_text = text.partition(":")
        else:
            host, port_text = text, ""
        if not port_text:
            if default_port is None:
                raise ValueError(f"{text!r}: a port is required")
            return cls(parse_address(host), default_port)
        if not (port_text.isascii() and port_text.isdigit() and int(port_text) <= 65535):
            raise ValueError(f"{text!r}: port {port_text!r} is not a number in 0..65535")
        return cls(parse_address(host), int(port_text))


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """What is configurable on a service (`ipvsadm -A/-E`)."""

    scheduler: str = "wlc"
    persistence_timeout_s: int = 0  # 0 = not persistent
    netmask: str = ""  # persistence granularity; "" = host (/32 or /128)
    flags: frozenset[str] = frozenset()  # scheduler flags: sh-fallback, sh-port, mh-fallback, mh-port
    one_packet: bool = False  # -o / ops
    pe_name: str = ""


@dataclass(frozen=True, slots=True)
class DestSpec:
    """What is configurable on a destination (`ipvsadm -a/-e`)."""

    weight: int = 1
    forward: ForwardMethod = ForwardMethod.ROUTE
    u_threshold: int = 0  # 0 = unset
    l_threshold: int = 0
    tun_type: str = "ipip"  # with TUNNEL: ipip, gue or gre (ipvsadm --tun-type)
    tun_port: int = 0  # gue destination port
    tun_flags: str = "nocsum"  # gue/gre checksum: nocsum, csum or remcsum


@dataclass(frozen=True, slots=True)
class Stats:
    """Traffic counters and rates as IPVS keeps them (per service and per destination)."""

    conns: int = 0
    inpkts: int = 0
    outpkts: int = 0
    inbytes: int = 0
    outbytes: int = 0
    cps: int = 0
    inpps: int = 0
    outpps: int = 0
    inbps: int = 0
    outbps: int = 0


@dataclass(frozen=True, slots=True)
class DestCounters:
    """Connection counters of one destination (observed, never desired)."""

    active: int = 0
    inactive: int = 0
    persistent: int = 0
    overloaded: bool = False
    stats: Stats = Stats()


@dataclass(frozen=True, slots=True)
class Dest:
    """One destination of a service: its key, its spec and what was observed on it."""

    key: RealKey
    spec: DestSpec = DestSpec()
    counters: DestCounters = DestCounters()


@dataclass(frozen=True, slots=True)
class Service:
    """One virtual service with its destinations in kernel order (most recently added first)."""

    key: ServiceKey
    spec: ServiceSpec = ServiceSpec()
    dests: tuple[Dest, ...] = ()
    stats: Stats = Stats()

    def dest(self, key: RealKey) -> Dest | None:
        """Return the destination with `key`, or None."""
        for d in self.dests:
            if d.key == key:
                return d
        return None


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Connection timeouts in seconds (`ipvsadm --set tcp tcpfin udp`); kernel defaults."""

    tcp: int = 900
    tcpfin: int = 120
    udp: int = 300


@dataclass(frozen=True, slots=True)
class ConnEntry:
    """One connection-table entry as `ipvsadm -Lc` shows it, with what a dataplane knows besides.

    `age_s`, `inbytes` (client to real server) and `outbytes` are None where the dataplane cannot
    tell (the kernel keeps no per-connection byte counts).
    """

    proto: Proto
    expire_s: int
    state: str
    client: RealKey
    virtual: RealKey
    dest: RealKey
    age_s: float | None = None
    inbytes: int | None = None
    outbytes: int | None = None


@dataclass(frozen=True, slots=True)
class IpvsTable:
    """A whole table: services in kernel order, timeouts and (observed) connection entries."""

    services: tuple[Service, ...] = ()
    timeouts: Timeouts = Timeouts()
    connections: tuple[ConnEntry, ...] = ()

    def service(self, key: ServiceKey) -> Service | None:
        """Return the service with `key`, or None."""
        for s in self.services:
            if s.key == key:
                return s
        return None

    def with_service(self, svc: Service) -> IpvsTable:
        """Return a copy with `svc` replacing the service of the same key (or appended)."""
        out = [s for s in self.services if s.key != svc.key]
        index = next((i for i, s in enumerate(self.services) if s.key == svc.key), len(out))
        out.insert(index, svc)
        return replace(self, services=tuple(out))


# --- operations -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AddService:
    key: ServiceKey
    spec: ServiceSpec


@dataclass(frozen=True, slots=True)
class EditService:
    key: ServiceKey
    spec: ServiceSpec


@dataclass(frozen=True, slots=True)
class DelService:
    key: ServiceKey


@dataclass(frozen=True, slots=True)
class AddDest:
    service: ServiceKey
    key: RealKey
    spec: DestSpec


@dataclass(frozen=True, slots=True)
class EditDest:
    service: ServiceKey
    key: RealKey
    spec: DestSpec


@dataclass(frozen=True, slots=True)
class DelDest:
    service: ServiceKey
    key: RealKey


@dataclass(frozen=True, slots=True)
class SetTimeouts:
    """Set the connection timeouts (`ipvsadm --set`)."""

    timeouts: Timeouts


Op = AddService | EditService | DelService | AddDest | EditDest | DelDest | SetTimeouts


def diff(observed: IpvsTable, desired: IpvsTable) -> list[Op]:
    """Return the ops that turn `observed` into `desired` (specs only; counters are ignored).

    Order: services that go away lose their destinations first, then are deleted; kept
    services are edited, lose stale destinations, gain new ones (added in the desired table's
    reverse kernel order so that the kernel ends with the desired order), and have changed
    destinations edited; new services are added before their destinations. Changed timeouts come
    first, as one `SetTimeouts`.
    """
    ops: list[Op] = []
    if observed.timeouts != desired.timeouts:
        ops.append(SetTimeouts(desired.timeouts))
    desired_keys = {s.key for s in desired.services}
    observed_by_key = {s.key: s for s in observed.services}  # one lookup per service, not a scan
    for svc in observed.services:
        if svc.key not in desired_keys:
            ops.extend(DelDest(svc.key, d.key) for d in svc.dests)
            ops.append(DelService(svc.key))
    for want in desired.services:
        have = observed_by_key.get(want.key)
        if have is None:
            ops.append(AddService(want.key, want.spec))
            ops.extend(_dest_ops(want.key, (), want.dests))
            continue
        if have.spec != want.spec:
            ops.append(EditService(want.key, want.spec))
        ops.extend(_dest_ops(want.key, have.dests, want.dests))
    return ops


def _dest_ops(service: ServiceKey, have: Sequence[Dest], want: Sequence[Dest]) -> Iterable[Op]:
    if len(have) == len(want) and [(d.key, d.spec) for d in have] == [(d.key, d.spec) for d in want]:
        return  # the usual case, and much cheaper than hashing every key (same objects compare at once)
    have_by_key = {d.key: d for d in have}
    want_keys = {d.key for d in want}
    for d in have:
        if d.key not in want_keys:
            yield DelDest(service, d.key)
    for d in reversed(want):  # kernel adds at the head: add oldest first
        if d.key not in have_by_key:
            yield AddDest(service, d.key, d.spec)
    for d in want:
        old = have_by_key.get(d.key)
        if old is not None and old.spec != d.spec:
            yield EditDest(service, d.key, d.spec)


#: ipvs_strerror() texts (libipvs.c) for ops the kernel refuses: every dataplane reports these words.
E_SVC_EXISTS = "Service already exists"
E_NO_SERVICE = "No such service"
E_DEST_EXISTS = "Destination already exists"
E_NO_DEST = "No such destination"


def check_op(
    op: Op,
    has_service: Callable[[ServiceKey], bool],
    has_dest: Callable[[ServiceKey, RealKey], bool],
) -> None:
    """Raise KeyError/ValueError with ipvsadm's wording when `op` cannot be applied to a table that
    has the services and destinations the two predicates say (every dataplane's model answers them)."""
    if isinstance(op, SetTimeouts):
        return
    if isinstance(op, AddService | EditService | DelService):
        have = has_service(op.key)
        if isinstance(op, AddService) and have:
            raise ValueError(E_SVC_EXISTS)
        if not isinstance(op, AddService) and not have:
            raise KeyError(E_NO_SERVICE)
        return
    if not has_service(op.service):
        raise KeyError(E_NO_SERVICE)
    have = has_dest(op.service, op.key)
    if isinstance(op, AddDest) and have:
        raise ValueError(E_DEST_EXISTS)
    if not isinstance(op, AddDest) and not have:
        raise KeyError(E_NO_DEST)


def apply_ops(table: IpvsTable, ops: Iterable[Op]) -> IpvsTable:
    """Return `table` with `ops` applied as the kernel would (pure; used by fakes, table files and
    the director's view of the table after an apply).

    Raises KeyError/ValueError with ipvsadm's wording (`check_op`) when an op is impossible.
    Services and destinations no op touches are kept as the same objects (counters included), and
    the cost grows with the ops and the services they touch, not with the whole table.
    """
    services = {s.key: s for s in table.services}
    # Touched services' destinations, oldest first (the kernel adds at the head of its list).
    touched: dict[ServiceKey, dict[RealKey, Dest]] = {}
    timeouts = table.timeouts
    last_key: ServiceKey | None = None  # ops come grouped by service: look the group up once
    dests: dict[RealKey, Dest] = {}
    for op in ops:
        if isinstance(op, AddDest | EditDest | DelDest):
            if op.service is not last_key:
                found = touched.get(op.service)
                if found is None:
                    svc = services.get(op.service)
                    if svc is None:
                        raise KeyError(E_NO_SERVICE)
                    found = touched[op.service] = {d.key: d for d in reversed(svc.dests)}
                last_key, dests = op.service, found
            if isinstance(op, AddDest):
                new = Dest(op.key, op.spec)
                if dests.setdefault(op.key, new) is not new:
                    raise ValueError(E_DEST_EXISTS)
            else:
                old = dests.pop(op.key, None) if isinstance(op, DelDest) else dests.get(op.key)
                if old is None:
                    raise KeyError(E_NO_DEST)
                if isinstance(op, EditDest):
                    dests[op.key] = Dest(op.key, op.spec, old.counters)  # in place: the order is kept
            continue
        last_key = None
        check_op(op, services.__contains__, lambda _s, _k: False)
        if isinstance(op, SetTimeouts):
            timeouts = op.timeouts
        elif isinstance(op, AddService):
            services[op.key] = Service(op.key, op.spec)
            touched[op.key] = {}
        elif isinstance(op, EditService):
            services[op.key] = replace(services[op.key], spec=op.spec)
        else:
            del services[op.key]
            touched.pop(op.key, None)
    for key, kept in touched.items():
        services[key] = replace(services[key], dests=tuple(reversed(kept.values())))
    return replace(table, services=tuple(services.values()), timeouts=timeouts)


__all__ = [
    "AddDest",
    "AddService",
    "ConnEntry",
    "DelDest",
    "DelService",
    "Dest",
    "DestCounters",
    "DestSpec",
    "EditDest",
    "EditService",
    "ForwardMethod",
    "IPAddress",
    "IpvsTable",
    "Op",
    "Proto",
    "RealKey",
    "Service",
    "ServiceKey",
    "ServiceSpec",
    "SetTimeouts",
    "Stats",
    "Timeouts",
    "apply_ops",
    "check_op",
    "diff",
    "parse_address",
]
