"""The tcp checker (keepalived TCP_CHECK) against real sockets on 127.0.0.0/8."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from gridlb.health.base import Verdict, create_checker
from gridlb.health.tcp import TcpChecker
from gridlb.table import RealKey
from tests.support import need_root


@pytest.fixture
async def listener() -> AsyncIterator[tuple[RealKey, list[str]]]:
    """A TCP server on 127.0.0.21 that records each peer address."""
    peers: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername")[0])
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.21", 0)
    port = server.sockets[0].getsockname()[1]
    yield RealKey.parse(f"127.0.0.21:{port}"), peers
    server.close()
    await server.wait_closed()


@pytest.fixture
def full_backlog() -> Iterator[RealKey]:
    """A listener that never accepts, with its backlog filled: further SYNs go unanswered."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.22", 0))
    lsock.listen(0)
    addr = lsock.getsockname()
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.connect(addr)
        fillers.append(s)
    yield RealKey.parse(f"{addr[0]}:{addr[1]}")
    for s in fillers:
        s.close()
    lsock.close()


def closed_port() -> RealKey:
    s = socket.socket()
    s.bind(("127.0.0.23", 0))
    port = s.getsockname()[1]
    s.close()
    return RealKey.parse(f"127.0.0.23:{port}")


async def test_up(listener: tuple[RealKey, list[str]]) -> None:
    target, peers = listener
    result = await create_checker("tcp").check(target, timeout_s=2)
    assert result.verdict is Verdict.UP, result
    assert f"TCP connect to {target}" in result.reason
    await asyncio.sleep(0.05)
    assert peers == ["127.0.0.1"]


async def test_refused() -> None:
    target = closed_port()
    result = await TcpChecker().check(target, timeout_s=2)
    assert result.verdict is Verdict.DOWN
    assert result.reason == f"TCP connect to {target}: connection refused"


async def test_timeout(full_backlog: RealKey) -> None:
    result = await TcpChecker().check(full_backlog, timeout_s=0.3)
    assert result.verdict is Verdict.DOWN
    assert "no answer within 0.3 s" in result.reason
    assert 0.3 <= result.latency_s < 2.0


async def test_bindto_sets_the_source(listener: tuple[RealKey, list[str]]) -> None:
    target, peers = listener
    result = await TcpChecker(bindto="127.0.0.5").check(target, timeout_s=2)
    assert result.verdict is Verdict.UP
    await asyncio.sleep(0.05)
    assert peers == ["127.0.0.5"]


async def test_connect_ip_and_port_override_the_target(listener: tuple[RealKey, list[str]]) -> None:
    target, _ = listener
    elsewhere = closed_port()
    checker = TcpChecker(connect_ip=str(target.addr), connect_port=target.port)
    assert (await checker.check(elsewhere, timeout_s=2)).verdict is Verdict.UP
    assert (await TcpChecker().check(elsewhere, timeout_s=2)).verdict is Verdict.DOWN


async def test_bindto_of_the_wrong_family(listener: tuple[RealKey, list[str]]) -> None:
    target, _ = listener
    result = await TcpChecker(bindto="::1").check(target, timeout_s=2)
    assert result.verdict is Verdict.DOWN
    assert "bindto ::1" in result.reason


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="connect_port"):
        TcpChecker(connect_port=70000)
    with pytest.raises(ValueError):
        TcpChecker(bindto="not-an-address")
    with pytest.raises(TypeError):
        create_checker("tcp", misc_path="x")
    with pytest.raises(KeyError, match="known: gridftp, http, https, script, tcp"):
        create_checker("nonesuch")


async def test_bind_if(listener: tuple[RealKey, list[str]]) -> None:
    need_root()  # SO_BINDTODEVICE needs CAP_NET_RAW
    target, _ = listener
    assert (await TcpChecker(bind_if="lo").check(target, timeout_s=2)).verdict is Verdict.UP
    result = await TcpChecker(bind_if="glbHnone0").check(target, timeout_s=2)
    assert result.verdict is Verdict.DOWN and "No such device" in result.reason
