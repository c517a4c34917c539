"""Codec tests: keepalived 2.2.7 goldens decode to the recorded settings and re-encode byte for byte."""

from __future__ import annotations

import ipaddress
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridlb.config.load import site_from_mapping
from gridlb.vrrp.machine import VrrpMachine
from gridlb.vrrp.packet import (
    Advert,
    AuthType,
    DecodeError,
    DropReason,
    decode,
    encode,
    inet_checksum,
    parse_ipv4,
)
from gridlb.vrrp.site import configs_from_site

GOLDENS = json.loads((Path(__file__).parents[1] / "data" / "vrrp" / "goldens.json").read_text())
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def split_frame(hexframe: str) -> tuple[IPAddress, IPAddress, int, bytes]:
    """Ethernet frame -> (src, dst, ttl/hop limit, VRRP message)."""
    frame = bytes.fromhex(hexframe)
    if frame[12:14] == b"\x08\x00":
        ip = parse_ipv4(frame[14:])
        assert ip.protocol == 112
        return ip.src, ip.dst, ip.ttl, ip.payload
    assert frame[12:14] == b"\x86\xdd"
    ip6 = frame[14:]
    (plen,) = struct.unpack("!H", ip6[4:6])
    assert ip6[6] == 112
    return ipaddress.IPv6Address(ip6[8:24]), ipaddress.IPv6Address(ip6[24:40]), ip6[7], ip6[40 : 40 + plen]


def case_config(case: dict[str, Any]) -> Any:
    raw: dict[str, Any] = {
        "interface": "eth0",
        "state": "MASTER",
        "virtual_router_id": case["vrid"],
        "priority": case["priority"],
        "advert_int": case["advert_int"],
        "version": case["version"],
        "virtual_ipaddress": case["vips"],
    }
    if case.get("auth_pass"):
        raw.update(auth_type="PASS", auth_pass=case["auth_pass"])
    if case["unicast"]:
        fam = "ipv6" if case["family"] == 6 else "ipv4"
        raw.update(unicast_source_ip=case["lab"][f"dir1_{fam}"], unicast_peers=[case["lab"][f"dir2_{fam}"]])
    (config,) = configs_from_site(site_from_mapping({"keepalived::vrrp_instances": {"VI_G": raw}}))
    return config


@pytest.mark.parametrize("case", GOLDENS, ids=[c["name"] for c in GOLDENS])
def test_golden_decodes_to_settings(case: dict[str, Any]) -> None:
    assert len(case["frames"]) >= 3 and len(case["stop_frames"]) == 1
    for hexframe, prio in [(f, case["priority"]) for f in case["frames"]] + [(case["stop_frames"][0], 0)]:
        src, dst, ttl, msg = split_frame(hexframe)
        adv = decode(msg, src, dst, family=case["family"])
        assert adv.version == case["version"]
        assert adv.vrid == case["vrid"]
        assert adv.priority == prio
        assert adv.advert_int_cs == round(case["advert_int"] * 100)
        assert [str(a) for a in adv.addresses] == [v.split("/")[0] for v in case["vips"]]
        if case.get("auth_pass"):
            assert adv.auth_type is AuthType.PASS
            assert adv.auth_data == case["auth_pass"].encode()[:8]
        assert ttl == (64 if case["family"] == 6 and case["unicast"] else 255)
        if not case["unicast"]:
            assert dst == ipaddress.ip_address("224.0.0.18" if case["family"] == 4 else "ff02::12")


@pytest.mark.parametrize("case", GOLDENS, ids=[c["name"] for c in GOLDENS])
def test_our_machine_emits_identical_bytes(case: dict[str, Any]) -> None:
    """The state machine, configured with the same settings, sends keepalived's bytes exactly."""
    src, dst, _, golden = split_frame(case["frames"][0])
    _, _, _, golden_stop = split_frame(case["stop_frames"][0])
    m = VrrpMachine(case_config(case), source=src)
    m.start(0.0)
    m.handle_timer(100.0)  # master-down timer runs out: becomes MASTER and sends an advert
    sent = m.adverts_to_send(100.0)
    assert sent == [(golden, dst)]
    m.shutdown(101.0)
    assert m.adverts_to_send(101.0) == [(golden_stop, dst)]


def test_pass_auth_is_cut_at_8_bytes() -> None:
    adv = Advert(2, 1, 100, 100, (ipaddress.IPv4Address("10.0.0.1"),), AuthType.PASS, b"ab")
    msg = encode(adv)
    assert msg[-8:] == b"ab" + b"\0" * 6
    assert decode(msg).auth_data == b"ab" + b"\0" * 6


def test_v3_needs_pseudo_header() -> None:
    a, b = ipaddress.IPv4Address("10.0.0.1"), ipaddress.IPv4Address("10.0.0.2")
    msg = encode(Advert(3, 5, 100, 10, (a,)), a, b)
    assert decode(msg, a, b).priority == 100
    with pytest.raises(DecodeError) as err2:
        decode(msg, a, ipaddress.IPv4Address("10.0.0.3"))
    assert err2.value.reason is DropReason.CHECKSUM


V4 = ipaddress.IPv4Address("10.0.0.1")
V4B = ipaddress.IPv4Address("10.0.0.2")


def _v2(**kw: Any) -> bytes:
    return encode(Advert(2, 51, 100, 100, (ipaddress.IPv4Address("10.0.0.100"),), **kw))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", DropReason.TRUNCATED),
        (b"\x21\x33\x64", DropReason.TRUNCATED),
        (_v2()[:-1], DropReason.TRUNCATED),
        (_v2()[:12], DropReason.TRUNCATED),
        (bytes([0x41]) + _v2()[1:], DropReason.VERSION),
        (bytes([0x22]) + _v2()[1:], DropReason.TYPE),
        (_v2()[:6] + b"\x00\x00" + _v2()[8:], DropReason.CHECKSUM),
        (_v2()[:3] + b"\x00" + _v2()[4:], DropReason.TRUNCATED),  # zero addresses
    ],
)
def test_malformed_is_a_decode_error(data: bytes, reason: DropReason) -> None:
    with pytest.raises(DecodeError) as err:
        decode(data, V4, V4B)
    assert err.value.reason is reason


def test_checksum_of_own_output_is_zero() -> None:
    msg = encode(Advert(3, 5, 100, 10, (V4,)), V4, V4B)
    pseudo = V4.packed + V4B.packed + struct.pack("!BBH", 0, 112, len(msg))
    assert inet_checksum(pseudo + msg) == 0


def test_parse_ipv4_rejects_short_headers() -> None:
    for bad in (b"", b"\x45" + b"\0" * 10, b"\x4f" + b"\0" * 19, b"\x65" + b"\0" * 19):
        with pytest.raises(DecodeError):
            parse_ipv4(bad)


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([4, 6]))
def test_decode_only_raises_decode_error(data: bytes, family: int) -> None:
    src: IPAddress = V4 if family == 4 else ipaddress.IPv6Address("fe80::1")
    dst: IPAddress = V4B if family == 4 else ipaddress.IPv6Address("ff02::12")
    try:
        adv = decode(data, src, dst, family=family)
    except DecodeError:
        return
    assert adv.version in (2, 3)
