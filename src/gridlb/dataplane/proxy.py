"""The `proxy` dataplane: a userspace L4 full proxy per virtual service, driven from asyncio.

`ProxyDataplane` implements the `Dataplane` protocol. The bytes never touch the asyncio loop: a
`RelayEngine` thread (select.epoll + os.splice, see relay.py) accepts, schedules with the shared
schedulers, connects and relays; this class only posts commands to it and awaits the answers.
Passive health failures (a refused or timed-out connect) come back as calls of
`on_backend_failure(service, real, reason)` on the asyncio loop; a coroutine result is run as a
task that this object keeps referenced until it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TypeVar

from gridlb.dataplane.base import OpResult
from gridlb.dataplane.relay import RelayEngine, RelayMode
from gridlb.table import (
    AddService,
    ConnEntry,
    DelService,
    IpvsTable,
    Op,
    RealKey,
    ServiceKey,
    Timeouts,
)

T = TypeVar("T")

#: Called on the asyncio loop when a real server refused or timed out a connect: (service, real, reason).
BackendFailureCallback = Callable[[ServiceKey, RealKey, str], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class ProxyOptions:
    """Tunables of the proxy dataplane (defaults suit GridFTP control channels)."""

    relay: RelayMode = RelayMode.AUTO  # splice when the kernel allows, else the copy loop
    connect_timeout_s: float = 3.0  # a slower connect counts as a passive failure ("timeout")
    pipe_size: int = 1 << 20  # F_SETPIPE_SZ for splice pipes (falls back to the default size)
    copy_size: int = 1 << 18  # buffer per direction in copy mode
    backlog: int = 4096
    cpu: int | None = None  # pin the relay thread to this CPU


class ProxyDataplane:
    """A `Dataplane` relaying TCP in user space; counters and table as IPVS would report them."""

    name = "proxy"

    def __init__(
        self,
        *,
        timeouts: Timeouts | None = None,
        options: ProxyOptions | None = None,
        on_backend_failure: BackendFailureCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        opts = options or ProxyOptions()
        self.options = opts
        self.on_backend_failure = on_backend_failure
        self._tasks: set[asyncio.Task[None]] = set()
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._engine = RelayEngine(
            timeouts=timeouts,
            mode=opts.relay,
            connect_timeout_s=opts.connect_timeout_s,
            pipe_size=opts.pipe_size,
            copy_size=opts.copy_size,
            backlog=opts.backlog,
            on_failure=self._failure_from_engine,
            clock=clock,
            cpu=opts.cpu,
        )
        self._closed = False

    @property
    def relay_mode(self) -> RelayMode:
        """Return how bytes are moved (SPLICE or COPY; AUTO is resolved at start)."""
        return self._engine.mode

    # --- Dataplane protocol -----------------------------------------------------------------------

    async def dump(self) -> IpvsTable:
        """Return services, destinations, counters and timeouts as the engine has them now."""
        return await self._call(self._engine.state.snapshot)

    async def apply(self, ops: Sequence[Op]) -> list[OpResult]:
        """Apply `ops` in order; each result carries the reason when the op was refused."""
        ops = list(ops)
        return await self._call(lambda: [self._apply_one(op) for op in ops])

    async def close(self, grace_s: float = 0.0) -> None:
        """Stop accepting at once; let open relays finish for up to `grace_s`, then close everything."""
        if self._closed:
            return
        self._closed = True
        engine = self._engine
        if engine.alive:
            with contextlib.suppress(RuntimeError):  # the engine ended meanwhile
                await self._call(lambda: engine.stop(grace_s))
        await asyncio.get_running_loop().run_in_executor(None, engine.join, grace_s + 5.0)

    # --- extras for the director, the CLI and metrics ---------------------------------------------

    async def connections(self) -> list[ConnEntry]:
        """Return the connection table (`ipvsadm -Lc`): open relays, then inactive ones."""
        return await self._call(self._engine.connections)

    async def set_timeouts(self, timeouts: Timeouts) -> None:
        """Change the timeouts (`ipvsadm --set`); a new FIN timeout applies to later closes."""
        await self._call(lambda: self._engine.state.set_timeouts(timeouts))

    async def set_fallback(self, service: ServiceKey, real: RealKey | None) -> None:
        """Send new connections of `service` to `real` whenever no destination can take them.

        This is the hook for keepalived's sorry_server: the director decides when quorum is
        lost; the dataplane only uses the fallback when the scheduler returns nothing.
        """
        await self._call(lambda: self._engine.state.set_fallback(service, real))

    async def mark_up(self, service: ServiceKey, real: RealKey) -> bool:
        """Schedule to a destination again after a passive failure (the director's check passed)."""
        return await self._call(lambda: self._engine.state.mark_up(service, real))

    async def errors(self) -> dict[str, int]:
        """Return dataplane error counts by reason (accept, connect and relay errors)."""
        return await self._call(lambda: dict(self._engine.errors))

    # --- internals --------------------------------------------------------------------------------

    async def _call(self, fn: Callable[[], T]) -> T:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        fut: Future[T] = self._engine.call(fn)
        return await asyncio.wrap_future(fut)

    def _apply_one(self, op: Op) -> OpResult:
        """Run in the engine thread: update the state and the listeners together."""
        engine = self._engine
        state = engine.state
        try:
            state.check(op)
            if isinstance(op, AddService):
                state.apply(op)
                try:
                    engine.open_listener(state.services[op.key])
                except OSError as exc:
                    state.apply(DelService(op.key))
                    return OpResult(op, f"cannot listen on {op.key}: {exc.strerror or exc}")
            elif isinstance(op, DelService):
                engine.close_listener(op.key)
                state.apply(op)
            else:
                state.apply(op)
        except (KeyError, ValueError) as exc:
            return OpResult(op, str(exc.args[0]) if exc.args else type(exc).__name__)
        return OpResult(op)

    def _failure_from_engine(self, service: ServiceKey, real: RealKey, reason: str) -> None:
        """Called in the engine thread: hand the event to the asyncio loop."""
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


__all__ = ["BackendFailureCallback", "ProxyDataplane", "ProxyOptions", "RelayMode"]
