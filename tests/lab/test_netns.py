"""The namespace lab: topology, addressing, process tracking and complete clean-up."""

from __future__ import annotations

import os
import subprocess
import sys

from gridlb.lab.netns import Lab, LabSpec
from tests.support import need_root

CONNECT = (
    "import socket,sys\nfam=socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET\n"
    "s=socket.socket(fam);s.settimeout(2)\n"
    "try: s.connect((sys.argv[1],9))\nexcept ConnectionRefusedError: print('refused')\n"
)


def test_topology_reaches_every_node_v4_and_v6() -> None:
    need_root()
    prefix = f"glbV-{os.getpid()}"
    with Lab(LabSpec(prefix=prefix, realservers=2, net_b=9)) as lab:
        assert sorted(lab.nodes) == ["client", "dir1", "dir2", "rs1", "rs2"]
        assert str(lab.node("rs2").ipv4) == "10.77.9.12" and str(lab.node("rs2").ipv6) == "fd00:4d:9::12"
        assert lab.node("dir1").mac == "02:4d:09:00:00:02"
        for name in ("dir1", "dir2", "rs1", "rs2"):
            n = lab.node(name)
            for addr in (n.ipv4, n.ipv6):
                out = lab.exec("client", [sys.executable, "-c", CONNECT, str(addr)], timeout_s=10).stdout
                assert out.strip() == "refused"  # the host answered with a RST: reachable
                assert lab.neigh_mac("client", addr) == n.mac
        # nothing leaked into the root namespace
        assert "p-client" not in subprocess.run(["ip", "link"], capture_output=True, text=True).stdout
        tracked = lab.spawn("rs1", ["sleep", "300"])
        lab.exec("rs2", ["sh", "-c", "sleep 300 >/dev/null 2>&1 &"])  # untracked, found by `ip netns pids`
        assert lab.ns_pids(lab.node("rs2").ns)
        namespaces = [n.ns for n in lab.nodes.values()] + [lab.lan_ns]
    assert tracked.poll() is not None
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(ns in listed.split() for ns in namespaces)


def test_failed_build_cleans_up() -> None:
    need_root()
    prefix = f"glbV-{os.getpid()}-bad"
    lab = Lab(LabSpec(prefix=prefix, realservers=0, net_a=300))  # 300 is not a valid octet: build fails
    try:
        with lab:
            raise AssertionError("the build should have failed")
    except Exception as exc:
        assert "should have failed" not in str(exc)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert prefix not in listed
