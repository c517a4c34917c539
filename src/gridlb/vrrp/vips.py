"""Adds and removes the virtual addresses (pyroute2) and announces them: gratuitous ARP, unsolicited NA.

Addresses are added and removed over a blocking rtnetlink socket (messages encoded by pyroute2) that
waits for the kernel's acknowledgement: the kernel applies RTM_NEWADDR inside the send, so when the call
returns the VIP is local, and no event-loop turn separates it from the announcement that follows (an
AsyncIPRoute request costs milliseconds of loop turns on a busy machine, which delayed the takeover).
IPv6 VIPs are added `nodad` and, by default, deprecated (preferred_lft 0) so the kernel never picks them
as the source of outgoing connections (health checks leave from the real address: the seed's IPv6
gotcha). Announcements are built here and sent on an AF_PACKET socket: an ARP request with sender =
target = VIP to the broadcast MAC, and an ICMPv6 neighbour advertisement with the Override flag and our
MAC to ff02::1 (hop limit 255), which is what keepalived sends.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
from collections.abc import Iterable
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NLMSG_ERROR
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTM_DELADDR, RTM_NEWADDR
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

from gridlb.vrrp.packet import inet_checksum

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IFA_F_NODAD = 0x02
INFINITY_LFT = 0xFFFFFFFF
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
ALL_NODES = ipaddress.IPv6Address("ff02::1")
ALL_NODES_MAC = bytes.fromhex("333300000001")
BROADCAST_MAC = b"\xff" * 6
_EEXIST = 17
_EADDRNOTAVAIL = 99
_NLMSG_HDR = struct.Struct("=IHHII")
_NETLINK_TIMEOUT_S = 2.0


def addr_request(kind: int, seq: int, index: int, vip: IPInterface, *, ipv6_deprecated: bool = True) -> bytes:
    """The rtnetlink RTM_NEWADDR / RTM_DELADDR message for `vip` on interface `index` (with ACK)."""
    msg = ifaddrmsg()
    msg["family"] = socket.AF_INET if vip.version == 4 else socket.AF_INET6
    msg["prefixlen"] = vip.network.prefixlen
    msg["index"] = index
    attrs: list[tuple[str, Any]] = [("IFA_LOCAL", str(vip.ip)), ("IFA_ADDRESS", str(vip.ip))]
    if vip.version == 6:
        msg["flags"] = IFA_F_NODAD
        if ipv6_deprecated and kind == RTM_NEWADDR:
            cache = {"ifa_preferred": 0, "ifa_valid": INFINITY_LFT, "cstamp": 0, "tstamp": 0}
            attrs.append(("IFA_CACHEINFO", cache))
    msg["attrs"] = attrs
    flags = NLM_F_REQUEST | NLM_F_ACK
    if kind == RTM_NEWADDR:
        flags |= NLM_F_CREATE | NLM_F_EXCL
    msg["header"]["type"] = kind
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


def ack_errno(reply: bytes, seq: int) -> int | None:
    """The errno (0 = success) of the NLMSG_ERROR acknowledging `seq` in `reply`, or None if absent."""
    offset = 0
    while offset + _NLMSG_HDR.size <= len(reply):
        length, kind, _flags, rseq, _pid = _NLMSG_HDR.unpack_from(reply, offset)
        if length < _NLMSG_HDR.size:
            return None
        if kind == NLMSG_ERROR and rseq == seq and offset + _NLMSG_HDR.size + 4 <= len(reply):
            (err,) = struct.unpack_from("=i", reply, offset + _NLMSG_HDR.size)
            return -int(err)
        offset += (length + 3) & ~3
    return None


def garp_frame(mac: bytes, vip: ipaddress.IPv4Address) -> bytes:
    """A gratuitous ARP request for `vip` from `mac` (Ethernet frame, broadcast)."""
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, vip.packed, b"\0" * 6, vip.packed)
    return BROADCAST_MAC + mac + struct.pack("!H", ETH_P_ARP) + arp


def unsolicited_na_frame(mac: bytes, vip: ipaddress.IPv6Address) -> bytes:
    """An unsolicited neighbour advertisement (Override set) for `vip` from `mac` to all nodes."""
    body = struct.pack("!BBHI16sBB6s", 136, 0, 0, 0x20000000, vip.packed, 2, 1, mac)
    pseudo = vip.packed + ALL_NODES.packed + struct.pack("!I3xB", len(body), 58)
    csum = inet_checksum(pseudo + body)
    body = body[:2] + struct.pack("!H", csum) + body[4:]
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(body), 58, 255, vip.packed, ALL_NODES.packed)
    return ALL_NODES_MAC + mac + struct.pack("!H", ETH_P_IPV6) + ip6 + body


class VipManager:
    """Owns the VIPs of one interface: add, remove, list what is held, announce."""

    def __init__(self, ifname: str, vips: Iterable[IPInterface], *, ipv6_deprecated: bool = True) -> None:
        self.ifname = ifname
        self.vips = tuple(vips)
        self.ipv6_deprecated = ipv6_deprecated
        self._ipr: Any = None
        self._packet: socket.socket | None = None
        self._nl: socket.socket | None = None
        self._seq = 0
        self.mac = b""
        self.announced = 0

    async def open(self) -> None:
        self._ipr = AsyncIPRoute()
        await self._ipr.setup_endpoint()
        self._nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self._nl.bind((0, 0))
        self._nl.settimeout(_NETLINK_TIMEOUT_S)
        self._packet = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        self._packet.bind((self.ifname, 0))
        self._packet.setblocking(False)
        self.mac = self._packet.getsockname()[4][:6]

    async def close(self) -> None:
        if self._nl is not None:
            self._nl.close()
            self._nl = None
        if self._packet is not None:
            self._packet.close()
            self._packet = None
        if self._ipr is not None:
            with contextlib.suppress(Exception):
                await self._ipr.close()
            self._ipr = None

    async def __aenter__(self) -> VipManager:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _index(self) -> int:
        return self._index_now()

    def _index_now(self) -> int:
        try:
            return socket.if_nametoindex(self.ifname)
        except OSError:
            raise OSError(f"interface {self.ifname} does not exist") from None

    def _request(self, kind: int, index: int, vip: IPInterface) -> int:
        """Send one address request and wait for the kernel's ACK; return its errno (0 = done)."""
        if self._nl is None:
            raise OSError("VIP manager is not open")
        self._seq += 1
        seq = self._seq
        self._nl.send(addr_request(kind, seq, index, vip, ipv6_deprecated=self.ipv6_deprecated))
        while True:
            code = ack_errno(self._nl.recv(65536), seq)
            if code is not None:
                return code

    async def held(self) -> list[IPInterface]:
        """Those of our VIPs that are on the interface now."""
        index = await self._index()
        present: set[tuple[str, int]] = set()
        async for msg in await self._ipr.addr("dump", index=index):
            present.add((str(ipaddress.ip_address(msg.get("IFA_ADDRESS"))), int(msg["prefixlen"])))
        return [v for v in self.vips if (str(v.ip), v.network.prefixlen) in present]

    async def add(self) -> list[IPInterface]:
        """Put every VIP on the interface (already present ones are fine); return those added.

        Completes without yielding to the event loop: every VIP is local when it returns.
        """
        return self.add_now()

    def add_now(self) -> list[IPInterface]:
        """`add` for synchronous callers."""
        index = self._index_now()
        added = []
        for vip in self.vips:
            code = self._request(RTM_NEWADDR, index, vip)
            if code == 0:
                added.append(vip)
            elif code != _EEXIST:
                raise NetlinkError(code, f"adding {vip} to {self.ifname}")
        return added

    async def remove(self) -> list[IPInterface]:
        """Take every VIP off the interface (absent ones are fine); return those removed."""
        index = self._index_now()
        removed = []
        for vip in self.vips:
            code = self._request(RTM_DELADDR, index, vip)
            if code == 0:
                removed.append(vip)
            elif code != _EADDRNOTAVAIL:
                raise NetlinkError(code, f"removing {vip} from {self.ifname}")
        return removed

    def announce(self, repeat: int = 1) -> int:
        """Send `repeat` gratuitous ARPs / unsolicited NAs per VIP; return the number of frames sent."""
        if self._packet is None or repeat <= 0:
            return 0
        frames = [
            garp_frame(self.mac, v.ip)
            if isinstance(v.ip, ipaddress.IPv4Address)
            else unsolicited_na_frame(self.mac, v.ip)
            for v in self.vips
        ]
        sent = 0
        for _ in range(repeat):
            for frame in frames:
                try:
                    self._packet.send(frame)
                    sent += 1
                except OSError:
                    pass
        self.announced += sent
        return sent
