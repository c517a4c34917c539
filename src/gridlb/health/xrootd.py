"""The `xrootd` checker: the XRootD handshake and kXR_protocol, then kXR_login and a canary by level.

Levels (option `level`, like the GridFTP checker's):

- `connect` (default): TCP connect, the handshake and `kXR_protocol`; the reason names the protocol
  version and the role (data server, redirector, supervisor, proxy) from the reply's flags;
- `login`: also `kXR_login` as `user` (anonymous: no token, no authentication). A server that asks
  for authentication (`&P=gsi,...` in the reply) has answered the login and passes this level;
- `canary`: also `kXR_stat` of `canary_path`, or `kXR_ping` without one. A missing canary is down.

Verdicts: every step answered = UP. `kXR_wait`/`kXR_waitresp`, or `kXR_error` kXR_Overloaded, is
REFUSING (alive, not taking work now: weight 0, as a GridFTP 421). A closed connection, a timeout
(a SIGSTOPped xrootd still completes the TCP handshake), anything not XRootD, or any other kXR_error
is DOWN.

A redirect (`kXR_redirect`, from a redirector at any level) is followed by nothing: the checker
looks at its target instead. One that sends clients to one of the service's VIPs (`vips`) or to a
loopback address while the checker is not on loopback is misconfigured (DOWN, with the fix named):
clients would loop through the director or connect to themselves. Turn that off with
`check_redirect=False`. Connection options (`connect_ip`, `connect_port`, `bindto`, `bind_port`,
`bind_if`) are the shared ones of `gridlb.health.base.ConnectOptions`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import time
from collections.abc import Iterable

from gridlb.health import xrootd_wire as W
from gridlb.health.base import (
    Checker,
    CheckResult,
    ConnectOptions,
    Verdict,
    describe_os_error,
    register_checker,
)
from gridlb.table import IPAddress, RealKey, parse_address

LEVELS = ("connect", "login", "canary")
_RECV = 65536


class _Down(Exception):
    """Ends a check with a verdict and a reason."""

    def __init__(self, reason: str, verdict: Verdict = Verdict.DOWN) -> None:
        super().__init__(reason)
        self.reason = reason
        self.verdict = verdict


class _Session:
    """One checker connection: sends requests, reads framed replies through `ReplyReader`."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.reader = W.ReplyReader()
        self.next_id = 1

    async def _recv(self, what: str) -> None:
        data = await self.loop.sock_recv(self.sock, _RECV)
        if not data:
            raise _Down(f"connection closed by the server while waiting for {what}")
        self.reader.feed(data)

    async def handshake(self) -> tuple[W.HandshakeReply, W.Reply]:
        sid = self.new_stream_id()
        await self.loop.sock_sendall(self.sock, W.handshake() + W.protocol_request(sid))
        while (hs := self.reader.next_handshake()) is None:
            await self._recv("the handshake reply")
        return hs, await self._reply(sid, "kXR_protocol")

    async def request(self, build: bytes, sid: bytes, what: str) -> W.Reply:
        await self.loop.sock_sendall(self.sock, build)
        return await self._reply(sid, what)

    def new_stream_id(self) -> bytes:
        sid = self.next_id.to_bytes(2, "big")
        self.next_id += 1
        return sid

    async def _reply(self, sid: bytes, what: str) -> W.Reply:
        while True:
            reply = self.reader.next_reply()
            if reply is None:
                await self._recv(f"the {what} reply")
                continue
            if reply.status == W.Status.ATTN:
                continue  # unsolicited (asynchronous messages): not an answer
            if reply.streamid != sid:
                raise _Down(f"{what} reply for stream {reply.streamid.hex()}, expected {sid.hex()}")
            return reply


def _is_loopback(addr: IPAddress) -> bool:
    if addr.version == 6 and isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


@register_checker
class XrootdChecker(Checker):
    """XRootD handshake / kXR_protocol / kXR_login / kXR_stat or kXR_ping; see the module docstring."""

    kind = "xrootd"

    def __init__(
        self,
        *,
        level: str = "connect",
        user: str = "gridlb",
        canary_path: str | None = None,
        check_redirect: bool = True,
        vips: Iterable[str] = (),
        connect_ip: str | None = None,
        connect_port: int | None = None,
        bindto: str | None = None,
        bind_port: int = 0,
        bind_if: str | None = None,
    ) -> None:
        if level not in LEVELS:
            raise ValueError(f"level {level!r} is not one of {', '.join(LEVELS)}")
        if not 0 < len(user.encode()) <= 8:
            raise ValueError(f"user {user!r}: a kXR_login user name is 1 to 8 bytes")
        vip_set = frozenset(parse_address(str(v)) for v in vips)
        super().__init__(
            level=level,
            user=user,
            canary_path=canary_path,
            check_redirect=bool(check_redirect),
            vips=tuple(sorted(str(v) for v in vip_set)),
            connect_ip=connect_ip,
            connect_port=connect_port,
            bindto=bindto,
            bind_port=bind_port,
            bind_if=bind_if,
        )
        self.level = level
        self.user = user
        self.canary_path = canary_path or None
        self.check_redirect = bool(check_redirect)
        self.vips = vip_set
        self.conn = ConnectOptions(connect_ip, connect_port, bindto, bind_port, bind_if)

    async def check(self, target: RealKey, *, timeout_s: float) -> CheckResult:
        """Run the check up to `level` within `timeout_s`."""
        dest = self.conn.destination(target)
        start = time.monotonic()
        sock: socket.socket | None = None
        steps: list[str] = []
        try:
            async with asyncio.timeout(timeout_s):
                sock = await self.conn.connect(target, timeout_s)
                local = parse_address(str(sock.getsockname()[0]).split("%", 1)[0])
                verdict, reason = await self._run(_Session(sock), local, timeout_s, steps)
        except TimeoutError:
            done = f" after {', '.join(s for s in steps if not s.startswith('protocol'))}" if steps else ""
            verdict, reason = Verdict.DOWN, f"no answer within {timeout_s:g} s{done}"
        except _Down as exc:
            verdict, reason = exc.verdict, exc.reason
            if steps and steps[0].startswith("protocol"):
                reason = f"{steps[0]}; {reason}"
        except W.XrootdWireError as exc:
            verdict, reason = Verdict.DOWN, f"not XRootD: {exc}"
        except OSError as exc:
            verdict, reason = Verdict.DOWN, describe_os_error(exc)
        finally:
            if sock is not None:
                sock.close()
        return CheckResult(verdict, f"xrootd {dest}: {reason}", time.monotonic() - start)

    async def _run(
        self, s: _Session, local: IPAddress, timeout_s: float, steps: list[str]
    ) -> tuple[Verdict, str]:
        _, reply = await s.handshake()
        steps.append("the handshake")
        self._judge(reply, "kXR_protocol")
        info = W.parse_protocol(reply.body)
        steps.append("kXR_protocol")
        what = f"protocol {info.version}, {info.role}"
        steps.insert(0, what)
        if self.level == "connect":
            return Verdict.UP, what
        sid = s.new_stream_id()
        reply = await s.request(W.login_request(sid, user=self.user, pid=os.getpid()), sid, "kXR_login")
        redirect = await self._redirected(reply, local, "kXR_login")
        if redirect is not None:
            return Verdict.UP, f"{what}; kXR_login redirected to {redirect}"
        self._judge(reply, "kXR_login")
        steps.append("kXR_login")
        auth = W.login_wants_auth(reply.body)
        what += f"; logged in as {self.user}" if auth is None else f"; login asks for authentication ({auth})"
        if self.level == "login":
            return Verdict.UP, what
        if auth is not None:
            return Verdict.DOWN, f"{what}: the canary needs an anonymous login"
        sid = s.new_stream_id()
        if self.canary_path:
            name = f"kXR_stat {self.canary_path}"
            reply = await s.request(W.stat_request(sid, self.canary_path), sid, name)
        else:
            name = "kXR_ping"
            reply = await s.request(W.ping_request(sid), sid, name)
        redirect = await self._redirected(reply, local, name)
        if redirect is not None:
            return Verdict.UP, f"{what}; {name} redirected to {redirect}"
        self._judge(reply, name)
        if self.canary_path:
            st = W.parse_stat(reply.body)
            if st.flags & 2:  # kXR_isDir
                return Verdict.DOWN, f"{what}; {name}: a directory, not a file"
            if st.flags & 8:  # kXR_offline
                return Verdict.DOWN, f"{what}; {name}: offline (on tape)"
            return Verdict.UP, f"{what}; {name}: {st.size} bytes"
        return Verdict.UP, f"{what}; {name} answered"

    @staticmethod
    def _judge(reply: W.Reply, what: str) -> None:
        """Raise _Down unless `reply` is kXR_ok (REFUSING for wait and overload)."""
        if reply.status == W.Status.OK:
            return
        if reply.status in (W.Status.WAIT, W.Status.WAITRESP):
            wait = W.parse_wait(reply.body)
            info = f": {wait.message}" if wait.message else ""
            raise _Down(f"{what}: kXR_wait {wait.seconds} s{info}", Verdict.REFUSING)
        if reply.status == W.Status.ERROR:
            err = W.parse_error(reply.body)
            verdict = Verdict.REFUSING if err.errnum == W.KXR_OVERLOADED else Verdict.DOWN
            raise _Down(f"{what}: {err}", verdict)
        try:
            name = f"kXR_{W.Status(reply.status).name.lower()}"
        except ValueError:
            name = f"status {reply.status}"
        raise _Down(f"{what}: unexpected {name}")

    async def _redirected(self, reply: W.Reply, local: IPAddress, what: str) -> str | None:
        """Return the redirect target of a kXR_redirect reply (None for others); _Down when misconfigured."""
        if reply.status != W.Status.REDIRECT:
            return None
        where = W.parse_redirect(reply.body)
        if self.check_redirect:
            fault = await self._redirect_fault(where, local)
            if fault is not None:
                raise _Down(f"redirector misconfigured: {what} redirects to {where}, {fault}")
        return str(where)

    async def _redirect_fault(self, where: W.RedirectInfo, local: IPAddress) -> str | None:
        try:
            addrs = {parse_address(where.host)}
        except ValueError:
            addrs = set()
            with contextlib.suppress(OSError):
                infos = await asyncio.get_running_loop().getaddrinfo(
                    where.host, where.port, type=socket.SOCK_STREAM
                )
                addrs = {parse_address(str(i[4][0]).split("%", 1)[0]) for i in infos}
        for addr in sorted(addrs, key=str):
            if addr in self.vips:
                return (
                    f"which is {addr}, a VIP of the service: clients would come back through the "
                    "director; make the redirector name its data servers' own addresses"
                )
            if _is_loopback(addr) and not _is_loopback(local):
                return (
                    f"which is {addr}, a loopback address, sent to a non-loopback client ({local}); "
                    "set the data servers' host names (xrd.network / all.manager) to real addresses"
                )
        return None
