"""The proxy's workers: one relay engine in-process, or N relay engines in N worker processes.

One worker (`WorkerPool`, the default) is a `RelayEngine` thread in the director's process over
one `ProxyState`: no extra process, nothing shared. Several workers (`ProcessPool`) are worker
processes, each with its own interpreter (so its own GIL) running one engine with one
SO_REUSEPORT listening socket per service: the kernel spreads new connections over them. The
least-connection services count in shared memory, one slot per worker, and the rest of the
scheduling table is kept equal through a log in shared memory under one process-shared lock
(proxy_shared.py), so `wlc` decides on every worker's connections, as one kernel table does. The
director's side still sees one dataplane: an op goes into the log before `apply` returns (every
later pick of any worker sees it) and listeners open or close in every worker first; dump,
connections and counters gather every worker's. A worker process that dies is restarted from a
live worker's copy of the table, its connections unbound, and counted as a dataplane fault; the
workers die with the director (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import importlib
import logging
import multiprocessing
import os
import pickle
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as connection_wait
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

from gridlb.config.defaults import PROXY_WORKERS_MAX
from gridlb.dataplane.proxy_shared import (
    NoLock,
    ProcessLock,
    Replica,
    RobustLock,
    SharedCounters,
    SharedLog,
    merge_traffic,
    shares_counters,
)
from gridlb.dataplane.proxy_state import ProxyState, ServiceState
from gridlb.dataplane.relay import (
    FailureCallback,
    LiveConns,
    RelayEngine,
    RelayMode,
    live_entries,
    splice_available,
)
from gridlb.table import AddService, ConnEntry, DelService, IpvsTable, Op, RealKey, ServiceKey, Timeouts

T = TypeVar("T")
log = logging.getLogger(__name__)

#: The most workers a site may ask for (a process and a listening socket per service each).
MAX_WORKERS = PROXY_WORKERS_MAX


def cpu_count() -> int:
    """Return the number of CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) or 1


def resolve_workers(setting: int | str) -> int:
    """Return the worker count for `proxy.workers`: a number, or "auto" = one per CPU."""
    if setting == "auto":
        return min(cpu_count(), MAX_WORKERS)
    return int(setting)


def refusal(exc: BaseException) -> str:
    """Return the words of a refused op (ProxyState.check raises KeyError/ValueError with ipvsadm's)."""
    return str(exc.args[0]) if exc.args else type(exc).__name__


def probe_bind(key: ServiceKey) -> None:
    """Bind `key` once without SO_REUSEPORT; raise OSError (EADDRINUSE) when anyone listens there.

    SO_REUSEPORT sockets of the same user would otherwise join a group another program (haproxy
    sets SO_REUSEPORT) already listens with, and share its connections without a word.
    """
    assert key.addr is not None
    family = socket.AF_INET6 if key.addr.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, getattr(socket, "IPV6_FREEBIND", 78), 1)
        sock.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_FREEBIND", 15), 1)
        sock.bind((str(key.addr), key.port))


class WorkerPool:
    """N `RelayEngine`s over one `ProxyState`; the asyncio side's view of them all."""

    def __init__(
        self,
        workers: int = 1,
        *,
        timeouts: Timeouts | None = None,
        mode: RelayMode = RelayMode.AUTO,
        on_failure: FailureCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
        cpu: int | None = None,
        expire_quiescent: bool = False,
        **engine_options: Any,
    ) -> None:
        if not 1 <= workers <= MAX_WORKERS:
            raise ValueError(f"workers must be 1 to {MAX_WORKERS}, not {workers}")
        if mode is RelayMode.AUTO:  # probed once, not per engine
            mode = RelayMode.SPLICE if splice_available() else RelayMode.COPY
        self.state = ProxyState(timeouts)
        self.state.persist.expire_quiescent = expire_quiescent  # before any op
        self.lock = threading.Lock()
        self.live: LiveConns = {}
        self.clock = clock
        self._stopped = False
        ncpu = os.cpu_count() or 1
        self.engines: list[RelayEngine] = []
        try:
            for i in range(workers):
                self.engines.append(
                    RelayEngine(
                        mode=mode,
                        on_failure=on_failure,
                        clock=clock,
                        cpu=None if cpu is None else (cpu + i) % ncpu,
                        name="gridlb-relay" if workers == 1 else f"gridlb-relay-{i}",
                        state=self.state,
                        lock=self.lock,
                        live=self.live,
                        reuseport=workers > 1,
                        **engine_options,
                    )
                )
        except BaseException:
            for engine in self.engines:
                engine.call(functools.partial(engine.stop, 0.0))
            raise

    @property
    def mode(self) -> RelayMode:
        """Return how bytes are moved (SPLICE or COPY)."""
        return self.engines[0].mode

    # --- the shared state -------------------------------------------------------------------------

    def locked(self, fn: Callable[[ProxyState], T]) -> T:
        """Run `fn(state)` under the state lock, inactive connections expired first.

        Raises RuntimeError once the pool is closed or when a worker thread has died.
        """
        if self._stopped:
            raise RuntimeError("the relay engine is stopped")
        for i, engine in enumerate(self.engines):
            if not engine.alive:
                raise RuntimeError(f"relay worker {i} is not running")
        with self.lock:
            self.state.expire(self.clock())
            return fn(self.state)

    # --- every engine -----------------------------------------------------------------------------

    async def each(self, fn: Callable[[RelayEngine], T]) -> list[T | BaseException]:
        """Run `fn(engine)` in every engine's thread; return each result or exception, in order."""
        futures = [asyncio.wrap_future(e.call(functools.partial(fn, e))) for e in self.engines]
        return list(await asyncio.gather(*futures, return_exceptions=True))

    async def open_listener(self, svc: ServiceState) -> None:
        """Listen for `svc` in every engine; on any error none listens and the first error is raised."""
        if len(self.engines) > 1:
            probe_bind(svc.key)
            first, last = self.engines[0].data_ports.get(svc.key, (1, 0))
            for port in range(first, last + 1):  # GridFTP data ports served on the VIP too
                try:
                    probe_bind(replace(svc.key, port=port))
                except OSError as exc:
                    raise OSError(exc.errno, f"{exc.strerror or exc} (data port {port})") from None
        errors = [r for r in await self.each(lambda e: e.open_listener(svc)) if isinstance(r, BaseException)]
        if errors:
            await self.close_listener(svc.key)
            raise errors[0]

    async def close_listener(self, key: ServiceKey) -> None:
        """Stop accepting for `key` in every engine; accepted connections go on."""
        for r in await self.each(lambda e: e.close_listener(key)):
            if isinstance(r, BaseException):
                raise r

    @property
    def size(self) -> int:
        """Return the number of relay engines."""
        return len(self.engines)

    async def apply_op(self, op: Op) -> str:
        """Apply `op` to the state and every engine's listeners; return "" or why it was refused."""
        try:
            if isinstance(op, AddService):

                def add(state: ProxyState) -> ServiceState:
                    state.apply(op)
                    return state.services[op.key]

                svc = self.locked(add)
                try:
                    await self.open_listener(svc)
                except OSError as exc:
                    self.locked(lambda state: state.apply(DelService(op.key)))
                    return f"cannot listen on {op.key}: {exc.strerror or exc}"
            elif isinstance(op, DelService):
                self.locked(lambda state: state.check(op))
                await self.close_listener(op.key)
                self.locked(lambda state: state.apply(op))
            else:
                self.locked(lambda state: state.apply(op))
        except (KeyError, ValueError) as exc:
            return refusal(exc)
        return ""

    async def dump(self) -> IpvsTable:
        """Return the table with counters."""
        return self.locked(lambda state: state.snapshot())

    async def connections(self) -> list[ConnEntry]:
        """Return the connection table: open relays of every engine, then the inactive connections."""

        def listing(state: ProxyState) -> list[ConnEntry]:
            now = self.clock()
            return [
                *live_entries(self.live, state.timeouts),
                *state.closed_entries(now),
                *state.template_entries(now),
            ]

        return self.locked(listing)

    async def errors(self) -> dict[str, int]:
        """Return the engines' error counts by reason, summed."""
        total: dict[str, int] = {}
        for r in await self.each(lambda e: dict(e.errors)):
            if isinstance(r, BaseException):
                raise r
            for reason, n in r.items():
                total[reason] = total.get(reason, 0) + n
        return total

    async def close(self, grace_s: float) -> None:
        """Stop accepting in every engine at once; let open relays finish for up to `grace_s`."""
        self._stopped = True
        await self.each(lambda e: e.stop(grace_s))  # an engine that ended meanwhile answers RuntimeError

        def join() -> None:
            deadline = time.monotonic() + grace_s + 5.0
            for e in self.engines:
                e.join(max(0.0, deadline - time.monotonic()))

        await asyncio.get_running_loop().run_in_executor(None, join)

    # --- figures (read without a lock: for tests and the benchmark) ---------------------------------

    async def stats(self) -> list[dict[str, int]]:
        """Return each engine's figures (pid, relayed, open, replayed, pauses, pipes_created)."""
        return [
            {
                "pid": os.getpid(),
                "relayed": e.relayed,
                "open": len(e.live),
                "replayed": 0,
                "contended": 0,
                "pauses": e.pauses,
                "pipes_created": e.pipes.created,
            }
            for e in self.engines
        ]

    @property
    def pauses(self) -> int:
        """Return how often a direction waited for a full receiver, over all engines."""
        return sum(e.pauses for e in self.engines)

    @property
    def pipes_created(self) -> int:
        """Return how many splice pipes the engines created."""
        return sum(e.pipes.created for e in self.engines)


# --- worker processes ---------------------------------------------------------------------------------

#: Seconds a new worker process may take to start (a fresh interpreter imports gridlb) and a command.
START_TIMEOUT_S = 60.0
CALL_TIMEOUT_S = 30.0
_PR_SET_PDEATHSIG = 1
#: Exit status of a worker whose replica could no longer follow the log (EX_SOFTWARE).
LOST_EXIT = 70


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What a worker process is started with (pickled to it)."""

    index: int
    parent: int  # the director's pid: the worker ends when it does
    log_name: str
    counters_name: str
    workers: int
    mode: RelayMode
    cpu: int | None
    timeouts: Timeouts | None
    expire_quiescent: bool
    engine_options: dict[str, Any]
    plugins: tuple[str, ...]  # modules of schedulers registered outside gridlb.sched (imported first)
    snapshot: bytes | None  # pickled (Replica, log position) of a live worker; None: a new, empty table


def scheduler_plugins() -> tuple[str, ...]:
    """Return the modules of schedulers registered in this process outside gridlb.sched."""
    from gridlb.sched import base

    registry: Mapping[str, type] = base._REGISTRY
    return tuple(sorted({c.__module__ for c in registry.values() if not c.__module__.startswith("gridlb.")}))


class WorkerDied(RuntimeError):
    """A worker process ended or stopped answering."""


def _die_with_parent(parent: int) -> None:
    """Have the kernel kill this process when the director's thread that started it ends."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the director ended before prctl: nobody would stop us
        os._exit(0)


def worker_main(spec: WorkerSpec, lock: ProcessLock, ctl: Connection, events: Connection) -> None:
    """The body of a worker process: one engine over a replica of the shared table; commands from `ctl`."""
    _die_with_parent(spec.parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the director decides when workers stop
    for module in spec.plugins:
        try:
            importlib.import_module(module)
        except Exception as exc:  # its services are refused with "unknown scheduler", not hidden
            log.error("proxy relay worker %d: cannot import scheduler module %s: %s", spec.index, module, exc)
    shared_log = SharedLog(lock, spec.log_name)
    counters = SharedCounters(spec.workers, spec.counters_name)
    if spec.snapshot is not None:
        replica, pos = pickle.loads(spec.snapshot)
        assert isinstance(replica, Replica)
    else:
        replica = Replica(
            spec.index,
            spec.timeouts,
            tracks_owner=frozenset(spec.engine_options["data_ports"]),
            counters=counters,
        )
        replica.persist.expire_quiescent = spec.expire_quiescent
        pos = 0
    replica.attach(shared_log, pos, spec.index, counters)

    def lost(why: str) -> None:
        log.error(
            "proxy relay worker %d: %s; ending so that it is restarted from a live copy", spec.index, why
        )
        os._exit(LOST_EXIT)

    replica.on_lost = lost
    send_lock = threading.Lock()

    def failed(service: ServiceKey, real: RealKey, reason: str) -> None:
        with send_lock:
            events.send((service, real, reason))

    engine = RelayEngine(
        mode=spec.mode,
        on_failure=failed,
        cpu=spec.cpu,
        name=f"gridlb-relay-{spec.index}",
        state=replica,
        lock=NoLock(),  # type: ignore[arg-type]  # the replica locks each change itself
        live={},
        reuseport=True,
        **spec.engine_options,
    )
    commands = _Commands(engine, replica)
    try:
        for key in list(replica.order):  # a restarted worker serves what the table holds
            engine.call(functools.partial(commands.open, key)).result(CALL_TIMEOUT_S)
        ctl.send(("ok", os.getpid()))
        while True:
            try:
                name, args = ctl.recv()
            except (EOFError, OSError):  # the director is gone
                name, args = "stop", (0.0,)
            if name == "stop":
                grace_s = float(args[0])
                with contextlib.suppress(RuntimeError):
                    engine.call(functools.partial(engine.stop, grace_s)).result(CALL_TIMEOUT_S)
                engine.join(grace_s + 5.0)
                with contextlib.suppress(OSError):
                    ctl.send(("ok", None))
                return
            fn = getattr(commands, name)
            try:
                reply: tuple[str, Any] = (
                    "ok",
                    engine.call(functools.partial(fn, *args)).result(CALL_TIMEOUT_S),
                )
            except OSError as exc:
                reply = ("oserror", (exc.errno, exc.strerror or str(exc)))
            except (KeyError, ValueError) as exc:
                reply = ("refused", refusal(exc))
            except Exception as exc:
                reply = ("error", f"{type(exc).__name__}: {exc}")
            ctl.send(reply)
    finally:
        shared_log.close()
        counters.close()


class _Commands:
    """What the director asks of a worker; each runs in the worker's engine thread."""

    def __init__(self, engine: RelayEngine, replica: Replica) -> None:
        self.engine = engine
        self.replica = replica
        self.lock = replica  # `with replica:` takes the shared lock and catches up

    def apply(self, op: Op) -> None:
        with self.lock:
            self.replica.apply(op)

    def check(self, op: Op) -> None:
        with self.lock:
            self.replica.check(op)

    def open(self, key: ServiceKey) -> None:
        with self.lock:
            svc = self.replica.services[key]
        self.engine.open_listener(svc)

    def close(self, key: ServiceKey) -> None:
        self.engine.close_listener(key)

    def dump(self) -> IpvsTable:
        with self.lock:
            return self.replica.snapshot()

    def live(self) -> list[ConnEntry]:
        """This worker's open relays and its own inactive connections (shared-counter services)."""
        with self.lock:
            own = self.replica.own_closed_entries(time.monotonic())
            return [*live_entries(self.engine.live, self.replica.timeouts), *own]

    def inactive(self) -> list[ConnEntry]:
        with self.lock:
            now = time.monotonic()
            return [*self.replica.logged_closed_entries(now), *self.replica.template_entries(now)]

    def errors(self) -> dict[str, int]:
        return dict(self.engine.errors)

    def stats(self) -> dict[str, int]:
        e = self.engine
        return {
            "pid": os.getpid(),
            "relayed": e.relayed,
            "open": e.open_count(),
            "replayed": self.replica.replayed,
            "contended": self.replica.contended,
            "pauses": e.pauses,
            "pipes_created": e.pipes.created,
        }

    def abandon(self, worker: int) -> int:
        with self.lock:
            return self.replica.abandon(worker)

    def state(self) -> bytes:
        with self.lock:
            return pickle.dumps((self.replica, self.replica.pos))


class _Worker:
    """The director's handle on one worker process."""

    def __init__(self, index: int, proc: BaseProcess, ctl: Connection, events: Connection) -> None:
        self.index = index
        self.proc = proc
        self.ctl = ctl
        self.events = events
        self.rpc = threading.Lock()
        self.started = time.monotonic()
        self.pid = 0

    def call(self, name: str, *args: Any, timeout_s: float = CALL_TIMEOUT_S) -> Any:
        """Run command `name` in the worker; raise what it raised (OSError, KeyError) or WorkerDied."""
        with self.rpc:
            try:
                self.ctl.send((name, args))
                if not self.ctl.poll(timeout_s):
                    raise WorkerDied(f"relay worker {self.index} did not answer {name} in {timeout_s:.0f} s")
                kind, value = self.ctl.recv()
            except (EOFError, OSError) as exc:
                raise WorkerDied(f"relay worker {self.index} is not running") from exc
        if kind == "ok":
            return value
        if kind == "oserror":
            raise OSError(*value)
        if kind == "refused":
            raise ValueError(value)
        raise RuntimeError(f"relay worker {self.index}: {value}")


class ProcessPool:
    """N worker processes over one shared table; the director's (asyncio) view of them all."""

    def __init__(
        self,
        workers: int,
        *,
        timeouts: Timeouts | None = None,
        mode: RelayMode = RelayMode.AUTO,
        on_failure: FailureCallback | None = None,
        cpu: int | None = None,
        expire_quiescent: bool = False,
        **engine_options: Any,
    ) -> None:
        if not 2 <= workers <= MAX_WORKERS:
            raise ValueError(f"worker processes must be 2 to {MAX_WORKERS}, not {workers}")
        if mode is RelayMode.AUTO:
            mode = RelayMode.SPLICE if splice_available() else RelayMode.COPY
        self.mode = mode
        self.on_failure = on_failure
        self._ctx = multiprocessing.get_context("spawn")
        self.lock = RobustLock()  # freed by the kernel when a worker dies holding it
        self.log = SharedLog(self.lock)
        self.counters = SharedCounters(workers)
        engine_options.setdefault("data_ports", {})
        self.data_ports: Mapping[ServiceKey, tuple[int, int]] = engine_options["data_ports"]
        #: The director's copy of the table's services and destinations (ops only, no connections):
        #: the start of a worker when no worker is left to copy the table from.
        self.spec_copy = Replica(
            -1, timeouts, tracks_owner=frozenset(self.data_ports), counters=self.counters
        )
        self.spec_copy.replaying = True  # it follows the workers' ops: never writes a shared flag
        self.spec_copy.persist.expire_quiescent = expire_quiescent
        ncpu = os.cpu_count() or 1
        self._spec = [
            WorkerSpec(
                index=i,
                parent=os.getpid(),
                log_name=self.log.name,
                counters_name=self.counters.name,
                workers=workers,
                mode=mode,
                cpu=None if cpu is None else (cpu + i) % ncpu,
                timeouts=timeouts,
                expire_quiescent=expire_quiescent,
                engine_options=dict(engine_options),
                plugins=scheduler_plugins(),
                snapshot=None,
            )
            for i in range(workers)
        ]
        self.workers: list[_Worker | None] = [None] * workers
        self.faults: dict[str, int] = {}
        self.restarts = 0
        self.control = threading.Lock()  # one op, listener change or restart at a time
        self._closing = False
        self._wake_r, self._wake_w = multiprocessing.Pipe(duplex=False)
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        # Worker processes are started by the monitor thread: PR_SET_PDEATHSIG follows the thread
        # that started a process, and this one lives as long as the pool.
        self._monitor = threading.Thread(target=self._run, name="gridlb-workers", daemon=True)
        self._monitor.start()
        self._started.wait()
        error = self._start_failure()
        if error is not None:
            self._monitor.join(10)
            self.log.close()
            self.counters.close()
            self.lock.close()
            raise error

    @property
    def size(self) -> int:
        """Return the number of worker processes."""
        return len(self.workers)

    # --- the monitor thread -----------------------------------------------------------------------

    def _spawn(self, spec: WorkerSpec) -> _Worker:
        ctl, child_ctl = self._ctx.Pipe()
        events, child_events = self._ctx.Pipe(duplex=False)
        proc = self._ctx.Process(
            target=worker_main,
            args=(spec, self.lock, child_ctl, child_events),
            name=f"gridlb-relay-{spec.index}",
            daemon=True,  # a director that exits without close() ends them (multiprocessing's atexit)
        )
        proc.start()
        child_ctl.close()
        child_events.close()
        w = _Worker(spec.index, proc, ctl, events)
        try:
            if not ctl.poll(START_TIMEOUT_S):
                raise WorkerDied(f"relay worker {spec.index} did not start in {START_TIMEOUT_S:.0f} s")
            kind, value = ctl.recv()
            if kind != "ok":
                raise WorkerDied(f"relay worker {spec.index} did not start: {value}")
        except (EOFError, OSError) as exc:
            proc.join(5)
            self._kill(w)
            raise WorkerDied(f"relay worker {spec.index} did not start (exit {proc.exitcode})") from exc
        except BaseException:
            self._kill(w)
            raise
        w.pid = int(value)
        return w

    @staticmethod
    def _kill(w: _Worker) -> None:
        if w.proc.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.pid or int(w.proc.pid or 0), signal.SIGKILL)
            w.proc.join(5)
        w.ctl.close()
        w.events.close()

    def _start_failure(self) -> BaseException | None:
        """Return what stopped the monitor thread from starting the workers (set by that thread)."""
        return self._start_error

    def _run(self) -> None:
        try:
            for i, spec in enumerate(self._spec):
                self.workers[i] = self._spawn(spec)
        except BaseException as exc:
            self._start_error = exc
            for w in self.workers:
                if w is not None:
                    self._kill(w)
            self._started.set()
            return
        self._started.set()
        while not self._closing:
            watched: dict[Any, tuple[str, _Worker]] = {}
            for w in self.workers:
                if w is not None:
                    watched[w.events] = ("event", w)
                    watched[w.proc.sentinel] = ("exit", w)
            ready = connection_wait([*watched, self._wake_r], timeout=1.0)
            for obj in ready:
                if obj is self._wake_r or self._closing:
                    continue
                what, w = watched[obj]
                if what == "event":
                    self._event(w)
                elif self.workers[w.index] is w:
                    self._replace(w)

    def _event(self, w: _Worker) -> None:
        try:
            service, real, reason = w.events.recv()
        except (EOFError, OSError):
            return  # it ended: its sentinel says so
        if self.on_failure is not None:
            try:
                self.on_failure(service, real, reason)
            except Exception:
                log.exception("proxy workers: failure callback raised")

    def _replace(self, dead: _Worker) -> None:
        """A worker process ended: free what it held, count the fault, start it again from a live copy."""
        dead.proc.join(1.0)
        code = dead.proc.exitcode
        why = f"signal {-code}" if code is not None and code < 0 else f"exit {code}"
        self._count(f"worker exited: {why}")
        log.error("proxy relay worker %d (pid %d) ended (%s): restarting it", dead.index, dead.pid, why)
        with self.control:
            if self._closing:
                return
            self._kill(dead)
            self.counters.zero_worker(dead.index)  # its connections died with it
            self.workers[dead.index] = None
            snapshot = None
            for w in self.workers:
                if w is None:
                    continue
                try:
                    w.call("abandon", dead.index)
                    snapshot = w.call("state")
                    break
                except WorkerDied:
                    continue
            if snapshot is None:  # nobody left to copy: start from the ops (no connections survived)
                with self.lock:
                    snapshot = pickle.dumps((self.spec_copy, self.log.end))
            time.sleep(max(0.0, dead.started + 1.0 - time.monotonic()))  # at most one start a second
            spec = replace(self._spec[dead.index], snapshot=snapshot)
            try:
                self.workers[dead.index] = self._spawn(spec)
                self.restarts += 1
            except WorkerDied as exc:
                self._count("worker restart failed")
                log.error("proxy relay worker %d: %s", dead.index, exc)

    def _count(self, reason: str) -> None:
        self.faults[reason] = self.faults.get(reason, 0) + 1

    # --- control side -----------------------------------------------------------------------------

    def _live(self) -> list[_Worker]:
        live = [w for w in self.workers if w is not None]
        if self._closing:
            raise RuntimeError("the relay engine is stopped")
        if len(live) < len(self.workers):
            raise WorkerDied("a relay worker is restarting")
        return live

    async def _blocking(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, fn)

    async def _each(self, name: str, *args: Any) -> list[Any]:
        live = self._live()
        return list(
            await asyncio.gather(*(self._blocking(functools.partial(w.call, name, *args)) for w in live))
        )

    async def apply_op(self, op: Op) -> str:
        """Apply `op` through the log and every worker's listeners; return "" or why it was refused."""
        return await self._blocking(functools.partial(self._apply_op, op))

    def _apply_op(self, op: Op) -> str:
        with self.control:
            live = self._live()
            first = live[0]
            try:
                if isinstance(op, AddService):
                    first.call("apply", op)
                    self.spec_copy.apply(op)
                    try:
                        self._open(op.key, live)
                    except OSError as exc:
                        first.call("apply", DelService(op.key))
                        self.spec_copy.apply(DelService(op.key))
                        return f"cannot listen on {op.key}: {exc.strerror or exc}"
                elif isinstance(op, DelService):
                    first.call("check", op)
                    for w in live:
                        w.call("close", op.key)
                    first.call("apply", op)
                    self.spec_copy.apply(op)
                else:
                    first.call("apply", op)
                    self.spec_copy.apply(op)
            except (KeyError, ValueError) as exc:
                return refusal(exc)
        return ""

    def _open(self, key: ServiceKey, live: list[_Worker]) -> None:
        probe_bind(key)
        first, last = self.data_ports.get(key, (1, 0))
        for port in range(first, last + 1):
            try:
                probe_bind(replace(key, port=port))
            except OSError as exc:
                raise OSError(exc.errno, f"{exc.strerror or exc} (data port {port})") from None
        try:
            for w in live:  # one after the other: the listeners join the port's group in worker order
                w.call("open", key)
        except OSError:
            for w in live:
                with contextlib.suppress(OSError):
                    w.call("close", key)
            raise

    async def dump(self) -> IpvsTable:
        """Return the table: counters of the (equal) replicas, traffic bytes summed over the workers."""
        tables = await self._each("dump")
        merged: IpvsTable = merge_traffic(
            tables, lambda svc: shares_counters(svc.spec, svc.key in self.data_ports)
        )
        return merged

    async def connections(self) -> list[ConnEntry]:
        """Return every worker's open relays, then the inactive connections and templates.

        The workers answer one after the other: a relay that closed meanwhile is listed once, closed.
        """
        live = await self._each("live")
        rest: list[ConnEntry] = await self._blocking(lambda: self._live()[0].call("inactive"))
        closed = {(e.client, e.virtual, e.dest) for e in rest if e.state == "FIN_WAIT"}
        return [*(e for part in live for e in part if (e.client, e.virtual, e.dest) not in closed), *rest]

    async def errors(self) -> dict[str, int]:
        """Return the workers' error counts by reason, summed, and the pool's faults (workers that died)."""
        total = dict(self.faults)
        for part in await self._each("errors"):
            for reason, n in part.items():
                total[reason] = total.get(reason, 0) + n
        return total

    async def stats(self) -> list[dict[str, int]]:
        """Return each worker's figures (pid, relayed, open, replayed, pauses, pipes_created)."""
        return await self._each("stats")

    def _sum(self, figure: str) -> int:
        return sum(int(w.call("stats")[figure]) for w in self._live())

    @property
    def pauses(self) -> int:
        """Return how often a direction waited for a full receiver, over all workers (blocking)."""
        return self._sum("pauses")

    @property
    def pipes_created(self) -> int:
        """Return how many splice pipes the workers created (blocking)."""
        return self._sum("pipes_created")

    async def close(self, grace_s: float) -> None:
        """Stop accepting in every worker at once; let open relays finish for up to `grace_s`; end them."""
        await self._blocking(functools.partial(self._close, grace_s))

    def _close(self, grace_s: float) -> None:
        with self.control:
            self._closing = True
        self._wake_w.send(None)
        self._monitor.join(10)
        live = [w for w in self.workers if w is not None]
        threads = [threading.Thread(target=self._stop_one, args=(w, grace_s)) for w in live]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.workers = [None] * len(self.workers)
        self._wake_r.close()
        self._wake_w.close()
        self.log.close()
        self.counters.close()
        self.lock.close()

    def _stop_one(self, w: _Worker, grace_s: float) -> None:
        with contextlib.suppress(WorkerDied, RuntimeError, OSError):
            w.call("stop", grace_s, timeout_s=grace_s + 10.0)
        w.proc.join(5.0)
        self._kill(w)


__all__ = [
    "MAX_WORKERS",
    "ProcessPool",
    "WorkerPool",
    "cpu_count",
    "probe_bind",
    "refusal",
    "resolve_workers",
]
