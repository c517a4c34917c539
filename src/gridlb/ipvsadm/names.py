"""Host and port names as ipvsadm resolves them, behind an injectable resolver.

ipvsadm prints `addr_to_anyname` (reverse lookup, else the numeric address) and `port_to_anyname`
(getservbyport, else the number) unless -n is given, and accepts host and service names where it
reads addresses (gethostbyname: IPv4 only) and ports (getservbyname for the service's protocol).
`SystemResolver` asks the C library (which may use DNS); `StaticResolver` answers from a hosts map
and an /etc/services file only, so tests never touch the network.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Protocol

from gridlb.table import IPAddress

#: ipvsadm builds names in a 60-byte buffer with snprintf: at most 59 characters survive.
NAME_BUFSIZE = 60


class Resolver(Protocol):
    """The four C-library lookups ipvsadm makes."""

    def host_by_addr(self, addr: IPAddress) -> str | None:
        """gethostbyaddr(): the host name of `addr`, or None."""
        ...

    def addr_by_host(self, name: str) -> IPv4Address | None:
        """gethostbyname() restricted to IPv4 (ipvsadm's host_to_addr), or None."""
        ...

    def service_by_port(self, port: int, proto: str) -> str | None:
        """getservbyport(port, proto) with proto "tcp", "udp" or "sctp", or None."""
        ...

    def port_by_service(self, name: str, proto: str) -> int | None:
        """getservbyname(name, proto), or None."""
        ...


class SystemResolver:
    """The C library's resolver (nsswitch: /etc/hosts, DNS, /etc/services)."""

    def host_by_addr(self, addr: IPAddress) -> str | None:
        try:
            return socket.gethostbyaddr(str(addr))[0]
        except (OSError, UnicodeError):
            return None

    def addr_by_host(self, name: str) -> IPv4Address | None:
        try:
            return IPv4Address(socket.gethostbyname(name))
        except (OSError, UnicodeError, ValueError):
            return None

    def service_by_port(self, port: int, proto: str) -> str | None:
        try:
            return socket.getservbyport(port, proto)
        except (OSError, OverflowError):
            return None

    def port_by_service(self, name: str, proto: str) -> int | None:
        try:
            return socket.getservbyname(name, proto)
        except (OSError, UnicodeError):
            return None


@dataclass(frozen=True)
class ServicesFile:
    """An /etc/services file: (name, proto) -> port and (port, proto) -> first name, as glibc reads it."""

    by_name: Mapping[tuple[str, str], int] = field(default_factory=dict)
    by_port: Mapping[tuple[int, str], str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> ServicesFile:
        by_name: dict[tuple[str, str], int] = {}
        by_port: dict[tuple[int, str], str] = {}
        for raw in text.splitlines():
            fields = raw.split("#", 1)[0].split()
            if len(fields) < 2 or "/" not in fields[1]:
                continue
            port_text, _, proto = fields[1].partition("/")
            if not port_text.isdigit():
                continue
            port = int(port_text)
            for name in [fields[0], *fields[2:]]:
                by_name.setdefault((name, proto), port)
            by_port.setdefault((port, proto), fields[0])
        return cls(by_name, by_port)

    @classmethod
    def load(cls, path: str | Path = "/etc/services") -> ServicesFile:
        try:
            return cls.parse(Path(path).read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return cls()


@dataclass(frozen=True)
class StaticResolver:
    """Answers from a hosts map (name <-> address) and a services file; never uses the network."""

    hosts: Mapping[str, IPAddress] = field(default_factory=dict)
    services: ServicesFile = field(default_factory=ServicesFile)

    def host_by_addr(self, addr: IPAddress) -> str | None:
        return next((name for name, a in self.hosts.items() if a == addr), None)

    def addr_by_host(self, name: str) -> IPv4Address | None:
        addr = self.hosts.get(name)
        return addr if isinstance(addr, IPv4Address) else None

    def service_by_port(self, port: int, proto: str) -> str | None:
        return self.services.by_port.get((port, proto))

    def port_by_service(self, name: str, proto: str) -> int | None:
        return self.services.by_name.get((name, proto))


def addrport_to_anyname(addr: IPAddress, port: int, proto: str, *, numeric: bool, resolver: Resolver) -> str:
    """Return ipvsadm's `host:port` text: IPv6 in brackets, names unless `numeric`, max 59 chars."""
    left, right = ("", "") if addr.version == 4 else ("[", "]")
    if numeric:
        text = f"{left}{addr}{right}:{port}"
    else:
        host = resolver.host_by_addr(addr) or str(addr)
        service = resolver.service_by_port(port, proto.lower()) or str(port)
        text = f"{left}{host}{right}:{service}"
    return text[: NAME_BUFSIZE - 1]
