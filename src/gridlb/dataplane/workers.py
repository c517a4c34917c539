"""The proxy's workers: N relay engines, one thread each, sharing one `ProxyState` behind one lock.

Each engine (relay.py) owns its epoll set, sockets and pipes, and one listening socket per service;
with more than one worker those sockets are SO_REUSEPORT, so the kernel spreads new connections over
the workers. The scheduling state is a single `ProxyState`: every engine picks and binds, counts a
close and expires inactive connections under the same lock, so `wlc` decides on every worker's
connections, as one kernel table does, and a passive failure is reported by the one engine that
marked the destination down. Ops are applied to the state under that lock by the control side, and
a service's listeners are opened or closed in every engine before `apply` returns.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from gridlb.config.defaults import PROXY_WORKERS_MAX
from gridlb.dataplane.proxy_state import ProxyState, ServiceState
from gridlb.dataplane.relay import (
    FailureCallback,
    LiveConns,
    RelayEngine,
    RelayMode,
    live_entries,
    splice_available,
)
from gridlb.table import ConnEntry, ServiceKey, Timeouts

T = TypeVar("T")

#: The most workers a site may ask for (a thread and a listening socket per service each).
MAX_WORKERS = PROXY_WORKERS_MAX


def cpu_count() -> int:
    """Return the number of CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) or 1


def resolve_workers(setting: int | str) -> int:
    """Return the worker count for `proxy.workers`: a number, or "auto" = one per CPU."""
    if setting == "auto":
        return min(cpu_count(), MAX_WORKERS)
    return int(setting)


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
        **engine_options: Any,
    ) -> None:
        if not 1 <= workers <= MAX_WORKERS:
            raise ValueError(f"workers must be 1 to {MAX_WORKERS}, not {workers}")
        if mode is RelayMode.AUTO:  # probed once, not per engine
            mode = RelayMode.SPLICE if splice_available() else RelayMode.COPY
        self.state = ProxyState(timeouts)
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

    def connections(self) -> list[ConnEntry]:
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

    @property
    def pauses(self) -> int:
        """Return how often a direction waited for a full receiver, over all engines."""
        return sum(e.pauses for e in self.engines)

    @property
    def pipes_created(self) -> int:
        """Return how many splice pipes the engines created."""
        return sum(e.pipes.created for e in self.engines)


__all__ = ["MAX_WORKERS", "WorkerPool", "cpu_count", "probe_bind", "resolve_workers"]
