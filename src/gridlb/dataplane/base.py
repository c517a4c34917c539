"""The one interface every dataplane implements, what each one can do, and the registry that finds them.

A dataplane is a programmable forwarding engine: it reports its table (`dump`), applies ops
(`apply`, errors per op, never raised), lists its connections, reports its own error counters,
follows the VRRP role when it must, and closes with a grace period. What it can do at all is declared
in `Capabilities`, so that lint and start-up say what a site asks that the dataplane cannot do,
instead of the dataplane silently doing something else.

Dataplanes are found by name through the registry: a module with a `FACTORY` object (see
`DataplaneFactory`) plus one line in `_MODULES`. A dataplane that lives outside the package (a
plug-in, or a test's) is named in the environment, `GRIDLB_DATAPLANE_MODULES="name=pkg.module,..."`,
or registered in-process with `register`.
"""

from __future__ import annotations

import enum
import importlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from gridlb.table import ConnEntry, ForwardMethod, IpvsTable, Op, Proto, RealKey, ServiceKey, ServiceSpec

if TYPE_CHECKING:
    from gridlb.config.schema import GridlbSettings


@dataclass(frozen=True, slots=True)
class OpResult:
    """How one op fared: `error` is empty on success, else the dataplane's reason."""

    op: Op
    error: str = ""

    @property
    def ok(self) -> bool:
        """Return True when the op was applied."""
        return not self.error


class Role(enum.Enum):
    """What the director is in its VRRP pair; a dataplane that follows the role forwards as MASTER only."""

    STANDALONE = "standalone"  # no VRRP instance: serve
    MASTER = "master"
    BACKUP = "backup"
    FAULT = "fault"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def from_vrrp(cls, state: str) -> Role:
        """Return the role for a VRRP state name (MASTER, BACKUP, FAULT, INIT...)."""
        name = state.strip().lower()
        if name == "master":
            return cls.MASTER
        if name == "fault":
            return cls.FAULT
        return cls.BACKUP


class Severity(enum.Enum):
    """How a capability mismatch is treated: an error refuses the service, a warning says what happens."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One thing a service asks that a dataplane cannot do, and what happens instead (for a warning)."""

    severity: Severity
    service: ServiceKey
    message: str


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a dataplane can do; `assess` compares a service against it."""

    forwarding: frozenset[ForwardMethod]
    schedulers: frozenset[str]
    protocols: frozenset[Proto] = frozenset({Proto.TCP})
    families: frozenset[int] = frozenset({4, 6})
    fwmark: bool = False
    persistence: bool = False
    connection_sync: bool = False
    follows_role: bool = False  # forwards only while MASTER (VIP-holding); else serves whatever the role
    needs_root: bool = False
    #: What this dataplane does instead of a forwarding method it lacks ("" = refuse the service).
    forwarding_instead: str = ""

    def assess(
        self, key: ServiceKey, spec: ServiceSpec, forwarding: Sequence[ForwardMethod]
    ) -> list[Mismatch]:
        """Return what service `key` (with `spec` and its real servers' methods) asks that this cannot do."""
        out: list[Mismatch] = []

        def error(message: str) -> None:
            out.append(Mismatch(Severity.ERROR, key, message))

        if key.fwmark and not self.fwmark:
            error("firewall-mark services are not supported")
        if key.proto not in self.protocols:
            error(f"protocol {key.proto} is not supported")
        if key.af not in self.families:
            error(f"IPv{key.af} is not supported")
        if spec.scheduler not in self.schedulers:
            have = ", ".join(sorted(self.schedulers))
            error(f"scheduler {spec.scheduler!r} is not supported (it has {have})")
        if spec.persistence_timeout_s and not self.persistence:
            error("persistence (persistence_timeout) is not supported")
        for method in sorted(set(forwarding) - self.forwarding, key=lambda m: m.value):
            name = _FORWARD_NAMES[method]
            if self.forwarding_instead:
                out.append(Mismatch(Severity.WARNING, key, f"lb_kind {name}: {self.forwarding_instead}"))
            else:
                error(f"lb_kind {name} is not supported")
        return out


_FORWARD_NAMES = {
    ForwardMethod.ROUTE: "DR",
    ForwardMethod.MASQ: "NAT",
    ForwardMethod.TUNNEL: "TUN",
    ForwardMethod.LOCAL: "LOCAL",
}


@dataclass(frozen=True, slots=True)
class DataplaneCounters:
    """A dataplane's own error counters by reason (accept, connect, relay, netlink...), and counts of
    what happened that is no error (`events`: e.g. flows adopted mid-connection)."""

    errors: Mapping[str, int] = field(default_factory=dict)
    events: Mapping[str, int] = field(default_factory=dict)


class Dataplane(Protocol):
    """A programmable forwarding engine. Errors of `apply` are reported per op and never raised.

    Any method may still raise or hang when the engine breaks (a netlink socket, a dead thread):
    the director guards every call with a deadline and treats a failure as visible, retried state.
    """

    name: str
    capabilities: Capabilities

    async def dump(self) -> IpvsTable:
        """Return the table as the dataplane has it now: services, destinations, counters, timeouts."""
        ...

    async def apply(self, ops: Sequence[Op]) -> list[OpResult]:
        """Apply `ops` in order and report each one."""
        ...

    async def connections(self) -> list[ConnEntry]:
        """Return the connection table (`ipvsadm -Lc`)."""
        ...

    async def counters(self) -> DataplaneCounters:
        """Return the dataplane's own error counters."""
        ...

    async def set_role(self, role: Role) -> None:
        """Follow the director's VRRP role (a no-op where `capabilities.follows_role` is False)."""
        ...

    async def close(self, grace_s: float = 0.0) -> None:
        """Stop forwarding new connections; let established ones finish for up to `grace_s`."""
        ...


#: Called when the dataplane failed to connect to a real server: (service, real, reason).
BackendFailure = Callable[[ServiceKey, RealKey, str], None]


@dataclass(frozen=True, slots=True)
class SyncDaemonSpec:
    """The connection-sync daemon of a pair (keepalived's `lvs_sync_daemon IFACE INSTANCE [id N]`)."""

    interface: str
    sync_id: int  # 0..255; keepalived's default is the instance's virtual_router_id
    instance: str = ""  # the VRRP instance it follows


@dataclass(frozen=True, slots=True)
class DataplaneHooks:
    """What a dataplane may call back into the director, and what it needs from the rest of the site."""

    on_backend_failure: BackendFailure | None = None
    sync_daemon: SyncDaemonSpec | None = None  # for dataplanes with `connection_sync`
    resync_interval_s: float = 5.0  # the director's resync period (ipvs: how often a dump is a full one)


class DataplaneFactory(Protocol):
    """How the registry knows a dataplane without starting it."""

    name: str
    capabilities: Capabilities

    def unavailable(self) -> str:
        """Return why this dataplane cannot run on this machine and user ("" = it can)."""
        ...

    def create(self, settings: GridlbSettings, hooks: DataplaneHooks) -> Dataplane:
        """Return a new dataplane for a site with `settings`."""
        ...


#: Built-in dataplanes: name -> module holding `FACTORY`. Adding one is a module and one line here.
_MODULES: dict[str, str] = {
    "proxy": "gridlb.dataplane.proxy",
    "ipvs": "gridlb.dataplane.ipvs",
    "dr": "gridlb.dataplane.dr",
}
_REGISTERED: dict[str, DataplaneFactory] = {}


def register(factory: DataplaneFactory) -> None:
    """Make `factory` available under its name (tests and plug-ins; built-ins are in `_MODULES`)."""
    _REGISTERED[factory.name] = factory


def unregister(name: str) -> None:
    """Forget a dataplane added with `register`."""
    _REGISTERED.pop(name, None)


def _modules() -> dict[str, str]:
    """Return name -> module of the built-ins and of the plug-ins named in `GRIDLB_DATAPLANE_MODULES`."""
    modules = dict(_MODULES)
    for item in os.environ.get("GRIDLB_DATAPLANE_MODULES", "").split(","):
        name, eq, module = item.strip().partition("=")
        if eq and name.strip() and module.strip():
            modules.setdefault(name.strip(), module.strip())
    return modules


def dataplane_names() -> tuple[str, ...]:
    """Return every dataplane name this build knows, built-ins first (`auto` is not one, see AUTO)."""
    modules = _modules()
    return (*modules, *(n for n in _REGISTERED if n not in modules))


#: The configured name that picks a dataplane at start: the first of `AUTO_ORDER` this machine can run.
AUTO = "auto"
AUTO_ORDER: tuple[str, ...] = ("ipvs", "proxy")


def resolve_factory(name: str) -> tuple[DataplaneFactory, str]:
    """Return the factory a site naming `name` runs and, for `auto`, a sentence saying why that one.

    `auto` is kernel IPVS where the kernel has it and gridlb runs as root, else the proxy.
    Raises KeyError for a name this build does not have.
    """
    if name != AUTO:
        try:
            return get_factory(name), ""
        except KeyError:
            raise KeyError(f"no dataplane {name!r} in this build") from None
    passed: list[str] = []
    for candidate in AUTO_ORDER:
        factory = get_factory(candidate)
        why = factory.unavailable()
        if not why:
            skipped = f" ({'; '.join(passed)})" if passed else ""
            return factory, f"dataplane auto: {candidate}{skipped}"
        passed.append(f"not {candidate}: {why}")
    raise KeyError(f"auto: no dataplane can run here ({'; '.join(passed)})")


def get_factory(name: str) -> DataplaneFactory:
    """Return the factory of dataplane `name` (KeyError when the build has none by that name)."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    module_name = _modules()[name]
    factory: DataplaneFactory = importlib.import_module(module_name).FACTORY
    return factory


__all__ = [
    "AUTO",
    "AUTO_ORDER",
    "BackendFailure",
    "Capabilities",
    "Dataplane",
    "DataplaneCounters",
    "DataplaneFactory",
    "DataplaneHooks",
    "Mismatch",
    "OpResult",
    "Role",
    "Severity",
    "SyncDaemonSpec",
    "dataplane_names",
    "get_factory",
    "register",
    "resolve_factory",
    "unregister",
]
