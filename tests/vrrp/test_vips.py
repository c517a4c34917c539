"""VIP manager: frames byte by byte, and the real thing in a namespace (addresses, GARP/NA, cleanup)."""

from __future__ import annotations

import ipaddress
import json
import struct
import sys

from gridlb.lab.netns import Lab
from gridlb.vrrp.packet import inet_checksum
from gridlb.vrrp.vips import garp_frame, unsolicited_na_frame

MAC = bytes.fromhex("020000000002")


def test_garp_frame() -> None:
    vip = ipaddress.IPv4Address("10.0.0.100")
    f = garp_frame(MAC, vip)
    assert f[:6] == b"\xff" * 6 and f[6:12] == MAC and f[12:14] == b"\x08\x06"
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = struct.unpack("!HHBBH6s4s6s4s", f[14:42])
    assert (htype, ptype, hlen, plen, op) == (1, 0x0800, 6, 4, 1)
    assert sha == MAC and spa == tpa == vip.packed and tha == b"\0" * 6


def test_unsolicited_na_frame() -> None:
    vip = ipaddress.IPv6Address("fd00::100")
    f = unsolicited_na_frame(MAC, vip)
    assert f[:6] == bytes.fromhex("333300000001") and f[12:14] == b"\x86\xdd"
    ip6 = f[14:54]
    assert ip6[6] == 58 and ip6[7] == 255 and ip6[8:24] == vip.packed
    assert ip6[24:40] == ipaddress.IPv6Address("ff02::1").packed
    icmp = f[54:]
    assert icmp[0] == 136 and struct.unpack("!I", icmp[4:8])[0] == 0x20000000  # Override only
    assert icmp[8:24] == vip.packed and icmp[24:26] == b"\x02\x01" and icmp[26:32] == MAC
    pseudo = ip6[8:40] + struct.pack("!I3xB", len(icmp), 58)
    assert inet_checksum(pseudo + icmp) == 0


SCRIPT = r"""
import asyncio, ipaddress, json, sys
from gridlb.vrrp.vips import VipManager
async def main():
    vips = [ipaddress.ip_interface(v) for v in sys.argv[2:]]
    async with VipManager(sys.argv[1], vips) as m:
        out = {"held0": [str(v) for v in await m.held()]}
        out["added"] = [str(v) for v in await m.add()]
        out["added_again"] = [str(v) for v in await m.add()]
        out["held1"] = [str(v) for v in await m.held()]
        out["sent"] = m.announce(2)
        print(json.dumps(out), flush=True)
        sys.stdin.readline()
        out = {"removed": [str(v) for v in await m.remove()]}
        out["removed_again"] = [str(v) for v in await m.remove()]
        out["held2"] = [str(v) for v in await m.held()]
        print(json.dumps(out), flush=True)
asyncio.run(main())
"""


def test_vip_manager_in_namespace(lab: Lab) -> None:
    import subprocess

    v4, v6 = f"{lab.vip4}/24", f"{lab.vip6}/64"
    other = lab.node("dir2").mac
    for vip in (lab.vip4, lab.vip6):  # the client believes the VIP is on dir2
        lab.exec(
            "client", ["ip", "neigh", "replace", str(vip), "lladdr", other, "dev", "eth0", "nud", "stale"]
        )
    proc = lab.spawn(
        "dir1",
        [sys.executable, "-c", SCRIPT, "eth0", v4, v6],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    first = json.loads(proc.stdout.readline())
    assert first == {"held0": [], "added": [v4, v6], "added_again": [], "held1": [v4, v6], "sent": 4}
    addrs = lab.exec("dir1", ["ip", "-6", "addr", "show", "dev", "eth0"]).stdout
    line = next(ln for ln in addrs.splitlines() if str(lab.vip6) in ln)
    assert "deprecated" in line and "nodad" in line
    mac = lab.node("dir1").mac
    assert lab.neigh_mac("client", lab.vip4) == mac
    assert lab.neigh_mac("client", lab.vip6) == mac
    proc.stdin.write("\n")
    proc.stdin.flush()
    second = json.loads(proc.stdout.readline())
    assert second == {"removed": [v4, v6], "removed_again": [], "held2": []}
    assert proc.wait(timeout=10) == 0
    assert not lab.has_address("dir1", lab.vip4) and not lab.has_address("dir1", lab.vip6)


def test_addr_request_encodes_rtm_newaddr_and_deladdr() -> None:
    from pyroute2.netlink.rtnl import RTM_DELADDR, RTM_NEWADDR
    from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

    from gridlb.vrrp.vips import addr_request

    data = addr_request(RTM_NEWADDR, 7, 3, ipaddress.ip_interface("10.0.0.100/24"))
    length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", data)
    assert (length, kind, seq) == (len(data), RTM_NEWADDR, 7)
    assert flags == 0x1 | 0x4 | 0x400 | 0x200  # REQUEST | ACK | CREATE | EXCL
    msg = ifaddrmsg(data)
    msg.decode()
    assert (msg["family"], msg["prefixlen"], msg["index"]) == (2, 24, 3)
    assert msg.get_attr("IFA_LOCAL") == msg.get_attr("IFA_ADDRESS") == "10.0.0.100"
    v6 = ifaddrmsg(addr_request(RTM_NEWADDR, 8, 3, ipaddress.ip_interface("fd00::100/64")))
    v6.decode()
    assert v6["flags"] == 0x02 and v6.get_attr("IFA_CACHEINFO")["ifa_preferred"] == 0
    gone = addr_request(RTM_DELADDR, 9, 3, ipaddress.ip_interface("fd00::100/64"))
    assert struct.unpack_from("=IHHII", gone)[1:3] == (RTM_DELADDR, 0x1 | 0x4)


def test_ack_errno() -> None:
    from gridlb.vrrp.vips import ack_errno

    def ack(seq: int, err: int) -> bytes:
        return struct.pack("=IHHIIi", 36, 2, 0, seq, 0, -err) + b"\0" * 16

    assert ack_errno(ack(5, 0), 5) == 0
    assert ack_errno(ack(5, 17), 5) == 17
    assert ack_errno(ack(4, 17) + ack(5, 99), 5) == 99
    assert ack_errno(ack(4, 0), 5) is None
    assert ack_errno(b"\x01\x00", 5) is None
    assert ack_errno(struct.pack("=IHHII", 3, 2, 0, 5, 0), 5) is None
