"""nfnetlink dumps of the dr table: parsing (pure, hostile input) and the kernel round trip in a namespace."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from ipaddress import ip_address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridlb.dataplane.dr_rules import FlowKey, decode_key
from gridlb.dataplane.nft_read import (
    NftReadError,
    messages,
    parse_counter,
    parse_element_packets,
    parse_setelems,
    request,
)
from tests.support import lab, need_root, need_tool


def attr(kind: int, payload: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(payload), kind) + payload + b"\0" * ((4 - len(payload)) & 3)


def test_a_set_element_message_gives_keys_and_expiry() -> None:
    key = bytes([10, 0, 0, 50]) + b"\x9c\x40\0\0" + bytes([10, 0, 0, 100]) + b"\x0a\xfb\0\0"
    elem = attr(1, attr(1, key)) + attr(5, struct.pack(">Q", 1500))
    payload = attr(1, b"gridlb_dr\0") + attr(3 | 0x8000, attr(1 | 0x8000, elem))
    got = list(parse_setelems(payload))
    assert got == [(key, 1500)]
    assert decode_key(key) == FlowKey(ip_address("10.0.0.50"), 40000, ip_address("10.0.0.100"), 2811)


def test_a_map_element_with_a_counter_gives_its_packets() -> None:
    key = bytes([10, 0, 0, 50]) + b"\x9c\x40\0\0" + bytes([10, 0, 0, 100]) + b"\x0a\xfb\0\0"
    counter = attr(1, b"counter\0") + attr(
        2, attr(1, struct.pack(">Q", 4000)) + attr(2, struct.pack(">Q", 77))
    )
    one = attr(1, attr(1, key)) + attr(7, counter)  # NFTA_SET_ELEM_EXPR
    listed = attr(1, attr(1, key)) + attr(11, attr(1, counter))  # NFTA_SET_ELEM_EXPRESSIONS
    bare = attr(1, attr(1, key))
    for elem, want in ((one, [(key, 77)]), (listed, [(key, 77)]), (bare, [])):
        payload = attr(1, b"gridlb_dr\0") + attr(3, attr(1, elem))
        assert list(parse_element_packets(payload)) == want
        assert list(parse_setelems(payload)) == [(key, 0)]
    quota = attr(1, b"quota\0") + attr(2, attr(2, struct.pack(">Q", 5)))
    assert list(parse_element_packets(attr(3, attr(1, attr(1, attr(1, key)) + attr(7, quota))))) == []


def test_a_counter_object_message() -> None:
    data = attr(1, struct.pack(">Q", 600)) + attr(2, struct.pack(">Q", 10))
    payload = attr(1, b"t\0") + attr(2, b"d7\0") + attr(3, struct.pack(">I", 1)) + attr(4, data)
    assert parse_counter(payload) == ("d7", 10, 600)
    assert parse_counter(attr(2, b"q\0") + attr(3, struct.pack(">I", 2))) is None  # a quota, not a counter


def test_an_error_message_raises_with_the_kernels_reason() -> None:
    err = struct.pack("=IHHII", 36, 2, 0, 1, 0) + struct.pack("=i", -2) + b"\0" * 16
    with pytest.raises(NftReadError, match="No such file"):
        list(messages(err))


@given(st.binary(max_size=300))
def test_garbage_raises_only_nftreaderror(data: bytes) -> None:
    try:
        for _, _, payload in messages(data):
            list(parse_setelems(payload))
            list(parse_element_packets(payload))
            parse_counter(payload)
        list(parse_setelems(data))
        list(parse_element_packets(data))
        parse_counter(data)
        decode_key(data)
    except NftReadError:
        pass


def test_requests_are_netdev_nftables_dumps() -> None:
    msg = request(13, 7, (1, b"gridlb_dr\0"))
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", msg)
    assert (length, kind, flags, seq) == (len(msg), (10 << 8) | 13, 0x301, 7)
    assert msg[16] == 5  # NFPROTO_NETDEV


@pytest.mark.privileged
def test_dumps_match_what_nft_lists() -> None:
    need_root()
    need_tool("nft")
    with lab("N", realservers=0, directors=0, start="none") as built:  # the client's namespace
        ns = built.node("client").ns
        script = r"""
import json, subprocess
from ipaddress import ip_address
from gridlb.dataplane.dr_rules import FlowKey, decode_key, encode_key
from gridlb.dataplane.nft_read import NftReader
rules = '''table netdev gridlb_dr {
  counter d1 { packets 5 bytes 300 }
  set est4 { type ipv4_addr . inet_service . ipv4_addr . inet_service; flags dynamic, timeout; }
  set est6 { type ipv6_addr . inet_service . ipv6_addr . inet_service; flags dynamic, timeout; }
  chain d1 { }
  map flows4 { type ipv4_addr . inet_service . ipv4_addr . inet_service : verdict; counter;
    elements = { 10.0.0.50 . 40000 . 10.0.0.100 . 2811 counter packets 7 bytes 420 : goto d1,
                 10.0.0.51 . 40001 . 10.0.0.100 . 2811 : goto d1 } }
}
'''
subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True)
keys4 = [f"10.0.{i // 200}.{i % 200 + 1} . {1024 + i} . 10.0.0.100 . 2811" for i in range(3000)]
add = ["nft", "add", "element", "netdev", "gridlb_dr"]
subprocess.run([*add, "est4", "{ " + ", ".join(keys4) + " }"], check=True)
subprocess.run([*add, "est6", "{ fd00::50 . 40000 . fd00::100 . 2811 timeout 60s }"], check=True)
r = NftReader("gridlb_dr")
asked = [encode_key(FlowKey(ip_address("10.0.0.50"), p, ip_address("10.0.0.100"), 2811)) for p in (40000, 9)]
asked6 = [encode_key(FlowKey(ip_address("fd00::50"), 40000, ip_address("fd00::100"), 2811))]
got4 = {decode_key(k) for k, _ in r.set_elements("est4")}
want4 = set()
for k in keys4:
    c, cp, v, vp = [p.strip() for p in k.split(" . ")]
    want4.add(FlowKey(ip_address(c), int(cp), ip_address(v), int(vp)))
got6 = r.set_elements("est6")
print(json.dumps({"v4": got4 == want4, "n4": len(got4), "v6": [str(decode_key(k)) for k, _ in got6],
                  "ms6": [ms for _, ms in got6], "counters": r.counters(),
                  "flows": sorted([str(decode_key(k)), n] for k, n in r.element_packets("flows4")),
                  "get": {str(decode_key(k)): v for k, v in r.lookup("flows4", asked).items()},
                  "get6": [[str(decode_key(k)), v] for k, v in r.lookup("est6", asked6).items()],
                  "get_many": len(r.lookup("est4", [encode_key(k) for k in want4] * 2))}))
"""
        env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), "..", "..", "src"))
        out = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", script],
            capture_output=True, text=True, timeout=120, env=env, check=True,
        ).stdout  # fmt: skip
        got = json.loads(out)
        assert got["v4"] is True and got["n4"] == 3000
        assert got["v6"] == [str(FlowKey(ip_address("fd00::50"), 40000, ip_address("fd00::100"), 2811))]
        assert 55_000 < got["ms6"][0] <= 60_000
        assert got["counters"] == {"d1": [5, 300]}
        key = FlowKey(ip_address("10.0.0.50"), 40000, ip_address("10.0.0.100"), 2811)
        other = FlowKey(ip_address("10.0.0.51"), 40001, ip_address("10.0.0.100"), 2811)
        assert got["flows"] == sorted([[str(key), 7], [str(other), 0]])
        # get requests: one element's counter, a missing one left out, an expiry, 6,000 asked at once
        assert got["get"] == {str(key): [0, 7]}
        assert got["get6"][0][0] == str(FlowKey(ip_address("fd00::50"), 40000, ip_address("fd00::100"), 2811))
        assert 55_000 < got["get6"][0][1][0] <= 60_000 and got["get6"][0][1][1] is None
        assert got["get_many"] == 3000
