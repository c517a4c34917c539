"""Takeover in namespaces: the client's first SYN after the new master's gratuitous ARP is answered.

A gridlb pair (v3, 0.1 s adverts, each daemon listening on the VIP) with a client connecting to the
VIP in a tight, bounded loop; the master is SIGKILLed. The new master must not count the client's
SYN as IpInAddrErrors (a packet for an address it does not hold yet) and the client must never need
a SYN retransmit (TcpExt TCPSynRetrans): that would cost a real client a 1 s retransmit timeout.

The killed master keeps the VIP, so its kernel answers the client's SYNs with a reset until the new
master's gratuitous ARP moves the client. A SIGKILL closes the listening socket inside the kernel, and
a SYN that arrives during that teardown is dropped without a reply: a retransmit the takeover did not
cause (seen in CI: every client segment was received, the lost one by the dying master). So the test
first makes the master's port refuse at once (an nft reject rule, what the port does after the death
anyway) and then kills it: every SYN the old master gets is answered, and a retransmit can only come
from the takeover.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from gridlb.lab.netns import Lab
from gridlb.lab.vrrp_pair import PairSettings, Router, RouterSpec, touch_neighbour
from tests.support import time_until

pytestmark = pytest.mark.privileged

PORT = 2811
TRIALS = 4
SETTINGS = PairSettings(version=3, advert_int_s=0.1, families=(4,), unicast=True)

#: Connects to VIP:port every ~2 ms (a 3 s connect timeout, so a dropped SYN shows as a retransmit),
#: stops at the first answer from the wanted director; bounded in time.
PROBE = r"""
import socket, sys, time
host, port, want = sys.argv[1], int(sys.argv[2]), sys.argv[3]
end = time.monotonic() + 15
while time.monotonic() < end:
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect((host, port)); data = s.recv(200).decode().split()
        if want in data:
            print("OK", flush=True); sys.exit(0)
    except OSError:
        pass
    finally:
        s.close()
    time.sleep(0.002)
print("TIMEOUT", flush=True); sys.exit(1)
"""


def counters(lab: Lab, node: str) -> dict[str, int]:
    """Every counter of /proc/net/snmp and /proc/net/netstat in the node's namespace ("Ip:InAddrErrors")."""
    out: dict[str, int] = {}
    for path in ("/proc/net/snmp", "/proc/net/netstat"):
        rows = [line.split() for line in lab.exec(node, ["cat", path]).stdout.splitlines()]
        for names, values in zip(rows[::2], rows[1::2], strict=True):
            for name, value in zip(names[1:], values[1:], strict=True):
                if value.lstrip("-").isdigit():
                    out[names[0] + name] = int(value)
    return out


def deltas(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def close_port(lab: Lab, node: str) -> None:
    """Answer every TCP segment to PORT with a reset in `node`, as the kernel does once nothing listens."""
    rules = (
        "add table inet glbtakeover; "
        "add chain inet glbtakeover input { type filter hook input priority -10; policy accept; }; "
        f"add rule inet glbtakeover input tcp dport {PORT} reject with tcp reset"
    )
    lab.exec(node, ["nft", rules])


def open_port(lab: Lab, node: str) -> None:
    lab.exec(node, ["nft", "delete", "table", "inet", "glbtakeover"], check=False)


def test_first_syn_after_takeover_is_answered(lab: Lab, tmp_path: Path) -> None:
    routers = {
        n: Router(lab, SETTINGS, RouterSpec(n, "gridlb", 100, "BACKUP", listen_port=PORT), tmp_path)
        for n in ("dir1", "dir2")
    }
    try:
        routers["dir1"].start()
        routers["dir1"].wait_ready()
        assert time_until(routers["dir1"].holds_vip, 5.0) is not None, routers["dir1"].log.read_text()
        routers["dir2"].start()
        routers["dir2"].wait_ready()
        time.sleep(0.5)
        touch_neighbour(lab, lab.vip4, PORT)
        master, backup = "dir1", "dir2"
        for trial in range(TRIALS):
            assert routers[master].holds_vip() and not routers[backup].holds_vip()
            nodes = (master, backup, "client")
            before = {n: counters(lab, n) for n in nodes}
            want = str(lab.node(backup).ipv4)
            probe = lab.spawn(
                "client",
                [sys.executable, "-c", PROBE, str(lab.vip4), str(PORT), want],
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(0.2 + 0.023 * trial)  # a different phase of the advert cycle each trial
            close_port(lab, master)
            routers[master].kill_hard()
            out, _ = probe.communicate(timeout=30)
            assert out.split()[:1] == ["OK"], (out, routers[backup].log.read_text()[-2000:])
            moved = {n: deltas(before[n], counters(lab, n)) for n in nodes}
            lost = moved[backup].get("Ip:InAddrErrors", 0)
            retrans = moved["client"].get("TcpExt:TCPSynRetrans", 0)
            assert (lost, retrans) == (0, 0), (
                f"trial {trial}: {backup} (new master) InAddrErrors +{lost}, "
                + (f"client TCPSynRetrans +{retrans}; counters moved: {moved}")
            )
            routers[master].drop_vips()
            open_port(lab, master)
            routers[master].start()
            routers[master].wait_ready()
            time.sleep(0.5)
            master, backup = backup, master
    finally:
        for r in routers.values():
            r.stop_clean(timeout_s=5)
