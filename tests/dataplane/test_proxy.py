"""ProxyDataplane end to end on loopback: real sockets through the relay threads, both relay modes.

Every test runs with one worker and with two (`make_proxy` is parametrized): the semantics are the
same whichever worker's listener the kernel hands a connection to.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import pytest

from gridlb.dataplane.proxy import BackendFailureCallback, ProxyDataplane, ProxyOptions
from gridlb.dataplane.relay import RelayMode
from gridlb.table import (
    AddDest,
    AddService,
    DelDest,
    Dest,
    DestSpec,
    EditDest,
    IpvsTable,
    Op,
    RealKey,
    Service,
    ServiceKey,
    ServiceSpec,
    SetTimeouts,
    Timeouts,
    diff,
)
from tests.dataplane import testsched
from tests.dataplane.servers import HashBackend, congestion_of, exchange, free_port, notsent_of, payload
from tests.support import need_tool

SPEC = ServiceSpec(scheduler=testsched.NAME)
MODES = [RelayMode.SPLICE, RelayMode.COPY]


class Factory(Protocol):
    """Makes a ProxyDataplane with the fixture's number of workers; closed at the fixture's end."""

    def __call__(
        self,
        *,
        timeouts: Timeouts | None = None,
        options: ProxyOptions | None = None,
        on_backend_failure: BackendFailureCallback | None = None,
        clock: Callable[[], float] = ...,
    ) -> ProxyDataplane: ...


@pytest.fixture(params=[1, 2], ids=["1worker", "2workers"])
async def make_proxy(request: pytest.FixtureRequest) -> AsyncIterator[Factory]:
    async for factory in _proxies(request.param):
        yield factory


@pytest.fixture
async def make_inproc_proxy() -> AsyncIterator[Factory]:
    """One in-process worker: the only kind a hand-moved clock can drive (processes read their own)."""
    async for factory in _proxies(1):
        yield factory


async def _proxies(workers: int) -> AsyncIterator[Factory]:
    made: list[ProxyDataplane] = []

    def factory(
        *,
        timeouts: Timeouts | None = None,
        options: ProxyOptions | None = None,
        on_backend_failure: BackendFailureCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> ProxyDataplane:
        opts = replace(options or ProxyOptions(), workers=workers)
        dp = ProxyDataplane(
            timeouts=timeouts, options=opts, on_backend_failure=on_backend_failure, clock=clock
        )
        assert dp.workers == workers
        made.append(dp)
        return dp

    yield factory
    for dp in made:
        await dp.close()


@pytest.fixture
async def backends() -> AsyncIterator[list[HashBackend]]:
    started: list[HashBackend] = []
    yield started
    for b in started:
        await b.stop()


async def start(backends: list[HashBackend], *new: HashBackend) -> list[HashBackend]:
    for b in new:
        await b.start()
        backends.append(b)
    return list(new)


def rkey(b: HashBackend) -> RealKey:
    return RealKey.parse(f"[{b.host}]:{b.port}" if ":" in b.host else f"{b.host}:{b.port}")


async def service(dp: ProxyDataplane, host: str, dests: list[tuple[RealKey, DestSpec]]) -> ServiceKey:
    key = ServiceKey.tcp(host, free_port(host))
    ops: list[Op] = [AddService(key, SPEC), *(AddDest(key, k, s) for k, s in reversed(dests))]
    results = await dp.apply(ops)
    assert all(r.ok for r in results), results
    return key


def dest_of(table: IpvsTable, svc: ServiceKey, real: RealKey) -> Dest:
    s = table.service(svc)
    assert s is not None
    d = s.dest(real)
    assert d is not None
    return d


async def wait_for(cond: Callable[[], object], timeout_s: float = 5.0) -> None:
    async def loop() -> None:
        while not cond():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(loop(), timeout_s)


@pytest.mark.parametrize("mode", MODES)
async def test_large_transfers_both_directions_with_checksums(
    make_proxy: Factory, backends: list[HashBackend], mode: RelayMode
) -> None:
    size = 8 << 20
    (a,) = await start(backends, HashBackend("a", reply_size=size))
    dp = make_proxy(options=ProxyOptions(relay=mode))
    assert dp.relay_mode is mode
    svc = await service(dp, "127.0.0.1", [(rkey(a), DestSpec())])
    assert svc.addr is not None
    datas = [payload(100 + i, size + i) for i in range(3)]
    results = await asyncio.gather(*(exchange("127.0.0.1", svc.port, d) for d in datas))
    want_reply = payload(len("a"), size)
    for data, (name, digest, reply) in zip(datas, results, strict=True):
        assert name == "a"
        assert digest == hashlib.sha256(data).hexdigest()  # client -> server, after client's SHUT_WR
        assert len(reply) == size and reply == want_reply  # server -> client, after the half-close
    table = await dp.dump()
    d = dest_of(table, svc, rkey(a))
    assert d.counters.stats.conns == 3
    assert d.counters.stats.inbytes == sum(len(x) for x in datas)
    assert d.counters.stats.outbytes == 3 * (len("HELLO a\n") + 65 + size)
    assert d.counters.active == 0 and d.counters.inactive == 3


@pytest.mark.parametrize("mode", MODES)
async def test_server_half_closes_first(
    make_proxy: Factory, backends: list[HashBackend], mode: RelayMode
) -> None:
    (a,) = await start(backends, HashBackend("a", reply_size=1 << 20, server_first=True))
    dp = make_proxy(options=ProxyOptions(relay=mode))
    svc = await service(dp, "127.0.0.1", [(rkey(a), DestSpec())])
    r, w = await asyncio.open_connection("127.0.0.1", svc.port)
    assert await r.readline() == b"HELLO a\n"
    assert await asyncio.wait_for(r.read(), 10) == payload(1, 1 << 20)  # EOF passed on to the client
    late = payload(7, 3 << 20)  # the client still sends after the server's FIN
    w.write(late)
    await w.drain()
    w.write_eof()
    await wait_for(lambda: a.digests)
    assert a.digests == [hashlib.sha256(late).hexdigest()]
    w.close()


async def test_ipv6_and_cross_family(make_proxy: Factory, backends: list[HashBackend]) -> None:
    v6, v4 = await start(backends, HashBackend("six", host="::1"), HashBackend("four"))
    dp = make_proxy()
    svc6 = await service(dp, "::1", [(rkey(v6), DestSpec())])
    mixed = await service(dp, "::1", [(rkey(v4), DestSpec())])  # IPv6 VIP, IPv4 real server
    data = payload(3, 100_000)
    name, digest, _ = await exchange("::1", svc6.port, data)
    assert (name, digest) == ("six", hashlib.sha256(data).hexdigest())
    name, digest, _ = await exchange("::1", mixed.port, data)
    assert (name, digest) == ("four", hashlib.sha256(data).hexdigest())
    conns = await dp.connections()
    assert {c.virtual.port for c in conns} == {svc6.port, mixed.port}
    assert all(c.state == "FIN_WAIT" for c in conns)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # IPV6_V6ONLY: no v4-mapped service
        assert s.connect_ex(("127.0.0.1", svc6.port)) != 0


def wlc_expectation(weights: dict[str, int], n: int) -> list[str]:
    """Apply the wlc rule by hand to `n` long-lived connections, dests in kernel order."""
    active = dict.fromkeys(weights, 0)
    order = list(weights)
    picks = []
    for _ in range(n):
        best = None
        for name in order:
            if weights[name] <= 0:
                continue
            if best is None or active[best] * 256 * weights[name] > active[name] * 256 * weights[best]:
                best = name
        assert best is not None
        active[best] += 1
        picks.append(best)
    return picks


async def test_wlc_spread_matches_the_rule(make_proxy: Factory, backends: list[HashBackend]) -> None:
    bs = await start(backends, HashBackend("a"), HashBackend("b"), HashBackend("c"))
    weights = {"a": 1, "b": 2, "c": 3}
    dp = make_proxy()
    # kernel order is newest first: the list passed to `service` is that order
    svc = await service(dp, "127.0.0.1", [(rkey(b), DestSpec(weight=weights[b.name])) for b in bs])
    table = await dp.dump()
    s = table.service(svc)
    assert s is not None
    kernel_order = [next(b.name for b in bs if rkey(b) == d.key) for d in s.dests]
    assert kernel_order == ["a", "b", "c"]
    held = []
    got = []
    for _ in range(12):  # connections stay open: each pick sees the previous ones as active
        r, w = await asyncio.open_connection("127.0.0.1", svc.port)
        got.append((await r.readline()).decode().split()[1])
        held.append(w)
    assert got == wlc_expectation(weights, 12)
    table = await dp.dump()
    for b in bs:
        assert dest_of(table, svc, rkey(b)).counters.active == got.count(b.name)
    for w in held:
        w.close()


async def test_weight_zero_gets_no_new_connections_existing_continue(
    make_proxy: Factory, backends: list[HashBackend]
) -> None:
    a, b = await start(backends, HashBackend("a", reply_size=10_000), HashBackend("b", reply_size=10_000))
    dp = make_proxy()
    svc = await service(dp, "127.0.0.1", [(rkey(a), DestSpec()), (rkey(b), DestSpec())])
    r, w = await asyncio.open_connection("127.0.0.1", svc.port)
    first = (await r.readline()).decode().split()[1]
    drained = a if first == "a" else b
    other = b if drained is a else a
    res = await dp.apply([EditDest(svc, rkey(drained), DestSpec(weight=0))])
    assert res[0].ok
    names = [(await exchange("127.0.0.1", svc.port, b"x"))[0] for _ in range(6)]
    assert names == [other.name] * 6
    data = payload(9, 500_000)  # the drained server's established connection still works
    w.write(data)
    w.write_eof()
    assert (await r.readline()).decode().strip() == hashlib.sha256(data).hexdigest()
    assert len(await r.read()) == 10_000
    w.close()
    d = dest_of(await dp.dump(), svc, rkey(drained))
    assert d.spec.weight == 0 and d.counters.stats.conns == 1


@pytest.mark.parametrize("mode", MODES)
async def test_delete_destination_during_transfer(
    make_proxy: Factory, backends: list[HashBackend], mode: RelayMode
) -> None:
    (a,) = await start(backends, HashBackend("a", reply_size=4 << 20))
    dp = make_proxy(options=ProxyOptions(relay=mode))
    svc = await service(dp, "127.0.0.1", [(rkey(a), DestSpec())])
    data = payload(5, 4 << 20)

    async def delete(_: str) -> None:
        res = await dp.apply([DelDest(svc, rkey(a))])
        assert res[0].ok

    name, digest, reply = await exchange("127.0.0.1", svc.port, data, after_hello=delete)
    assert (name, digest, len(reply)) == ("a", hashlib.sha256(data).hexdigest(), 4 << 20)
    s = (await dp.dump()).service(svc)
    assert s is not None and s.dests == ()
    assert s.stats.conns == 1 and s.stats.inbytes == len(data)
    # re-adding the key revives the destination with its (inactive) connection, as the kernel's trash
    await dp.apply([AddDest(svc, rkey(a), DestSpec())])
    assert dest_of(await dp.dump(), svc, rkey(a)).counters.inactive == 1


async def test_passive_health_retries_on_another_server(
    make_proxy: Factory, backends: list[HashBackend]
) -> None:
    (good,) = await start(backends, HashBackend("good"))
    dead = RealKey.parse(f"127.0.0.1:{free_port()}")
    failures: list[tuple[ServiceKey, RealKey, str]] = []
    seen = asyncio.Event()

    async def on_failure(svc: ServiceKey, real: RealKey, reason: str) -> None:
        await asyncio.sleep(0)  # a coroutine callback: run as a task the dataplane keeps referenced
        failures.append((svc, real, reason))
        seen.set()

    dp = make_proxy(on_backend_failure=on_failure)
    # the dead server is newest, so wlc tries it first on a tie
    svc = await service(dp, "127.0.0.1", [(dead, DestSpec(weight=5)), (rkey(good), DestSpec())])
    for _ in range(5):
        name, _, _ = await exchange("127.0.0.1", svc.port, b"hi")
        assert name == "good"
    await asyncio.wait_for(seen.wait(), 5)
    assert failures == [(svc, dead, "refused")]  # once: then it is out of scheduling
    d = dest_of(await dp.dump(), svc, dead)
    assert d.counters.active == 0 and d.counters.inactive == 0
    assert (await dp.counters()).errors["connect: refused"] == 1
    # the director puts it back (an EditDest): it is tried (and fails) again, still no client error
    assert all(r.ok for r in await dp.apply([EditDest(svc, dead, DestSpec(weight=5))]))
    assert (await exchange("127.0.0.1", svc.port, b"hi"))[0] == "good"
    await wait_for(lambda: len(failures) == 2)


async def test_connect_timeout_counts_as_failure(make_proxy: Factory, backends: list[HashBackend]) -> None:
    (good,) = await start(backends, HashBackend("good"))
    # a listener whose backlog is full never completes the handshake: connect times out
    stuck = socket.socket()
    stuck.bind(("127.0.0.1", 0))
    stuck.listen(0)
    fillers = []
    for _ in range(4):
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(stuck.getsockname())
        fillers.append(f)
    await asyncio.sleep(0.2)
    failures: list[str] = []
    dp = make_proxy(
        options=ProxyOptions(connect_timeout_s=0.3), on_backend_failure=lambda s, r, why: failures.append(why)
    )
    dead = RealKey.parse(f"127.0.0.1:{stuck.getsockname()[1]}")
    svc = await service(dp, "127.0.0.1", [(dead, DestSpec(weight=5)), (rkey(good), DestSpec())])
    try:
        name, _, _ = await exchange("127.0.0.1", svc.port, b"hi")
        assert name == "good"
        assert failures == ["timeout"]
    finally:
        for f in fillers:
            f.close()
        stuck.close()


async def test_no_destination_closes_client(make_proxy: Factory) -> None:
    dp = make_proxy()
    svc = await service(dp, "127.0.0.1", [])
    r, w = await asyncio.open_connection("127.0.0.1", svc.port)
    assert await asyncio.wait_for(r.read(), 5) == b""  # nothing to schedule to: closed
    w.close()


async def test_thresholds_set_and_clear_overload(
    make_inproc_proxy: Factory, backends: list[HashBackend]
) -> None:
    make_proxy = make_inproc_proxy
    a, b = await start(backends, HashBackend("a"), HashBackend("b"))
    now = [1000.0]
    dp = make_proxy(clock=lambda: now[0], timeouts=Timeouts(tcpfin=10))
    svc = await service(
        dp, "127.0.0.1", [(rkey(a), DestSpec(weight=100, u_threshold=2)), (rkey(b), DestSpec())]
    )
    held = []
    names = []
    for _ in range(5):
        r, w = await asyncio.open_connection("127.0.0.1", svc.port)
        names.append((await r.readline()).decode().split()[1])
        held.append((r, w))
    # wlc alone would give a, b, a, a, a (a has weight 100); once a holds 2 connections
    # (active+inactive >= u_threshold) it is OVERLOADED and skipped: b takes the rest
    assert names == ["a", "b", "a", "b", "b"]
    assert dest_of(await dp.dump(), svc, rkey(a)).counters.overloaded
    for _, w in held:
        w.write_eof()
    for r, _ in held:
        await r.read()
    await wait_for(lambda: a.open_now == 0 and b.open_now == 0)

    async def counters() -> tuple[int, int, bool]:
        c = dest_of(await dp.dump(), svc, rkey(a)).counters
        return c.active, c.inactive, c.overloaded

    for _ in range(100):
        if (await counters())[0] == 0:
            break
        await asyncio.sleep(0.02)
    # closed relays stay inactive for the FIN timeout, still counting towards the threshold
    assert await counters() == (0, 2, True)
    now[0] += 11  # unbinding drops the total to 0 < 3/4 * 2: OVERLOAD cleared
    assert await counters() == (0, 0, False)


async def test_fin_timeout_inactive_counting(make_inproc_proxy: Factory, backends: list[HashBackend]) -> None:
    make_proxy = make_inproc_proxy
    (a,) = await start(backends, HashBackend("a"))
    now = [50.0]
    dp = make_proxy(clock=lambda: now[0])  # default tcpfin 120 s
    svc = await service(dp, "127.0.0.1", [(rkey(a), DestSpec())])
    r, w = await asyncio.open_connection("127.0.0.1", svc.port)
    await r.readline()

    async def counts() -> tuple[int, int]:
        c = dest_of(await dp.dump(), svc, rkey(a)).counters
        return c.active, c.inactive

    assert await counts() == (1, 0)  # established: active
    assert [c.state for c in await dp.connections()] == ["ESTABLISHED"]
    w.write_eof()
    await r.read()
    w.close()
    for _ in range(200):
        if await counts() == (0, 1):
            break
        await asyncio.sleep(0.01)
    assert await counts() == (0, 1)  # closed: inactive for the FIN timeout
    now[0] += 119
    assert await counts() == (0, 1)
    assert [(c.state, c.expire_s) for c in await dp.connections()] == [("FIN_WAIT", 1)]
    now[0] += 1.5
    assert await counts() == (0, 0)  # then gone
    assert all(r.ok for r in await dp.apply([SetTimeouts(Timeouts(tcpfin=5))]))
    assert (await dp.dump()).timeouts.tcpfin == 5


async def test_copy_mode_uses_no_pipes(make_proxy: Factory, backends: list[HashBackend]) -> None:
    (a,) = await start(backends, HashBackend("a", reply_size=1 << 20))
    for mode, uses_pipes in ((RelayMode.COPY, False), (RelayMode.SPLICE, True)):
        dp = make_proxy(options=ProxyOptions(relay=mode))
        svc = await service(dp, "127.0.0.1", [(rkey(a), DestSpec())])
        await exchange("127.0.0.1", svc.port, payload(1, 1 << 20))
        assert (dp._pool.pipes_created > 0) is uses_pipes


@pytest.mark.parametrize("lowat", [1 << 16, 0], ids=["64KiB", "default"])
async def test_notsent_lowat_option_caps_what_waits_unsent(make_proxy: Factory, lowat: int) -> None:
    """A client that reads nothing: the relay's socket to it holds at most the option's cap unsent."""
    need_tool("ss")
    opts = ProxyOptions(notsent_lowat=lowat) if lowat else ProxyOptions()
    dp = make_proxy(options=opts)
    with socket.create_server(("127.0.0.1", 0)) as backend:
        real = RealKey.parse(f"127.0.0.1:{backend.getsockname()[1]}")
        svc = await service(dp, "127.0.0.1", [(real, DestSpec())])
        c = socket.create_connection(("127.0.0.1", svc.port), timeout=5)
        b, _ = backend.accept()
        b.settimeout(0.2)
        try:
            chunk, sent, deadline = b"x" * (1 << 20), 0, asyncio.get_running_loop().time() + 10
            while asyncio.get_running_loop().time() < deadline and sent < 64 << 20:
                try:  # until the whole chain is full
                    sent += b.send(chunk)
                except TimeoutError:
                    break
            (unsent,) = notsent_of(svc.port)
            cap = lowat or ProxyOptions().notsent_lowat
            assert cap // 2 <= unsent <= cap + (1 << 16), (unsent, cap)
        finally:
            c.close()
            b.close()


@pytest.mark.parametrize("name", ["reno", None], ids=["reno", "default"])
async def test_congestion_control_option_sets_both_relayed_sockets(
    make_proxy: Factory, name: str | None
) -> None:
    """The relay's socket to the client and its socket to the real server use the option's algorithm."""
    need_tool("ss")
    system = Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()
    if name is not None and name == system:
        name = "cubic"  # an algorithm other than the host's, so that the option shows
    dp = make_proxy(options=ProxyOptions(congestion_control=name))
    with socket.create_server(("127.0.0.1", 0)) as backend:
        bport = backend.getsockname()[1]
        svc = await service(dp, "127.0.0.1", [(RealKey.parse(f"127.0.0.1:{bport}"), DestSpec())])
        with socket.create_connection(("127.0.0.1", svc.port), timeout=5) as c:
            b, _ = backend.accept()
            with b:
                b.sendall(b"220 ready\r\n")
                assert c.recv(64) == b"220 ready\r\n"  # relayed: both of the relay's sockets exist
                to_client = congestion_of(svc.port, "sport")
                to_server = congestion_of(bport, "dport")
    assert to_client == [name or system], to_client
    assert to_server == [name or system], to_server


async def test_a_congestion_control_this_host_lacks_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match=r"congestion control 'no-such-cc' cannot be set here .*offers: "):
        ProxyDataplane(options=ProxyOptions(congestion_control="no-such-cc"))


async def test_dump_after_apply_equals_desired(make_proxy: Factory) -> None:
    v4 = ServiceKey.tcp("127.0.0.1", free_port())
    v6 = ServiceKey.tcp("::1", free_port("::1"))
    desired = IpvsTable(
        services=(
            Service(
                v4,
                SPEC,
                (
                    Dest(RealKey.parse("127.0.0.2:2811"), DestSpec(weight=3, u_threshold=10, l_threshold=5)),
                    Dest(RealKey.parse("127.0.0.3:2811"), DestSpec(weight=0)),
                ),
            ),
            Service(v6, replace(SPEC, persistence_timeout_s=0), (Dest(RealKey.parse("[::1]:2811")),)),
        )
    )
    dp = make_proxy()
    ops = diff(await dp.dump(), desired)
    assert all(r.ok for r in await dp.apply(ops))
    got = await dp.dump()
    stripped = IpvsTable(
        services=tuple(
            Service(s.key, s.spec, tuple(Dest(d.key, d.spec) for d in s.dests)) for s in got.services
        )
    )
    assert stripped == desired
    assert diff(got, desired) == []


async def test_apply_reports_errors_per_op(make_proxy: Factory) -> None:
    dp = make_proxy()
    key = ServiceKey.tcp("127.0.0.1", free_port())
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    busy = ServiceKey.tcp("127.0.0.1", taken.getsockname()[1])
    rk = RealKey.parse("127.0.0.2:1")
    results = await dp.apply(
        [
            AddService(key, SPEC),
            AddService(key, SPEC),
            AddService(busy, SPEC),
            AddService(ServiceKey.tcp("127.0.0.1", free_port()), ServiceSpec(scheduler="nope")),
            DelDest(key, rk),
            AddDest(key, rk, DestSpec(u_threshold=1, l_threshold=2)),
        ]
    )
    taken.close()
    errors = [r.error for r in results]
    assert errors[0] == ""
    assert errors[1] == "Service already exists"
    assert errors[2].startswith(f"cannot listen on {busy}")
    assert "unknown scheduler 'nope'" in errors[3]
    assert errors[4] == "No such destination"
    assert errors[5] == "lower threshold is higher than upper threshold"
    assert [s.key for s in (await dp.dump()).services] == [key]


async def test_close_stops_accepting(make_proxy: Factory, backends: list[HashBackend]) -> None:
    (a,) = await start(backends, HashBackend("a"))
    dp = make_proxy()
    svc = await service(dp, "127.0.0.1", [(rkey(a), DestSpec())])
    assert (await exchange("127.0.0.1", svc.port, b"x"))[0] == "a"
    await dp.close()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", svc.port)) != 0
    with pytest.raises(RuntimeError):
        await dp.dump()


@pytest.mark.parametrize("mode", MODES)
async def test_slow_receiver_pauses_and_resumes_without_loss(
    make_proxy: Factory, backends: list[HashBackend], mode: RelayMode
) -> None:
    size = 24 << 20
    (a,) = await start(backends, HashBackend("a", reply_size=size))
    dp = make_proxy(options=ProxyOptions(relay=mode))
    svc = await service(dp, "127.0.0.1", [(rkey(a), DestSpec())])
    r, w = await asyncio.open_connection("127.0.0.1", svc.port, limit=1 << 16)
    assert await r.readline() == b"HELLO a\n"
    w.write_eof()
    assert (await r.readline()).strip() == hashlib.sha256(b"").hexdigest().encode()
    got = hashlib.sha256()
    n = 0
    while chunk := await asyncio.wait_for(r.read(1 << 16), 10):
        got.update(chunk)
        n += len(chunk)
        if n < 4 << 20:
            await asyncio.sleep(0.002)  # slower than the sender: the proxy's writes to us fill up
    w.close()
    assert n == size and got.hexdigest() == hashlib.sha256(payload(1, size)).hexdigest()
    assert dp._pool.pauses > 0
