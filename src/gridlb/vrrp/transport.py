"""The asyncio adapter of one VRRP instance: owns its raw IP-protocol-112 socket and drives the machine.

Receives with `loop.add_reader` (IPv4 raw sockets deliver the IP header, so TTL, source and
destination are read from it; IPv6 ones deliver ancillary data for the hop limit and destination),
feeds `VrrpMachine.receive_advert`, sends what `adverts_to_send` returns with TTL/hop limit 255 and
keepalived's TOS 0xc0 from the instance's primary address (IP_PKTINFO / IPV6_PKTINFO), re-arms one
`loop.call_at` timer from `get_timer()`, and puts every machine event on an asyncio queue. Nothing a
peer sends can raise out of it: bad packets are counted by reason in `drop_counts()`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable

from gridlb.vrrp.events import Event
from gridlb.vrrp.machine import VrrpMachine
from gridlb.vrrp.packet import IPPROTO_VRRP, MCAST_V4, MCAST_V6, VRRP_TTL, DecodeError, DropReason, parse_ipv4

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
TOS_INTERNETWORK_CONTROL = 0xC0
_MAX_READS_PER_WAKEUP = 64
_SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)


def _ifindex(ifname: str) -> int:
    return socket.if_nametoindex(ifname)


class VrrpTransport:
    """Runs one VrrpMachine on a raw socket bound to its interface."""

    def __init__(
        self,
        machine: VrrpMachine,
        *,
        events: asyncio.Queue[Event] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.machine = machine
        self.events: asyncio.Queue[Event] = events if events is not None else asyncio.Queue()
        self.listeners: list[Callable[[Event], None]] = []
        self._loop = loop
        self._sock: socket.socket | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.drops: collections.Counter[str] = collections.Counter()
        self.send_errors = 0
        self.ifname = machine.config.interface
        self.family = machine.source.version

    # ------------------------------------------------------------------ lifecycle
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def now(self) -> float:
        return self.loop.time()

    def open(self) -> None:
        """Create the socket, join the group (multicast mode), start reading and start the machine."""
        self._sock = self._make_socket()
        self.loop.add_reader(self._sock.fileno(), self._readable)
        self.machine.start(self.now())
        self._flush()

    def stop(self) -> None:
        """Clean stop: the machine sends its priority-0 advert if master; then close the socket."""
        if self._sock is None:
            return
        self.machine.shutdown(self.now())
        self._flush()
        self.close()

    def close(self) -> None:
        """Close without any goodbye (used after stop, or to simulate a crash in tests)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sock is not None:
            with contextlib.suppress(Exception):
                self.loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def set_tracked(self, name: str, up: bool) -> None:
        self.machine.set_tracked(name, up, self.now())
        self._flush()

    def drop_counts(self) -> dict[str, int]:
        """Dropped packets by reason: the transport's (IP layer) plus the machine's (VRRP layer)."""
        out: collections.Counter[str] = collections.Counter(self.drops)
        for reason, n in self.machine.drops.items():
            out[reason.value] += n
        return dict(out)

    # ------------------------------------------------------------------ sockets
    def _make_socket(self) -> socket.socket:
        ifindex = _ifindex(self.ifname)
        if self.family == 4:
            s = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_VRRP)
            s.setsockopt(socket.SOL_SOCKET, _SO_BINDTODEVICE, self.ifname.encode())
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, VRRP_TTL)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, VRRP_TTL)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, TOS_INTERNETWORK_CONTROL)
            mreqn = struct.pack("=4s4si", MCAST_V4.packed, self.machine.source.packed, ifindex)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
            if not self.machine.config.unicast_peers:
                s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
        else:
            s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, IPPROTO_VRRP)
            s.setsockopt(socket.SOL_SOCKET, _SO_BINDTODEVICE, self.ifname.encode())
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, VRRP_TTL)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, VRRP_TTL)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, TOS_INTERNETWORK_CONTROL)
            if not self.machine.config.unicast_peers:
                mreq = struct.pack("=16si", MCAST_V6.packed, ifindex)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        s.setblocking(False)
        return s

    def _send(self, data: bytes, dst: IPAddress) -> None:
        assert self._sock is not None
        ifindex = _ifindex(self.ifname)
        src = self.machine.source
        try:
            if self.family == 4:
                pktinfo = struct.pack("=i4s4s", ifindex, src.packed, b"\0\0\0\0")
                self._sock.sendmsg([data], [(socket.IPPROTO_IP, _IP_PKTINFO, pktinfo)], 0, (str(dst), 0))
            else:
                pktinfo6 = struct.pack("=16si", src.packed, ifindex)
                self._sock.sendmsg(
                    [data],
                    [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, pktinfo6)],
                    0,
                    (str(dst), 0, 0, ifindex),
                )
        except OSError as exc:
            self.send_errors += 1
            log.warning("%s: sending advert to %s failed: %s", self.machine.config.name, dst, exc)

    # ------------------------------------------------------------------ receive path
    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(_MAX_READS_PER_WAKEUP):
            try:
                data, anc, _flags, addr = sock.recvmsg(65535, 256)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.drops["recv_error"] += 1
                log.warning("%s: recvmsg: %s", self.machine.config.name, exc)
                break
            if self.family == 4:
                self.handle_ipv4(data)
            else:
                dst, hops = None, -1
                for level, kind, value in anc:
                    if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(value) >= 16:
                        dst = ipaddress.IPv6Address(value[:16])
                    elif level == socket.IPPROTO_IPV6 and kind == socket.IPV6_HOPLIMIT and len(value) >= 4:
                        (hops,) = struct.unpack("=i", value[:4])
                try:
                    src = ipaddress.IPv6Address(addr[0].split("%")[0])
                except (ValueError, IndexError, AttributeError):
                    self.drops[DropReason.TRUNCATED.value] += 1
                    continue
                self.handle_ipv6(data, src, dst, hops)

    def handle_ipv4(self, packet: bytes) -> None:
        """One IPv4 packet as the raw socket delivers it (header included). Never raises."""
        try:
            ip = parse_ipv4(packet)
            if ip.protocol != IPPROTO_VRRP:
                raise DecodeError(DropReason.NOT_VRRP, f"protocol {ip.protocol}")
        except DecodeError as exc:
            self.drops[exc.reason.value] += 1
            return
        self._deliver(ip.payload, ip.src, ip.dst, ip.ttl)

    def handle_ipv6(
        self, payload: bytes, src: ipaddress.IPv6Address, dst: IPAddress | None, hop_limit: int
    ) -> None:
        """One IPv6 VRRP payload with its source, destination and hop limit. Never raises."""
        self._deliver(payload, src, dst, hop_limit)

    def _deliver(self, payload: bytes, src: IPAddress, dst: IPAddress | None, ttl: int) -> None:
        try:
            self.machine.receive_advert(payload, src, ttl, self.now(), dst=dst)
        except Exception:  # a machine bug must cost one packet, not the daemon
            self.drops["internal_error"] += 1
            log.exception("%s: advert from %s", self.machine.config.name, src)
        self._flush()

    # ------------------------------------------------------------------ outputs
    def _on_timer(self) -> None:
        self._timer = None
        self.machine.handle_timer(self.now())
        self._flush()

    def _flush(self) -> None:
        now = self.now()
        out = self.machine.adverts_to_send(now) if self._sock is not None else []
        for data, dst in out:
            self._send(data, dst)
        while (event := self.machine.next_event()) is not None:
            self.events.put_nowait(event)
            for listener in self.listeners:
                try:
                    listener(event)
                except Exception:
                    log.exception("event listener failed")
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = self.machine.get_timer()
        if when is not None and self._sock is not None:
            self._timer = self.loop.call_at(when, self._on_timer)
