"""Kernel IPVS generic-netlink messages as data: encode requests, decode replies (pure, no sockets).

The attribute layout is the kernel's (include/uapi/linux/ip_vs.h) and every request carries the
attributes ipvsadm 1.31 (libipvs) sends, in its order, so the bytes can be golden-tested without a
kernel. `gridlb.dataplane.ipvs` does the I/O. Also here: the `/proc/net/ip_vs_conn` parser (the
kernel offers the connection table only there), the `/proc/net/ip_vs` listing as a cheap check of
what a dump already knows, and the kernel's error numbers in ipvsadm's words.
"""

from __future__ import annotations

import enum
import errno
import os
import re
import socket
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import NamedTuple

from gridlb.ipvsadm.model import FWD_BY_NUMBER, flag_bits, flag_names, netmask_text, netmask_value
from gridlb.table import (
    AddDest,
    AddService,
    ConnEntry,
    DelDest,
    DelService,
    Dest,
    DestCounters,
    DestSpec,
    EditDest,
    EditService,
    ForwardMethod,
    IPAddress,
    Op,
    Proto,
    RealKey,
    Service,
    ServiceKey,
    ServiceSpec,
    SetTimeouts,
    Stats,
    Timeouts,
)

# --- netlink and generic netlink framing ------------------------------------------------------------

NETLINK_GENERIC = 16
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2

NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_GENLHDR = struct.Struct("=BBH")  # cmd, version, reserved
_NLA = struct.Struct("=HH")  # len, type

IPVS_GENL_NAME = "IPVS"
IPVS_GENL_VERSION = 1


class Cmd(enum.IntEnum):
    """IPVS_CMD_*."""

    NEW_SERVICE = 1
    SET_SERVICE = 2
    DEL_SERVICE = 3
    GET_SERVICE = 4
    NEW_DEST = 5
    SET_DEST = 6
    DEL_DEST = 7
    GET_DEST = 8
    NEW_DAEMON = 9
    DEL_DAEMON = 10
    GET_DAEMON = 11
    SET_CONFIG = 12
    GET_CONFIG = 13
    SET_INFO = 14
    GET_INFO = 15
    ZERO = 16
    FLUSH = 17


# IPVS_CMD_ATTR_*
CMD_ATTR_SERVICE, CMD_ATTR_DEST, CMD_ATTR_DAEMON = 1, 2, 3
CMD_ATTR_TIMEOUT_TCP, CMD_ATTR_TIMEOUT_TCP_FIN, CMD_ATTR_TIMEOUT_UDP = 4, 5, 6
# IPVS_SVC_ATTR_*
SVC_AF, SVC_PROTOCOL, SVC_ADDR, SVC_PORT, SVC_FWMARK, SVC_SCHED_NAME = 1, 2, 3, 4, 5, 6
SVC_FLAGS, SVC_TIMEOUT, SVC_NETMASK, SVC_STATS, SVC_PE_NAME, SVC_STATS64 = 7, 8, 9, 10, 11, 12
# IPVS_DEST_ATTR_*
DEST_ADDR, DEST_PORT, DEST_FWD_METHOD, DEST_WEIGHT, DEST_U_THRESH, DEST_L_THRESH = 1, 2, 3, 4, 5, 6
DEST_ACTIVE_CONNS, DEST_INACT_CONNS, DEST_PERSIST_CONNS, DEST_STATS = 7, 8, 9, 10
DEST_ADDR_FAMILY, DEST_STATS64, DEST_TUN_TYPE, DEST_TUN_PORT, DEST_TUN_FLAGS = 11, 12, 13, 14, 15
# IPVS_DAEMON_ATTR_*
DAEMON_STATE, DAEMON_MCAST_IFN, DAEMON_SYNC_ID = 1, 2, 3
# IPVS_INFO_ATTR_*
INFO_VERSION, INFO_CONN_TAB_SIZE = 1, 2

# IP_VS_SVC_F_*
SVC_F_PERSISTENT, SVC_F_HASHED, SVC_F_ONEPACKET = 0x1, 0x2, 0x4
# IP_VS_CONN_F_FWD_MASK
CONN_F_FWD_MASK = 0x7

_TUN_TYPES = {"ipip": 0, "gue": 1, "gre": 2}
_TUN_FLAGS = {"nocsum": 0, "csum": 1, "remcsum": 2}
_TUN_TYPE_NAMES = {v: k for k, v in _TUN_TYPES.items()}
_TUN_FLAG_NAMES = {v: k for k, v in _TUN_FLAGS.items()}
_PROTO_NUMBERS = {Proto.TCP: socket.IPPROTO_TCP, Proto.UDP: socket.IPPROTO_UDP, Proto.SCTP: 132}
_PROTO_BY_NUMBER = {v: k for k, v in _PROTO_NUMBERS.items()}
_AF: dict[int, int] = {4: int(socket.AF_INET), 6: int(socket.AF_INET6)}
_FAMILY: dict[int, int] = {int(socket.AF_INET): 4, int(socket.AF_INET6): 6}


class SyncState(enum.IntEnum):
    """IP_VS_STATE_*: what a connection-sync daemon does."""

    MASTER = 1  # sends the connections this director schedules
    BACKUP = 2  # receives them into its own connection table


class NetlinkError(OSError):
    """The kernel refused a request (errno, with ipvsadm's wording where it has one)."""


# --- attributes -------------------------------------------------------------------------------------


def nla(kind: int, payload: bytes) -> bytes:
    """Return one netlink attribute (header, payload, padding to 4 bytes)."""
    length = _NLA.size + len(payload)
    return _NLA.pack(length, kind) + payload + b"\0" * (-length % 4)


def nest(kind: int, *children: bytes) -> bytes:
    """Return a nested attribute holding `children` (NLA_F_NESTED set, as libnl does)."""
    return nla(kind | NLA_F_NESTED, b"".join(children))


def u8(kind: int, value: int) -> bytes:
    return nla(kind, struct.pack("=B", value))


def u16(kind: int, value: int) -> bytes:
    return nla(kind, struct.pack("=H", value))


def be16(kind: int, value: int) -> bytes:
    return nla(kind, struct.pack("!H", value))


def u32(kind: int, value: int) -> bytes:
    return nla(kind, struct.pack("=I", value & 0xFFFFFFFF))


def asciiz(kind: int, text: str) -> bytes:
    return nla(kind, text.encode() + b"\0")


def parse_attrs(buf: bytes | memoryview) -> dict[int, bytes]:
    """Return {type: payload} of the attributes in `buf` (flags stripped; malformed tail ignored)."""
    data = bytes(buf)
    unpack = _NLA.unpack_from
    out: dict[int, bytes] = {}
    i, end = 0, len(data)
    while i + 4 <= end:
        length, kind = unpack(data, i)
        if length < 4 or i + length > end:
            break
        out[kind & NLA_TYPE_MASK] = data[i + 4 : i + length]
        i += (length + 3) & ~3
    return out


_UNSIGNED = {1: struct.Struct("=B").unpack, 2: struct.Struct("=H").unpack, 4: struct.Struct("=I").unpack}
_UNSIGNED[8] = struct.Struct("=Q").unpack


def _u(payload: bytes | None, default: int = 0) -> int:
    if not payload:
        return default
    unpack = _UNSIGNED.get(len(payload))
    return unpack(payload)[0] if unpack else default


#: A stats64 nest as the kernel writes it: attributes 1..10, each a u64 (one unpack instead of ten).
_STATS64 = struct.Struct("=" + "HHQ" * 10)
_STATS64_TYPES = tuple(range(1, 11))


def _be16(payload: bytes | None) -> int:
    return struct.unpack("!H", payload[:2])[0] if payload and len(payload) >= 2 else 0


def _text(payload: bytes | None) -> str:
    return payload.split(b"\0", 1)[0].decode(errors="replace") if payload else ""


def _addr16(addr: IPAddress | None) -> bytes:
    """union nf_inet_addr: the address in its first 4 or 16 bytes, zero-padded to 16 (as ipvsadm)."""
    if addr is None:
        return bytes(16)
    return addr.packed.ljust(16, b"\0")


def _addr_from(payload: bytes | None, af: int) -> IPAddress:
    raw = (payload or b"").ljust(16, b"\0")
    return IPv4Address(raw[:4]) if af == 4 else IPv6Address(raw[:16])


# --- messages ---------------------------------------------------------------------------------------


def genl_message(family: int, cmd: int, attrs: bytes, *, flags: int, seq: int, version: int = 1) -> bytes:
    """Return one generic-netlink request (pid 0: the kernel fills it)."""
    body = _GENLHDR.pack(cmd, version, 0) + attrs
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), family, flags, seq, 0) + body


def getfamily_request(name: str, seq: int) -> bytes:
    """Return CTRL_CMD_GETFAMILY for the generic-netlink family `name`."""
    return genl_message(
        GENL_ID_CTRL, CTRL_CMD_GETFAMILY, asciiz(CTRL_ATTR_FAMILY_NAME, name), flags=NLM_F_REQUEST, seq=seq
    )


def service_key_attrs(key: ServiceKey) -> bytes:
    """Return the attributes naming a service (AF, then FWMARK or PROTOCOL/ADDR/PORT), as libipvs."""
    af = u16(SVC_AF, _AF[key.af])
    if key.fwmark:
        return af + u32(SVC_FWMARK, key.fwmark)
    return (
        af
        + u16(SVC_PROTOCOL, _PROTO_NUMBERS[key.proto])
        + nla(SVC_ADDR, _addr16(key.addr))
        + be16(SVC_PORT, key.port)
    )


def service_flags(spec: ServiceSpec) -> int:
    """Return IP_VS_SVC_F_* for `spec`."""
    flags = flag_bits(spec.flags)
    if spec.persistence_timeout_s:
        flags |= SVC_F_PERSISTENT
    if spec.one_packet:
        flags |= SVC_F_ONEPACKET
    return flags


def service_attrs(key: ServiceKey, spec: ServiceSpec) -> bytes:
    """Return the full service: key, scheduler, [pe], flags (mask ~0), timeout, netmask (as libipvs)."""
    out = service_key_attrs(key) + asciiz(SVC_SCHED_NAME, spec.scheduler)
    if spec.pe_name:
        out += asciiz(SVC_PE_NAME, spec.pe_name)
    mask = netmask_value(key, spec)
    netmask = struct.unpack("=I", struct.pack("!I", mask))[0] if key.af == 4 else mask  # v4: __be32
    return (
        out
        + nla(SVC_FLAGS, struct.pack("=II", service_flags(spec), 0xFFFFFFFF))
        + u32(SVC_TIMEOUT, spec.persistence_timeout_s)
        + u32(SVC_NETMASK, netmask)
    )


def dest_attrs(key: RealKey, spec: DestSpec | None) -> bytes:
    """Return a destination: address, port and, with `spec`, its whole configuration."""
    out = nla(DEST_ADDR, _addr16(key.addr)) + be16(DEST_PORT, key.port)
    if spec is None:
        return out
    out += u32(DEST_FWD_METHOD, spec.forward.value) + u32(DEST_WEIGHT, spec.weight)
    if spec.forward.value == 2 and spec.tun_type != "ipip":
        out += u8(DEST_TUN_TYPE, _TUN_TYPES[spec.tun_type])
        out += be16(DEST_TUN_PORT, spec.tun_port)
        out += u16(DEST_TUN_FLAGS, _TUN_FLAGS[spec.tun_flags])
    return (
        out
        + u32(DEST_U_THRESH, spec.u_threshold)
        + u32(DEST_L_THRESH, spec.l_threshold)
        + u16(DEST_ADDR_FAMILY, _AF[key.addr.version])
    )


def op_request(family: int, op: Op, seq: int) -> bytes:
    """Return the request that applies `op` (with NLM_F_ACK: every request gets an answer)."""
    flags = NLM_F_REQUEST | NLM_F_ACK
    if isinstance(op, SetTimeouts):
        t = op.timeouts
        attrs = u32(CMD_ATTR_TIMEOUT_TCP, t.tcp) + u32(CMD_ATTR_TIMEOUT_TCP_FIN, t.tcpfin)
        return genl_message(
            family, Cmd.SET_CONFIG, attrs + u32(CMD_ATTR_TIMEOUT_UDP, t.udp), flags=flags, seq=seq
        )
    if isinstance(op, AddService | EditService):
        cmd = Cmd.NEW_SERVICE if isinstance(op, AddService) else Cmd.SET_SERVICE
        return genl_message(
            family, cmd, nest(CMD_ATTR_SERVICE, service_attrs(op.key, op.spec)), flags=flags, seq=seq
        )
    if isinstance(op, DelService):
        return genl_message(
            family, Cmd.DEL_SERVICE, nest(CMD_ATTR_SERVICE, service_key_attrs(op.key)), flags=flags, seq=seq
        )
    cmd = {AddDest: Cmd.NEW_DEST, EditDest: Cmd.SET_DEST, DelDest: Cmd.DEL_DEST}[type(op)]
    spec = op.spec if isinstance(op, AddDest | EditDest) else None
    attrs = nest(CMD_ATTR_SERVICE, service_key_attrs(op.service)) + nest(
        CMD_ATTR_DEST, dest_attrs(op.key, spec)
    )
    return genl_message(family, cmd, attrs, flags=flags, seq=seq)


def dump_services_request(family: int, seq: int) -> bytes:
    return genl_message(family, Cmd.GET_SERVICE, b"", flags=NLM_F_REQUEST | NLM_F_DUMP, seq=seq)


def dump_dests_request(family: int, key: ServiceKey, seq: int) -> bytes:
    attrs = nest(CMD_ATTR_SERVICE, service_key_attrs(key))
    return genl_message(family, Cmd.GET_DEST, attrs, flags=NLM_F_REQUEST | NLM_F_DUMP, seq=seq)


def with_seq(message: bytes, seq: int) -> bytes:
    """Return `message` (one request) with its sequence number set to `seq`."""
    out = bytearray(message)
    struct.pack_into("=I", out, 8, seq)
    return bytes(out)


def simple_request(family: int, cmd: Cmd, seq: int, *, dump: bool = False) -> bytes:
    """Return a request without attributes (GET_CONFIG, GET_INFO, FLUSH, GET_DAEMON dump, ZERO)."""
    flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else NLM_F_ACK)
    return genl_message(family, cmd, b"", flags=flags, seq=seq)


def new_daemon_request(family: int, state: SyncState, interface: str, sync_id: int, seq: int) -> bytes:
    """Return IPVS_CMD_NEW_DAEMON: start a sync daemon (as `ipvsadm --start-daemon`)."""
    attrs = nest(
        CMD_ATTR_DAEMON,
        u32(DAEMON_STATE, state),
        asciiz(DAEMON_MCAST_IFN, interface),
        u32(DAEMON_SYNC_ID, sync_id),
    )
    return genl_message(family, Cmd.NEW_DAEMON, attrs, flags=NLM_F_REQUEST | NLM_F_ACK, seq=seq)


def del_daemon_request(family: int, state: SyncState, seq: int) -> bytes:
    """Return IPVS_CMD_DEL_DAEMON: stop the sync daemon in `state` (as `ipvsadm --stop-daemon`)."""
    attrs = nest(CMD_ATTR_DAEMON, u32(DAEMON_STATE, state))
    return genl_message(family, Cmd.DEL_DAEMON, attrs, flags=NLM_F_REQUEST | NLM_F_ACK, seq=seq)


# --- replies ----------------------------------------------------------------------------------------


class Reply(NamedTuple):
    """One netlink message from the kernel: type, flags, sequence and payload (after nlmsghdr).

    A NamedTuple, not a dataclass: one is made per message of a dump, and tuples are made in C.
    """

    type: int
    flags: int
    seq: int
    payload: bytes

    @property
    def error(self) -> int:
        """Return the errno of an NLMSG_ERROR (0 = an ACK); 0 for other messages."""
        if self.type != NLMSG_ERROR or len(self.payload) < 4:
            return 0
        code: int = struct.unpack_from("=i", self.payload)[0]
        return -code

    def genl_attrs(self) -> dict[int, bytes]:
        """Return the top-level attributes after the genl header."""
        return parse_attrs(memoryview(self.payload)[_GENLHDR.size :])


def split_replies(data: bytes | memoryview) -> Iterator[Reply]:
    """Yield every netlink message in one datagram from the kernel."""
    view = memoryview(data)
    i = 0
    while i + _NLMSGHDR.size <= len(view):
        length, kind, flags, seq, _pid = _NLMSGHDR.unpack_from(view, i)
        if length < _NLMSGHDR.size or i + length > len(view):
            return
        yield Reply(kind, flags, seq, bytes(view[i + _NLMSGHDR.size : i + length]))
        i += (length + 3) & ~3


def family_id(reply: Reply) -> int:
    """Return the family id in a CTRL_CMD_GETFAMILY answer."""
    raw = reply.genl_attrs().get(CTRL_ATTR_FAMILY_ID, b"")
    return _u(raw[:2] if len(raw) >= 2 else None)


def decode_stats(attrs: Mapping[int, bytes], stats: int, stats64: int) -> Stats:
    """Return the counters of a service or destination (64-bit ones when the kernel sends them)."""
    raw = attrs.get(stats64)
    if raw is not None and len(raw) == _STATS64.size:
        fields = _STATS64.unpack(raw)
        if fields[1::3] == _STATS64_TYPES:
            return Stats(*fields[2::3])
    raw = raw or attrs.get(stats)
    if raw is None:
        return Stats()
    a = parse_attrs(raw)
    return Stats(*(_u(a.get(i)) for i in range(1, 11)))


@dataclass(slots=True)
class ServiceParts:
    """Decoded parts of GET_SERVICE replies by their bytes: services that share a spec (or counters)
    decode it once, and a reply that differs from a known one only in its counters decodes those."""

    keys: dict[tuple[bytes | None, ...], ServiceKey]
    specs: dict[tuple[bytes | None, ...], ServiceSpec]
    stats: dict[bytes | None, Stats]

    @classmethod
    def empty(cls) -> ServiceParts:
        return cls({}, {}, {})

    def clear(self) -> None:
        self.keys.clear()
        self.specs.clear()
        self.stats.clear()


def service_key_raw(key: ServiceKey) -> tuple[bytes | None, ...]:
    """Return the key attributes' payloads a GET_SERVICE reply carries for `key` (as `decode_service`
    reads them: AF, FWMARK, PROTOCOL, ADDR, PORT), so a service just added needs no decoding."""
    af = struct.pack("=H", _AF[key.af])
    if key.fwmark:
        return (af, struct.pack("=I", key.fwmark), None, None, None)
    proto = struct.pack("=H", _PROTO_NUMBERS[key.proto])
    return (af, None, proto, _addr16(key.addr), struct.pack("!H", key.port))


def decode_service(payload: bytes, parts: ServiceParts | None = None) -> Service:
    """Return the service in a GET_SERVICE reply's IPVS_CMD_ATTR_SERVICE (parts reused from `parts`)."""
    a = parse_attrs(payload)
    get = a.get
    key_raw = (get(SVC_AF), get(SVC_FWMARK), get(SVC_PROTOCOL), get(SVC_ADDR), get(SVC_PORT))
    spec_raw = (
        get(SVC_AF),
        get(SVC_FLAGS),
        get(SVC_SCHED_NAME),
        get(SVC_NETMASK),
        get(SVC_TIMEOUT),
        get(SVC_PE_NAME),
    )
    stats_raw = get(SVC_STATS64) or get(SVC_STATS)
    if parts is None:
        parts = ServiceParts.empty()
    key = parts.keys.get(key_raw)
    if key is None:
        key = parts.keys[key_raw] = _service_key(a)
    spec = parts.specs.get(spec_raw)
    if spec is None:
        spec = parts.specs[spec_raw] = _service_spec(a, key.af)
    stats = parts.stats.get(stats_raw)
    if stats is None:
        stats = parts.stats[stats_raw] = decode_stats(a, SVC_STATS, SVC_STATS64)
    return Service(key, spec, (), stats)


def _service_key(a: Mapping[int, bytes]) -> ServiceKey:
    af = _FAMILY.get(_u(a.get(SVC_AF)), 4)
    fwmark = _u(a.get(SVC_FWMARK))
    proto = _PROTO_BY_NUMBER.get(_u(a.get(SVC_PROTOCOL)), Proto.TCP)
    if fwmark:
        return ServiceKey(Proto.TCP, None, 0, fwmark=fwmark, af=af)
    return ServiceKey(proto, _addr_from(a.get(SVC_ADDR), af), _be16(a.get(SVC_PORT)))


def _service_spec(a: Mapping[int, bytes], af: int) -> ServiceSpec:
    flags = struct.unpack_from("=I", a[SVC_FLAGS])[0] if len(a.get(SVC_FLAGS, b"")) >= 4 else 0
    scheduler = _text(a.get(SVC_SCHED_NAME))
    raw_mask = _u(a.get(SVC_NETMASK), 0xFFFFFFFF if af == 4 else 128)
    mask = struct.unpack("!I", struct.pack("=I", raw_mask))[0] if af == 4 else raw_mask
    persistent = bool(flags & SVC_F_PERSISTENT)
    return ServiceSpec(
        scheduler=scheduler,
        persistence_timeout_s=_u(a.get(SVC_TIMEOUT)) if persistent else 0,
        netmask=netmask_text(af, mask),
        flags=flag_names(scheduler, flags),
        one_packet=bool(flags & SVC_F_ONEPACKET),
        pe_name=_text(a.get(SVC_PE_NAME)),
    )


def decode_dest(payload: bytes, service_af: int) -> Dest:
    """Return the destination in a GET_DEST reply's IPVS_CMD_ATTR_DEST."""
    a = parse_attrs(payload)
    af = _FAMILY.get(_u(a.get(DEST_ADDR_FAMILY)), service_af) if DEST_ADDR_FAMILY in a else service_af
    key = RealKey(_addr_from(a.get(DEST_ADDR), af), _be16(a.get(DEST_PORT)))
    forward = FWD_BY_NUMBER[_u(a.get(DEST_FWD_METHOD)) & CONN_F_FWD_MASK]
    spec = DestSpec(
        weight=struct.unpack("=i", struct.pack("=I", _u(a.get(DEST_WEIGHT))))[0],
        forward=forward,
        u_threshold=_u(a.get(DEST_U_THRESH)),
        l_threshold=_u(a.get(DEST_L_THRESH)),
        tun_type=_TUN_TYPE_NAMES.get(_u(a.get(DEST_TUN_TYPE)), "ipip"),
        tun_port=_be16(a.get(DEST_TUN_PORT)),
        tun_flags=_TUN_FLAG_NAMES.get(_u(a.get(DEST_TUN_FLAGS)), "nocsum"),
    )
    counters = DestCounters(
        active=_u(a.get(DEST_ACTIVE_CONNS)),
        inactive=_u(a.get(DEST_INACT_CONNS)),
        persistent=_u(a.get(DEST_PERSIST_CONNS)),
        stats=decode_stats(a, DEST_STATS, DEST_STATS64),
    )
    return Dest(key, spec, counters)


def decode_timeouts(attrs: Mapping[int, bytes]) -> Timeouts:
    """Return the timeouts of a GET_CONFIG reply."""
    return Timeouts(
        _u(attrs.get(CMD_ATTR_TIMEOUT_TCP)),
        _u(attrs.get(CMD_ATTR_TIMEOUT_TCP_FIN)),
        _u(attrs.get(CMD_ATTR_TIMEOUT_UDP)),
    )


@dataclass(frozen=True, slots=True)
class SyncDaemon:
    """A running connection-sync daemon as GET_DAEMON reports it."""

    state: SyncState
    interface: str
    sync_id: int


def decode_daemon(payload: bytes) -> SyncDaemon:
    """Return the daemon in a GET_DAEMON reply's IPVS_CMD_ATTR_DAEMON."""
    a = parse_attrs(payload)
    return SyncDaemon(
        SyncState(_u(a.get(DAEMON_STATE), 1)), _text(a.get(DAEMON_MCAST_IFN)), _u(a.get(DAEMON_SYNC_ID))
    )


def decode_version(attrs: Mapping[int, bytes]) -> tuple[str, int]:
    """Return ("1.2.1", conn_tab_size) from a GET_INFO reply."""
    v = _u(attrs.get(INFO_VERSION))
    return f"{v >> 16}.{(v >> 8) & 0xFF}.{v & 0xFF}", _u(attrs.get(INFO_CONN_TAB_SIZE))


# --- errors -----------------------------------------------------------------------------------------

_OP_ERRORS: dict[tuple[type, int], str] = {
    (AddService, errno.EEXIST): "Service already exists",
    (AddService, errno.ENOENT): "Scheduler or persistence engine not found",
    (EditService, errno.ESRCH): "No such service",
    (EditService, errno.ENOENT): "Scheduler or persistence engine not found",
    (DelService, errno.ESRCH): "No such service",
    (AddDest, errno.EEXIST): "Destination already exists",
    (AddDest, errno.ESRCH): "Service not defined",
    (EditDest, errno.ESRCH): "Service not defined",
    (EditDest, errno.ENOENT): "No such destination",
    (DelDest, errno.ESRCH): "Service not defined",
    (DelDest, errno.ENOENT): "No such destination",
}


def op_error_text(op: Op, code: int) -> str:
    """Return ipvsadm's text for errno `code` answering `op` (as ipvs_strerror)."""
    text = _OP_ERRORS.get((type(op), code))
    if text:
        return text
    if code == errno.EINVAL:
        return "Invalid operation. Possibly wrong module version, address not unicast, ..."
    if code == errno.ENOMEM:
        return "Memory allocation problem"
    return f"{errno.errorcode.get(code, str(code))}: {os.strerror(code)}"


# --- /proc/net/ip_vs ---------------------------------------------------------------------------------
# The kernel's text listing (ip_vs_ctl.c, ip_vs_info_seq_show): one line per service, then one per
# destination with its address, port, forwarding method, weight, active and inactive connections.
# One read of it costs far less than a GET_DEST dump per service, so a dump uses it to find the
# services whose destinations differ from what it already knows (only those are dumped again).

_PROC_FORWARD = {f: f.ipvsadm_name for f in ForwardMethod}
_PROC_SERVICE = re.compile(r"^(\S+  \S+) [^\n]*\n((?:  ->[^\n]*\n)*)", re.M)


def proc_service_id(key: ServiceKey) -> str:
    """Return how /proc/net/ip_vs starts the line of service `key` ("TCP  0A000001:0AFB")."""
    if key.fwmark:
        return f"FWM  {key.fwmark:08X}"  # the family is not shown: a v4 and a v6 mark look alike
    assert key.addr is not None
    addr = f"{int(key.addr):08X}" if key.addr.version == 4 else f"[{key.addr.exploded}]"
    return f"{key.proto.value}  {addr}:{key.port:04X}"


def proc_dest_lines(dests: Sequence[Dest]) -> str:
    """Return the destination lines /proc/net/ip_vs shows for `dests` (kernel order, counters)."""
    out = []
    for d in dests:
        addr = d.key.addr
        text = f"{int(addr):08X}" if addr.version == 4 else f"[{addr.exploded}]"
        c, spec = d.counters, d.spec
        out.append(
            f"  -> {text}:{d.key.port:04X}      {_PROC_FORWARD[spec.forward]:<7} {spec.weight:<6} "
            f"{c.active:<10} {c.inactive:<10}\n"
        )
    return "".join(out)


def parse_proc_services(text: str) -> dict[str, str | None]:
    """Return {service id: its destination lines} of a /proc/net/ip_vs listing.

    An id that occurs twice (a firewall mark used by an IPv4 and an IPv6 service) maps to None:
    the listing cannot tell which lines are whose.
    """
    out: dict[str, str | None] = {}
    for match in _PROC_SERVICE.finditer(text):
        key = match.group(1)
        out[key] = None if key in out else match.group(2)
    return out


# --- /proc/net/ip_vs_conn ---------------------------------------------------------------------------


def _conn_addr(text: str) -> IPAddress:
    if ":" in text or "." in text:
        return ip_address(text.strip("[]"))
    return IPv4Address(int(text, 16))


def parse_conn_table(text: str) -> list[ConnEntry]:
    """Return the entries of /proc/net/ip_vs_conn (header skipped; lines that do not parse are ignored)."""
    out: list[ConnEntry] = []
    for line in text.splitlines()[1:]:
        w = line.split()
        if len(w) < 9:
            continue
        try:
            proto = Proto(w[0])
            client = RealKey(_conn_addr(w[1]), int(w[2], 16))
            virtual = RealKey(_conn_addr(w[3]), int(w[4], 16))
            dest = RealKey(_conn_addr(w[5]), int(w[6], 16))
            out.append(ConnEntry(proto, int(w[8]), w[7], client, virtual, dest))
        except ValueError:
            continue
    return out


__all__ = [
    "Cmd",
    "NetlinkError",
    "Reply",
    "ServiceParts",
    "SyncDaemon",
    "SyncState",
    "decode_daemon",
    "decode_dest",
    "decode_service",
    "decode_timeouts",
    "decode_version",
    "dest_attrs",
    "dump_dests_request",
    "dump_services_request",
    "family_id",
    "genl_message",
    "getfamily_request",
    "new_daemon_request",
    "op_error_text",
    "op_request",
    "parse_conn_table",
    "parse_proc_services",
    "proc_dest_lines",
    "proc_service_id",
    "service_attrs",
    "service_key_attrs",
    "service_key_raw",
    "simple_request",
    "split_replies",
    "with_seq",
]
