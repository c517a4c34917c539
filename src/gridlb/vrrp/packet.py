"""Encodes and decodes VRRP adverts: v2 (RFC 3768) and v3 (RFC 5798), IPv4 and IPv6, with checksums.

Layout (both versions): version/type, VRID, priority, address count, then v2: auth type and the
advert interval in seconds, v3: 4 reserved bits and a 12-bit max advert interval in centiseconds;
then the checksum and the addresses; v2 ends with 8 bytes of authentication data (PASS: the password,
zero-padded, cut at 8). The v2 checksum covers the VRRP message only; the v3 checksum also covers the
IPv4/IPv6 pseudo-header (source, destination, length, protocol 112). Decoding never raises anything
but `DecodeError`, whose `reason` says why the bytes were dropped.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass

IPPROTO_VRRP = 112
VRRP_TTL = 255
MCAST_V4 = ipaddress.IPv4Address("224.0.0.18")
MCAST_V6 = ipaddress.IPv6Address("ff02::12")
TYPE_ADVERTISEMENT = 1
AUTH_DATA_LEN = 8
HEADER_LEN = 8

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AuthType(enum.IntEnum):
    """VRRPv2 authentication types (RFC 3768 §5.3.6); v3 has none."""

    NONE = 0
    PASS = 1
    AH = 2


class DropReason(enum.Enum):
    """Why a received packet was dropped (the keys of the drop counters)."""

    TRUNCATED = "truncated"
    NOT_VRRP = "not_vrrp"
    VERSION = "version"
    TYPE = "type"
    CHECKSUM = "checksum"
    TTL = "ttl"
    VRID = "vrid"
    AUTH = "auth"
    NOT_PEER = "not_peer"
    FAMILY = "family"
    INTERVAL = "interval"
    OWN = "own"


class DecodeError(Exception):
    """The bytes are not an acceptable advert; `reason` is the counter to bump."""

    def __init__(self, reason: DropReason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Advert:
    """One VRRP advertisement, independent of the wire version's interval unit.

    `advert_int_cs` is in centiseconds for both versions (v2 carries whole seconds: 100 × the byte).
    `auth_data` is the raw 8 bytes for v2 (empty for v3). `checksum` is the value read off the wire
    (0 for adverts built locally; the encoder computes it).
    """

    version: int
    vrid: int
    priority: int
    advert_int_cs: int
    addresses: tuple[IPAddress, ...]
    auth_type: AuthType = AuthType.NONE
    auth_data: bytes = b""
    checksum: int = 0

    @property
    def advert_int_s(self) -> float:
        return self.advert_int_cs / 100.0


def pass_auth_data(password: str) -> bytes:
    """The 8 auth bytes keepalived sends for `auth_type PASS`: the password cut at 8, zero-padded."""
    return password.encode()[:AUTH_DATA_LEN].ljust(AUTH_DATA_LEN, b"\0")


def inet_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _pseudo_header(src: IPAddress, dst: IPAddress, length: int) -> bytes:
    if src.version == 4:
        return src.packed + dst.packed + struct.pack("!BBH", 0, IPPROTO_VRRP, length)
    return src.packed + dst.packed + struct.pack("!I3xB", length, IPPROTO_VRRP)


def _checksum_input(version: int, message: bytes, src: IPAddress | None, dst: IPAddress | None) -> bytes:
    if version == 2:
        return message
    if src is None or dst is None:
        raise ValueError("VRRPv3 checksums need the source and destination address")
    return _pseudo_header(src, dst, len(message)) + message


def encode(advert: Advert, src: IPAddress | None = None, dst: IPAddress | None = None) -> bytes:
    """The VRRP message for `advert` (no IP header); v3 needs `src` and `dst` for the checksum."""
    if advert.version not in (2, 3):
        raise ValueError(f"VRRP version {advert.version} is not 2 or 3")
    if not advert.addresses:
        raise ValueError("an advert carries at least one address")
    families = {a.version for a in advert.addresses}
    if len(families) != 1:
        raise ValueError("an advert's addresses are all of one family")
    if advert.version == 2:
        if families != {4}:
            raise ValueError("VRRPv2 is IPv4 only")
        secs = round(advert.advert_int_cs / 100)
        if not 1 <= secs <= 255:
            raise ValueError(f"VRRPv2 advert interval {secs} s is outside 1..255")
        head = struct.pack(
            "!BBBBBBH",
            0x20 | TYPE_ADVERTISEMENT,
            advert.vrid,
            advert.priority,
            len(advert.addresses),
            int(advert.auth_type),
            secs,
            0,
        )
        tail = advert.auth_data[:AUTH_DATA_LEN].ljust(AUTH_DATA_LEN, b"\0")
    else:
        if not 1 <= advert.advert_int_cs <= 0xFFF:
            raise ValueError(f"VRRPv3 advert interval {advert.advert_int_cs} cs is outside 1..4095")
        head = struct.pack(
            "!BBBBHH",
            0x30 | TYPE_ADVERTISEMENT,
            advert.vrid,
            advert.priority,
            len(advert.addresses),
            advert.advert_int_cs & 0xFFF,
            0,
        )
        tail = b""
    message = head + b"".join(a.packed for a in advert.addresses) + tail
    csum = inet_checksum(_checksum_input(advert.version, message, src, dst))
    return message[:6] + struct.pack("!H", csum) + message[8:]


def decode(
    data: bytes, src: IPAddress | None = None, dst: IPAddress | None = None, *, family: int = 4
) -> Advert:
    """Parse and verify one VRRP message (no IP header); raise `DecodeError` on anything wrong.

    `family` (4 or 6) says the size of the addresses; v3 checksums need `src` and `dst`.
    """
    try:
        return _decode(bytes(data), src, dst, family)
    except DecodeError:
        raise
    except Exception as exc:  # a decoder bug must still only drop the packet
        raise DecodeError(DropReason.TRUNCATED, f"undecodable: {exc!r}") from exc


def _decode(data: bytes, src: IPAddress | None, dst: IPAddress | None, family: int) -> Advert:
    if len(data) < HEADER_LEN:
        raise DecodeError(DropReason.TRUNCATED, f"{len(data)} bytes, header needs {HEADER_LEN}")
    version, typ = data[0] >> 4, data[0] & 0x0F
    if version not in (2, 3):
        raise DecodeError(DropReason.VERSION, f"version {version}")
    if typ != TYPE_ADVERTISEMENT:
        raise DecodeError(DropReason.TYPE, f"type {typ}")
    if version == 2 and family != 4:
        raise DecodeError(DropReason.VERSION, "VRRPv2 over IPv6")
    vrid, priority, count = data[1], data[2], data[3]
    alen = 4 if family == 4 else 16
    need = HEADER_LEN + count * alen + (AUTH_DATA_LEN if version == 2 else 0)
    if count == 0 or len(data) < need:
        raise DecodeError(DropReason.TRUNCATED, f"{len(data)} bytes, {count} addresses need {need}")
    message = data[:need]
    if version == 3 and (src is None or dst is None):
        raise DecodeError(DropReason.CHECKSUM, "no addresses to check a VRRPv3 checksum against")
    if inet_checksum(_checksum_input(version, message, src, dst)) != 0:
        raise DecodeError(DropReason.CHECKSUM, "bad checksum")
    (checksum,) = struct.unpack("!H", data[6:8])
    addrs: list[IPAddress] = []
    for i in range(count):
        raw = data[HEADER_LEN + i * alen : HEADER_LEN + (i + 1) * alen]
        addrs.append(ipaddress.IPv4Address(raw) if family == 4 else ipaddress.IPv6Address(raw))
    if version == 2:
        try:
            auth = AuthType(data[4])
        except ValueError:
            raise DecodeError(DropReason.AUTH, f"auth type {data[4]}") from None
        if data[5] == 0:
            raise DecodeError(DropReason.INTERVAL, "advert interval 0")
        return Advert(
            2, vrid, priority, data[5] * 100, tuple(addrs), auth, data[need - AUTH_DATA_LEN : need], checksum
        )
    (interval,) = struct.unpack("!H", data[4:6])
    if interval & 0xFFF == 0:
        raise DecodeError(DropReason.INTERVAL, "advert interval 0")
    return Advert(3, vrid, priority, interval & 0xFFF, tuple(addrs), AuthType.NONE, b"", checksum)


@dataclass(frozen=True, slots=True)
class IPv4Packet:
    """The fields of an IPv4 header the VRRP receiver needs, and the payload."""

    src: ipaddress.IPv4Address
    dst: ipaddress.IPv4Address
    ttl: int
    protocol: int
    payload: bytes


def parse_ipv4(packet: bytes) -> IPv4Packet:
    """Split an IPv4 packet as a raw socket delivers it; `DecodeError` when it is too short."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        raise DecodeError(DropReason.TRUNCATED, "IPv4 header")
    ihl = (packet[0] & 0x0F) * 4
    (total,) = struct.unpack("!H", packet[2:4])
    if ihl < 20 or len(packet) < ihl or total < ihl:
        raise DecodeError(DropReason.TRUNCATED, "IPv4 header length")
    end = min(total, len(packet))
    return IPv4Packet(
        ipaddress.IPv4Address(packet[12:16]),
        ipaddress.IPv4Address(packet[16:20]),
        packet[8],
        packet[9],
        packet[ihl:end],
    )
