"""The `proxy` dataplane: a userspace L4 full proxy per virtual service, driven from asyncio.

`ProxyDataplane` implements the whole `Dataplane` protocol; `FACTORY` registers it as `proxy`. The
bytes never touch the asyncio loop: `RelayEngine` threads (select.epoll + os.splice, see relay.py;
`options.workers` of them, see workers.py) accept, schedule with the shared schedulers, connect and
relay; this class applies ops to their shared state, posts listener commands to them and awaits the
answers.
Passive health failures (a refused or timed-out connect) come back as calls of
`on_backend_failure(service, real, reason)` on the asyncio loop; a coroutine result is run as a
task that this object keeps referenced until it ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gridlb.dataplane.base import (
    Capabilities,
    DataplaneCounters,
    DataplaneHooks,
    OpResult,
    Role,
)
from gridlb.dataplane.relay import DEFAULT_NOTSENT_LOWAT, RelayMode, congestion_option
from gridlb.dataplane.workers import ProcessPool, WorkerPool, resolve_workers
from gridlb.sched import scheduler_names
from gridlb.table import (
    ConnEntry,
    ForwardMethod,
    IpvsTable,
    Op,
    Proto,
    RealKey,
    ServiceKey,
    Timeouts,
)

if TYPE_CHECKING:
    from gridlb.config.schema import GridlbSettings

log = logging.getLogger(__name__)

#: Called on the asyncio loop when a real server refused or timed out a connect: (service, real, reason).
BackendFailureCallback = Callable[[ServiceKey, RealKey, str], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class ProxyOptions:
    """Tunables of the proxy dataplane (defaults suit GridFTP control channels)."""

    relay: RelayMode = RelayMode.AUTO  # splice when the kernel allows, else the copy loop
    connect_timeout_s: float = 3.0  # a slower connect counts as a passive failure ("timeout")
    pipe_size: int = 1 << 20  # F_SETPIPE_SZ for splice pipes (falls back to the default size)
    copy_size: int = 1 << 18  # buffer per direction in copy mode
    #: TCP_NOTSENT_LOWAT of relayed sockets (0: the kernel's default). Lower moves the sending of
    #: bulk data from the receivers' ACK processing to the relay, at the relay's CPU (docs/proxy.md).
    notsent_lowat: int = DEFAULT_NOTSENT_LOWAT
    #: TCP_CONGESTION of relayed sockets, both sides (None: the host's net.ipv4.tcp_congestion_control).
    #: An API and benchmark option (docs/proxy.md, "Where bulk waits"); no site setting sets it.
    congestion_control: str | None = None
    backlog: int = 4096
    cpu: int | None = None  # pin the relay thread to this CPU (worker i's to CPU cpu + i)
    workers: int = 1  # relay workers (`gridlb.proxy.workers`): 1 in-process, more = worker processes
    expire_quiescent_template: bool = False  # the kernel sysctl: drop a drained server's templates
    #: GridFTP services: the line answered when no real server can take a client (421 ...).
    replies: Mapping[ServiceKey, str] = field(default_factory=dict)
    #: GridFTP services: the real servers' passive port range, served on the VIP as well.
    data_ports: Mapping[ServiceKey, tuple[int, int]] = field(default_factory=dict)

    @classmethod
    def for_site(cls, settings: GridlbSettings) -> ProxyOptions:
        """Return the options a site's `gridlb` section asks for."""
        replies: dict[ServiceKey, str] = {}
        data_ports: dict[ServiceKey, tuple[int, int]] = {}
        for name, g in settings.gridftp_services.items():
            rk = RealKey.parse(name)
            key = ServiceKey(Proto.TCP, rk.addr, rk.port)
            if g.unavailable_reply:
                replies[key] = g.unavailable_reply
            if g.data_ports is not None:
                data_ports[key] = g.data_ports
        return cls(
            connect_timeout_s=settings.proxy.connect_timeout_s,
            workers=resolve_workers(settings.proxy.workers),
            expire_quiescent_template=settings.proxy.expire_quiescent_template,
            replies=replies,
            data_ports=data_ports,
        )


#: What the proxy can do: every scheduler of `gridlb.sched`, TCP, IPv4 and IPv6, persistence; it relays
#: through itself whatever forwarding method a site names (the real servers see the director's address).
CAPABILITIES = Capabilities(
    forwarding=frozenset({ForwardMethod.MASQ}),
    schedulers=frozenset(scheduler_names()),
    persistence=True,  # IPVS templates (persistence.py); firewall marks stay out: no packet marks here
    forwarding_instead=(
        "the proxy dataplane relays the connection through the director instead (replies pass the "
        "director, the real server sees the director's address; GridFTP data channels still go "
        "straight to the real server)"
    ),
)


class ProxyDataplane:
    """A `Dataplane` relaying TCP in user space; counters and table as IPVS would report them."""

    name = "proxy"
    capabilities = CAPABILITIES

    def __init__(
        self,
        *,
        timeouts: Timeouts | None = None,
        options: ProxyOptions | None = None,
        on_backend_failure: BackendFailureCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        opts = options or ProxyOptions()
        congestion_option(opts.congestion_control)  # a name this host cannot set: ValueError here
        self.options = opts
        self.on_backend_failure = on_backend_failure
        self._tasks: set[asyncio.Task[None]] = set()
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        engine_options: dict[str, Any] = {
            "connect_timeout_s": opts.connect_timeout_s,
            "pipe_size": opts.pipe_size,
            "copy_size": opts.copy_size,
            "notsent_lowat": opts.notsent_lowat,
            "congestion_control": opts.congestion_control,
            "backlog": opts.backlog,
            "replies": {k: f"{v}\r\n".encode() for k, v in opts.replies.items()},
            "data_ports": dict(opts.data_ports),
        }
        self._pool: WorkerPool | ProcessPool
        if opts.workers == 1:  # in-process: a single-core site pays for no extra process
            self._pool = WorkerPool(
                1,
                timeouts=timeouts,
                mode=opts.relay,
                on_failure=self._failure_from_engine,
                clock=clock,
                cpu=opts.cpu,
                expire_quiescent=opts.expire_quiescent_template,
                **engine_options,
            )
        else:
            if clock is not time.monotonic:
                raise ValueError("worker processes keep time with time.monotonic; a clock is for 1 worker")
            self._pool = ProcessPool(
                opts.workers,
                timeouts=timeouts,
                mode=opts.relay,
                on_failure=self._failure_from_engine,
                cpu=opts.cpu,
                expire_quiescent=opts.expire_quiescent_template,
                **engine_options,
            )
        self._applying = asyncio.Lock()
        self._closed = False

    @property
    def relay_mode(self) -> RelayMode:
        """Return how bytes are moved (SPLICE or COPY; AUTO is resolved at start)."""
        return self._pool.mode

    @property
    def workers(self) -> int:
        """Return the number of relay workers (1: a thread in this process; more: worker processes)."""
        return self._pool.size

    # --- Dataplane protocol -----------------------------------------------------------------------

    async def dump(self) -> IpvsTable:
        """Return services, destinations, counters and timeouts as the engines have them now."""
        return await self._pool.dump()

    async def apply(self, ops: Sequence[Op]) -> list[OpResult]:
        """Apply `ops` in order; each result carries the reason when the op was refused.

        Once it returns every worker schedules with the new state (a drained server gets no new
        connection), listens for each added service and no longer accepts for a deleted one.
        """
        self._remember_loop()
        async with self._applying:
            return [await self._apply_one(op) for op in list(ops)]

    async def close(self, grace_s: float = 0.0) -> None:
        """Stop accepting at once; let open relays finish for up to `grace_s`, then close everything."""
        if self._closed:
            return
        self._closed = True
        await self._pool.close(grace_s)

    async def connections(self) -> list[ConnEntry]:
        """Return the connection table (`ipvsadm -Lc`): open relays, then inactive ones."""
        return await self._pool.connections()

    async def counters(self) -> DataplaneCounters:
        """Return the relay's error counts by reason (accept, connect and relay errors)."""
        return DataplaneCounters(await self._pool.errors())

    async def set_role(self, role: Role) -> None:
        """Nothing to do: the proxy listens with IP_FREEBIND, so it serves whenever the VIP arrives."""

    # --- internals --------------------------------------------------------------------------------

    def _remember_loop(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()

    async def _apply_one(self, op: Op) -> OpResult:
        """Update the shared state and every worker's listeners together."""
        error = await self._pool.apply_op(op)
        return OpResult(op, error) if error else OpResult(op)

    def _failure_from_engine(self, service: ServiceKey, real: RealKey, reason: str) -> None:
        """Called in the engine (or worker monitor) thread: hand the event to the asyncio loop."""
        loop = self._loop
        if loop is None or self.on_backend_failure is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._deliver, service, real, reason)

    def _deliver(self, service: ServiceKey, real: RealKey, reason: str) -> None:
        cb = self.on_backend_failure
        if cb is None:
            return
        result = cb(service, real, reason)
        if result is not None:
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


class _Factory:
    """The registry's view of the proxy dataplane."""

    name = "proxy"
    capabilities = CAPABILITIES

    def unavailable(self) -> str:
        """Return "": the proxy needs no root and no kernel feature."""
        return ""

    def create(self, settings: GridlbSettings, hooks: DataplaneHooks) -> ProxyDataplane:
        """Return a proxy dataplane for a site with `settings`."""
        options = ProxyOptions.for_site(settings)
        n = options.workers
        if n == 1:
            log.info("proxy dataplane: 1 relay worker (a thread of this process)")
        else:
            log.info("proxy dataplane: %d relay worker processes over one scheduling table", n)
        return ProxyDataplane(
            timeouts=settings.timeouts.table_timeouts(),
            options=options,
            on_backend_failure=hooks.on_backend_failure,
        )


FACTORY = _Factory()

__all__ = ["CAPABILITIES", "FACTORY", "BackendFailureCallback", "ProxyDataplane", "ProxyOptions", "RelayMode"]
