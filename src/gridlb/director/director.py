"""The director: one queue of inputs; every change is desired → diff(dump, desired) → apply → record.

Inputs are health reports, passive failures from the dataplane, operator intents from the control
API, reloads (SIGHUP or API), role changes (VRRP) and resync ticks. Each batch of inputs updates the
director's state; then the desired table is rebuilt purely (`reconcile.build_table`), compared with
what the dataplane reports (`table.diff`), and only the difference is applied. A periodic resync does
the same with no input, which repairs drift (someone edited the table by hand, an op failed).
Dataplane errors become visible state and are retried on the next pass; they never stop the director.

Operator replies are sent after the batch's changes were applied, so "acknowledged" means the
dataplane already has them (e.g. a drained server gets no new connection after the reply).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from gridlb import __version__
from gridlb.api.messages import (
    AddRequest,
    ApiError,
    DrainRequest,
    EnableRequest,
    ErrorCode,
    ReloadRequest,
    RemoveRequest,
    Request,
    parse_real,
    parse_service,
)
from gridlb.config.load import Site, load_site
from gridlb.config.schema import CheckSpec, GridlbSettings
from gridlb.dataplane.base import Dataplane, DataplaneFactory, OpResult, Role, Severity, resolve_factory
from gridlb.director.overrides import Overrides
from gridlb.director.reconcile import (
    Desired,
    HealthKey,
    HealthState,
    RealHealth,
    ServicePlan,
    build_table,
    configured_pairs,
    initial_health,
    plan_site,
)
from gridlb.errors import ConfigError, GridlbError
from gridlb.health.base import CheckResult, Verdict
from gridlb.table import (
    AddDest,
    AddService,
    ConnEntry,
    DelService,
    EditDest,
    EditService,
    IpvsTable,
    Op,
    RealKey,
    ServiceKey,
    SetTimeouts,
    diff,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

#: How long `remove --drain` and reload removals wait for active connections before removing anyway.
DEFAULT_DRAIN_TIMEOUT_S = 3600.0
#: Resync period: how often the table is compared with the dataplane without any other input.
DEFAULT_RESYNC_INTERVAL_S = 5.0
#: Resync period while a retirement waits for its last connection.
RETIRE_POLL_S = 0.25
#: Deadline of one dataplane call; a call that takes longer counts as a dataplane fault.
DATAPLANE_DEADLINE_S = 5.0
#: First retry after a dataplane fault; doubled per consecutive fault up to the resync interval.
FAULT_BACKOFF_S = 0.1
#: How long `status` waits for a batch in progress before answering from the last known table.
STATUS_WAIT_S = 0.25


# --- configuration --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DirectorConfig:
    """A validated site as the director uses it: service plans, checks per pair, gridlb settings."""

    plans: tuple[ServicePlan, ...]
    checks: Mapping[HealthKey, tuple[CheckSpec, ...]]
    settings: GridlbSettings = field(default_factory=GridlbSettings)
    paths: tuple[str, ...] = ()

    @classmethod
    def from_site(cls, site: Site, paths: Sequence[str] = ()) -> DirectorConfig:
        """Return the director's view of `site`."""
        plans, checks = plan_site(site)
        return cls(plans, checks, site.gridlb, tuple(paths))

    @classmethod
    def load(cls, paths: Sequence[str]) -> DirectorConfig:
        """Load and validate the site files `paths` (ConfigError names file, line and key)."""
        return cls.from_site(load_site(list(paths)), paths)

    def plan(self, key: ServiceKey) -> ServicePlan | None:
        """Return the plan of service `key`, or None."""
        for p in self.plans:
            if p.key == key:
                return p
        return None

    def check_dataplane(self) -> tuple[DataplaneFactory, list[str]]:
        """Return the site's dataplane factory and what it does differently from what the site says.

        Raises ConfigError (one line) when this machine cannot run that dataplane or a service asks
        what it cannot do. Start and reload both call this: a reload never accepts what a start
        would refuse.
        """
        try:
            factory, _ = resolve_factory(self.settings.dataplane)
        except KeyError as exc:
            raise ConfigError(str(exc.args[0]), key="gridlb.dataplane") from None
        name = factory.name
        why = factory.unavailable()
        if why:
            raise ConfigError(f"the {name} dataplane cannot run here: {why}", key="gridlb.dataplane")
        refused: list[str] = []
        warnings: list[str] = []
        for plan in self.plans:
            forwarding = [r.spec.forward for r in plan.reals]
            for m in factory.capabilities.assess(plan.key, plan.spec, forwarding):
                text = f"service {m.service}: the {name} dataplane: {m.message}"
                (refused if m.severity is Severity.ERROR else warnings).append(text)
        if refused:
            more = f" (and {len(refused) - 1} more; `gridlb lint` lists them)" if len(refused) > 1 else ""
            raise ConfigError(f"{refused[0]}{more}", key="gridlb.dataplane")
        return factory, warnings


# --- inputs ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckReport:
    """One health check finished: its result and the tracker's state after it (None = unchanged)."""

    service: ServiceKey
    real: RealKey
    result: CheckResult
    state: HealthState | None = None
    weight: int | None = None  # dynamic weight (MISC_CHECK misc_dynamic), when set
    kind: str = ""
    at: float = 0.0  # monotonic time the result arrived (0 = when queued)
    started: float = -1.0  # monotonic time the check began (negative = unknown)


@dataclass(frozen=True, slots=True)
class PassiveFailure:
    """The dataplane failed to connect to a real server (refused or timed out)."""

    real: RealKey
    service: ServiceKey | None = None  # None = every service that has the real server
    reason: str = "connect failed"
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class Intent:
    """An operator request from the control API, answered through `reply` after it is applied."""

    request: Request
    reply: asyncio.Future[Any]


@dataclass(frozen=True, slots=True)
class Reload:
    """Re-read the site files (SIGHUP, or the API with `reply`)."""

    reply: asyncio.Future[Any] | None = None


@dataclass(frozen=True, slots=True)
class RoleChange:
    """The VRRP role changed (shown in status; tables are the same on both directors)."""

    role: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Resync:
    """Compare the dataplane with the desired table and repair any difference."""


DirectorInput = CheckReport | PassiveFailure | Intent | Reload | RoleChange | Resync


# --- collaborators --------------------------------------------------------------------------------


class HealthMonitor(Protocol):
    """Runs the health checks; the director tells it which pairs to watch with which checks.

    `set_targets` keeps the running checks (and their state) of pairs whose checks did not change,
    starts new ones and stops the rest. Results go to the callback given at construction.
    """

    def set_targets(self, targets: Mapping[HealthKey, tuple[CheckSpec, ...]]) -> None: ...

    async def close(self) -> None: ...


# --- records --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """One applied change: when, why, the ops and how each fared."""

    at: float  # wall clock
    cause: str
    results: tuple[OpResult, ...]

    @property
    def errors(self) -> tuple[OpResult, ...]:
        """Return the ops that failed."""
        return tuple(r for r in self.results if not r.ok)


@dataclass(slots=True)
class PassiveMark:
    """A real server marked down by a failed dataplane connect, until a check started later passes."""

    at: float
    reason: str


@dataclass(slots=True)
class LastCheck:
    """The most recent check result of a pair, for status."""

    result: CheckResult
    at: float
    kind: str = ""


@dataclass(slots=True)
class Counters:
    """Director-level counters for status and metrics."""

    reconciles: int = 0
    ops_applied: int = 0
    op_errors: dict[str, int] = field(default_factory=dict)  # op class name -> failures
    passive_failures: dict[HealthKey, int] = field(default_factory=dict)
    reloads: int = 0
    reload_failures: int = 0


@dataclass(slots=True)
class DataplaneFault:
    """The dataplane's health as the director sees it: failed calls by method, the last one, backoff."""

    total: int = 0
    by_method: dict[str, int] = field(default_factory=dict)
    consecutive: int = 0
    last_error: str = ""
    last_method: str = ""
    since: float | None = None  # monotonic time of the first fault of the current run; None = healthy
    retry_at: float | None = None  # monotonic time of the next retry while failing

    @property
    def failing(self) -> bool:
        """Return True while the latest dataplane call failed."""
        return self.since is not None


class DataplaneCallError(Exception):
    """A dataplane call raised, timed out or returned something that is not what the protocol says."""


def _op_name(op: Op) -> str:
    return type(op).__name__


def describe_op(op: Op) -> str:
    """Return `op` in a few words, e.g. ``AddDest TCP 10.0.0.1:2811 -> 10.0.1.1:2811 weight 1``."""
    if isinstance(op, SetTimeouts):
        t = op.timeouts
        return f"SetTimeouts tcp {t.tcp} tcpfin {t.tcpfin} udp {t.udp}"
    if isinstance(op, AddService | EditService):
        return f"{_op_name(op)} {op.key} scheduler {op.spec.scheduler}"
    if isinstance(op, DelService):
        return f"DelService {op.key}"
    if isinstance(op, AddDest | EditDest):
        return f"{_op_name(op)} {op.service} -> {op.key} weight {op.spec.weight}"
    return f"DelDest {op.service} -> {op.key}"


def _fmt_pair(pair: HealthKey) -> str:
    return f"{pair[0]} -> {pair[1]}"


class Director:
    """Composes config, health, overrides and a dataplane around one queue (see the module doc)."""

    def __init__(
        self,
        config: DirectorConfig,
        dataplane: Dataplane,
        *,
        health: HealthMonitor | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        resync_interval_s: float = DEFAULT_RESYNC_INTERVAL_S,
        drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S,
        loader: Callable[[Sequence[str]], DirectorConfig] = DirectorConfig.load,
        dataplane_deadline_s: float = DATAPLANE_DEADLINE_S,
    ) -> None:
        self.config = config
        self.dataplane = dataplane
        self.health_monitor = health
        self.clock = clock
        self.wall_clock = wall_clock
        self.resync_interval_s = resync_interval_s
        self.drain_timeout_s = drain_timeout_s
        self.loader = loader
        self.dataplane_deadline_s = dataplane_deadline_s
        self.started_at = wall_clock()
        self.generation = 1
        self.role: str | None = None
        self.role_reason = ""
        self.fault = DataplaneFault()
        self._role_applied: Role | None = None  # the role the dataplane was last told

        self.health: dict[HealthKey, RealHealth] = {}
        self.last_check: dict[HealthKey, LastCheck] = {}
        self.passive: dict[HealthKey, PassiveMark] = {}
        self.overrides = Overrides()
        self.quorum_up: dict[ServiceKey, bool] = {}
        self.ghost_plans: dict[ServiceKey, ServicePlan] = {}  # services a reload dropped, still retiring
        self.runtime_checks: dict[HealthKey, tuple[CheckSpec, ...]] = {}  # for servers added at run time
        self.desired = Desired(IpvsTable())
        self.observed = IpvsTable()
        self.history: deque[Change] = deque(maxlen=200)
        self.last_errors: tuple[OpResult, ...] = ()
        self.counters = Counters()
        self.listeners: list[Callable[[DirectorInput], None]] = []

        self._queue: asyncio.Queue[DirectorInput] = asyncio.Queue()
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()  # the ticker's schedule changed (a fault, a passive mark)
        self._busy = asyncio.Lock()  # held while a batch is applied: status never sees half a change

    # --- feeding inputs (thread: the event loop's) ------------------------------------------------

    def submit(self, item: DirectorInput) -> None:
        """Queue one input."""
        self._queue.put_nowait(item)

    def report_check(
        self,
        pair: HealthKey,
        result: CheckResult,
        state: HealthState | None = None,
        weight: int | None = None,
        kind: str = "",
        started: float | None = None,
    ) -> None:
        """Queue a health check result (the health monitor's callback).

        `state` is the tracker's new state when this result changed it (then `weight` is the new
        dynamic weight); `started` is when the check began (None: now minus its latency; negative:
        unknown, which never clears a passive failure).
        """
        now = self.clock()
        begun = now - result.latency_s if started is None else started
        self.submit(CheckReport(pair[0], pair[1], result, state, weight, kind, now, begun))

    def passive_failure(self, real: RealKey, service: ServiceKey | None = None, reason: str = "") -> None:
        """Queue a failed dataplane connect (the dataplane's callback)."""
        self.submit(PassiveFailure(real, service, reason or "connect failed", self.clock()))

    def request_reload(self) -> None:
        """Queue a reload of the site files (SIGHUP)."""
        self.submit(Reload())

    def set_role(self, role: str, reason: str = "") -> None:
        """Queue a VRRP role change."""
        self.submit(RoleChange(role, reason))

    async def call(self, request: Request) -> Any:
        """Queue an operator request and return its result once applied (ApiError when refused)."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if isinstance(request, ReloadRequest):
            self.submit(Reload(fut))
        else:
            self.submit(Intent(request, fut))
        return await fut

    # --- running ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Adopt the dataplane's table, program the desired one, start checks and the resync timer."""
        for pair in self.config.checks:
            self.health.setdefault(pair, self._initial(pair))
        with contextlib.suppress(DataplaneCallError):  # recorded; retried by the loop with backoff
            await self._reconcile("start")
        self._sync_checks()
        self._spawn(self._loop())
        self._spawn(self._ticker())
        self._ready.set()

    async def stop(self) -> None:
        """Stop checks, the loop and the timer (the dataplane is closed by its owner)."""
        self._stopping.set()
        if self.health_monitor is not None:
            await self.health_monitor.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        while not self._queue.empty():
            item = self._queue.get_nowait()
            fut = item.reply if isinstance(item, Intent | Reload) else None
            if fut is not None and not fut.done():
                fut.set_exception(ApiError(ErrorCode.INTERNAL, "the director is shutting down"))

    async def wait_stopped(self) -> None:
        """Return once `stop` was called."""
        await self._stopping.wait()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("director task failed", exc_info=task.exception())

    async def _ticker(self) -> None:
        while True:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._next_tick_s())
                continue  # the schedule changed: compute it again
            self.submit(Resync())

    def _next_tick_s(self) -> float:
        """Return how long until the next resync: the period, or sooner for a retry or an expiry."""
        interval = RETIRE_POLL_S if self.overrides.retiring else self.resync_interval_s
        now = self.clock()
        due = [self.fault.retry_at] if self.fault.retry_at is not None else []
        retry_s = self.config.settings.passive_retry_s
        due.extend(m.at + retry_s for m in self.passive.values())
        for at in due:
            interval = min(interval, max(0.005, at - now))
        return interval

    async def _loop(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            while len(batch) < 10_000:
                try:
                    batch.append(self._queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            await self._process(batch)

    async def _process(self, batch: Sequence[DirectorInput]) -> None:
        async with self._busy:
            await self._process_locked(batch)

    async def _process_locked(self, batch: Sequence[DirectorInput]) -> None:
        replies: list[tuple[asyncio.Future[Any], Any]] = []
        causes: list[str] = []
        for item in batch:
            for listener in self.listeners:
                try:
                    listener(item)
                except Exception:  # a metrics hook must not stop the director
                    log.exception("director listener failed")
            try:
                cause = await self._handle(item, replies)
            except Exception as exc:  # keep serving whatever one input did
                log.exception("director: handling %s failed", type(item).__name__)
                fut = item.reply if isinstance(item, Intent | Reload) else None
                if fut is not None:
                    replies.append((fut, ApiError(ErrorCode.INTERNAL, f"internal error: {exc}")))
                continue
            if cause:
                causes.append(cause)
        needs_pass = bool(causes or replies) or any(isinstance(i, Resync) for i in batch)
        failure = ""
        errors: tuple[OpResult, ...] = ()
        if needs_pass:
            try:
                errors = await self._reconcile("; ".join(causes[:5]))
            except DataplaneCallError as exc:
                failure = str(exc)
        for fut, value in replies:
            if fut.done():
                continue
            if isinstance(value, ApiError):
                fut.set_exception(value)
            elif failure:
                fut.set_exception(
                    ApiError(
                        ErrorCode.DATAPLANE,
                        f"accepted, but the dataplane is failing ({failure}); "
                        "it is applied as soon as the dataplane answers again",
                    )
                )
            elif errors:
                msg = "; ".join(f"{r.op}: {r.error}" for r in errors[:3])
                fut.set_exception(
                    ApiError(ErrorCode.DATAPLANE, f"accepted, but the dataplane refused: {msg}")
                )
            else:
                fut.set_result(value)

    # --- the one place state changes -------------------------------------------------------------

    async def _handle(self, item: DirectorInput, replies: list[tuple[asyncio.Future[Any], Any]]) -> str:
        if isinstance(item, CheckReport):
            return self._on_check(item)
        if isinstance(item, PassiveFailure):
            return self._on_passive(item)
        if isinstance(item, Intent):
            try:
                value: Any = self._on_intent(item.request)
            except ApiError as exc:
                value = exc
            replies.append((item.reply, value))
            return "" if isinstance(value, ApiError) else f"operator {item.request.op}"
        if isinstance(item, Reload):
            try:
                value = await self._on_reload()
            except ApiError as exc:
                value = exc
                log.error("reload refused: %s", exc.message)
            if item.reply is not None:
                replies.append((item.reply, value))
            return "reload"
        if isinstance(item, RoleChange):
            self.role, self.role_reason = item.role, item.reason
            return f"role {item.role}"
        return ""

    # --- guarded dataplane calls -----------------------------------------------------------------

    async def _call_dataplane(
        self, method: str, call: Callable[[], Awaitable[T]], valid: Callable[[Any], bool], deadline_s: float
    ) -> T:
        """Run one dataplane call under a deadline; raise DataplaneCallError (recorded) on any failure."""
        try:
            value = await asyncio.wait_for(call(), deadline_s)
        except TimeoutError:
            error = f"{method}: no answer within {deadline_s:g} s"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the dataplane is broken; the director must not be
            error = f"{method}: {type(exc).__name__}: {exc}"
        else:
            if valid(value):
                return value
            error = f"{method}: returned {type(value).__name__}, which the dataplane protocol does not allow"
        self._record_fault(method, error)
        raise DataplaneCallError(error)

    def _record_fault(self, method: str, error: str) -> None:
        f = self.fault
        f.total += 1
        f.by_method[method] = f.by_method.get(method, 0) + 1
        f.consecutive += 1
        now = self.clock()
        if f.since is None:
            f.since = now
            log.error("dataplane %s failing: %s", self.dataplane.name, error)
        else:
            log.debug("dataplane %s still failing: %s", self.dataplane.name, error)
        f.last_error, f.last_method = error, method
        backoff = min(self.resync_interval_s, FAULT_BACKOFF_S * 2 ** min(f.consecutive - 1, 16))
        f.retry_at = now + backoff
        self._wake.set()

    def _dataplane_recovered(self) -> None:
        f = self.fault
        if f.since is not None:
            log.warning(
                "dataplane %s recovered after %.1f s (%d failed calls)",
                self.dataplane.name,
                self.clock() - f.since,
                f.consecutive,
            )
        f.since = f.retry_at = None
        f.consecutive = 0

    async def _dump(self, deadline_s: float | None = None) -> IpvsTable:
        return await self._call_dataplane(
            "dump",
            self.dataplane.dump,
            lambda v: isinstance(v, IpvsTable),
            self.dataplane_deadline_s if deadline_s is None else deadline_s,
        )

    async def _apply(self, ops: Sequence[Op]) -> tuple[OpResult, ...]:
        results = await self._call_dataplane(
            "apply",
            lambda: self.dataplane.apply(ops),
            lambda v: (
                isinstance(v, list | tuple)
                and len(v) == len(ops)
                and all(isinstance(r, OpResult) and r.op == op for r, op in zip(v, ops, strict=True))
            ),
            self.dataplane_deadline_s,
        )
        return tuple(results)

    async def _push_role(self) -> None:
        role = Role.STANDALONE if self.role is None else Role.from_vrrp(self.role)
        if role is self._role_applied:
            return
        await self._call_dataplane(
            "set_role", lambda: self.dataplane.set_role(role), lambda v: v is None, self.dataplane_deadline_s
        )
        self._role_applied = role
        log.info("dataplane %s follows role %s", self.dataplane.name, role)

    async def connections(self) -> list[ConnEntry]:
        """Return the dataplane's connection list (ApiError when the dataplane fails to answer)."""
        try:
            conns = await self._call_dataplane(
                "connections",
                self.dataplane.connections,
                lambda v: isinstance(v, list | tuple) and all(isinstance(c, ConnEntry) for c in v),
                self.dataplane_deadline_s,
            )
        except DataplaneCallError as exc:
            raise ApiError(ErrorCode.DATAPLANE, f"no connection list from the dataplane: {exc}") from None
        return list(conns)

    def _initial(self, pair: HealthKey) -> RealHealth:
        plan = self.config.plan(pair[0])
        real = plan.real(pair[1]) if plan is not None else None
        return initial_health(real) if real is not None else RealHealth()

    def _on_check(self, report: CheckReport) -> str:
        pair = (report.service, report.real)
        at = report.at or self.clock()
        self.last_check[pair] = LastCheck(report.result, at, report.kind)
        mark = self.passive.get(pair)
        if mark is not None and report.result.ok and report.started > mark.at:
            del self.passive[pair]
            log.info("%s: check passed after a passive failure; back in service", _fmt_pair(pair))
        if pair not in self.config.checks and pair not in self.runtime_checks:
            return ""
        old = self.health.get(pair) or self._initial(pair)
        new = old if report.state is None else RealHealth(report.state, report.weight)
        if new != old:
            log.info("%s: health %s -> %s (%s)", _fmt_pair(pair), old.state, new.state, report.result.reason)
            self.health[pair] = new
            return f"health {pair[1]} {new.state}"
        return "check" if mark is not None else ""

    def _on_passive(self, item: PassiveFailure) -> str:
        pairs = [p for p in self._known_pairs() if p[1] == item.real and item.service in (None, p[0])]
        at = item.at or self.clock()
        for pair in pairs:
            self.counters.passive_failures[pair] = self.counters.passive_failures.get(pair, 0) + 1
            if pair not in self.passive:
                log.warning("%s: marked down: %s", _fmt_pair(pair), item.reason)
            self.passive[pair] = PassiveMark(at, item.reason)
        return f"passive failure {item.real}" if pairs else ""

    def _known_pairs(self) -> list[HealthKey]:
        pairs = [(d.service, d.key) for d in self.desired.decisions]
        seen = set(pairs)
        pairs.extend(p for p in self.config.checks if p not in seen)
        return pairs

    def effective_health(self) -> dict[HealthKey, RealHealth]:
        health = dict(self.health)
        for pair in self.passive:
            health[pair] = RealHealth(HealthState.DOWN, health.get(pair, RealHealth()).weight)
        return health

    def _plans(self) -> tuple[ServicePlan, ...]:
        return self.config.plans + tuple(self.ghost_plans.values())

    # --- operator intents -------------------------------------------------------------------------

    def _resolve(self, text: str, service: ServiceKey | None = None) -> list[HealthKey]:
        addr, port = parse_real(text)
        pairs = [
            p
            for p in self._known_pairs()
            if str(p[1].addr) == addr and (port is None or p[1].port == port) and service in (None, p[0])
        ]
        if not pairs:
            where = f" in {service}" if service is not None else " in any service"
            raise ApiError(ErrorCode.NOT_FOUND, f"no real server {text}{where}")
        return pairs

    def _on_intent(self, request: Request) -> dict[str, Any]:
        if isinstance(request, DrainRequest):
            pairs = self._resolve(request.real)
            for key in {p[1] for p in pairs}:
                self.overrides = self.overrides.drain(key)
            log.info("operator: drain %s", ", ".join(sorted({str(p[1]) for p in pairs})))
            return {"drained": sorted({str(p[1]) for p in pairs})}
        if isinstance(request, EnableRequest):
            pairs = self._resolve(request.real)
            keys = {p[1] for p in pairs}
            was = sorted(str(k) for k in keys if self.overrides.is_drained(k))
            for key in keys:
                self.overrides = self.overrides.enable(key)
            log.info("operator: enable %s", ", ".join(sorted(str(k) for k in keys)))
            return {"enabled": sorted(str(k) for k in keys), "was_drained": was}
        if isinstance(request, AddRequest):
            skey = parse_service(request.service)
            if self.config.plan(skey) is None:
                known = ", ".join(str(p.key) for p in self.config.plans) or "none"
                raise ApiError(ErrorCode.NOT_FOUND, f"no service {request.service} (services: {known})")
            if not 0 <= request.weight <= 65535:
                raise ApiError(ErrorCode.INVALID_ARGUMENT, f"weight {request.weight} out of range 0..65535")
            addr, port = parse_real(request.real, skey.port)
            rkey = RealKey.parse(f"[{addr}]:{port}")
            current = self.desired.decision(skey, rkey)
            if current is not None and (skey, rkey) not in {
                (r.service, r.key) for r in self.overrides.retiring
            }:
                raise ApiError(
                    ErrorCode.INVALID_ARGUMENT,
                    f"{rkey} is already a real server of {skey} (use `gridlb enable` to lift a drain)",
                )
            self.overrides = self.overrides.add(skey, rkey, request.weight)
            self.health.pop((skey, rkey), None)
            self.passive.pop((skey, rkey), None)
            template = next((v for k, v in self.config.checks.items() if k[0] == skey and v), ())
            if template and (skey, rkey) not in self.config.checks:
                self.runtime_checks[(skey, rkey)] = tuple(replace(t, target=rkey) for t in template)
                self._sync_checks()
            log.info("operator: add %s to %s weight %d", rkey, skey, request.weight)
            return {"added": str(rkey), "service": str(skey), "weight": request.weight}
        if isinstance(request, RemoveRequest):
            service = parse_service(request.service) if request.service else None
            pairs = self._resolve(request.real, service)
            timeout = request.timeout_s if request.timeout_s > 0 else self.drain_timeout_s
            deadline = self.clock() + timeout
            for skey, rkey in pairs:
                if request.drain:
                    self.overrides = self.overrides.retire(skey, rkey, deadline=deadline)
                else:
                    self.overrides = self.overrides.remove(skey, rkey)
                    self._forget_runtime((skey, rkey))
            log.info(
                "operator: remove%s %s", " --drain" if request.drain else "", ", ".join(map(_fmt_pair, pairs))
            )
            return {
                "removed" if not request.drain else "retiring": [
                    {"service": str(s), "real": str(r)} for s, r in pairs
                ],
            }
        raise ApiError(ErrorCode.UNKNOWN_OP, f"{request.op}: not an operator intent")

    # --- reload -----------------------------------------------------------------------------------

    async def _on_reload(self) -> dict[str, Any]:
        paths = self.config.paths
        if not paths:
            raise ApiError(
                ErrorCode.CONFIG, "this director was not started from site files; nothing to reload"
            )
        try:
            new = await asyncio.to_thread(self.loader, paths)
        except GridlbError as exc:
            self.counters.reload_failures += 1
            raise ApiError(
                ErrorCode.CONFIG, f"reload refused, still running the previous config:\n{exc}"
            ) from None
        summary = self.apply_config(new)
        self.counters.reloads += 1
        return summary

    def apply_config(self, new: DirectorConfig) -> dict[str, Any]:
        """Switch to `new` (already validated): carry health by pair, retire what it drops."""
        old_pairs = {(d.service, d.key) for d in self.desired.decisions if d.weight is not None}
        old_pairs |= set(self.config.checks)
        new_pairs = configured_pairs(new.plans)
        now = self.clock()
        overrides = self.overrides.after_reload(new_pairs)
        new_service_keys = {p.key for p in new.plans}
        retired = []
        for skey, rkey in sorted(old_pairs - new_pairs, key=str):
            sorry = [p.sorry.key for p in self._plans() if p.key == skey and p.sorry is not None]
            if rkey in sorry:
                continue
            overrides = overrides.retire(skey, rkey, deadline=now + self.drain_timeout_s, reason="reload")
            retired.append({"service": str(skey), "real": str(rkey)})
        ghosts = {
            p.key: replace(p, reals=(), sorry=None, quorum=0)
            for p in self._plans()
            if p.key not in new_service_keys
        }
        kept_health = {}
        changed_checks = []
        for pair, state in self.health.items():
            if pair in new.checks and new.checks[pair] == self.config.checks.get(pair):
                kept_health[pair] = state
            elif pair in new.checks:
                changed_checks.append(pair)
        added = sorted(new_pairs - set(self.config.checks), key=str)
        self.config = new
        self.overrides = overrides
        self.ghost_plans = ghosts
        self.health = kept_health
        for pair in new.checks:
            self.health.setdefault(pair, self._initial(pair))
        self.passive = {p: m for p, m in self.passive.items() if p in new.checks}
        self.quorum_up = {k: v for k, v in self.quorum_up.items() if k in new_service_keys}
        self.generation += 1
        self.runtime_checks = {}
        self._sync_checks()
        log.info(
            "reloaded %s: %d services, %d added, %d retiring, %d with new checks",
            ", ".join(new.paths),
            len(new.plans),
            len(added),
            len(retired),
            len(changed_checks),
        )
        return {
            "generation": self.generation,
            "services": len(new.plans),
            "added": [{"service": str(s), "real": str(r)} for s, r in added],
            "retiring": retired,
            "checks_changed": [{"service": str(s), "real": str(r)} for s, r in changed_checks],
        }

    def _check_targets(self) -> dict[HealthKey, tuple[CheckSpec, ...]]:
        checks = {**self.config.checks, **self.runtime_checks}
        return {pair: specs for pair, specs in checks.items() if specs}

    def _sync_checks(self) -> None:
        if self.health_monitor is not None:
            self.health_monitor.set_targets(self._check_targets())

    # --- reconcile --------------------------------------------------------------------------------

    async def _reconcile(self, cause: str) -> tuple[OpResult, ...]:
        """Dump, diff against the desired table, apply, record; finish retirements. Returns op errors.

        Raises DataplaneCallError when the dataplane failed a call (already recorded and scheduled
        for a retry with backoff); the director's own state is kept, so the next pass applies it.
        """
        errors: list[OpResult] = []
        cause = "; ".join(filter(None, (cause, self._expire_passive()))) or "resync"
        await self._push_role()
        for _ in range(4):  # a finished retirement changes the desired table once more
            self.desired = build_table(
                self._plans(),
                self.effective_health(),
                self.overrides,
                self.quorum_up,
                self.config.settings.timeouts.table_timeouts(),
            )
            self.quorum_up = dict(self.desired.quorum_up)
            observed = await self._dump()
            ops = diff(observed, self.desired.table)
            self.counters.reconciles += 1
            if ops:
                results = await self._apply(ops)
                self.counters.ops_applied += len(results)
                failed = tuple(r for r in results if not r.ok)
                known = {(r.op, r.error) for r in self.last_errors}
                for r in failed:
                    name = _op_name(r.op)
                    self.counters.op_errors[name] = self.counters.op_errors.get(name, 0) + 1
                    level = logging.DEBUG if (r.op, r.error) in known else logging.ERROR
                    log.log(
                        level, "dataplane %s refused %s: %s", self.dataplane.name, describe_op(r.op), r.error
                    )
                errors.extend(failed)
                self.last_errors = failed
                self.history.append(Change(self.wall_clock(), cause, results))
                for r in results:
                    if r.ok:
                        log.info("applied %s (%s)", describe_op(r.op), cause)
                observed = await self._dump()
            elif cause == "resync":
                self.last_errors = ()
            self.observed = observed
            if not self._finish_retirements(observed) | self._drop_ghosts():
                break
            cause = "retired"
        self._dataplane_recovered()
        return tuple(errors)

    def _expire_passive(self) -> str:
        """Put back real servers whose passive failure is older than `passive_retry_s`; return a cause."""
        retry_s = self.config.settings.passive_retry_s
        now = self.clock()
        expired = [pair for pair, mark in self.passive.items() if now - mark.at >= retry_s]
        for pair in expired:
            del self.passive[pair]
            log.info("%s: trying again %.0f s after a passive failure", _fmt_pair(pair), retry_s)
        return f"passive retry {', '.join(str(p[1]) for p in expired)}" if expired else ""

    def _finish_retirements(self, observed: IpvsTable) -> bool:
        now = self.clock()
        changed = False
        for r in self.overrides.retiring:
            svc = observed.service(r.service)
            dest = svc.dest(r.key) if svc is not None else None
            if dest is None or dest.counters.active == 0 or now >= r.deadline:
                why = (
                    "deadline passed" if dest is not None and dest.counters.active else "no active connection"
                )
                log.info("%s: retired (%s; %s)", _fmt_pair(r.pair), r.reason, why)
                self.overrides = self.overrides.retired(r.service, r.key)
                self.health.pop(r.pair, None)
                self._forget_runtime(r.pair)
                changed = True
        return changed

    def _forget_runtime(self, pair: HealthKey) -> None:
        if self.runtime_checks.pop(pair, None) is not None:
            self._sync_checks()

    def _drop_ghosts(self) -> bool:
        dropped = False
        for key in list(self.ghost_plans):
            if not any(r.service == key for r in self.overrides.retiring):
                del self.ghost_plans[key]
                dropped = True
        return dropped

    async def resync(self) -> None:
        """Run one resync pass now (tests, and `start`)."""
        await self._process([Resync()])

    async def refresh(self, deadline_s: float | None = None) -> IpvsTable:
        """Return a fresh dump of the dataplane, or the last one when the dataplane fails to answer."""
        with contextlib.suppress(DataplaneCallError):
            self.observed = await self._dump(deadline_s)
        return self.observed

    # --- status -----------------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """Return the status snapshot served to `gridlb status` (JSON-ready), even while the dataplane hangs.

        It waits `STATUS_WAIT_S` at most for a batch in progress, and as long for a fresh dump; past
        either, it answers from the last table the dataplane gave.
        """
        try:
            await asyncio.wait_for(self._busy.acquire(), STATUS_WAIT_S)
        except TimeoutError:
            return self._status(self.observed)
        try:
            return self._status(await self.refresh(STATUS_WAIT_S))
        finally:
            self._busy.release()

    def _status(self, table: IpvsTable) -> dict[str, Any]:
        now = self.clock()
        effective = self.effective_health()
        services = []
        for plan in self._plans():
            svc = table.service(plan.key)
            reals: list[dict[str, Any]] = []
            for d in self.desired.decisions:
                if d.service != plan.key:
                    continue
                pair = (d.service, d.key)
                dest = svc.dest(d.key) if svc is not None else None
                last = self.last_check.get(pair)
                mark = self.passive.get(pair)
                retiring = self.overrides.retiring_entry(d.service, d.key)
                reals.append(
                    {
                        "real": str(d.key),
                        "in_table": dest is not None,
                        "weight": dest.spec.weight if dest is not None else None,
                        "desired_weight": d.weight,
                        "forward": (dest.spec.forward.ipvsadm_name if dest is not None else None),
                        "active": dest.counters.active if dest is not None else 0,
                        "inactive": dest.counters.inactive if dest is not None else 0,
                        "connections": dest.counters.stats.conns if dest is not None else 0,
                        "inbytes": dest.counters.stats.inbytes if dest is not None else 0,
                        "outbytes": dest.counters.stats.outbytes if dest is not None else 0,
                        "overloaded": dest.counters.overloaded if dest is not None else False,
                        "health": str(effective.get(pair, RealHealth()).state),
                        "reason": str(d.reason),
                        "drained": d.drained,
                        "retiring": retiring is not None,
                        "retire_reason": retiring.reason if retiring is not None else None,
                        "runtime_added": d.runtime_added,
                        "passive_failure": mark.reason if mark is not None else None,
                        "passive_failures": self.counters.passive_failures.get(pair, 0),
                        "last_check": None
                        if last is None
                        else {
                            "verdict": str(last.result.verdict),
                            "reason": last.result.reason,
                            "latency_s": round(last.result.latency_s, 6),
                            "age_s": round(max(0.0, now - last.at), 3),
                            "kind": last.kind,
                        },
                    }
                )
            services.append(
                {
                    "service": str(plan.key),
                    "scheduler": plan.spec.scheduler,
                    "in_table": svc is not None,
                    "quorum_up": self.quorum_up.get(plan.key, True),
                    "retiring": plan.key in self.ghost_plans,
                    "active": sum(r["active"] for r in reals),
                    "inactive": sum(r["inactive"] for r in reals),
                    "connections": svc.stats.conns if svc is not None else 0,
                    "reals": reals,
                }
            )
        return {
            "version": __version__,
            "dataplane": self.dataplane.name,
            "config": list(self.config.paths),
            "generation": self.generation,
            "uptime_s": round(self.wall_clock() - self.started_at, 3),
            "role": self.role,
            "role_reason": self.role_reason,
            "degraded": bool(self.last_errors) or self.fault.failing,
            "last_errors": [{"op": describe_op(r.op), "error": r.error} for r in self.last_errors],
            "dataplane_fault": None
            if not self.fault.failing
            else {
                "error": self.fault.last_error,
                "since_s": round(now - (self.fault.since or now), 3),
                "failed_calls": self.fault.consecutive,
            },
            "counters": {
                "reconciles": self.counters.reconciles,
                "ops_applied": self.counters.ops_applied,
                "op_errors": dict(self.counters.op_errors),
                "reloads": self.counters.reloads,
                "reload_failures": self.counters.reload_failures,
                "dataplane_faults": dict(self.fault.by_method),
            },
            "services": services,
        }


def verdict_state(verdict: Verdict) -> HealthState:
    """Return the health state a single check verdict stands for."""
    return _VERDICT_STATE[verdict]


_VERDICT_STATE = {
    Verdict.UP: HealthState.UP,
    Verdict.REFUSING: HealthState.REFUSING,
    Verdict.DOWN: HealthState.DOWN,
}
