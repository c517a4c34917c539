"""Run inside a namespace: ask who answers ARP (IPv4) or neighbour solicitation (IPv6) for an address.

`python neighbours.py IFACE ADDRESS [COUNT]` sends COUNT probes (an ARP request from the interface's
MAC and IPv4 address, or an ICMPv6 neighbour solicitation to the solicited-node group) and prints,
one per line, the MAC of every host that answered within a second after the last probe.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import struct
import sys
import time

ETH_P_ARP = 0x0806


def _my_ipv4(ifname: str) -> bytes:
    import fcntl

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    req = struct.pack("256s", ifname.encode())
    return fcntl.ioctl(s.fileno(), 0x8915, req)[20:24]  # SIOCGIFADDR


def arp(ifname: str, target: ipaddress.IPv4Address, count: int) -> set[str]:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    s.bind((ifname, ETH_P_ARP))
    mac = s.getsockname()[4]
    request = (
        b"\xff" * 6 + mac + struct.pack("!H", ETH_P_ARP)
        + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + _my_ipv4(ifname) + b"\0" * 6 + target.packed
    )  # fmt: skip
    seen: set[str] = set()
    for _ in range(count):
        s.send(request)
        end = time.monotonic() + (1.0 if _ == count - 1 else 0.3)
        while (left := end - time.monotonic()) > 0:
            if not select.select([s], [], [], left)[0]:
                break
            frame = s.recv(2048)
            op = struct.unpack("!H", frame[20:22])[0]
            if op == 2 and frame[28:32] == target.packed:
                seen.add(frame[22:28].hex(":"))
    return seen


def ns(ifname: str, target: ipaddress.IPv6Address, count: int) -> set[str]:
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    index = socket.if_nametoindex(ifname)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
    p = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    p.bind((ifname, 0))
    mac = p.getsockname()[4]
    group = ipaddress.IPv6Address(int(ipaddress.IPv6Address("ff02::1:ff00:0")) | (int(target) & 0xFFFFFF))
    msg = (
        struct.pack("!BBHI", 135, 0, 0, 0) + target.packed + bytes((1, 1)) + mac
    )  # kernel fills the checksum
    seen: set[str] = set()
    for i in range(count):
        s.sendto(msg, (str(group), 0, 0, index))
        end = time.monotonic() + (1.0 if i == count - 1 else 0.3)
        while (left := end - time.monotonic()) > 0:
            if not select.select([s], [], [], left)[0]:
                break
            data = s.recv(2048)
            if data[0] == 136 and data[8:24] == target.packed and len(data) >= 32 and data[24] == 2:
                seen.add(data[26:32].hex(":"))
    return seen


if __name__ == "__main__":
    addr = ipaddress.ip_address(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    found = arp(sys.argv[1], addr, n) if isinstance(addr, ipaddress.IPv4Address) else ns(sys.argv[1], addr, n)
    print("\n".join(sorted(found)))
