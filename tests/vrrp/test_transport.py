"""Transport receive path: a hypothesis fuzz (≥ 10,000 inputs) never raises, every input is accounted for."""

from __future__ import annotations

import asyncio
import ipaddress
import struct
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridlb.vrrp.config import VrrpConfig
from gridlb.vrrp.events import State, StateChanged
from gridlb.vrrp.machine import VrrpMachine
from gridlb.vrrp.packet import MCAST_V4, MCAST_V6, Advert, encode, inet_checksum
from gridlb.vrrp.transport import VrrpTransport

ME4 = ipaddress.IPv4Address("10.0.0.2")
PEER4 = ipaddress.IPv4Address("10.0.0.3")
ME6 = ipaddress.IPv6Address("fe80::2")
PEER6 = ipaddress.IPv6Address("fe80::3")
VIP4 = ipaddress.IPv4Interface("10.0.0.100/24")
VIP6 = ipaddress.IPv6Interface("fd00::100/64")

LOOP = asyncio.new_event_loop()


@pytest.fixture(scope="module", autouse=True)
def _close_loop() -> Iterator[None]:
    yield
    LOOP.close()


def transport(family: int) -> VrrpTransport:
    if family == 4:
        cfg = VrrpConfig("VI_4", "eth0", 51, version=2, vips=(VIP4,), source_address=ME4)
    else:
        cfg = VrrpConfig("VI_6", "eth0", 51, version=3, vips=(VIP6,), source_address=ME6)
    t = VrrpTransport(VrrpMachine(cfg), loop=LOOP)
    t.machine.start(LOOP.time())
    return t


def ipv4(payload: bytes, *, src: ipaddress.IPv4Address = PEER4, ttl: int = 255, proto: int = 112) -> bytes:
    head = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0xC0, 20 + len(payload), 1, 0, ttl, proto, 0, src.packed, MCAST_V4.packed
    )
    head = head[:10] + struct.pack("!H", inet_checksum(head)) + head[12:]
    return head + payload


GOOD4 = encode(Advert(2, 51, 150, 100, (VIP4.ip,)))
GOOD6 = encode(Advert(3, 51, 150, 100, (VIP6.ip,)), PEER6, MCAST_V6)


def mutate(base: bytes) -> st.SearchStrategy[bytes]:
    """Valid adverts with some bytes flipped, cut short or extended."""
    return st.tuples(st.lists(st.tuples(st.integers(0, len(base) - 1), st.integers(0, 255)), max_size=4),
                     st.integers(0, len(base) + 8), st.binary(max_size=8)).map(
        lambda t: bytes(_apply(base, t[0]))[: t[1]] + t[2]
    )  # fmt: skip


def _apply(base: bytes, edits: list[tuple[int, int]]) -> bytearray:
    out = bytearray(base)
    for i, v in edits:
        out[i] = v
    return out


INPUTS_V4 = st.one_of(
    st.binary(max_size=120),  # anything as an "IPv4 packet"
    st.binary(max_size=80).map(ipv4),  # a good header, random payload
    mutate(GOOD4).map(ipv4),  # a good header, a damaged advert
    st.tuples(mutate(GOOD4), st.integers(0, 255), st.integers(0, 255)).map(
        lambda t: ipv4(t[0], ttl=t[1], proto=t[2])
    ),
)
INPUTS_V6 = st.one_of(st.binary(max_size=120), mutate(GOOD6))


BATCH = 10
FUZZED = [0]


@settings(max_examples=1_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(
        st.tuples(
            st.one_of(INPUTS_V4.map(lambda d: (4, d)), INPUTS_V6.map(lambda d: (6, d))), st.integers(0, 255)
        ),
        min_size=BATCH,
        max_size=BATCH,
    )
)
def test_fuzz_receive_never_raises_and_counts_every_drop(batch: list[tuple[tuple[int, bytes], int]]) -> None:
    """1,000 examples × 10 packets = 10,000 inputs through the transport's receive path."""
    ts = {4: transport(4), 6: transport(6)}
    for (family, data), hops in batch:
        t = ts[family]
        if family == 4:
            t.handle_ipv4(data)
        else:
            t.handle_ipv6(data, PEER6, MCAST_V6, hops)
    FUZZED[0] += len(batch)
    total = sum(t.machine.rx_adverts + sum(t.drop_counts().values()) for t in ts.values())
    assert total == len(batch)
    assert all(t.drop_counts().get("internal_error", 0) == 0 for t in ts.values())


def test_fuzz_saw_at_least_10000_inputs() -> None:
    if FUZZED[0] == 0:
        pytest.skip("run together with the fuzz test")
    assert FUZZED[0] >= 10_000


def state_now(m: VrrpMachine) -> State:
    """The machine's state, read again after an input moved it."""
    return m.state


def test_good_adverts_are_accepted_and_preempt() -> None:
    t = transport(4)
    t.machine.handle_timer(LOOP.time() + 100)  # become master
    assert t.machine.state is State.MASTER
    t.handle_ipv4(ipv4(GOOD4))
    assert state_now(t.machine) is State.BACKUP
    events = []
    while not t.events.empty():
        events.append(t.events.get_nowait())
    assert [e.new for e in events if isinstance(e, StateChanged)] == [
        State.BACKUP,
        State.MASTER,
        State.BACKUP,
    ]


def test_non_vrrp_protocol_is_counted() -> None:
    t = transport(4)
    t.handle_ipv4(ipv4(GOOD4, proto=6))
    t.handle_ipv4(b"\x45\x00")
    assert t.drop_counts() == {"not_vrrp": 1, "truncated": 1}


def test_ipv6_hop_limit_is_checked_for_multicast() -> None:
    t = transport(6)
    t.handle_ipv6(GOOD6, PEER6, MCAST_V6, 64)
    assert t.drop_counts() == {"ttl": 1}
    t.handle_ipv6(GOOD6, PEER6, MCAST_V6, 255)
    assert t.machine.rx_adverts == 1
