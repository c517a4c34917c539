"""Several relay workers over one scheduling state: one table's picks, drains, deletes and failures.

Real sockets on loopback. The real servers here run in their own thread (not the test's loop), so
the test can connect with blocking sockets, one connection at a time: each pick then happens
before the next connect, and the order of picks is the order of connects whatever worker the
kernel hands each connection to. That makes "the same picks as one table" a deterministic claim.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import selectors
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from ipaddress import ip_address

import pytest

from gridlb.config.schema import GridlbSettings
from gridlb.dataplane.base import DataplaneHooks
from gridlb.dataplane.proxy import FACTORY, ProxyDataplane, ProxyOptions
from gridlb.dataplane.workers import cpu_count, resolve_workers
from gridlb.sched.base import DestView, Flow, create_scheduler
from gridlb.table import (
    AddDest,
    AddService,
    DelService,
    DestSpec,
    EditDest,
    IpvsTable,
    Op,
    RealKey,
    ServiceKey,
    ServiceSpec,
    Timeouts,
)
from tests.dataplane.servers import free_port

HOST = "127.0.0.1"


class NameServers:
    """Real servers in one thread: each greets with `<name>\\n` and closes when its peer does."""

    def __init__(self, names: list[str]) -> None:
        self.sel = selectors.DefaultSelector()
        self.ports: dict[str, int] = {}
        for name in names:
            ls = socket.socket()
            ls.bind((HOST, 0))
            ls.listen(1024)
            ls.setblocking(False)
            self.ports[name] = ls.getsockname()[1]
            self.sel.register(ls, selectors.EVENT_READ, name)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="name-servers", daemon=True)
        self.thread.start()

    def key(self, name: str) -> RealKey:
        return RealKey.parse(f"{HOST}:{self.ports[name]}")

    def _run(self) -> None:
        while not self.stopping.is_set():
            for k, _ in self.sel.select(0.05):
                sock = k.fileobj
                assert isinstance(sock, socket.socket)
                if k.data is None:  # an accepted connection: EOF or reset from the proxy
                    try:
                        more = sock.recv(4096)
                    except OSError:
                        more = b""
                    if not more:
                        self.sel.unregister(sock)
                        sock.close()
                    continue
                try:
                    c, _ = sock.accept()
                except BlockingIOError:
                    continue
                c.sendall(f"{k.data}\n".encode())
                c.setblocking(False)
                self.sel.register(c, selectors.EVENT_READ, None)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        for k in list(self.sel.get_map().values()):
            assert isinstance(k.fileobj, socket.socket)  # only sockets are registered
            k.fileobj.close()
        self.sel.close()


@pytest.fixture
def servers() -> Iterator[NameServers]:
    s = NameServers(["a", "b", "c"])
    yield s
    s.stop()


@pytest.fixture
async def made() -> AsyncIterator[list[ProxyDataplane]]:
    dps: list[ProxyDataplane] = []
    yield dps
    for dp in dps:
        await dp.close()


async def proxy(
    made: list[ProxyDataplane], servers: NameServers, weights: dict[str, int], workers: int
) -> tuple[ProxyDataplane, ServiceKey]:
    dp = ProxyDataplane(timeouts=Timeouts(tcpfin=3600), options=ProxyOptions(workers=workers))
    made.append(dp)
    key = ServiceKey.tcp(HOST, free_port())
    ops: list[Op] = [AddService(key, ServiceSpec(scheduler="wlc"))]
    ops += [AddDest(key, servers.key(n), DestSpec(weight=w)) for n, w in weights.items()]
    assert all(r.ok for r in await dp.apply(ops))
    return dp, key


async def figure(dp: ProxyDataplane, name: str) -> list[int]:
    """Return one figure of every worker (relayed, open, ...)."""
    return [s[name] for s in await dp._pool.stats()]


def greet(port: int) -> tuple[socket.socket, str]:
    """Connect through the proxy and return the socket and the name of the server it reached."""
    s = socket.create_connection((HOST, port), timeout=10)
    line = b""
    while not line.endswith(b"\n"):
        part = s.recv(64)
        assert part, f"closed after {line!r}"
        line += part
    return s, line.decode().strip()


def totals(table: IpvsTable, key: ServiceKey, servers: NameServers) -> dict[str, tuple[int, int]]:
    svc = table.service(key)
    assert svc is not None
    names = {servers.key(n): n for n in servers.ports}
    return {names[d.key]: (d.counters.active, d.counters.inactive) for d in svc.dests}


@pytest.mark.parametrize(("workers", "n"), [(1, 2_000), (2, 10_000)])
async def test_wlc_picks_are_one_tables(
    made: list[ProxyDataplane], servers: NameServers, workers: int, n: int
) -> None:
    """`n` connections, opened one at a time, some held and some closed: the picks of gridlb.sched's
    wlc on a single table that sees the same opens and closes, whatever worker took each one."""
    weights = {"a": 1, "b": 2, "c": 3}
    dp, key = await proxy(made, servers, weights, workers)
    table = await dp.dump()
    svc = table.service(key)
    assert svc is not None
    order = [next(n for n in weights if servers.key(n) == d.key) for d in svc.dests]  # kernel order
    active = dict.fromkeys(weights, 0)
    inactive = dict.fromkeys(weights, 0)
    sched = create_scheduler("wlc")
    assert key.addr is not None
    flow = Flow(ip_address(HOST), 0, key.addr, key.port)
    rng = random.Random(14)
    held: list[tuple[socket.socket, str]] = []
    expected: list[str] = []
    got: list[str] = []
    closed = 0
    try:
        for _ in range(n):
            if held and (len(held) >= 48 or rng.random() < 0.5):
                sock, name = held.pop(rng.randrange(len(held)))
                sock.close()
                active[name] -= 1
                inactive[name] += 1
                closed += 1
                # the next pick must see this close: wait until the proxy has counted it
                for _ in range(5000):
                    if sum(i for _, i in totals(await dp.dump(), key, servers).values()) == closed:
                        break
                    await asyncio.sleep(0.001)
            views = [DestView(servers.key(m), weights[m], active[m], inactive[m]) for m in order]
            pick = sched.pick(views, flow, 0.0)
            assert pick is not None
            want = next(m for m in order if servers.key(m) == pick)
            expected.append(want)
            active[want] += 1
            sock, name = greet(key.port)
            got.append(name)
            held.append((sock, name))
            if name != want:
                break  # the rest would only differ further
    finally:
        for sock, _ in held:
            sock.close()
    assert got == expected, f"pick {len(got) - 1} differs from one table's"
    assert len(got) == n
    assert inactive["a"] and inactive["b"] and inactive["c"]  # closes took part in the decisions
    relayed = await figure(dp, "relayed")
    assert sum(relayed) == n
    if workers > 1:
        assert min(relayed) > n // 10, relayed  # the kernel spread the connections over the workers


async def test_drained_server_gets_nothing_on_any_worker(
    made: list[ProxyDataplane], servers: NameServers
) -> None:
    dp, key = await proxy(made, servers, {"a": 1, "b": 1}, 2)
    held = [greet(key.port) for _ in range(4)]
    assert {name for _, name in held} == {"a", "b"}
    res = await dp.apply([EditDest(key, servers.key("a"), DestSpec(weight=0))])
    assert res[0].ok
    before = await figure(dp, "relayed")
    names = []
    for _ in range(60):  # sequential connects from new client ports: the kernel spreads them
        sock, name = greet(key.port)
        names.append(name)
        sock.close()
    after = await figure(dp, "relayed")
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)  # both workers served
    assert names == ["b"] * 60
    for sock, _ in held:  # established connections to the drained server go on
        sock.sendall(b"x")
        sock.close()


async def test_delete_service_closes_every_workers_listener(
    made: list[ProxyDataplane], servers: NameServers
) -> None:
    dp, key = await proxy(made, servers, {"a": 1}, 2)
    for _ in range(20):
        greet(key.port)[0].close()
    assert all(await figure(dp, "relayed"))
    assert (await dp.apply([DelService(key)]))[0].ok
    refused = 0
    for _ in range(40):  # a worker's listener left open would take about half of these
        with socket.socket() as s:
            s.settimeout(2)
            refused += s.connect_ex((HOST, key.port)) != 0
    assert refused == 40
    assert (await dp.dump()).services == ()


async def test_passive_failure_reported_once(made: list[ProxyDataplane], servers: NameServers) -> None:
    dead = RealKey.parse(f"{HOST}:{free_port()}")
    failures: list[tuple[ServiceKey, RealKey, str]] = []
    dp = ProxyDataplane(
        options=ProxyOptions(workers=2), on_backend_failure=lambda s, r, why: failures.append((s, r, why))
    )
    made.append(dp)
    key = ServiceKey.tcp(HOST, free_port())
    ops: list[Op] = [
        AddService(key, ServiceSpec(scheduler="rr")),
        AddDest(key, servers.key("a"), DestSpec()),
        AddDest(key, dead, DestSpec()),
    ]
    assert all(r.ok for r in await dp.apply(ops))

    async def client() -> str:
        r, w = await asyncio.open_connection(HOST, key.port)
        try:
            return (await asyncio.wait_for(r.readline(), 10)).decode().strip()
        finally:
            w.close()

    names = await asyncio.gather(*(client() for _ in range(40)))  # concurrent, on both workers
    assert names == ["a"] * 40  # every connection that met the dead server was retried on "a"
    for _ in range(100):
        await asyncio.sleep(0.01)
    assert failures == [(key, dead, "refused")]
    errors = (await dp.counters()).errors
    assert errors.get("connect: refused", 0) >= 1


async def test_foreign_reuseport_listener_is_not_joined(made: list[ProxyDataplane]) -> None:
    port = free_port()
    with socket.socket() as other:  # e.g. haproxy, which sets SO_REUSEPORT, already on the VIP
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind((HOST, port))
        other.listen()
        dp = ProxyDataplane(options=ProxyOptions(workers=2))
        made.append(dp)
        key = ServiceKey.tcp(HOST, port)
        (res,) = await dp.apply([AddService(key, ServiceSpec(scheduler="wlc"))])
        assert res.error == f"cannot listen on {key}: Address already in use"
        assert (await dp.dump()).services == ()


async def test_connections_lists_every_worker(made: list[ProxyDataplane], servers: NameServers) -> None:
    dp, key = await proxy(made, servers, {"a": 1}, 2)
    held = [greet(key.port) for _ in range(30)]
    for _ in range(500):  # both workers hold some (a worker counts a connection once it is scheduled)
        if all(await figure(dp, "open")) and sum(await figure(dp, "open")) == 30:
            break
        await asyncio.sleep(0.01)
    assert all(await figure(dp, "open"))
    conns = await dp.connections()
    assert len(conns) == 30 and {c.state for c in conns} == {"ESTABLISHED"}
    held.pop()[0].close()
    for _ in range(500):
        conns = await dp.connections()
        if [c.state for c in conns].count("FIN_WAIT") == 1:
            break
        await asyncio.sleep(0.01)
    assert sorted(c.state for c in conns) == ["ESTABLISHED"] * 29 + ["FIN_WAIT"]
    for sock, _ in held:
        sock.close()


@pytest.mark.parametrize("scheduler", ["wlc", "rr"])
async def test_connection_totals_count_each_connection_once(
    made: list[ProxyDataplane], servers: NameServers, scheduler: str
) -> None:
    """wlc's workers count in their own slots (the dump sums them), rr's replicas see every
    connection (the dump takes one): either way the table counts each connection once."""
    dp = ProxyDataplane(timeouts=Timeouts(tcpfin=3600), options=ProxyOptions(workers=2))
    made.append(dp)
    key = ServiceKey.tcp(HOST, free_port())
    ops: list[Op] = [AddService(key, ServiceSpec(scheduler=scheduler))]
    ops += [AddDest(key, servers.key(n), DestSpec(weight=1)) for n in ("a", "b")]
    assert all(r.ok for r in await dp.apply(ops))
    held = [greet(key.port) for _ in range(40)]
    assert all(await figure(dp, "relayed"))  # both workers took some
    for sock, _ in held[:10]:
        sock.close()
    for _ in range(500):
        svc = (await dp.dump()).service(key)
        assert svc is not None
        if sum(d.counters.inactive for d in svc.dests) == 10:
            break
        await asyncio.sleep(0.01)
    assert svc is not None
    assert svc.stats.conns == 40
    assert sorted(d.counters.stats.conns for d in svc.dests) == [20, 20]
    assert [(d.counters.active, d.counters.inactive) for d in svc.dests] == [
        (
            sum(1 for _, n in held[10:] if servers.key(n) == d.key),
            sum(1 for _, n in held[:10] if servers.key(n) == d.key),
        )
        for d in svc.dests
    ]
    for sock, _ in held[10:]:
        sock.close()


def test_resolve_workers() -> None:
    assert resolve_workers(3) == 3
    assert resolve_workers("auto") == cpu_count() >= 1


@pytest.mark.parametrize(("setting", "want"), [(None, 1), (2, 2), ("auto", cpu_count())])
async def test_the_site_setting_makes_the_workers(setting: int | str | None, want: int) -> None:
    proxy_section = {} if setting is None else {"workers": setting}
    settings = GridlbSettings.model_validate({"proxy": proxy_section})
    dp = FACTORY.create(settings, DataplaneHooks())
    try:
        assert dp.workers == want
        pids = [s["pid"] for s in await dp._pool.stats()]
        if want == 1:
            assert pids == [os.getpid()] and not multiprocessing.active_children()  # in-process
        else:
            assert len(set(pids)) == want and os.getpid() not in pids  # one process each
    finally:
        await dp.close()
