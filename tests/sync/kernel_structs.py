"""An independent codec for IPVS sync v1, transcribed from the kernel's struct definitions with ctypes.

`struct ip_vs_sync_mesg`, `struct ip_vs_sync_v4` and `struct ip_vs_sync_v6` of
net/netfilter/ipvs/ip_vs_sync.c as packed big-endian ctypes structures, and the receive loop of
`ip_vs_process_message` / `ip_vs_proc_sync_conn` (only the parts the tests compare). It shares no
code with gridlb.sync.wire.
"""

from __future__ import annotations

import ctypes
import socket
from typing import Any


class SyncMesg(ctypes.BigEndianStructure):
    _pack_ = 1
    _fields_ = [
        ("reserved", ctypes.c_uint8),
        ("syncid", ctypes.c_uint8),
        ("size", ctypes.c_uint16),
        ("nr_conns", ctypes.c_uint8),
        ("version", ctypes.c_int8),
        ("spare", ctypes.c_uint16),
    ]


_COMMON = [
    ("type", ctypes.c_uint8),
    ("protocol", ctypes.c_uint8),
    ("ver_size", ctypes.c_uint16),
    ("flags", ctypes.c_uint32),
    ("state", ctypes.c_uint16),
    ("cport", ctypes.c_uint16),
    ("vport", ctypes.c_uint16),
    ("dport", ctypes.c_uint16),
    ("fwmark", ctypes.c_uint32),
    ("timeout", ctypes.c_uint32),
]


class SyncV4(ctypes.BigEndianStructure):
    _pack_ = 1
    _fields_ = [
        *_COMMON,
        ("caddr", ctypes.c_uint8 * 4),
        ("vaddr", ctypes.c_uint8 * 4),
        ("daddr", ctypes.c_uint8 * 4),
    ]


class SyncV6(ctypes.BigEndianStructure):
    _pack_ = 1
    _fields_ = [
        *_COMMON,
        ("caddr", ctypes.c_uint8 * 16),
        ("vaddr", ctypes.c_uint8 * 16),
        ("daddr", ctypes.c_uint8 * 16),
    ]


assert ctypes.sizeof(SyncMesg) == 8 and ctypes.sizeof(SyncV4) == 36 and ctypes.sizeof(SyncV6) == 72


def _ntop(raw: Any, v6: bool) -> str:
    return socket.inet_ntop(socket.AF_INET6 if v6 else socket.AF_INET, bytes(raw))


def kdecode(buf: bytes) -> dict[str, Any]:
    """Decode like the kernel's backup: a dict of header fields and a list of entry dicts."""
    assert len(buf) >= 8, "header too short"
    m = SyncMesg.from_buffer_copy(buf[:8])
    assert m.size == len(buf), "bogus message size"
    assert m.version == 1 and m.reserved == 0 and m.spare == 0, "not version 1"
    conns = []
    p = 8
    for _ in range(m.nr_conns):
        assert p + 36 <= len(buf), "too small"
        v4 = SyncV4.from_buffer_copy(buf[p : p + 36])
        size = v4.ver_size & 0x0FFF
        assert v4.ver_size >> 12 == 0 and p + size <= len(buf)
        v6 = bool(v4.type & 1)
        s: Any = SyncV6.from_buffer_copy(buf[p : p + 72]) if v6 else v4
        q = p + ctypes.sizeof(s)
        opts: dict[int, bytes] = {}
        while q < p + size:
            ptype, plen = buf[q], buf[q + 1]
            opts[ptype] = buf[q + 2 : q + 2 + plen]
            q += 2 + plen
        conns.append(
            {
                "v6": v6,
                "protocol": s.protocol,
                "flags": s.flags,
                "state": s.state,
                "cport": s.cport,
                "vport": s.vport,
                "dport": s.dport,
                "fwmark": s.fwmark,
                "timeout": s.timeout,
                "caddr": _ntop(s.caddr, v6),
                "vaddr": _ntop(s.vaddr, v6),
                "daddr": _ntop(s.daddr, v6),
                "options": opts,
            }
        )
        p += (size + 3) & ~3
    return {"syncid": m.syncid, "nr_conns": m.nr_conns, "conns": conns}


def kencode(syncid: int, conns: list[dict[str, Any]]) -> bytes:
    """Build a datagram the way the kernel's master fills its buffer (`ip_vs_sync_conn`)."""
    body = bytearray()
    for c in conns:
        body += b"\0" * ((4 - (8 + len(body))) & 3)
        v6 = c["v6"]
        s: Any = SyncV6() if v6 else SyncV4()
        opts = b"".join(bytes((t, len(d))) + d for t, d in c.get("options", {}).items())
        length = ctypes.sizeof(s) + len(opts)
        s.type = 1 if v6 else 0
        s.protocol = c["protocol"]
        s.ver_size = length & 0x0FFF
        s.flags = c["flags"] & ~0x40
        s.state = c["state"]
        s.cport, s.vport, s.dport = c["cport"], c["vport"], c["dport"]
        s.fwmark, s.timeout = c["fwmark"], c["timeout"]
        fam = socket.AF_INET6 if v6 else socket.AF_INET
        for name in ("caddr", "vaddr", "daddr"):
            raw = socket.inet_pton(fam, c[name])
            getattr(s, name)[:] = list(raw)
        body += bytes(s) + opts
    head = SyncMesg(reserved=0, syncid=syncid, size=8 + len(body), nr_conns=len(conns), version=1, spare=0)
    return bytes(head) + bytes(body)
