"""The xrootd checker against Debian's real xrootd server, and a scripted peer for what it cannot show."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from gridlb.health import xrootd_wire as W
from gridlb.health.base import Verdict, create_checker
from gridlb.health.xrootd import XrootdChecker
from gridlb.table import RealKey, parse_address
from tests.health.xrootd_server import CANARY, XrootdServer


@pytest.fixture
def xrootd() -> Iterator[XrootdServer]:
    server = XrootdServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


async def test_levels_against_real_xrootd(xrootd: XrootdServer) -> None:
    target = RealKey.parse(xrootd.target)
    prefix = f"xrootd {target}: protocol "
    up = await create_checker("xrootd").check(target, timeout_s=5)
    assert up.verdict is Verdict.UP, up
    assert up.reason.startswith(prefix) and up.reason.endswith(", data server")
    login = await XrootdChecker(level="login").check(target, timeout_s=5)
    assert login.verdict is Verdict.UP and login.reason.endswith("data server; logged in as gridlb"), login
    ping = await XrootdChecker(level="canary").check(target, timeout_s=5)
    assert ping.verdict is Verdict.UP and ping.reason.endswith("; kXR_ping answered"), ping
    stat = await XrootdChecker(level="canary", canary_path="/canary.txt").check(target, timeout_s=5)
    assert stat.verdict is Verdict.UP, stat
    assert stat.reason.endswith(f"; kXR_stat /canary.txt: {len(CANARY)} bytes")
    missing = await XrootdChecker(level="canary", canary_path="/glbH-missing").check(target, timeout_s=5)
    assert missing.verdict is Verdict.DOWN
    assert "kXR_stat /glbH-missing: kXR_NotFound (3011)" in missing.reason
    v6 = RealKey.parse(f"[::1]:{target.port}")
    over_v6 = await XrootdChecker(level="canary", canary_path="/canary.txt").check(v6, timeout_s=5)
    assert over_v6.verdict is Verdict.UP and over_v6.reason.startswith(f"xrootd {v6}: protocol "), over_v6
    directory = await XrootdChecker(level="canary", canary_path="/").check(target, timeout_s=5)
    assert directory.verdict is Verdict.DOWN and directory.reason.endswith("a directory, not a file")


async def test_down_when_stopped_and_when_hung(xrootd: XrootdServer) -> None:
    target = RealKey.parse(xrootd.target)
    checker = XrootdChecker(level="canary", canary_path="/canary.txt")
    assert (await checker.check(target, timeout_s=5)).verdict is Verdict.UP
    xrootd.pause()  # SIGSTOP: the kernel still completes the TCP handshake
    hung = await checker.check(target, timeout_s=0.5)
    assert hung.verdict is Verdict.DOWN
    assert hung.reason == f"xrootd {target}: no answer within 0.5 s"
    assert 0.5 <= hung.latency_s < 3
    xrootd.resume()
    assert (await checker.check(target, timeout_s=5)).verdict is Verdict.UP
    xrootd.stop()
    down = await checker.check(target, timeout_s=2)
    assert (down.verdict, down.reason) == (Verdict.DOWN, f"xrootd {target}: connection refused")


async def test_bindto_is_the_source_xrootd_sees(xrootd: XrootdServer) -> None:
    """The shared connect helper: the check leaves from bindto (xrootd logs the client's address)."""
    target = RealKey.parse(xrootd.target)
    result = await XrootdChecker(level="login", bindto="127.0.0.43").check(target, timeout_s=5)
    assert result.verdict is Verdict.UP, result
    for _ in range(50):
        if "127.0.0.43" in xrootd.log():
            break
        await asyncio.sleep(0.1)
    assert "127.0.0.43" in xrootd.log()


# ------------------------------------------------------------------ a scripted peer

Answer = Callable[[int, bytes], bytes]  # (request id, request data) -> reply body with header


def frame(status: int, body: bytes, sid: bytes) -> bytes:
    return struct.pack(">2sHi", sid, status, len(body)) + body


@pytest.fixture
async def peer() -> AsyncIterator[tuple[RealKey, dict[str, object]]]:
    """A server on 127.0.0.44 speaking XRootD as `script` says: flags of kXR_protocol, then answers."""
    script: dict[str, object] = {"flags": W.KXR_IS_SERVER, "answer": None, "greeting": None}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            greeting = script["greeting"]
            if isinstance(greeting, bytes):
                writer.write(greeting)
                await writer.drain()
            await reader.readexactly(20)
            writer.write(struct.pack(">2sHiii", b"\0\0", 0, 8, 0x511, 1))
            while True:
                sid, rid, _, dlen = struct.unpack(">2sH16si", await reader.readexactly(24))
                data = await reader.readexactly(dlen)
                if rid == W.KXR_PROTOCOL:
                    flags = script["flags"]
                    assert isinstance(flags, int)
                    writer.write(frame(0, struct.pack(">iI", 0x511, flags), sid))
                else:
                    answer = script["answer"]
                    if callable(answer):
                        writer.write(answer(rid, data, sid))
                    elif rid == W.KXR_LOGIN:
                        writer.write(frame(0, bytes(16), sid))
                    else:
                        writer.write(frame(0, b"", sid))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.44", 0)
    yield RealKey.parse(f"127.0.0.44:{server.sockets[0].getsockname()[1]}"), script
    server.close()
    await server.wait_closed()


def redirect_to(host: bytes, port: int) -> Callable[[int, bytes, bytes], bytes]:
    def answer(rid: int, data: bytes, sid: bytes) -> bytes:
        if rid == W.KXR_LOGIN:
            return frame(0, bytes(16), sid)
        return frame(W.Status.REDIRECT, struct.pack(">i", port) + host, sid)

    return answer


async def test_redirector(peer: tuple[RealKey, dict[str, object]]) -> None:
    target, script = peer
    script["flags"] = W.KXR_IS_MANAGER
    connect = await XrootdChecker().check(target, timeout_s=2)
    assert connect.verdict is Verdict.UP and connect.reason.endswith(", redirector")
    script["answer"] = redirect_to(b"127.0.0.45?tried=", 1094)
    canary = XrootdChecker(level="canary", canary_path="/store/x", vips=["10.0.0.100"])
    ok = await canary.check(target, timeout_s=2)  # on loopback, a loopback data server is legitimate
    assert ok.verdict is Verdict.UP and ok.reason.endswith("kXR_stat /store/x redirected to 127.0.0.45:1094")
    script["answer"] = redirect_to(b"10.0.0.100", 1094)
    vip = await canary.check(target, timeout_s=2)
    assert vip.verdict is Verdict.DOWN
    assert (
        "redirector misconfigured: kXR_stat /store/x redirects to 10.0.0.100:1094, which is 10.0.0.100, a VIP"
        in (vip.reason)
    )
    unchecked = XrootdChecker(
        level="canary", canary_path="/store/x", vips=["10.0.0.100"], check_redirect=False
    )
    assert (await unchecked.check(target, timeout_s=2)).verdict is Verdict.UP


async def test_redirect_to_loopback_from_a_real_address_is_a_fault() -> None:
    checker = XrootdChecker(vips=["10.0.0.100"])
    local = parse_address("10.0.0.2")
    for host in ("127.0.0.1", "localhost", "::1", "::ffff:127.0.0.1"):
        fault = await checker._redirect_fault(W.RedirectInfo(host, 1094), local)
        assert fault is not None and "a loopback address, sent to a non-loopback client (10.0.0.2)" in fault
    assert await checker._redirect_fault(W.RedirectInfo("10.0.0.12", 1094), local) is None
    assert (
        await checker._redirect_fault(W.RedirectInfo("127.0.0.1", 1094), parse_address("127.0.0.1")) is None
    )


@pytest.mark.parametrize(
    ("status", "body", "verdict", "reason"),
    [
        (
            W.Status.WAIT,
            struct.pack(">i", 30) + b"try later\0",
            Verdict.REFUSING,
            "kXR_login: kXR_wait 30 s: try later",
        ),
        (W.Status.WAITRESP, struct.pack(">i", 5), Verdict.REFUSING, "kXR_login: kXR_wait 5 s"),
        (
            W.Status.ERROR,
            struct.pack(">i", 3024) + b"too busy\0",
            Verdict.REFUSING,
            "kXR_login: kXR_Overloaded (3024): too busy",
        ),
        (
            W.Status.ERROR,
            struct.pack(">i", 3010) + b"go away\0",
            Verdict.DOWN,
            "kXR_login: kXR_NotAuthorized (3010): go away",
        ),
        (W.Status.AUTHMORE, b"", Verdict.DOWN, "kXR_login: unexpected kXR_authmore"),
        (1234, b"", Verdict.DOWN, "kXR_login: unexpected status 1234"),
    ],
)
async def test_login_answers(
    peer: tuple[RealKey, dict[str, object]], status: int, body: bytes, verdict: Verdict, reason: str
) -> None:
    target, script = peer
    script["answer"] = lambda rid, data, sid: frame(status, body, sid)
    result = await XrootdChecker(level="login").check(target, timeout_s=2)
    assert result.verdict is verdict
    assert result.reason == f"xrootd {target}: protocol 5.1.1, data server; {reason}"


async def test_authentication_asked_and_non_xrootd(peer: tuple[RealKey, dict[str, object]]) -> None:
    target, script = peer
    script["answer"] = lambda rid, data, sid: frame(0, bytes(16) + b"&P=gsi,v:10400&P=unix\0", sid)
    login = await XrootdChecker(level="login").check(target, timeout_s=2)
    assert login.verdict is Verdict.UP and login.reason.endswith("login asks for authentication (gsi,unix)")
    canary = await XrootdChecker(level="canary").check(target, timeout_s=2)
    assert canary.verdict is Verdict.DOWN and canary.reason.endswith("the canary needs an anonymous login")
    script["greeting"] = b"220 ftp.example.org GridFTP Server ready.\r\n"
    ftp = await XrootdChecker().check(target, timeout_s=2)
    assert ftp.verdict is Verdict.DOWN
    assert "not XRootD: not an XRootD handshake reply (the server sent '220 ftp.example.org" in ftp.reason


def test_options() -> None:
    with pytest.raises(ValueError, match="level 'banner'"):
        XrootdChecker(level="banner")
    with pytest.raises(ValueError, match="1 to 8 bytes"):
        XrootdChecker(user="")
    a = XrootdChecker(vips=["10.0.0.1", "10.0.0.1"], bind_if="lo")
    assert a.options["vips"] == ("10.0.0.1",) and a.conn.bind_if == "lo"
