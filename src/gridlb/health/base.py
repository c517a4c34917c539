"""The checker interface, its result type, the registry, and the connect helper every socket checker shares.

`ConnectOptions` carries keepalived's common checker keywords (`connect_ip`, `connect_port`, `bindto`,
`bind_port`, `bind_if`) and `connect_socket` opens the checker's TCP connection from that source: the
`tcp`, `gridftp`, `xrootd` and HTTP checkers all connect through it, so a check leaves from the
director's own address (never from the VIP) the same way whatever the protocol.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import importlib
import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from gridlb.table import IPAddress, RealKey, parse_address


class Verdict(enum.Enum):
    """What one check concluded about a real server."""

    UP = "up"
    REFUSING = "refusing"  # answering but refusing work (GridFTP 421/422): keep, weight 0
    DOWN = "down"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one check: the verdict, why, how long it took, and an optional dynamic weight."""

    verdict: Verdict
    reason: str = ""
    latency_s: float = 0.0
    weight: int | None = None  # MISC_CHECK misc_dynamic weight, when the check sets one
    cert_days_left: float | None = None  # HTTPS: days until the server's certificate expires

    @property
    def ok(self) -> bool:
        """Return True unless the server is down."""
        return self.verdict is not Verdict.DOWN


class Checker(ABC):
    """One kind of health check; it reports a result and knows nothing of retries (see tracker)."""

    kind: ClassVar[str]

    def __init__(self, **options: Any) -> None:
        self.options = options

    @abstractmethod
    async def check(self, target: RealKey, *, timeout_s: float) -> CheckResult:
        """Check `target` once within `timeout_s` and return the result (never raise)."""


_REGISTRY: dict[str, type[Checker]] = {}
_MODULES = ("tcp", "gridftp", "script", "xrootd", "http")
C = TypeVar("C", bound=type[Checker])


def register_checker(cls: C) -> C:
    """Class decorator: make `cls` available under `cls.kind`."""
    _REGISTRY[cls.kind] = cls
    return cls


def create_checker(kind: str, **options: Any) -> Checker:
    """Return a new checker of `kind` configured with `options`; KeyError names the known kinds."""
    for mod in _MODULES:
        try:
            importlib.import_module(f"gridlb.health.{mod}")
        except ModuleNotFoundError as exc:  # pragma: no cover - only while a module is missing
            if exc.name != f"gridlb.health.{mod}":
                raise
    try:
        return _REGISTRY[kind](**options)
    except KeyError:
        raise KeyError(f"unknown checker {kind!r} (known: {', '.join(sorted(_REGISTRY))})") from None


# ------------------------------------------------------------------ the shared connect helper


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
