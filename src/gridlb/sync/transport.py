"""Thin asyncio adapters that send and receive IPVS sync datagrams on a multicast group (UDP).

`SyncSender` sends datagrams built by `gridlb.sync.wire` to the group (the kernel's 224.0.0.81:8848 by
default, TTL 1, multicast loop off, out of one interface, from that interface's address as the
kernel's master does). `SyncReceiver` joins the group on one interface, decodes every datagram and
hands each `SyncMessage` whose sync id matches (0 accepts all, as the kernel) to a callback; malformed
datagrams and other sync ids are counted by reason in `drops` and never raise.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import struct
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import cast

from gridlb.sync.wire import SYNC_GROUP, SYNC_PORT, SYNC_TTL, SyncMessage, SyncWireError, decode_message

IPAddress = IPv4Address | IPv6Address
_SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
_MAX_DATAGRAM = 65535


def _family(group: IPAddress) -> socket.AddressFamily:
    return socket.AF_INET6 if group.version == 6 else socket.AF_INET


def _interface_ipv4(ifname: str) -> IPv4Address | None:
    """The first IPv4 address on `ifname` (the kernel's master binds its socket to it)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=ifname)
        if not idx:
            return None
        for msg in ipr.get_addr(family=socket.AF_INET, index=idx[0]):
            return IPv4Address(msg.get_attr("IFA_ADDRESS"))
    return None


class SyncSender:
    """Sends sync datagrams to the group out of one interface."""

    def __init__(
        self, ifname: str, *, group: IPAddress = SYNC_GROUP, port: int = SYNC_PORT, ttl: int = SYNC_TTL
    ) -> None:
        self.ifname = ifname
        self.group = group
        self.port = port
        fam = _family(group)
        self.sock = socket.socket(fam, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        self.sock.setblocking(False)
        index = socket.if_nametoindex(ifname)
        if fam == socket.AF_INET6:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        else:
            mreqn = struct.pack("=4s4si", group.packed, b"\0" * 4, index)
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            source = _interface_ipv4(ifname)
            if source is not None:
                self.sock.bind((str(source), 0))
        self.sent = 0
        self.send_errors = 0

    def send(self, datagram: bytes) -> bool:
        """Send one datagram; False (counted) when the kernel refused it."""
        try:
            self.sock.sendto(datagram, (str(self.group), self.port))
        except OSError:
            self.send_errors += 1
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        self.sock.close()


class SyncReceiver(asyncio.DatagramProtocol):
    """Receives, decodes and filters sync datagrams; `open()` joins the group on the interface."""

    def __init__(
        self,
        ifname: str,
        on_message: Callable[[SyncMessage, str], None],
        *,
        syncid: int = 0,
        group: IPAddress = SYNC_GROUP,
        port: int = SYNC_PORT,
    ) -> None:
        self.ifname = ifname
        self.on_message = on_message
        self.syncid = syncid
        self.group = group
        self.port = port
        self.received = 0
        self.drops: collections.Counter[str] = collections.Counter()
        self.transport: asyncio.DatagramTransport | None = None

    def _make_socket(self) -> socket.socket:
        fam = _family(self.group)
        sock = socket.socket(fam, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, _SO_BINDTODEVICE, self.ifname.encode())
        index = socket.if_nametoindex(self.ifname)
        sock.bind((str(self.group), self.port))
        if fam == socket.AF_INET6:
            mreq6 = self.group.packed + struct.pack("@I", index)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq6)
        else:
            mreqn = struct.pack("=4s4si", self.group.packed, b"\0" * 4, index)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
        sock.setblocking(False)
        return sock

    async def open(self) -> None:
        """Create the socket and start receiving on the running loop."""
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, sock=self._make_socket())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        peer = str(addr[0])
        self.received += 1
        if len(data) > _MAX_DATAGRAM:
            self.drops["too long"] += 1
            return
        try:
            message = decode_message(data, peer=peer)
        except SyncWireError as exc:
            self.drops[f"malformed {exc.field.split('.')[-1]}"] += 1
            return
        if self.syncid and message.syncid != self.syncid:
            self.drops["other syncid"] += 1
            return
        if message.skipped:
            self.drops["entry skipped"] += message.skipped
        self.on_message(message, peer)

    def error_received(self, exc: Exception) -> None:
        self.drops["socket error"] += 1

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None


def parse_group(text: str) -> IPAddress:
    """Return the multicast group in `text` (ValueError when it is not a multicast address)."""
    addr = ip_address(text)
    if not addr.is_multicast:
        raise ValueError(f"{text} is not a multicast address")
    return addr
