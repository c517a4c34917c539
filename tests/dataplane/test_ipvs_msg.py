"""IPVS netlink messages: golden bytes (as ipvsadm sends), pyroute2 as an independent decoder, round trips."""

from __future__ import annotations

import errno
import re
import struct
from ipaddress import ip_address

import pytest
from pyroute2.netlink.generic.ipvs import ipvsmsg

from gridlb.dataplane import ipvs_msg as m
from gridlb.table import (
    AddDest,
    AddService,
    DelDest,
    DelService,
    DestSpec,
    EditDest,
    EditService,
    ForwardMethod,
    Proto,
    RealKey,
    ServiceKey,
    ServiceSpec,
    SetTimeouts,
    Timeouts,
)

FAMILY = 0x20
VIP = ServiceKey.tcp("10.0.0.1", 2811)
RIP = RealKey.parse("10.0.0.11:2811")


def golden(text: str) -> bytes:
    """Return the bytes written as hex, one field group per line; three spaces start a comment."""
    lines = (re.split(r"\s{3,}", line.strip())[0] for line in text.splitlines())
    return bytes.fromhex("".join("".join(lines).split()))


def test_add_service_golden_bytes() -> None:
    """IPVS_CMD_NEW_SERVICE for `ipvsadm -A -t 10.0.0.1:2811 -s wlc`, byte for byte."""
    want = golden(
        """
        68000000 2000 0500 07000000 00000000   nlmsghdr: len 104, family 0x20, REQUEST|ACK, seq 7, pid 0
        01 01 0000                             genl: NEW_SERVICE, version 1
        5400 0180                              IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED, len 84
          0600 0100 0200 0000                  AF = AF_INET
          0600 0200 0600 0000                  PROTOCOL = TCP
          1400 0300 0a000001 000000000000000000000000   ADDR (union nf_inet_addr, 16 bytes)
          0600 0400 0afb 0000                  PORT = 2811 (big-endian)
          0800 0600 776c6300                   SCHED_NAME = "wlc" NUL-terminated
          0c00 0700 00000000 ffffffff          FLAGS = {flags 0, mask ~0}
          0800 0800 00000000                   TIMEOUT = 0
          0800 0900 ffffffff                   NETMASK = 255.255.255.255
        """
    )
    assert m.op_request(FAMILY, AddService(VIP, ServiceSpec()), 7) == want


def test_dest_golden_bytes() -> None:
    """IPVS_CMD_SET_DEST for `ipvsadm -e -t 10.0.0.1:2811 -r 10.0.0.11:2811 -g -w 0` (drain)."""
    want = golden(
        """
        8c000000 2000 0500 01000000 00000000
        06 01 0000
        3000 0180
          0600 0100 0200 0000
          0600 0200 0600 0000
          1400 0300 0a000001 000000000000000000000000
          0600 0400 0afb 0000
        4800 0280
          1400 0100 0a00000b 000000000000000000000000
          0600 0200 0afb 0000
          0800 0300 03000000
          0800 0400 00000000
          0800 0500 00000000
          0800 0600 00000000
          0600 0b00 0200 0000
        """
    )
    assert m.op_request(FAMILY, EditDest(VIP, RIP, DestSpec(weight=0)), 1) == want


def test_timeouts_and_daemon_golden_bytes() -> None:
    want = golden(
        """
        2c000000 2000 0500 02000000 00000000
        0c 01 0000
        0800 0400 84030000
        0800 0500 78000000
        0800 0600 2c010000
        """
    )
    assert m.op_request(FAMILY, SetTimeouts(Timeouts(900, 120, 300)), 2) == want
    want = golden(
        """
        30000000 2000 0500 03000000 00000000
        09 01 0000
        1c00 0380
          0800 0100 01000000
          0800 0200 656d3100
          0800 0300 01000000
        """
    )
    assert m.new_daemon_request(FAMILY, m.SyncState.MASTER, "em1", 1, 3) == want


def _pyroute2(data: bytes) -> ipvsmsg:
    msg = ipvsmsg(data)
    msg.decode()
    return msg


@pytest.mark.parametrize(
    ("key", "spec"),
    [
        (VIP, ServiceSpec("sh", 300, "255.255.255.0", frozenset({"sh-port"}))),
        (ServiceKey(Proto.UDP, ip_address("2001:db8::1"), 53), ServiceSpec("rr", 60, "64")),
        (ServiceKey(Proto.TCP, None, 0, fwmark=7), ServiceSpec("mh", one_packet=True)),
    ],
)
def test_service_fields_as_pyroute2_reads_them(key: ServiceKey, spec: ServiceSpec) -> None:
    """pyroute2's declarative IPVS schema (an independent decoder) reads what we encode."""
    msg = _pyroute2(m.op_request(FAMILY, AddService(key, spec), 9))
    assert msg["cmd"] == m.Cmd.NEW_SERVICE and msg["header"]["sequence_number"] == 9
    svc = msg.get_attr("IPVS_CMD_ATTR_SERVICE")
    assert svc.get_attr("IPVS_SVC_ATTR_SCHED_NAME") == spec.scheduler
    assert svc.get_attr("IPVS_SVC_ATTR_TIMEOUT") == spec.persistence_timeout_s
    flags = svc.get_attr("IPVS_SVC_ATTR_FLAGS")
    assert flags["mask"] == 0xFFFFFFFF
    assert bool(flags["flags"] & m.SVC_F_PERSISTENT) == bool(spec.persistence_timeout_s)
    if key.fwmark:
        assert svc.get_attr("IPVS_SVC_ATTR_FWMARK") == key.fwmark
        assert svc.get_attr("IPVS_SVC_ATTR_PORT") is None
    else:
        assert svc.get_attr("IPVS_SVC_ATTR_PORT") == key.port
        assert svc.get_attr("IPVS_SVC_ATTR_PROTOCOL") == {Proto.TCP: 6, Proto.UDP: 17}[key.proto]


def test_dest_fields_as_pyroute2_reads_them() -> None:
    spec = DestSpec(weight=5, forward=ForwardMethod.TUNNEL, u_threshold=100, l_threshold=10)
    msg = _pyroute2(m.op_request(FAMILY, AddDest(VIP, RIP, spec), 4))
    dest = msg.get_attr("IPVS_CMD_ATTR_DEST")
    assert dest.get_attr("IPVS_DEST_ATTR_PORT") == 2811
    assert dest.get_attr("IPVS_DEST_ATTR_FWD_METHOD") == 2
    assert dest.get_attr("IPVS_DEST_ATTR_WEIGHT") == 5
    assert dest.get_attr("IPVS_DEST_ATTR_U_THRESH") == 100
    assert dest.get_attr("IPVS_DEST_ATTR_L_THRESH") == 10


@pytest.mark.parametrize(
    ("key", "spec"),
    [
        (VIP, ServiceSpec()),
        (VIP, ServiceSpec("sh", 300, "255.255.0.0", frozenset({"sh-fallback", "sh-port"}))),
        (ServiceKey(Proto.UDP, ip_address("2001:db8::1"), 53), ServiceSpec("wrr", 60, "48")),
        (ServiceKey(Proto.SCTP, ip_address("10.1.1.1"), 9), ServiceSpec("lc", pe_name="sip")),
        (ServiceKey(Proto.TCP, None, 0, fwmark=7, af=6), ServiceSpec("rr", one_packet=True)),
    ],
)
def test_service_round_trip(key: ServiceKey, spec: ServiceSpec) -> None:
    """What the kernel echoes back in a dump (the same attributes) decodes to the same key and spec."""
    svc = m.decode_service(m.service_attrs(key, spec))
    assert (svc.key, svc.spec) == (key, spec)


@pytest.mark.parametrize(
    "spec",
    [
        DestSpec(),
        DestSpec(weight=0, forward=ForwardMethod.MASQ, u_threshold=5, l_threshold=2),
        DestSpec(forward=ForwardMethod.TUNNEL, tun_type="gue", tun_port=6080, tun_flags="csum"),
    ],
)
def test_dest_round_trip(spec: DestSpec) -> None:
    for key in (RIP, RealKey.parse("[2001:db8::11]:2811")):
        dest = m.decode_dest(m.dest_attrs(key, spec), key.addr.version)
        assert (dest.key, dest.spec) == (key, spec)


def test_dump_reply_counters_and_stats64() -> None:
    stats = m.nest(
        m.DEST_STATS64,
        *(m.nla(i, struct.pack("=Q", v)) for i, v in enumerate((7, 100, 0, 6400, 0, 1, 2, 0, 3, 0), 1)),
    )
    attrs = (
        m.dest_attrs(RIP, DestSpec()) + m.u32(m.DEST_ACTIVE_CONNS, 3) + m.u32(m.DEST_INACT_CONNS, 4) + stats
    )
    dest = m.decode_dest(attrs, 4)
    assert (dest.counters.active, dest.counters.inactive) == (3, 4)
    assert (dest.counters.stats.conns, dest.counters.stats.inpkts, dest.counters.stats.inbytes) == (
        7,
        100,
        6400,
    )
    assert (dest.counters.stats.cps, dest.counters.stats.inpps, dest.counters.stats.inbps) == (1, 2, 3)


def test_replies_acks_errors_and_malformed_input() -> None:
    ack = struct.pack("=IHHII", 36, m.NLMSG_ERROR, 0, 5, 0) + struct.pack("=i", 0) + bytes(16)
    err = struct.pack("=IHHII", 36, m.NLMSG_ERROR, 0, 6, 0) + struct.pack("=i", -errno.EEXIST) + bytes(16)
    replies = list(m.split_replies(ack + err + b"\x01\x02\x03"))  # a truncated tail is ignored
    assert [(r.seq, r.error) for r in replies] == [(5, 0), (6, errno.EEXIST)]
    assert list(m.split_replies(struct.pack("=IHHII", 4, 2, 0, 0, 0))) == []  # length < header
    assert m.parse_attrs(b"\xff\xff\x01\x00abc") == {}  # attribute longer than the buffer
    assert m.decode_service(b"").key.port == 0  # empty service: no crash


def test_error_words_are_ipvsadms() -> None:
    assert m.op_error_text(AddService(VIP, ServiceSpec()), errno.EEXIST) == "Service already exists"
    assert m.op_error_text(EditService(VIP, ServiceSpec()), errno.ESRCH) == "No such service"
    assert m.op_error_text(DelService(VIP), errno.ESRCH) == "No such service"
    assert m.op_error_text(AddDest(VIP, RIP, DestSpec()), errno.EEXIST) == "Destination already exists"
    assert m.op_error_text(DelDest(VIP, RIP), errno.ENOENT) == "No such destination"
    assert m.op_error_text(DelDest(VIP, RIP), errno.EPERM).startswith("EPERM")


def test_conn_table_parser() -> None:
    text = (
        "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n"
        "TCP 0A000064 C8F8 0A000001 0AFB 0A00000B 0AFB ESTABLISHED     899\n"
        "TCP fd00::50 D431 fd00::64 0AFB fd00::b 0AFB FIN_WAIT         97\n"
        "garbage line\n"
    )
    a, b = m.parse_conn_table(text)
    assert (str(a.client), str(a.virtual), str(a.dest), a.state, a.expire_s) == (
        "10.0.0.100:51448",
        "10.0.0.1:2811",
        "10.0.0.11:2811",
        "ESTABLISHED",
        899,
    )
    assert (str(b.client), b.state, b.expire_s) == ("[fd00::50]:54321", "FIN_WAIT", 97)


def test_with_seq_changes_only_the_sequence() -> None:
    template = m.dump_dests_request(FAMILY, VIP, 0)
    assert m.with_seq(template, 77) == m.dump_dests_request(FAMILY, VIP, 77)


# /proc/net/ip_vs as kernel 6.1 prints it (ip_vs_info_seq_show): the header, a v4 service with one
# packet scheduling, a persistent IPv6 one and a firewall mark, each with its destinations.
PROC_IPVS = (
    "IP Virtual Server version 1.2.1 (size=4096)\n"
    "Prot LocalAddress:Port Scheduler Flags\n"
    "  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n"
    "TCP  0A000001:0AFB wlc ops \n"
    "  -> 0A00000C:0AFB      Route   2      5          0         \n"
    "  -> 0A00000B:0AFB      Masq    0      0          12        \n"
    "UDP  [2001:0db8:0000:0000:0000:0000:0000:0001]:0035 rr persistent 600 00000040\n"
    "  -> [2001:0db8:0000:0000:0000:0000:0000:0011]:0035      Tunnel  3      0          0         \n"
    "FWM  00000007 sh \n"
)


def test_proc_listing_split_by_service_and_rendered_from_a_table() -> None:
    from gridlb.table import Dest, DestCounters

    v4 = ServiceKey.tcp("10.0.0.1", 2811)
    v6 = ServiceKey(Proto.UDP, ip_address("2001:db8::1"), 53)
    fwm = ServiceKey(Proto.TCP, None, 0, fwmark=7)
    listing = m.parse_proc_services(PROC_IPVS)
    assert list(listing) == [m.proc_service_id(k) for k in (v4, v6, fwm)]
    v4_dests = (
        Dest(RealKey.parse("10.0.0.12:2811"), DestSpec(2), DestCounters(active=5)),
        Dest(RealKey.parse("10.0.0.11:2811"), DestSpec(0, ForwardMethod.MASQ), DestCounters(inactive=12)),
    )
    v6_dests = (Dest(RealKey.parse("[2001:db8::11]:53"), DestSpec(3, ForwardMethod.TUNNEL)),)
    assert listing[m.proc_service_id(v4)] == m.proc_dest_lines(v4_dests)
    assert listing[m.proc_service_id(v6)] == m.proc_dest_lines(v6_dests)
    assert listing[m.proc_service_id(fwm)] == m.proc_dest_lines(()) == ""
    # any difference in what the listing shows is seen: weight, counters, order, a missing dest
    assert listing[m.proc_service_id(v4)] != m.proc_dest_lines(v4_dests[::-1])
    assert listing[m.proc_service_id(v4)] != m.proc_dest_lines(v4_dests[:1])
    changed = (Dest(v4_dests[0].key, DestSpec(3), DestCounters(active=5)), v4_dests[1])
    assert listing[m.proc_service_id(v4)] != m.proc_dest_lines(changed)
    # an IPv4 and an IPv6 service with the same mark look alike: neither can be checked
    twice = m.parse_proc_services(
        PROC_IPVS + "FWM  00000007 rr \n  -> 0A000015:0000      Route   1      0          0\n"
    )
    assert twice[m.proc_service_id(fwm)] is None


@pytest.mark.parametrize(
    "key",
    [
        VIP,
        ServiceKey(Proto.UDP, ip_address("2001:db8::1"), 53),
        ServiceKey(Proto.TCP, None, 0, fwmark=7, af=6),
    ],
)
def test_service_parts_shared_and_seeded_keys_match_the_reply(key: ServiceKey) -> None:
    """A reply decodes the same with the parts cache; a key seeded by `service_key_raw` is the one hit."""
    spec = ServiceSpec("wrr", 60, "48" if key.af == 6 else "255.255.255.0")
    parts = m.ServiceParts.empty()
    parts.keys[m.service_key_raw(key)] = key
    first = m.decode_service(m.service_attrs(key, spec), parts)
    assert (first.key, first.spec) == (key, spec) and first.key is key  # the seeded key, not a new one
    assert len(parts.keys) == 1
    again = m.decode_service(m.service_attrs(key, spec), parts)
    assert again.spec is first.spec and again == m.decode_service(m.service_attrs(key, spec))
