"""The director: one queue of inputs; every change is desired → diff(dump, desired) → apply → record.

Inputs are health reports, passive failures from the dataplane, operator intents from the control
API, reloads (SIGHUP or API), role changes (VRRP) and resync ticks. Each batch of inputs updates the
director's state; then the desired table is rebuilt purely (`reconcile.build_table`), compared with
what the dataplane reports (`table.diff`), and only the difference is applied; the table the
dataplane then holds is derived from that one dump and the accepted ops, not dumped again. A
periodic resync does the same with no input, which repairs drift (someone edited the table by hand,
an op failed).
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
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

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
from gridlb.config.schema import CheckSpec
from gridlb.dataplane.base import (
    Dataplane,
    DataplaneCounters,
    OpResult,
    Role,
)
from gridlb.director.guard import DATAPLANE_DEADLINE_S, DataplaneCallError, GuardedDataplane
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
    observed_after,
)
from gridlb.errors import GridlbError
from gridlb.health.base import CheckResult
from gridlb.status import (
    DirectorStatus,
)
from gridlb.systemd.journal import fields, keepalived_address
from gridlb.table import (
    ConnEntry,
    IpvsTable,
    RealKey,
    ServiceKey,
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
#: How long `status` waits for a batch in progress before answering from the last known table.
STATUS_WAIT_S = 0.25
#: How long `stop` waits for the loop and the timer to end once cancelled.
STOP_WAIT_S = 5.0
#: `gridlb:` settings a running director cannot change: a reload that changes one says so.
RESTART_SETTINGS = (
    "dataplane",
    "control_socket",
    "control_group",
    "metrics_listen",
    "proxy",
    "gridftp_services",
    "dashboard_listen",
    "dashboard_token_file",
    "scaleout",
)


from gridlb.director.config import DirectorConfig  # noqa: E402
from gridlb.director.records import (  # noqa: E402
    Change,
    CheckReport,
    Counters,
    DirectorInput,
    HealthMonitor,
    Intent,
    LastCheck,
    PassiveFailure,
    PassiveMark,
    Reload,
    Resync,
    RoleChange,
    describe_op,
    fmt_pair,
    op_name,
)

__all__ = [
    "Change",
    "CheckReport",
    "Director",
    "DirectorConfig",
    "DirectorInput",
    "HealthMonitor",
    "Intent",
    "PassiveFailure",
    "Reload",
    "Resync",
    "RoleChange",
    "describe_op",
]


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
        self.started_at = wall_clock()
        self.generation = 1
        self.role: str | None = None
        self.role_reason = ""

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
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()  # the ticker's schedule changed (a fault, a passive mark)
        self.guard = GuardedDataplane(
            dataplane,
            clock=clock,
            deadline_s=dataplane_deadline_s,
            max_backoff_s=resync_interval_s,
            on_fault=self._wake.set,
        )
        self._dataplane_errors: dict[str, int] = {}  # the dataplane's own counters, as last read
        self._dataplane_events: dict[str, int] = {}  # and its counts of what is no error
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
        if self.health_monitor is not None:
            await self.health_monitor.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:  # bounded: a task that ignores its cancellation must not keep the director up
            _, stuck = await asyncio.wait(self._tasks, timeout=STOP_WAIT_S)
            for task in stuck:
                log.error("director: task %s did not stop within %g s", task.get_name(), STOP_WAIT_S)
        self._tasks.clear()
        while not self._queue.empty():
            item = self._queue.get_nowait()
            fut = item.reply if isinstance(item, Intent | Reload) else None
            if fut is not None and not fut.done():
                fut.set_exception(ApiError(ErrorCode.INTERNAL, "the director is shutting down"))

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
                async with asyncio.timeout(self._next_tick_s()):
                    await self._wake.wait()
                continue  # the schedule changed: compute it again
            self.submit(Resync())

    def _next_tick_s(self) -> float:
        """Return how long until the next resync: the period, or sooner for a retry or an expiry."""
        interval = RETIRE_POLL_S if self.overrides.retiring else self.resync_interval_s
        now = self.clock()
        retry_at = self.guard.fault.retry_at
        due = [retry_at] if retry_at is not None else []
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

    # --- reading the dataplane (never blocks for long, never raises a dataplane's error) ----------

    async def dataplane_counters(self) -> DataplaneCounters | None:
        """Return the dataplane's own error counters, or None when it fails to answer."""
        try:
            counters = await self.guard.counters(STATUS_WAIT_S)
        except DataplaneCallError:
            return None
        self._dataplane_errors = dict(counters.errors)
        self._dataplane_events = dict(counters.events)
        return counters

    async def connections(self) -> list[ConnEntry]:
        """Return the dataplane's connection list (ApiError when the dataplane fails to answer)."""
        try:
            return await self.guard.connections()
        except DataplaneCallError as exc:
            raise ApiError(ErrorCode.DATAPLANE, f"no connection list from the dataplane: {exc}") from None

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
            log.info("%s: check passed after a passive failure; back in service", fmt_pair(pair))
        if pair not in self.config.checks and pair not in self.runtime_checks:
            return ""
        old = self.health.get(pair) or self._initial(pair)
        new = old if report.state is None else RealHealth(report.state, report.weight)
        if new != old:
            log_health_change(pair, report.kind, old.state, new.state, report.result.reason)
            self.health[pair] = new
            return f"health {pair[1]} {new.state}"
        return "check" if mark is not None else ""

    def _on_passive(self, item: PassiveFailure) -> str:
        pairs = [p for p in self._known_pairs() if p[1] == item.real and item.service in (None, p[0])]
        at = item.at or self.clock()
        for pair in pairs:
            self.counters.passive_failures[pair] = self.counters.passive_failures.get(pair, 0) + 1
            if pair not in self.passive:
                log.warning(
                    "Passive failure on service %s of VS %s: %s; marked down (%s)",
                    keepalived_address(pair[1]),
                    keepalived_address(pair[0]),
                    item.reason,
                    fmt_pair(pair),
                    extra=fields(
                        service=pair[0], real=pair[1], transition="passive-down", reason=item.reason
                    ),
                )
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
            for svc, real in pairs:
                log.info(
                    "Operator drain: service %s of VS %s set to weight 0 (operator: drain %s)",
                    keepalived_address(real),
                    keepalived_address(svc),
                    real,
                    extra=fields(service=svc, real=real, transition="drain", reason="operator"),
                )
            return {"drained": sorted({str(p[1]) for p in pairs})}
        if isinstance(request, EnableRequest):
            pairs = self._resolve(request.real)
            keys = {p[1] for p in pairs}
            was = sorted(str(k) for k in keys if self.overrides.is_drained(k))
            for key in keys:
                self.overrides = self.overrides.enable(key)
            for svc, real in pairs:
                log.info(
                    "Operator enable: service %s of VS %s gets its weight back (operator: enable %s)",
                    keepalived_address(real),
                    keepalived_address(svc),
                    real,
                    extra=fields(service=svc, real=real, transition="enable", reason="operator"),
                )
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
                "operator: remove%s %s", " --drain" if request.drain else "", ", ".join(map(fmt_pair, pairs))
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
            _, warnings = new.check_dataplane()  # what a start would refuse, a reload refuses too
        except GridlbError as exc:
            self.counters.reload_failures += 1
            raise ApiError(
                ErrorCode.CONFIG, f"reload refused, still running the previous config:\n{exc}"
            ) from None
        restart = [
            f"gridlb.{name}"
            for name in RESTART_SETTINGS
            if getattr(new.settings, name) != getattr(self.config.settings, name)
        ]
        summary = self.apply_config(new)
        self.counters.reloads += 1
        for text in warnings:
            log.warning("reload: %s", text)
        for name in restart:
            log.warning("reload: %s changed; it takes effect when the director restarts", name)
        return {**summary, "restart_needed": restart, "warnings": warnings}

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
        await self.guard.set_role(Role.STANDALONE if self.role is None else Role.from_vrrp(self.role))
        for _ in range(4):  # a finished retirement changes the desired table once more
            self.desired = build_table(
                self._plans(),
                self.effective_health(),
                self.overrides,
                self.quorum_up,
                self.config.settings.timeouts.table_timeouts(),
            )
            self.quorum_up = dict(self.desired.quorum_up)
            observed = await self.guard.dump()
            ops = diff(observed, self.desired.table)
            self.counters.reconciles += 1
            if ops:
                results = await self.guard.apply(ops)
                self.counters.ops_applied += len(results)
                failed = tuple(r for r in results if not r.ok)
                known = {(r.op, r.error) for r in self.last_errors}
                for r in failed:
                    name = op_name(r.op)
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
                # One dump per pass: what the dataplane holds now is that dump plus the accepted ops.
                after = observed_after(observed, results)
                observed = after if after is not None else await self.guard.dump()
            elif cause == "resync":
                self.last_errors = ()
            self.observed = observed
            if not self._finish_retirements(observed) | self._drop_ghosts():
                break
            cause = "retired"
        self.guard.recovered()
        return tuple(errors)

    def _expire_passive(self) -> str:
        """Put back real servers whose passive failure is older than `passive_retry_s`; return a cause."""
        retry_s = self.config.settings.passive_retry_s
        now = self.clock()
        expired = [pair for pair, mark in self.passive.items() if now - mark.at >= retry_s]
        for pair in expired:
            del self.passive[pair]
            log.info("%s: trying again %.0f s after a passive failure", fmt_pair(pair), retry_s)
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
                log.info("%s: retired (%s; %s)", fmt_pair(r.pair), r.reason, why)
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
            self.observed = await self.guard.dump(deadline_s)
        return self.observed

    # --- status -----------------------------------------------------------------------------------

    async def status(self) -> DirectorStatus:
        """Return the director's status, even while the dataplane hangs.

        It waits `STATUS_WAIT_S` at most for a batch in progress, and as long for a fresh dump; past
        either, it answers from the last table the dataplane gave.
        """
        try:
            async with asyncio.timeout(STATUS_WAIT_S):
                await self._busy.acquire()
        except TimeoutError:
            return self.snapshot(self.observed)
        try:
            return self.snapshot(await self.refresh(STATUS_WAIT_S))
        finally:
            self._busy.release()

    def snapshot(self, table: IpvsTable) -> DirectorStatus:
        """Return the typed status of this director with `table` as the dataplane's view."""
        from gridlb.director.report import snapshot

        return snapshot(self, table)


def log_health_change(pair: HealthKey, kind: str, old: object, new: object, reason: str) -> None:
    """Log a health transition as keepalived words it, with the journal fields operators filter on."""
    check = {"script": "MISC_CHECK", "": "Check"}.get(kind, f"{kind.upper()}_CHECK")
    rs, vs = keepalived_address(pair[1]), keepalived_address(pair[0])
    verb = {"up": "succeeded", "refusing": "refuses new sessions", "down": "failed"}.get(str(new), str(new))
    log.info(
        "%s on service %s of VS %s %s: %s (health %s -> %s: %s)",
        check,
        rs,
        vs,
        verb,
        reason or "-",
        old,
        new,
        fmt_pair(pair),
        extra=fields(service=pair[0], real=pair[1], transition=f"{old}->{new}", reason=reason),
    )
