"""Reads set elements and named counters of one nftables table straight over nfnetlink.

A libnftables listing fetches the whole ruleset cache, set elements included: with 5,000 flows in
the `dr` table any listing took 0.2–0.5 s, too much to do twice a second. These dumps
(NFT_MSG_GETSETELEM, NFT_MSG_GETOBJ) cost the kernel's walk of one set only; a set element dump also
carries each element's counter when the set has them. The parsing is pure
(`parse_*`); `NftReader` owns the netlink socket. pyroute2's nftables module returns only the
first message of a dump, so it does not fit here.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator, Sequence

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWSETELEM, NFT_MSG_GETSETELEM = 12, 13
NFT_MSG_NEWOBJ, NFT_MSG_GETOBJ = 18, 19
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP, NLM_F_DUMP_INTR = 0x1, 0x300, 0x10
NFPROTO_NETDEV = 5
NFT_OBJECT_COUNTER = 1
NLA_TYPE_MASK = 0x3FFF
NLA_F_NESTED = 0x8000
#: Get requests sent in one datagram (their replies, ~100 bytes each, fit the receive buffer).
LOOKUP_BATCH = 1024

_NLMSG = struct.Struct("=IHHII")
_NFGEN = struct.Struct("=BBH")
_NLA = struct.Struct("=HH")


class NftReadError(RuntimeError):
    """The kernel refused a dump, or sent something that does not parse."""


def _attrs(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes]]:
    """Yield (type, payload) of the netlink attributes in data[start:end]."""
    end = len(data) if end is None else end
    pos = start
    while pos + 4 <= end:
        length, kind = _NLA.unpack_from(data, pos)
        if length < 4 or pos + length > end:
            raise NftReadError(f"attribute of length {length} at {pos} runs past the message")
        yield kind & NLA_TYPE_MASK, data[pos + 4 : pos + length]
        pos += (length + 3) & ~3


def _attr(kind: int, payload: bytes) -> bytes:
    head = _NLA.pack(4 + len(payload), kind)
    return head + payload + b"\0" * ((4 - len(payload)) & 3)


def _nest(kind: int, payload: bytes) -> bytes:
    return _attr(kind | NLA_F_NESTED, payload)


def request(msg: int, seq: int, *attrs: tuple[int, bytes], dump: bool = True) -> bytes:
    """Return one nfnetlink request (a dump unless `dump` is False) for the nftables message `msg`
    (netdev family)."""
    body = _NFGEN.pack(NFPROTO_NETDEV, 0, 0) + b"".join(_attr(k, v) for k, v in attrs)
    kind = (NFNL_SUBSYS_NFTABLES << 8) | msg
    flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else 0)
    return _NLMSG.pack(_NLMSG.size + len(body), kind, flags, seq, 0) + body


def replies(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """Yield (type, flags, sequence number, payload) of each netlink message in `data`, errors included."""
    pos = 0
    while pos + _NLMSG.size <= len(data):
        length, kind, flags, seq, _pid = _NLMSG.unpack_from(data, pos)
        if length < _NLMSG.size or pos + length > len(data):
            raise NftReadError(f"netlink message of length {length} at {pos} runs past the buffer")
        yield kind, flags, seq, data[pos + _NLMSG.size : pos + length]
        pos += (length + 3) & ~3


def error_code(payload: bytes) -> int:
    """Return the (negative errno) code of an NLMSG_ERROR payload: 0 is an acknowledgement."""
    return int(struct.unpack_from("=i", payload)[0]) if len(payload) >= 4 else -1


def _raise_for(code: int) -> None:
    raise NftReadError(os.strerror(-code) if code < 0 else f"netlink error {code}")


def messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """Yield (type, flags, payload after the nfgenmsg) of each netlink message; NLMSG_ERROR raises."""
    for kind, flags, _seq, payload in replies(data):
        if kind == NLMSG_ERROR:
            code = error_code(payload)
            if code:
                _raise_for(code)
        yield kind, flags, payload[_NFGEN.size :]


def _counter_packets(expr: bytes) -> int | None:
    """Return the packets of one nested expression if it is a counter (NFTA_EXPR_NAME "counter")."""
    name, packets = b"", 0
    for kind, value in _attrs(expr):
        if kind == 1:  # NFTA_EXPR_NAME
            name = value.rstrip(b"\0")
        elif kind == 2:  # NFTA_EXPR_DATA
            for ckind, cvalue in _attrs(value):
                if ckind == 2 and len(cvalue) == 8:  # NFTA_COUNTER_PACKETS
                    (packets,) = struct.unpack(">Q", cvalue)
    return packets if name == b"counter" else None


def _elements(payload: bytes) -> Iterator[tuple[bytes, int, int | None]]:
    """Yield (key, ms until expiry or 0, the element's counter packets or None) of one NEWSETELEM."""
    for kind, value in _attrs(payload):
        if kind != 3:  # NFTA_SET_ELEM_LIST_ELEMENTS
            continue
        for _, elem in _attrs(value):  # NFTA_LIST_ELEM
            key = b""
            expires_ms = 0
            packets: int | None = None
            for ekind, evalue in _attrs(elem):
                if ekind == 1:  # NFTA_SET_ELEM_KEY: nested NFTA_DATA_VALUE
                    for dkind, dvalue in _attrs(evalue):
                        if dkind == 1:
                            key = dvalue
                elif ekind == 5 and len(evalue) == 8:  # NFTA_SET_ELEM_EXPIRATION, be64 ms
                    (expires_ms,) = struct.unpack(">Q", evalue)
                elif ekind == 7:  # NFTA_SET_ELEM_EXPR: the set's one element expression
                    packets = _counter_packets(evalue)
                elif ekind == 11:  # NFTA_SET_ELEM_EXPRESSIONS: a list of them
                    for _, expr in _attrs(evalue):
                        got = _counter_packets(expr)
                        packets = got if got is not None else packets
            if key:
                yield key, expires_ms, packets


def parse_setelems(payload: bytes) -> Iterator[tuple[bytes, int]]:
    """Yield (key bytes, milliseconds until expiry; 0 = none) of one NEWSETELEM message."""
    for key, expires_ms, _ in _elements(payload):
        yield key, expires_ms


def parse_element_packets(payload: bytes) -> Iterator[tuple[bytes, int]]:
    """Yield (key bytes, packets) of the elements of one NEWSETELEM message that carry a counter."""
    for key, _, packets in _elements(payload):
        if packets is not None:
            yield key, packets


def parse_counter(payload: bytes) -> tuple[str, int, int] | None:
    """Return (name, packets, bytes) of one NEWOBJ message holding a counter, else None."""
    name, kind, packets, nbytes = "", 0, 0, 0
    for akind, value in _attrs(payload):
        if akind == 2:  # NFTA_OBJ_NAME
            name = value.rstrip(b"\0").decode(errors="replace")
        elif akind == 3 and len(value) == 4:  # NFTA_OBJ_TYPE
            (kind,) = struct.unpack(">I", value)
        elif akind == 4:  # NFTA_OBJ_DATA
            for ckind, cvalue in _attrs(value):
                if ckind == 1 and len(cvalue) == 8:
                    (nbytes,) = struct.unpack(">Q", cvalue)
                elif ckind == 2 and len(cvalue) == 8:
                    (packets,) = struct.unpack(">Q", cvalue)
    return (name, packets, nbytes) if name and kind == NFT_OBJECT_COUNTER else None


class NftReader:
    """Dumps of one netdev table's sets and counters over a netlink socket of this namespace."""

    def __init__(self, table: str) -> None:
        self.table = table.encode() + b"\0"
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self._sock.bind((0, 0))
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self._seq = 0

    def _dump(self, msg: int, *attrs: tuple[int, bytes]) -> list[tuple[int, bytes]]:
        for _ in range(3):  # a dump interrupted by a concurrent change is repeated
            self._seq += 1
            self._sock.send(request(msg, self._seq, *attrs))
            out: list[tuple[int, bytes]] = []
            interrupted = False
            while True:
                data = self._sock.recv(1 << 20)
                done = False
                for kind, flags, payload in messages(data):
                    if kind == NLMSG_DONE:
                        done = True
                        break
                    interrupted |= bool(flags & NLM_F_DUMP_INTR)
                    out.append((kind & 0xFF, payload))
                if done:
                    break
            if not interrupted:
                return out
        return out

    def set_elements(self, name: str) -> list[tuple[bytes, int]]:
        """Return (key bytes, ms until expiry) of every element of set `name`."""
        out: list[tuple[bytes, int]] = []
        for kind, payload in self._dump(NFT_MSG_GETSETELEM, (1, self.table), (2, name.encode() + b"\0")):
            if kind == NFT_MSG_NEWSETELEM:
                out.extend(parse_setelems(payload))
        return out

    def element_packets(self, name: str) -> list[tuple[bytes, int]]:
        """Return (key bytes, packets) of every element of set or map `name` that has a counter."""
        out: list[tuple[bytes, int]] = []
        for kind, payload in self._dump(NFT_MSG_GETSETELEM, (1, self.table), (2, name.encode() + b"\0")):
            if kind == NFT_MSG_NEWSETELEM:
                out.extend(parse_element_packets(payload))
        return out

    def lookup(self, name: str, keys: Sequence[bytes]) -> dict[bytes, tuple[int, int | None]]:
        """Return key -> (ms until expiry or 0, packets or None) of those `keys` that set or map
        `name` holds: one get request per key (NFT_MSG_GETSETELEM without NLM_F_DUMP), sent in
        batches; a missing key's reply is ENOENT. The cost follows the keys asked, not the set."""
        out: dict[bytes, tuple[int, int | None]] = {}
        head = (1, self.table), (2, name.encode() + b"\0")
        for i in range(0, len(keys), LOOKUP_BATCH):
            batch = keys[i : i + LOOKUP_BATCH]
            first = self._seq + 1
            self._seq += len(batch)
            self._sock.send(
                b"".join(
                    request(
                        NFT_MSG_GETSETELEM,
                        first + j,
                        *head,
                        (3, _nest(1, _nest(1, _nest(1, key)))),
                        dump=False,
                    )
                    for j, key in enumerate(batch)
                )
            )
            left = len(batch)
            while left:
                data = self._sock.recv(1 << 20)
                for kind, _flags, seq, payload in replies(data):
                    if not first <= seq < first + len(batch):
                        continue  # a late reply of an earlier request
                    left -= 1
                    if kind == NLMSG_ERROR:
                        code = error_code(payload)
                        if code and code != -errno.ENOENT:
                            _raise_for(code)
                    elif kind & 0xFF == NFT_MSG_NEWSETELEM:
                        for key, expires_ms, packets in _elements(payload[_NFGEN.size :]):
                            out[key] = (expires_ms, packets)
        return out

    def counters(self) -> dict[str, tuple[int, int]]:
        """Return name -> (packets, bytes) of every named counter of the table."""
        out: dict[str, tuple[int, int]] = {}
        attrs = ((1, self.table), (3, struct.pack(">I", NFT_OBJECT_COUNTER)))
        for kind, payload in self._dump(NFT_MSG_GETOBJ, *attrs):
            got = parse_counter(payload) if kind == NFT_MSG_NEWOBJ else None
            if got is not None:
                out[got[0]] = (got[1], got[2])
        return out

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()


__all__ = [
    "NftReadError",
    "NftReader",
    "messages",
    "parse_counter",
    "parse_element_packets",
    "parse_setelems",
    "replies",
    "request",
]
