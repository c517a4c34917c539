"""Ethernet frames the `dr` dataplane handles itself: a new connection's SYN, parsed and re-addressed.

Pure: bytes in, bytes out. `SYN_FILTER` is the classic BPF program attached to the packet socket, so
that only TCP SYNs without ACK (IPv4 unfragmented, IPv6 with TCP as the first next header) ever reach
Python; everything else stays in the kernel. `MIDFLOW_FILTER` passes the packets without SYN that the
data path sent to the director for a flow it did not know. A malformed frame parses to None
(counted by the caller).
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

from gridlb.dataplane.dr_rules import FlowKey

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
_TCP = 6
_SYN, _ACK = 0x02, 0x10

#: (code, jt, jf, k) of `ether proto ip and ip proto tcp and not ip frag and tcp flags & (syn|ack) == syn
#: or ether proto ip6 and ip6 nexthdr tcp and tcp flags & (syn|ack) == syn`, accept 256 KiB.
SYN_FILTER: tuple[tuple[int, int, int, int], ...] = (
    (0x28, 0, 0, 12),  # 0 ldh [12]            ethertype
    (0x15, 0, 8, ETH_P_IP),  # 1 jeq IPv4 ? 2 : 10
    (0x30, 0, 0, 23),  # 2 ldb [23]            IPv4 protocol
    (0x15, 0, 13, _TCP),  # 3 jeq tcp ? 4 : drop
    (0x28, 0, 0, 20),  # 4 ldh [20]            flags + fragment offset
    (0x45, 11, 0, 0x1FFF),  # 5 jset frag offset ? drop : 6
    (0xB1, 0, 0, 14),  # 6 ldxb 4*([14]&0xf)   IPv4 header length
    (0x50, 0, 0, 27),  # 7 ldb [x+27]          TCP flags
    (0x54, 0, 0, _SYN | _ACK),  # 8 and syn|ack
    (0x15, 6, 7, _SYN),  # 9 jeq syn ? accept : drop
    (0x15, 0, 6, ETH_P_IPV6),  # 10 jeq IPv6 ? 11 : drop
    (0x30, 0, 0, 20),  # 11 ldb [20]           next header
    (0x15, 0, 4, _TCP),  # 12 jeq tcp ? 13 : drop
    (0x30, 0, 0, 67),  # 13 ldb [67]           TCP flags
    (0x54, 0, 0, _SYN | _ACK),  # 14 and syn|ack
    (0x15, 0, 1, _SYN),  # 15 jeq syn ? accept : drop
    (0x06, 0, 0, 0x40000),  # 16 accept
    (0x06, 0, 0, 0),  # 17 drop
)


#: `ether proto ip and ip proto tcp and not ip frag and tcp flags & syn == 0 or ether proto ip6 and
#: ip6 nexthdr tcp and tcp flags & syn == 0`, accept 256 KiB: the mid-flow packets (see MIDFLOW_DEVICE).
MIDFLOW_FILTER: tuple[tuple[int, int, int, int], ...] = (
    (0x28, 0, 0, 12),  # 0 ldh [12]            ethertype
    (0x15, 0, 7, ETH_P_IP),  # 1 jeq IPv4 ? 2 : 9
    (0x30, 0, 0, 23),  # 2 ldb [23]            IPv4 protocol
    (0x15, 0, 11, _TCP),  # 3 jeq tcp ? 4 : drop
    (0x28, 0, 0, 20),  # 4 ldh [20]            flags + fragment offset
    (0x45, 9, 0, 0x1FFF),  # 5 jset frag offset ? drop : 6
    (0xB1, 0, 0, 14),  # 6 ldxb 4*([14]&0xf)   IPv4 header length
    (0x50, 0, 0, 27),  # 7 ldb [x+27]          TCP flags
    (0x45, 6, 5, _SYN),  # 8 jset syn ? drop : accept
    (0x15, 0, 5, ETH_P_IPV6),  # 9 jeq IPv6 ? 10 : drop
    (0x30, 0, 0, 20),  # 10 ldb [20]           next header
    (0x15, 0, 3, _TCP),  # 11 jeq tcp ? 12 : drop
    (0x30, 0, 0, 67),  # 12 ldb [67]           TCP flags
    (0x45, 1, 0, _SYN),  # 13 jset syn ? drop : accept
    (0x06, 0, 0, 0x40000),  # 14 accept
    (0x06, 0, 0, 0),  # 15 drop
)


def filter_bytes(program: tuple[tuple[int, int, int, int], ...] = SYN_FILTER) -> bytes:
    """Return a filter (`SYN_FILTER` unless told) as the kernel's array of struct sock_filter."""
    return b"".join(struct.pack("HBBI", *insn) for insn in program)


def parse_syn(frame: bytes) -> FlowKey | None:
    """Return the flow of a TCP SYN (without ACK) frame, or None for anything else or a malformed frame."""
    got = parse_tcp(frame)
    if got is None or got[1] & (_SYN | _ACK) != _SYN:
        return None
    return got[0]


def parse_tcp(frame: bytes) -> tuple[FlowKey, int] | None:
    """Return the flow and TCP flags of a TCP frame, or None for anything else or a malformed frame."""
    if len(frame) < 14:
        return None
    (ethertype,) = struct.unpack_from("!H", frame, 12)
    if ethertype == ETH_P_IP:
        if len(frame) < 34 or frame[14] >> 4 != 4:
            return None
        ihl = (frame[14] & 0x0F) * 4
        total = struct.unpack_from("!H", frame, 16)[0]
        if ihl < 20 or frame[23] != _TCP or struct.unpack_from("!H", frame, 20)[0] & 0x1FFF:
            return None
        tcp = 14 + ihl
        if total < ihl + 20 or len(frame) < 14 + total:
            return None
        src: IPv4Address | IPv6Address = IPv4Address(frame[26:30])
        dst: IPv4Address | IPv6Address = IPv4Address(frame[30:34])
    elif ethertype == ETH_P_IPV6:
        if len(frame) < 74 or frame[14] >> 4 != 6 or frame[20] != _TCP:
            return None
        payload = struct.unpack_from("!H", frame, 18)[0]
        if payload < 20 or len(frame) < 54 + payload:
            return None
        tcp = 54
        src = IPv6Address(frame[22:38])
        dst = IPv6Address(frame[38:54])
    else:
        return None
    sport, dport = struct.unpack_from("!HH", frame, tcp)
    if (frame[tcp + 12] >> 4) < 5:
        return None
    return FlowKey(src, sport, dst, dport), frame[tcp + 13]


def _sum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def readdress(frame: bytes, real_mac: bytes, director_mac: bytes, *, fix_checksum: bool) -> bytes:
    """Return `frame` sent on to `real_mac` from `director_mac`, the IP packet unchanged but trimmed.

    With `fix_checksum` (the frame came with a partial checksum, TP_STATUS_CSUMNOTREADY) the TCP
    checksum is computed in full: a frame sent from a packet socket leaves without offload metadata.
    """
    (ethertype,) = struct.unpack_from("!H", frame, 12)
    if ethertype == ETH_P_IP:
        ihl = (frame[14] & 0x0F) * 4
        end = 14 + struct.unpack_from("!H", frame, 16)[0]
        tcp = 14 + ihl
        pseudo = frame[26:34] + struct.pack("!BBH", 0, _TCP, end - tcp)
    else:
        end = 54 + struct.unpack_from("!H", frame, 18)[0]
        tcp = 54
        pseudo = frame[22:54] + struct.pack("!IxxxB", end - tcp, _TCP)
    out = bytearray(real_mac + director_mac + frame[12:end])
    if fix_checksum:
        out[tcp + 16 : tcp + 18] = b"\0\0"
        csum = (~_sum16(pseudo + bytes(out[tcp:end]))) & 0xFFFF
        out[tcp + 16 : tcp + 18] = struct.pack("!H", csum)
    return bytes(out)


def mac_bytes(mac: str) -> bytes:
    """Return `aa:bb:cc:dd:ee:ff` as 6 bytes."""
    return bytes.fromhex(mac.replace(":", ""))


__all__ = ["MIDFLOW_FILTER", "SYN_FILTER", "filter_bytes", "mac_bytes", "parse_syn", "parse_tcp", "readdress"]
