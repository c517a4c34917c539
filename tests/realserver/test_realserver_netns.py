"""`gridlb realserver apply|check|remove` on real-server namespaces, with ARP/ND probes from a client."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gridlb.lab.netns import Lab, LabSpec
from tests.support import need_root, need_tool

pytestmark = pytest.mark.privileged

SRC = str(Path(__file__).resolve().parents[2] / "src")
PROBE = str(Path(__file__).with_name("neighbours.py"))


def site_text(lab: Lab) -> str:
    names = sorted(n for n in lab.nodes if n.startswith("rs"))
    reals4 = "".join(f"      - ip_address: '{lab.node(n).ipv4}'\n" for n in names)
    reals6 = "".join(f"      - ip_address: '{lab.node(n).ipv6}'\n" for n in names)
    out = "keepalived::virtual_servers:\n"
    for name, vip, reals in (("gridftp4", lab.vip4, reals4), ("gridftp6", lab.vip6, reals6)):
        out += f"  {name}:\n    ip_address: '{vip}'\n    port: 2811\n    lb_kind: DR\n"
        out += f"    real_servers:\n{reals}"
    return out


def gridlb(lab: Lab, node: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = "PYTHONPATH=" + SRC
    return lab.exec(node, ["env", env, sys.executable, "-m", "gridlb", "realserver", *args], check=False)


def answers(lab: Lab, address: object) -> set[str]:
    out = lab.exec("client", [sys.executable, PROBE, "eth0", str(address)], timeout_s=30).stdout
    return set(out.split())


def snapshot(lab: Lab, node: str) -> list[str]:
    """Everything realserver touches, as text."""
    cmds = [
        ["ip", "-o", "addr", "show"],
        ["sysctl", "net.ipv4.conf.all.arp_ignore", "net.ipv4.conf.all.arp_announce"],
        ["arptables-save"],
        ["nft", "list", "ruleset"],
    ]
    return [lab.exec(node, c).stdout for c in cmds]


@pytest.mark.parametrize("method", ["sysctl", "arptables", "nft"])
def test_apply_check_remove_and_no_arp_or_nd_answers(method: str, tmp_path: Path) -> None:
    need_root()
    need_tool("arptables", "nft")
    net_b = {"sysctl": 21, "arptables": 22, "nft": 23}[method]
    with Lab(LabSpec(prefix=f"glbR-{os.getpid()}", realservers=2, net_a=83, net_b=net_b)) as lab:
        site = tmp_path / "site.yaml"
        site.write_text(site_text(lab))
        fresh = snapshot(lab, "rs1")
        m = ["--method", method, "--no-gridftp"]

        # the probes work: rs2 with the VIP on lo and no suppression answers ARP (the LVS-DR problem),
        # and every host answers neighbour solicitations for its own eth0 address
        lab.exec("rs2", ["ip", "addr", "add", f"{lab.vip4}/32", "dev", "lo"])
        assert answers(lab, lab.vip4) == {lab.node("rs2").mac}
        assert answers(lab, lab.node("rs1").ipv6) == {lab.node("rs1").mac}

        check = gridlb(lab, "rs1", "check", str(site), *m)
        assert check.returncode == 1, check.stderr
        lines = check.stdout.splitlines()
        assert f"missing: VIP {lab.vip4}/32 on lo" in lines
        assert f"missing: VIP {lab.vip6}/128 on lo" in lines
        expected = {
            "sysctl": [
                "wrong: sysctl net.ipv4.conf.all.arp_ignore is 0, want 1",
                "wrong: sysctl net.ipv4.conf.all.arp_announce is 0, want 2",
            ],
            "arptables": [
                f"missing: arptables -A INPUT -j DROP -d {lab.vip4}",
                f"missing: arptables -A OUTPUT -j mangle -s {lab.vip4} --mangle-ip-s {lab.node('rs1').ipv4}",
            ],
            "nft": [
                f"missing: nft table arp gridlb_realserver dropping ARP requests for {lab.vip4}",
                "wrong: sysctl net.ipv4.conf.all.arp_announce is 0, want 2",
            ],
        }[method]
        assert lines == [f"missing: VIP {lab.vip4}/32 on lo", f"missing: VIP {lab.vip6}/128 on lo", *expected]

        for node in ("rs1", "rs2"):
            first = gridlb(lab, node, "apply", str(site), *m)
            assert first.returncode == 0, first.stderr
            assert first.stdout.strip() != "nothing to change"
        second = gridlb(lab, "rs1", "apply", str(site), *m)
        assert (second.returncode, second.stdout) == (0, "nothing to change\n")
        applied = snapshot(lab, "rs1")
        assert gridlb(lab, "rs1", "apply", str(site), *m).returncode == 0
        assert snapshot(lab, "rs1") == applied  # a second apply changes nothing
        ok = gridlb(lab, "rs1", "check", str(site), *m)
        assert ok.returncode == 0 and ok.stdout.startswith("ok: 2 VIP(s) set up"), ok.stdout

        # the real servers hold the VIPs but never answer for them
        assert lab.has_address("rs1", lab.vip4) is False  # on lo, not eth0
        assert answers(lab, lab.vip4) == set()
        assert answers(lab, lab.vip6) == set()
        # ...and a client whose neighbour entry points at rs1 reaches the VIP there (VIP accepted locally)
        lab.exec("client", ["ip", "neigh", "replace", str(lab.vip4), "lladdr", lab.node("rs1").mac,
                            "dev", "eth0", "nud", "permanent"])  # fmt: skip
        lab.spawn("rs1", [sys.executable, "-c", LISTEN, str(lab.vip4)])
        time.sleep(0.3)
        got = lab.exec("client", [sys.executable, "-c", CONNECT, str(lab.vip4)], timeout_s=10).stdout
        assert got.strip() == "hello from the VIP"

        removed = gridlb(lab, "rs1", "remove", str(site))
        assert removed.returncode == 0, removed.stderr
        assert snapshot(lab, "rs1") == fresh  # remove restores the node
        assert gridlb(lab, "rs1", "remove", str(site)).stdout == "nothing to change\n"
        assert gridlb(lab, "rs1", "check", str(site), *m).stdout.splitlines() == lines


LISTEN = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 7000)); s.listen(4)
c, _ = s.accept(); c.sendall(b"hello from the VIP\n"); c.close()
"""
CONNECT = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], 7000), timeout=5); print(s.recv(100).decode().strip())
"""


def test_switching_method_removes_the_other_methods_rules(tmp_path: Path) -> None:
    need_root()
    need_tool("arptables", "nft")
    with Lab(LabSpec(prefix=f"glbR-{os.getpid()}", realservers=1, net_a=83, net_b=24)) as lab:
        site = tmp_path / "site.yaml"
        site.write_text(site_text(lab))
        assert gridlb(lab, "rs1", "apply", str(site), "--method", "arptables").returncode == 0
        out = gridlb(lab, "rs1", "apply", str(site), "--method", "nft").stdout.splitlines()
        assert f"delete arptables -A INPUT -j DROP -d {lab.vip4}" in out
        assert lab.exec("rs1", ["arptables-save"]).stdout.count("-A ") == 0
        assert "gridlb_realserver" in lab.exec("rs1", ["nft", "list", "ruleset"]).stdout
        assert answers(lab, lab.vip4) == set()


def test_persist_installs_the_unit_and_check_reports_it(tmp_path: Path) -> None:
    need_root()
    with Lab(LabSpec(prefix=f"glbR-{os.getpid()}", realservers=1, net_a=83, net_b=25)) as lab:
        site = tmp_path / "site.yaml"
        site.write_text(site_text(lab))
        units = tmp_path / "units"
        p = ["--persist", "--unit-dir", str(units), "--no-gridftp"]
        printed = gridlb(lab, "rs1", "apply", str(site), "--print-unit", *p)
        assert printed.returncode == 0 and f"realserver apply {site} --method sysctl" in printed.stdout
        assert not units.exists()  # --print-unit only prints
        gridlb(lab, "rs1", "apply", str(site), "--no-gridftp")
        check = gridlb(lab, "rs1", "check", str(site), *p)
        assert check.returncode == 1
        assert check.stdout.splitlines()[0] == f"missing: systemd unit {units}/gridlb-realserver.service"
        assert gridlb(lab, "rs1", "apply", str(site), *p).returncode == 0
        assert (units / "gridlb-realserver.service").read_text() == printed.stdout
        link = units / "multi-user.target.wants" / "gridlb-realserver.service"
        assert os.readlink(link) == str(units / "gridlb-realserver.service")
        assert gridlb(lab, "rs1", "check", str(site), *p).returncode == 0
        assert gridlb(lab, "rs1", "remove", str(site), *p).returncode == 0
        assert list(units.rglob("*.service")) == []


def test_check_asks_the_gridftp_server_for_its_data_address(tmp_path: Path) -> None:
    need_root()
    need_tool("globus-gridftp-server")
    with Lab(LabSpec(prefix=f"glbR-{os.getpid()}", realservers=1, net_a=83, net_b=26)) as lab:
        site = tmp_path / "site.yaml"
        site.write_text(site_text(lab))
        assert gridlb(lab, "rs1", "apply", str(site)).returncode == 0
        rip = lab.node("rs1").ipv4

        def serve(*extra: str) -> subprocess.Popen[bytes]:
            argv = [
                "globus-gridftp-server",
                "-aa",
                "-anonymous-user",
                "nobody",
                "-p",
                "2811",
                "-home-dir",
                "/tmp",
            ]
            proc = lab.spawn("rs1", [*argv, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(100):
                if ":2811 " in lab.exec("rs1", ["ss", "-ltnH"]).stdout:
                    break
                time.sleep(0.05)
            return proc

        good = serve("-data-interface", str(rip))
        out = gridlb(lab, "rs1", "check", str(site)).stdout.splitlines()
        assert f"ok: GridFTP on {lab.vip4}:2811 advertises {rip} for data connections" in out
        # IPv6 without -epsv-ip: EPSV carries no address, clients would connect to the VIP
        assert any(line.startswith(f"wrong: GridFTP on [{lab.vip6}]:2811: EPSV reply carries no address")
                   for line in out), out  # fmt: skip
        good.kill()
        good.wait()
        serve("-data-interface", str(lab.vip4))
        bad = gridlb(lab, "rs1", "check", str(site))
        assert bad.returncode == 1
        assert any(
            line.startswith(
                f"wrong: GridFTP on {lab.vip4}:2811: data-address fault: PASV advertises {lab.vip4}"
            )
            for line in bad.stdout.splitlines()
        ), bad.stdout


def test_check_reports_a_server_advertising_loopback(tmp_path: Path) -> None:
    need_root()
    with Lab(LabSpec(prefix=f"glbR-{os.getpid()}", realservers=1, net_a=83, net_b=27)) as lab:
        site = tmp_path / "site.yaml"
        site.write_text(site_text(lab).split("  gridftp6:")[0])  # the IPv4 service only
        assert gridlb(lab, "rs1", "apply", str(site)).returncode == 0
        env = "PYTHONPATH=" + SRC
        argv = ["env", env, sys.executable, "-m", "gridlb", "gridftp-server", "--root", str(tmp_path)]
        lab.spawn("rs1", [*argv, "--listen", "0.0.0.0:2811", "--data-address", "127.0.0.1"])
        for _ in range(100):
            if ":2811 " in lab.exec("rs1", ["ss", "-ltnH"]).stdout:
                break
            time.sleep(0.05)
        bad = gridlb(lab, "rs1", "check", str(site))
        assert bad.returncode == 1
        assert bad.stdout.splitlines() == [
            f"wrong: GridFTP on {lab.vip4}:2811: data-address fault: PASV advertises 127.0.0.1, a loopback "
            f"address, to a non-loopback client ({lab.vip4}); set -data-interface (data_interface) to the "
            "server's own address"
        ]
