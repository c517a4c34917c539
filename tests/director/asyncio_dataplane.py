"""A second, test-only dataplane: a plain asyncio TCP proxy implementing the whole `Dataplane` protocol.

It exists to prove the seam: the director's e2e suite runs over it as over the proxy dataplane, and no
code in `gridlb.director` knows it exists (the director process finds it through
`GRIDLB_DATAPLANE_MODULES=asyncio=tests.director.asyncio_dataplane`). It shares nothing with the
proxy dataplane but the schedulers and the table model: its own listeners, relays and bookkeeping,
kept in IPVS's terms (active while open, inactive for the FIN timeout after close, a real server that
refused a connect skipped until the director edits or re-adds it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any

from gridlb.config.schema import GridlbSettings
from gridlb.dataplane.base import (
    Capabilities,
    DataplaneCounters,
    DataplaneHooks,
    OpResult,
    Role,
)
from gridlb.sched import DestView, Flow, Scheduler, create_scheduler, scheduler_names
from gridlb.table import (
    AddDest,
    AddService,
    ConnEntry,
    DelDest,
    DelService,
    Dest,
    DestCounters,
    DestSpec,
    EditDest,
    EditService,
    ForwardMethod,
    IpvsTable,
    Op,
    Proto,
    RealKey,
    Service,
    ServiceKey,
    ServiceSpec,
    SetTimeouts,
    Stats,
    Timeouts,
    apply_ops,
)

CAPABILITIES = Capabilities(
    forwarding=frozenset({ForwardMethod.MASQ}),
    schedulers=frozenset(scheduler_names()),
    forwarding_instead="relayed through the director by the asyncio test dataplane",
)


@dataclass
class _Dest:
    key: RealKey
    spec: DestSpec
    active: int = 0
    closed: list[float] = field(default_factory=list)  # expiry times of connections in FIN timeout
    conns: int = 0
    inbytes: int = 0
    outbytes: int = 0
    down: bool = False  # refused a connect; skipped until an AddDest/EditDest


@dataclass(eq=False)
class _Conn:
    client: RealKey
    virtual: RealKey
    dest: _Dest
    started: float
    inbytes: int = 0
    outbytes: int = 0


@dataclass
class _Service:
    key: ServiceKey
    spec: ServiceSpec
    scheduler: Scheduler
    dests: list[_Dest] = field(default_factory=list)  # kernel order: newest first
    server: asyncio.Server | None = None
    conns: int = 0
    inbytes: int = 0
    outbytes: int = 0


class AsyncioDataplane:
    """The test dataplane (see the module doc)."""

    name = "asyncio"
    capabilities = CAPABILITIES

    def __init__(self, timeouts: Timeouts, hooks: DataplaneHooks) -> None:
        self.timeouts = timeouts
        self.hooks = hooks
        self.services: dict[ServiceKey, _Service] = {}
        self.open: set[_Conn] = set()
        self.errors: dict[str, int] = {}
        self.role = Role.STANDALONE
        self._tasks: set[asyncio.Task[None]] = set()

    # --- the Dataplane protocol ------------------------------------------------------------------

    async def dump(self) -> IpvsTable:
        now = time.monotonic()
        services = []
        for svc in self.services.values():
            dests = []
            for d in svc.dests:
                d.closed = [t for t in d.closed if t > now]
                counters = DestCounters(
                    d.active,
                    len(d.closed),
                    stats=Stats(conns=d.conns, inbytes=d.inbytes, outbytes=d.outbytes),
                )
                dests.append(Dest(d.key, d.spec, counters))
            stats = Stats(conns=svc.conns, inbytes=svc.inbytes, outbytes=svc.outbytes)
            services.append(Service(svc.key, svc.spec, tuple(dests), stats))
        return IpvsTable(tuple(services), self.timeouts)

    async def apply(self, ops: Sequence[Op]) -> list[OpResult]:
        results = []
        for op in ops:
            try:
                apply_ops(await self.dump(), [op])  # the kernel's refusals, in ipvsadm's words
                await self._apply(op)
            except (KeyError, ValueError, OSError) as exc:
                results.append(OpResult(op, str(exc.args[0]) if exc.args else type(exc).__name__))
            else:
                results.append(OpResult(op))
        return results

    async def connections(self) -> list[ConnEntry]:
        now = time.monotonic()
        return [
            ConnEntry(
                Proto.TCP,
                self.timeouts.tcp,
                "ESTABLISHED",
                c.client,
                c.virtual,
                c.dest.key,
                age_s=now - c.started,
                inbytes=c.inbytes,
                outbytes=c.outbytes,
            )
            for c in self.open
        ]

    async def counters(self) -> DataplaneCounters:
        return DataplaneCounters(dict(self.errors))

    async def set_role(self, role: Role) -> None:
        self.role = role

    async def close(self, grace_s: float = 0.0) -> None:
        for svc in self.services.values():
            if svc.server is not None:
                svc.server.close()
        deadline = time.monotonic() + grace_s
        while self.open and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- programming -----------------------------------------------------------------------------

    async def _apply(self, op: Op) -> None:
        if isinstance(op, SetTimeouts):
            self.timeouts = op.timeouts
        elif isinstance(op, AddService):
            svc = _Service(op.key, op.spec, create_scheduler(op.spec.scheduler, op.spec.flags))
            assert op.key.addr is not None
            svc.server = await asyncio.start_server(
                lambda r, w: self._accept(svc, r, w), str(op.key.addr), op.key.port, reuse_address=True
            )
            self.services[op.key] = svc
        elif isinstance(op, EditService):
            svc = self.services[op.key]
            if (op.spec.scheduler, op.spec.flags) != (svc.spec.scheduler, svc.spec.flags):
                svc.scheduler = create_scheduler(op.spec.scheduler, op.spec.flags)
            svc.spec = op.spec
        elif isinstance(op, DelService):
            svc = self.services.pop(op.key)
            if svc.server is not None:
                svc.server.close()
        elif isinstance(op, AddDest):
            svc = self.services[op.service]
            svc.dests.insert(0, _Dest(op.key, op.spec))
            svc.scheduler.update(self._views(svc))
        elif isinstance(op, EditDest):
            svc = self.services[op.service]
            d = next(d for d in svc.dests if d.key == op.key)
            d.spec, d.down = op.spec, False
            svc.scheduler.update(self._views(svc))
        elif isinstance(op, DelDest):
            svc = self.services[op.service]
            svc.dests = [d for d in svc.dests if d.key != op.key]
            svc.scheduler.update(self._views(svc))

    def _views(self, svc: _Service) -> list[DestView]:
        now = time.monotonic()
        views = []
        for d in svc.dests:
            d.closed = [t for t in d.closed if t > now]
            over = bool(d.spec.u_threshold) and d.active + len(d.closed) >= d.spec.u_threshold
            weight = 0 if d.down else d.spec.weight
            views.append(DestView(d.key, weight, d.active, len(d.closed), over))
        return views

    # --- relaying --------------------------------------------------------------------------------

    def _accept(self, svc: _Service, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._serve(svc, reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, svc: _Service, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer: Any = writer.get_extra_info("peername")
        client = RealKey(ip_address(peer[0]), peer[1])
        assert svc.key.addr is not None
        flow = Flow(client.addr, client.port, svc.key.addr, svc.key.port)
        try:
            while True:
                key = svc.scheduler.pick(self._views(svc), flow, time.monotonic())
                dest = next((d for d in svc.dests if d.key == key), None)
                if dest is None:
                    return
                dest.active += 1  # counted when scheduled, as IPVS does, not once connected
                try:
                    up_r, up_w = await asyncio.wait_for(
                        asyncio.open_connection(str(dest.key.addr), dest.key.port), 3.0
                    )
                except (OSError, TimeoutError) as exc:
                    dest.active -= 1
                    reason = "timeout" if isinstance(exc, TimeoutError) else "refused"
                    self.errors[f"connect: {reason}"] = self.errors.get(f"connect: {reason}", 0) + 1
                    was_down, dest.down = dest.down, True
                    svc.scheduler.update(self._views(svc))
                    if not was_down and self.hooks.on_backend_failure is not None:  # told once
                        self.hooks.on_backend_failure(svc.key, dest.key, reason)
                    continue
                break
            conn = _Conn(client, RealKey(svc.key.addr, svc.key.port), dest, time.monotonic())
            dest.conns += 1
            svc.conns += 1
            self.open.add(conn)
            try:
                await asyncio.gather(
                    self._pipe(reader, up_w, conn, svc, inbound=True),
                    self._pipe(up_r, writer, conn, svc, inbound=False),
                )
            finally:
                self.open.discard(conn)
                dest.active -= 1
                dest.closed.append(time.monotonic() + self.timeouts.tcpfin)
                up_w.close()
        finally:
            writer.close()

    async def _pipe(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        conn: _Conn,
        svc: _Service,
        *,
        inbound: bool,
    ) -> None:
        try:
            while data := await src.read(1 << 16):
                dst.write(data)
                await dst.drain()
                if inbound:
                    conn.inbytes += len(data)
                    conn.dest.inbytes += len(data)
                    svc.inbytes += len(data)
                else:
                    conn.outbytes += len(data)
                    conn.dest.outbytes += len(data)
                    svc.outbytes += len(data)
            with contextlib.suppress(OSError):
                if dst.can_write_eof():
                    dst.write_eof()
        except (OSError, asyncio.IncompleteReadError):
            dst.transport.abort()


class _Factory:
    name = "asyncio"
    capabilities = CAPABILITIES

    def unavailable(self) -> str:
        return ""

    def create(self, settings: GridlbSettings, hooks: DataplaneHooks) -> AsyncioDataplane:
        return AsyncioDataplane(settings.timeouts.table_timeouts(), hooks)


FACTORY = _Factory()
