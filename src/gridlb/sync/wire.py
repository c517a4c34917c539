"""The kernel's IPVS connection-sync protocol, version 1 (`net/netfilter/ipvs/ip_vs_sync.c`): pure codec.

A datagram is an 8-byte header (reserved 0, syncid, big-endian size of the whole datagram, number of
entries, version 1, spare 0) followed by connection entries. An entry is type (bit 0: IPv6), protocol,
`ver_size` (top 4 bits: entry version 0; low 12 bits: entry length including its options), flags
(`IP_VS_CONN_F_*`, forwarding method in the low 3 bits), state, client/virtual/destination ports,
fwmark, timeout in seconds, then the three addresses (36 bytes for IPv4, 72 for IPv6), then options
(u8 type, u8 length, data): 1 = TCP sequence adjustments (24 bytes), 2 = persistence-engine data,
3 = persistence-engine name; option types with bit 0x40 set are optional and skipped when unknown.
Entries start on 4-byte boundaries; the padding is not counted in an entry's length.

Receiving follows the kernel's rules: a datagram whose length differs from its size field, whose
header is not version 1, or whose entries run past its end is malformed (`SyncWireError`, to be
counted and dropped). Unlike the kernel, which has already applied the entries before such a fault,
gridlb drops the whole datagram. An entry the kernel skips on its own (an unknown mandatory option,
an unknown protocol or state, persistence data without an engine name) is skipped and counted in
`SyncMessage.skipped`. Nothing here raises any other exception for any input bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from gridlb.errors import PeerProtocolError

IPAddress = IPv4Address | IPv6Address

#: The kernel's defaults: multicast group, UDP port, TTL (all settable since Linux 4.3).
SYNC_GROUP = IPv4Address("224.0.0.81")
SYNC_PORT = 8848
SYNC_TTL = 1
#: The largest datagram the kernel's master sends on a 1500-byte link (1500 - IPv4 - UDP headers).
SYNC_MAXLEN = 1500 - 28

PROTO_VERSION = 1
HEADER = struct.Struct("!BBHBbH")  # reserved, syncid, size, nr_conns, version, spare
ENTRY = struct.Struct(
    "!BBHIHHHHII"
)  # type, protocol, ver_size, flags, state, cport, vport, dport, fwmark, timeout
V4_SIZE = ENTRY.size + 3 * 4
V6_SIZE = ENTRY.size + 3 * 16
SEQ = struct.Struct("!III")  # init_seq, delta, previous_delta
SEQ_OPTION_LEN = 2 * SEQ.size

STYPE_F_INET6 = 0x01
SVER_SHIFT = 12
SVER_MASK = 0x0FFF

OPT_SEQ_DATA = 1
OPT_PE_DATA = 2
OPT_PE_NAME = 3
OPT_F_PARAM = 1 << (7 - 1)  # an option type with this bit is optional: skipped when unknown
PENAME_MAXLEN = 16
PEDATA_MAXLEN = 255

# IP_VS_CONN_F_* (include/uapi/linux/ip_vs.h)
F_FWD_MASK = 0x0007
F_MASQ = 0x0000
F_LOCALNODE = 0x0001
F_TUNNEL = 0x0002
F_DROUTE = 0x0003
F_BYPASS = 0x0004
F_SYNC = 0x0020
F_HASHED = 0x0040
F_NOOUTPUT = 0x0080
F_INACTIVE = 0x0100
F_OUT_SEQ = 0x0200
F_IN_SEQ = 0x0400
F_SEQ_MASK = 0x0600
F_NO_CPORT = 0x0800
F_TEMPLATE = 0x1000
F_ONE_PACKET = 0x2000
#: The flag bits a backup keeps from a received entry (the kernel then adds F_SYNC).
F_BACKUP_MASK = F_FWD_MASK | F_NOOUTPUT | F_INACTIVE | F_SEQ_MASK | F_NO_CPORT | F_TEMPLATE

#: Protocols the kernel's IPVS knows, with their number of connection states (`pp->num_states`).
PROTOCOL_STATES = {6: 11, 17: 1, 132: 13, 50: 1, 51: 1}
#: IP_VS_TCP_S_* states the master sends (`ip_vs_sync_conn_needed`).
TCP_ESTABLISHED, TCP_FIN_WAIT, TCP_TIME_WAIT, TCP_CLOSE, TCP_CLOSE_WAIT = 1, 4, 5, 6, 7
TCP_SYNCED_STATES = frozenset({TCP_ESTABLISHED, TCP_FIN_WAIT, TCP_CLOSE, TCP_CLOSE_WAIT, TCP_TIME_WAIT})


class SyncWireError(PeerProtocolError):
    """A malformed sync datagram (the peer's fault): count it and drop it."""


@dataclass(frozen=True, slots=True)
class Seq:
    """One direction's TCP sequence adjustment (`struct ip_vs_seq`)."""

    init_seq: int
    delta: int
    previous_delta: int


@dataclass(frozen=True, slots=True)
class SyncConn:
    """One connection (or persistence template) entry."""

    protocol: int
    caddr: IPAddress
    cport: int
    vaddr: IPAddress
    vport: int
    daddr: IPAddress
    dport: int
    flags: int = F_DROUTE
    state: int = TCP_ESTABLISHED
    fwmark: int = 0
    timeout_s: int = 0
    in_seq: Seq | None = None
    out_seq: Seq | None = None
    pe_data: bytes | None = None
    pe_name: str | None = None

    @property
    def family(self) -> int:
        """Return 4 or 6."""
        return self.caddr.version

    @property
    def forward(self) -> int:
        """Return the forwarding method bits (`flags & F_FWD_MASK`)."""
        return self.flags & F_FWD_MASK


@dataclass(frozen=True, slots=True)
class SyncMessage:
    """A decoded datagram: its sync id, the entries kept, and how many entries were skipped."""

    syncid: int
    conns: tuple[SyncConn, ...]
    skipped: int = 0


# --------------------------------------------------------------------------------------------- encode


def _check_range(name: str, value: int, bits: int) -> None:
    if not 0 <= value < (1 << bits):
        raise ValueError(f"{name} {value} does not fit in {bits} bits")


def encode_conn(conn: SyncConn) -> bytes:
    """Return one entry (without the padding that aligns the next one); ValueError for bad values."""
    fam = conn.caddr.version
    if conn.vaddr.version != fam or conn.daddr.version != fam:
        raise ValueError("caddr, vaddr and daddr must be of one family")
    for name, value, bits in (
        ("protocol", conn.protocol, 8),
        ("flags", conn.flags, 32),
        ("state", conn.state, 16),
        ("cport", conn.cport, 16),
        ("vport", conn.vport, 16),
        ("dport", conn.dport, 16),
        ("fwmark", conn.fwmark, 32),
        ("timeout_s", conn.timeout_s, 32),
    ):
        _check_range(name, value, bits)
    options = b""
    if (conn.in_seq is None) != (conn.out_seq is None):
        raise ValueError("give both in_seq and out_seq, or neither")
    if conn.in_seq is not None and conn.out_seq is not None:
        seqs = b""
        for seq in (conn.in_seq, conn.out_seq):
            for name, value in zip(
                ("init_seq", "delta", "previous_delta"),
                (seq.init_seq, seq.delta, seq.previous_delta),
                strict=True,
            ):
                _check_range(name, value, 32)
            seqs += SEQ.pack(seq.init_seq, seq.delta, seq.previous_delta)
        options += bytes((OPT_SEQ_DATA, SEQ_OPTION_LEN)) + seqs
    if conn.pe_name is not None and conn.pe_data is None:
        raise ValueError("pe_name needs pe_data (the kernel sends the name only with data)")
    if conn.pe_data is not None:
        if not 1 <= len(conn.pe_data) <= PEDATA_MAXLEN:
            raise ValueError(f"pe_data must be 1..{PEDATA_MAXLEN} bytes")
        options += bytes((OPT_PE_DATA, len(conn.pe_data))) + conn.pe_data
        if conn.pe_name is not None:
            name_b = conn.pe_name.encode("ascii")
            if not 1 <= len(name_b) <= PENAME_MAXLEN:
                raise ValueError(f"pe_name must be 1..{PENAME_MAXLEN} ASCII characters")
            options += bytes((OPT_PE_NAME, len(name_b))) + name_b
    fixed = V6_SIZE if fam == 6 else V4_SIZE
    length = fixed + len(options)
    if length > SVER_MASK:
        raise ValueError(f"entry of {length} bytes exceeds the 12-bit size field")
    head = ENTRY.pack(
        STYPE_F_INET6 if fam == 6 else 0,
        conn.protocol,
        length & SVER_MASK,  # entry version 0 in the top 4 bits
        conn.flags & ~F_HASHED,
        conn.state,
        conn.cport,
        conn.vport,
        conn.dport,
        conn.fwmark,
        conn.timeout_s,
    )
    return head + conn.caddr.packed + conn.vaddr.packed + conn.daddr.packed + options


def _pad(n: int) -> int:
    return (4 - n) & 3


def encode_message(syncid: int, conns: Sequence[SyncConn]) -> bytes:
    """Return one datagram holding `conns` (at most 255; ValueError when it would exceed 65535 bytes)."""
    _check_range("syncid", syncid, 8)
    if len(conns) > 255:
        raise ValueError("a datagram holds at most 255 entries")
    body = b""
    for conn in conns:
        body += b"\0" * _pad(HEADER.size + len(body)) + encode_conn(conn)
    size = HEADER.size + len(body)
    if size > 0xFFFF:
        raise ValueError(f"datagram of {size} bytes exceeds the 16-bit size field")
    return HEADER.pack(0, syncid, size, len(conns), PROTO_VERSION, 0) + body


def encode_all(syncid: int, conns: Iterable[SyncConn], *, max_len: int = SYNC_MAXLEN) -> list[bytes]:
    """Pack `conns` into as few datagrams of at most `max_len` bytes as the kernel's master would."""
    out: list[bytes] = []
    batch: list[SyncConn] = []
    used = HEADER.size
    for conn in conns:
        entry = len(encode_conn(conn))
        if HEADER.size + entry > max_len:
            raise ValueError(f"an entry of {entry} bytes does not fit in max_len {max_len}")
        need = _pad(used) + entry
        if batch and (used + need > max_len or len(batch) == 255):
            out.append(encode_message(syncid, batch))
            batch, used, need = [], HEADER.size, entry
        batch.append(conn)
        used += need
    if batch:
        out.append(encode_message(syncid, batch))
    return out


# --------------------------------------------------------------------------------------------- decode


def _bad(peer: str, field: str, message: str) -> SyncWireError:
    return SyncWireError(peer, field, message)


def decode_message(data: bytes, *, peer: str = "sync peer") -> SyncMessage:
    """Decode one datagram; raise `SyncWireError` (and nothing else) when it is malformed."""
    buflen = len(data)
    if buflen < HEADER.size:
        raise _bad(peer, "header", f"{buflen} bytes, shorter than the {HEADER.size}-byte header")
    reserved, syncid, size, nr_conns, version, spare = HEADER.unpack_from(data)
    if size != buflen:
        raise _bad(peer, "size", f"header says {size} bytes, datagram has {buflen}")
    if version != PROTO_VERSION or reserved != 0 or spare != 0:
        raise _bad(
            peer,
            "version",
            f"not a version 1 message (reserved {reserved}, version {version}, spare {spare}); "
            "version 0 is not supported",
        )
    conns: list[SyncConn] = []
    skipped = 0
    pos = HEADER.size
    for index in range(nr_conns):
        where = f"entry {index}"
        if pos + V4_SIZE > buflen:
            raise _bad(peer, where, f"starts at byte {pos}, too close to the end ({buflen} bytes)")
        ver_size = struct.unpack_from("!H", data, pos + 2)[0]
        length = ver_size & SVER_MASK
        end = pos + length
        if end > buflen:
            raise _bad(peer, where, f"length {length} runs past the datagram's end")
        if ver_size >> SVER_SHIFT:
            raise _bad(peer, where, f"unknown entry version {ver_size >> SVER_SHIFT}")
        conn = _decode_conn(data, pos, end, peer, where)
        if conn is None:
            skipped += 1
        else:
            conns.append(conn)
        pos += (length + 3) & ~3
    return SyncMessage(syncid, tuple(conns), skipped)


def _decode_conn(data: bytes, pos: int, end: int, peer: str, where: str) -> SyncConn | None:
    """Decode one entry in data[pos:end]; None when the kernel would skip just this entry."""
    etype = data[pos]
    cls: type[IPv4Address] | type[IPv6Address]
    if etype & STYPE_F_INET6:
        fixed, alen, cls = V6_SIZE, 16, IPv6Address
    elif etype == 0:
        fixed, alen, cls = V4_SIZE, 4, IPv4Address
    else:
        raise _bad(peer, f"{where}.type", f"unknown entry type {etype:#x}")
    if pos + fixed > end:
        raise _bad(peer, f"{where}.size", f"length {end - pos} is shorter than the {fixed}-byte entry")
    (_, protocol, _, flags, state, cport, vport, dport, fwmark, timeout) = ENTRY.unpack_from(data, pos)
    a = pos + ENTRY.size
    addrs = [cls(data[a + i * alen : a + (i + 1) * alen]) for i in range(3)]
    seqs: tuple[Seq, Seq] | None = None
    pe_data: bytes | None = None
    pe_name: bytes | None = None
    p = pos + fixed
    while p < end:
        if p + 2 > end:
            raise _bad(peer, f"{where}.option", "option header cut off")
        ptype, plen = data[p], data[p + 1]
        p += 2
        if plen == 0 or p + plen > end:
            raise _bad(peer, f"{where}.option", f"option {ptype} of length {plen} does not fit")
        kind = ptype & ~OPT_F_PARAM
        if kind == OPT_SEQ_DATA:
            if plen != SEQ_OPTION_LEN or seqs is not None:
                raise _bad(peer, f"{where}.seq", f"length {plen} (want {SEQ_OPTION_LEN}) or given twice")
            seqs = (Seq(*SEQ.unpack_from(data, p)), Seq(*SEQ.unpack_from(data, p + SEQ.size)))
        elif kind == OPT_PE_DATA:
            if pe_data is not None:
                raise _bad(peer, f"{where}.pe_data", "given twice")
            pe_data = bytes(data[p : p + plen])
        elif kind == OPT_PE_NAME:
            if plen > PENAME_MAXLEN or pe_name is not None:
                raise _bad(peer, f"{where}.pe_name", f"length {plen} (max {PENAME_MAXLEN}) or given twice")
            pe_name = bytes(data[p : p + plen])
        elif not ptype & OPT_F_PARAM:
            return None  # an unknown mandatory option: the kernel skips the entry
        p += plen
    if not flags & F_TEMPLATE:
        states = PROTOCOL_STATES.get(protocol)
        if states is None or state >= states:
            return None  # unknown protocol or state: skipped
    if pe_data is not None and pe_name is None:
        return None  # persistence data without an engine: skipped
    name = None
    if pe_name is not None and pe_data is not None:  # a name alone means nothing to the kernel
        try:
            name = pe_name.decode("ascii")
        except UnicodeDecodeError:
            return None  # no engine has such a name: skipped
    return SyncConn(
        protocol=protocol,
        caddr=addrs[0],
        cport=cport,
        vaddr=addrs[1],
        vport=vport,
        daddr=addrs[2],
        dport=dport,
        flags=flags,
        state=state,
        fwmark=fwmark,
        timeout_s=timeout,
        in_seq=seqs[0] if seqs else None,
        out_seq=seqs[1] if seqs else None,
        pe_data=pe_data,
        pe_name=name,
    )
