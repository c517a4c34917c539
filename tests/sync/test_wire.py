"""The IPVS sync v1 codec against an independent ctypes codec written from the kernel's structs, and fuzz."""

from __future__ import annotations

import random
import socket
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridlb.sync import wire
from gridlb.sync.transport import SyncReceiver
from gridlb.sync.wire import Seq, SyncConn, SyncMessage, SyncWireError, decode_message, encode_message
from tests.sync.kernel_structs import kdecode, kencode

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
v4 = st.builds(IPv4Address, u32)
v6 = st.builds(IPv6Address, st.integers(0, (1 << 128) - 1))
seq = st.builds(Seq, u32, u32, u32)


@st.composite
def conns(draw: st.DrawFn) -> SyncConn:
    families: list[st.SearchStrategy[IPv4Address | IPv6Address]] = [v4, v6]
    addr = draw(st.sampled_from(families))  # one family for the three addresses
    template = draw(st.booleans())
    protocol = draw(st.sampled_from([6, 17, 132]))
    state = draw(st.integers(0, wire.PROTOCOL_STATES[protocol] - 1))
    flags = draw(st.integers(0, 0x3FFF)) & ~wire.F_HASHED
    flags = (flags | wire.F_TEMPLATE) if template else (flags & ~wire.F_TEMPLATE)
    with_seq = draw(st.booleans())
    pe = draw(st.booleans())
    return SyncConn(
        protocol=protocol,
        caddr=draw(addr),
        cport=draw(u16),
        vaddr=draw(addr),
        vport=draw(u16),
        daddr=draw(addr),
        dport=draw(u16),
        flags=flags,
        state=state,
        fwmark=draw(u32),
        timeout_s=draw(u32),
        in_seq=draw(seq) if with_seq else None,
        out_seq=draw(seq) if with_seq else None,
        pe_data=draw(st.binary(min_size=1, max_size=40)) if pe else None,
        pe_name=draw(st.sampled_from(["sip", "x" * 16])) if pe else None,
    )


def ntop(a: IPv4Address | IPv6Address) -> str:
    return socket.inet_ntop(socket.AF_INET6 if a.version == 6 else socket.AF_INET, a.packed)


def as_kernel(c: SyncConn) -> dict[str, Any]:
    opts: dict[int, bytes] = {}
    if c.in_seq is not None and c.out_seq is not None:
        opts[1] = b"".join(
            v.to_bytes(4, "big")
            for s in (c.in_seq, c.out_seq)
            for v in (s.init_seq, s.delta, s.previous_delta)
        )
    if c.pe_data is not None:
        opts[2] = c.pe_data
        if c.pe_name is not None:
            opts[3] = c.pe_name.encode()
    return {
        "v6": c.family == 6,
        "protocol": c.protocol,
        "flags": c.flags,
        "state": c.state,
        "cport": c.cport,
        "vport": c.vport,
        "dport": c.dport,
        "fwmark": c.fwmark,
        "timeout": c.timeout_s,
        "caddr": ntop(c.caddr),
        "vaddr": ntop(c.vaddr),
        "daddr": ntop(c.daddr),
        "options": opts,
    }


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 255), st.lists(conns(), max_size=12))
def test_gridlb_datagrams_decode_with_the_kernel_structs(syncid: int, entries: list[SyncConn]) -> None:
    data = encode_message(syncid, entries)
    k = kdecode(data)
    assert k["syncid"] == syncid and k["nr_conns"] == len(entries)
    assert k["conns"] == [as_kernel(c) for c in entries]


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 255), st.lists(conns(), max_size=12))
def test_kernel_built_datagrams_are_accepted(syncid: int, entries: list[SyncConn]) -> None:
    data = kencode(syncid, [as_kernel(c) for c in entries])
    assert data == encode_message(syncid, entries)  # byte for byte what gridlb builds
    assert decode_message(data) == SyncMessage(syncid, tuple(entries), 0)


def test_golden_ipv4_entry_layout() -> None:
    c = SyncConn(
        6,
        ip_address("10.0.0.50"),
        40000,
        ip_address("10.0.0.100"),
        2811,
        ip_address("10.0.0.11"),
        2811,
        flags=wire.F_DROUTE,
        state=wire.TCP_ESTABLISHED,
        timeout_s=900,
    )
    data = encode_message(7, [c])
    assert len(data) == 8 + 36
    assert data.hex() == (
        "0007002c01010000"  # reserved 0, syncid 7, size 44, 1 conn, version 1, spare 0
        "00060024" "00000003" "0001" "9c40" "0afb" "0afb" "00000000" "00000384"
        "0a000032" "0a000064" "0a00000b"
    )  # fmt: skip
    six = SyncConn(6, ip_address("fd00::50"), 1, ip_address("fd00::100"), 2811, ip_address("fd00::11"), 2811)
    assert len(wire.encode_conn(six)) == 72


def test_entries_are_padded_to_four_bytes_and_size_excludes_padding() -> None:
    a = SyncConn(6, ip_address("10.0.0.1"), 1, ip_address("10.0.0.2"), 2, ip_address("10.0.0.3"), 3,
                 flags=wire.F_TEMPLATE | wire.F_DROUTE, pe_data=b"abc", pe_name="sip")  # fmt: skip
    b = SyncConn(17, ip_address("10.0.0.4"), 4, ip_address("10.0.0.5"), 5, ip_address("10.0.0.6"), 6, state=0)
    data = encode_message(1, [a, b])
    first = 36 + 2 + 3 + 2 + 3
    assert int.from_bytes(data[10:12], "big") == first  # ver_size of the first entry
    assert data[8 + first : 8 + first + 2] == b"\0\0"  # two bytes of padding
    assert len(data) == 8 + first + 2 + 36
    assert decode_message(data).conns == (a, b)


def test_kernel_skip_rules_skip_only_that_entry() -> None:
    good = SyncConn(6, ip_address("10.0.0.1"), 1, ip_address("10.0.0.2"), 2, ip_address("10.0.0.3"), 3)
    unknown_proto = {**as_kernel(good), "protocol": 99}
    bad_state = {**as_kernel(good), "state": 11}
    mandatory = {**as_kernel(good), "options": {9: b"zz"}}
    optional = {**as_kernel(good), "options": {9 | wire.OPT_F_PARAM: b"zz"}}
    pe_without_name = {**as_kernel(good), "options": {2: b"data"}}
    data = kencode(3, [unknown_proto, bad_state, mandatory, optional, pe_without_name, as_kernel(good)])
    msg = decode_message(data)
    assert msg.conns == (good, good) and msg.skipped == 4


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d[:7], "header"),
        (lambda d: d + b"\0", "size"),
        (lambda d: bytes([1]) + d[1:], "version"),  # reserved != 0: a version 0 message
        (lambda d: d[:5] + bytes([0]) + d[6:], "version"),
        (lambda d: d[:4] + bytes([2]) + d[5:], "entry 1"),  # more entries than present
        (lambda d: d[:10] + b"\x10\x24" + d[12:], "entry 0"),  # entry version 1
        (lambda d: d[:10] + b"\x00\x30" + d[12:], "entry 0"),  # length past the end
        (lambda d: d[:8] + b"\x02" + d[9:], "entry 0.type"),
        (lambda d: d[:10] + b"\x00\x20" + d[12:], "entry 0.size"),  # shorter than the struct
    ],
)
def test_malformed_datagrams_name_the_field(mutate: Any, field: str) -> None:
    good = SyncConn(6, ip_address("10.0.0.1"), 1, ip_address("10.0.0.2"), 2, ip_address("10.0.0.3"), 3)
    with pytest.raises(SyncWireError) as err:
        decode_message(mutate(encode_message(1, [good])), peer="10.1.1.1")
    assert err.value.field == field and err.value.peer == "10.1.1.1"


def _malformed(rng: random.Random, base: list[bytes]) -> bytes:
    d = bytearray(rng.choice(base))
    how = rng.randrange(6)
    if how == 0:
        return bytes(d[: rng.randrange(0, 8)])  # header cut
    if how == 1:
        cut = rng.randrange(8, len(d))
        d = d[:cut]
        return bytes(d)  # size field no longer matches
    if how == 2:
        d[0] = rng.randrange(1, 256)  # reserved set: not version 1
        return bytes(d)
    if how == 3:
        d[4] = min(255, d[4] + rng.randrange(1, 20))  # more entries than there are
        return bytes(d)
    if how == 4:
        d[10] |= rng.randrange(1, 16) << 4  # unknown entry version
        return bytes(d)
    d[8] = rng.randrange(2, 256) & ~1  # unknown entry type
    return bytes(d)


def test_ten_thousand_malformed_datagrams_are_counted_and_dropped() -> None:
    rng = random.Random(11)
    a4, a6 = ip_address("10.0.0.1"), ip_address("fd00::1")
    base = [
        encode_message(
            rng.randrange(256), [SyncConn(6, a, 1, a, 2, a, 3, in_seq=Seq(1, 2, 3), out_seq=Seq(4, 5, 6))] * n
        )
        for a in (a4, a6)
        for n in (1, 2, 5)
    ]
    delivered: list[SyncMessage] = []
    rx = SyncReceiver("lo", lambda m, p: delivered.append(m))
    for _ in range(10_000):
        rx.datagram_received(_malformed(rng, base), ("10.9.9.9", 8848))
    assert delivered == []
    assert rx.received == 10_000 and sum(rx.drops.values()) == 10_000


_A = ip_address("10.0.0.1")
_SEED = encode_message(1, [SyncConn(6, _A, 1, _A, 2, _A, 3, pe_data=b"ab", pe_name="sip")])
_FLIPPED = st.builds(
    lambda i, b: _SEED[:i] + bytes([b]) + _SEED[i + 1 :], st.integers(0, 55), st.integers(0, 255)
)


@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=160) | _FLIPPED)
def test_fuzz_decode_raises_only_the_wire_error(data: bytes) -> None:
    rx = SyncReceiver("lo", lambda m, p: None)
    rx.datagram_received(data, ("10.9.9.9", 8848))
    try:
        msg = decode_message(data)
    except SyncWireError:
        assert sum(rx.drops.values()) == 1
        return
    assert isinstance(msg, SyncMessage)
    assert encode_message(msg.syncid, list(msg.conns)) is not None


def test_encode_all_splits_like_the_master() -> None:
    a = ip_address("10.0.0.1")
    entries = [SyncConn(6, a, i, a, 2, a, 3) for i in range(100)]
    grams = wire.encode_all(5, entries)
    assert all(len(g) <= wire.SYNC_MAXLEN for g in grams)
    assert [len(decode_message(g).conns) for g in grams] == [40, 40, 20]  # (1472 - 8) // 36 = 40
    assert [c for g in grams for c in decode_message(g).conns] == entries
    with pytest.raises(ValueError):
        encode_message(1, [SyncConn(6, a, 70000, a, 2, a, 3)])
