"""The `tcp` checker: keepalived's TCP_CHECK, a non-blocking connect that must complete within the timeout.

Success means only that the listener exists (a GridFTP server answering `421` passes; see the `gridftp`
checker). Options, named as keepalived's: `connect_ip`, `connect_port` (check another address or port than
the real server's), `bindto`, `bind_port`, `bind_if` (source address, port and interface; check from the
director's own address, never from the VIP).
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time

from gridlb.health.base import Checker, CheckResult, Verdict, register_checker
from gridlb.table import IPAddress, RealKey, parse_address


def _fmt_s(seconds: float) -> str:
    return f"{seconds:g} s"


def describe_os_error(exc: OSError) -> str:
    """Return a short human-readable reason for a failed connect or read."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by peer"
    if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "no route to host" if exc.errno == errno.EHOSTUNREACH else "network unreachable"
    return exc.strerror or str(exc) or type(exc).__name__


async def connect_socket(
    addr: IPAddress,
    port: int,
    *,
    timeout_s: float,
    bindto: IPAddress | None = None,
    bind_port: int = 0,
    bind_if: str | None = None,
) -> socket.socket:
    """Return a connected non-blocking TCP socket; raises TimeoutError or OSError (the socket is closed)."""
    family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if bind_if:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, bind_if.encode())
        if bindto is not None or bind_port:
            if bindto is not None and bindto.version != addr.version:
                raise OSError(errno.EAFNOSUPPORT, f"bindto {bindto} is not of the family of {addr}")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            any_addr = "::" if family == socket.AF_INET6 else "0.0.0.0"
            sock.bind((str(bindto) if bindto is not None else any_addr, bind_port))
        async with asyncio.timeout(timeout_s):
            await asyncio.get_running_loop().sock_connect(sock, (str(addr), port))
    except BaseException:
        sock.close()
        raise
    return sock


class ConnectOptions:
    """The connection options every socket checker shares (keepalived's common checker keywords)."""

    def __init__(
        self,
        connect_ip: str | None = None,
        connect_port: int | None = None,
        bindto: str | None = None,
        bind_port: int = 0,
        bind_if: str | None = None,
    ) -> None:
        self.bind_if = bind_if or None
        self.connect_ip: IPAddress | None = parse_address(connect_ip) if connect_ip else None
        self.connect_port = connect_port
        self.bindto: IPAddress | None = parse_address(bindto) if bindto else None
        self.bind_port = int(bind_port)
        if connect_port is not None and not 0 < int(connect_port) < 65536:
            raise ValueError(f"connect_port {connect_port} is not a TCP port")
        if not 0 <= self.bind_port < 65536:
            raise ValueError(f"bind_port {bind_port} is not a TCP port")

    def destination(self, target: RealKey) -> RealKey:
        """Return where to connect for `target`."""
        return RealKey(
            self.connect_ip or target.addr,
            int(self.connect_port) if self.connect_port is not None else target.port,
        )

    async def connect(self, target: RealKey, timeout_s: float) -> socket.socket:
        """Connect to `target` (or connect_ip/connect_port) from bindto/bind_port."""
        dest = self.destination(target)
        return await connect_socket(
            dest.addr,
            dest.port,
            timeout_s=timeout_s,
            bindto=self.bindto,
            bind_port=self.bind_port,
            bind_if=self.bind_if,
        )


@register_checker
class TcpChecker(Checker):
    """keepalived TCP_CHECK: up when a TCP connection to the server completes within the timeout."""

    kind = "tcp"

    def __init__(
        self,
        *,
        connect_ip: str | None = None,
        connect_port: int | None = None,
        bindto: str | None = None,
        bind_port: int = 0,
        bind_if: str | None = None,
    ) -> None:
        super().__init__(
            connect_ip=connect_ip,
            connect_port=connect_port,
            bindto=bindto,
            bind_port=bind_port,
            bind_if=bind_if,
        )
        self.conn = ConnectOptions(connect_ip, connect_port, bindto, bind_port, bind_if)

    async def check(self, target: RealKey, *, timeout_s: float) -> CheckResult:
        """Connect, close, and report."""
        dest = self.conn.destination(target)
        start = time.monotonic()
        try:
            sock = await self.conn.connect(target, timeout_s)
        except TimeoutError:
            return CheckResult(
                Verdict.DOWN,
                f"TCP connect to {dest}: no answer within {_fmt_s(timeout_s)}",
                time.monotonic() - start,
            )
        except OSError as exc:
            return CheckResult(
                Verdict.DOWN, f"TCP connect to {dest}: {describe_os_error(exc)}", time.monotonic() - start
            )
        latency = time.monotonic() - start
        sock.close()
        return CheckResult(Verdict.UP, f"TCP connect to {dest} in {latency * 1000:.1f} ms", latency)
