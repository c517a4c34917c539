"""`gridlb director run` with the ipvs dataplane against the VM's kernel (VM tier, `make test-ipvs`).

The seed's Hiera YAML (its IPv4 service, plus an IPv6 one written the same way) is programmed into
the kernel table of a fresh namespace (the lab's dir1); the real `ipvsadm -Ln` / `-Sn` must print
exactly what `gridlb ipvsadm --socket` prints, through drain, enable, add, remove and reload. dir1's
only link is the lab's bridge, with no route beyond it, and the VM has no network card: the seed's
public addresses are programmed, never contacted (their `tcp_check` is left out, so no check ever
tries). A second service, with the lab's rs1 as its real server, shows a health change reaching
the kernel within one check interval. Start-up adopts a table it finds (no flush);
`--flush-on-exit` empties it at stop.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gridlb.api.client import ControlClient
from gridlb.errors import GridlbError
from gridlb.lab.netns import Lab
from tests.support import lab as lab_up
from tests.support import need_root, need_tool, wait_for

pytestmark = [pytest.mark.ipvs, pytest.mark.privileged]

SEED = Path(__file__).resolve().parents[1] / "data" / "seed-hiera.yaml"
GRIDLB = [sys.executable, "-m", "gridlb"]
V6 = """keepalived::virtual_servers:
    red-gridftp-v6:
        ip_address: '2001:db8:239::157'
        port: '2811'
        protocol: 'TCP'
        lb_algo: 'wlc'
        lb_kind: 'DR'
        delay_loop: '10'
        real_servers:
            - ip_address: '2001:db8:239::184'
              port: '2811'
            - ip_address: '2001:db8:239::171'
              port: '2811'
"""
CHECK_INTERVAL_S = 3
LISTENER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)
while True:
    c, _ = s.accept(); c.close()
"""


def run(*argv: str, timeout_s: float = 120) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=timeout_s).stdout


def seed_without_checks() -> str:
    """The seed's Hiera YAML verbatim, minus its tcp_check block (no check may contact 129.93.x.x)."""
    lines = SEED.read_text().splitlines()
    out, skip = [], False
    for line in lines:
        if line.strip() == "tcp_check:":
            skip = True
            continue
        if skip and line.strip().startswith("connect_timeout"):
            continue
        skip = False
        out.append(line)
    return "\n".join(out) + "\n"


class Director:
    """One `gridlb director run` in a namespace."""

    def __init__(self, ns: str, workdir: Path, sites: list[Path], *extra: str) -> None:
        self.ns = ns
        self.socket = workdir / "control.sock"
        self.log = workdir / "director.log"
        self.argv = [
            "ip", "netns", "exec", ns, *GRIDLB, "director", "run", *map(str, sites),
            "--no-vrrp", "--socket", str(self.socket), "--metrics", "", "--grace", "0", *extra,
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self.ready, 180, f"the director to start: {self.tail()}")

    def tail(self) -> str:
        return self.log.read_text()[-3000:] if self.log.exists() else ""

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"director exited: {self.tail()}")
        try:
            with ControlClient(str(self.socket), timeout_s=10) as c:
                return all(s["in_table"] for s in c.status()["services"])
        except (OSError, ValueError, GridlbError):
            return False

    def client(self) -> ControlClient:
        return ControlClient(str(self.socket), timeout_s=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def only_real(self) -> dict[str, Any]:
        """The status of the director's only real server."""
        with self.client() as c:
            (service,) = c.status()["services"]
        (real,) = service["reals"]
        return dict(real)

    def ipvsadm(self, *args: str) -> str:
        return run("ip", "netns", "exec", self.ns, "ipvsadm", *args)

    def gridlb_ipvsadm(self, *args: str) -> str:
        return run(*GRIDLB, "ipvsadm", "--socket", str(self.socket), *args)

    def assert_same_listings(self) -> str:
        """The kernel's own listings equal gridlb's, byte for byte; return the -Sn text."""
        saved = self.ipvsadm("-Sn")
        assert saved == self.gridlb_ipvsadm("-Sn")
        assert self.ipvsadm("-Ln") == self.gridlb_ipvsadm("-Ln")
        return saved


@pytest.fixture
def netns() -> Iterator[Lab]:
    """The lab's dir1 (a fresh IPVS table) and rs1 on its bridge, nothing set up or running."""
    need_root()
    need_tool("ipvsadm")
    with lab_up("ipd", realservers=1, directors=1, start="none", net_a=9, net_b=0) as built:
        yield built


def test_seed_services_programmed_operated_and_listed_as_ipvsadm(netns: Lab, tmp_path: Path) -> None:
    ns = netns.node("dir1").ns
    site = tmp_path / "seed.yaml"
    site.write_text(seed_without_checks())
    v6 = tmp_path / "v6.yaml"
    v6.write_text(V6)
    gridlb = tmp_path / "gridlb.yaml"
    gridlb.write_text("gridlb:\n  dataplane: ipvs\n")
    # A foreign entry already in the kernel: start-up adopts the table (it is removed by diff, not flushed).
    run("ip", "netns", "exec", ns, "ipvsadm", "-A", "-t", "10.9.9.9:80", "-s", "rr")
    director = Director(ns, tmp_path, [site, v6, gridlb])
    director.start()
    try:
        saved = director.assert_same_listings()
        assert (
            saved.startswith("-A -t 129.93.239.157:2811 -s wlc\n")
            or "-A -t 129.93.239.157:2811 -s wlc\n" in saved
        )
        assert "-A -t [2001:db8:239::157]:2811 -s wlc\n" in saved
        assert saved.count("-r 129.93.239.168:2811") == 1  # listed twice in the seed, programmed once
        assert saved.count(" -g -w 1\n") == 11 + 2
        assert "10.9.9.9" not in saved
        with director.client() as c:
            assert c.status()["dataplane"] == "ipvs"
            c.drain("129.93.239.184")
            assert (
                "-a -t 129.93.239.157:2811 -r 129.93.239.184:2811 -g -w 0\n"
                in director.assert_same_listings()
            )
            c.enable("129.93.239.184")
            assert "-r 129.93.239.184:2811 -g -w 1\n" in director.assert_same_listings()
            c.add("129.93.239.190:2811", "129.93.239.157:2811", weight=3)
            assert "-r 129.93.239.190:2811 -g -w 3\n" in director.assert_same_listings()
            c.remove("129.93.239.171:2811")
            assert "129.93.239.171" not in director.assert_same_listings()
            site.write_text(seed_without_checks().replace("lb_algo: 'wlc'", "lb_algo: 'sh'"))
            c.reload()
            saved = director.assert_same_listings()
            assert "-A -t 129.93.239.157:2811 -s sh\n" in saved
            assert "-A -t [2001:db8:239::157]:2811 -s wlc\n" in saved
    finally:
        director.stop()
    # Stopped without --flush-on-exit: the kernel table stays, so the next start adopts it.
    assert "-A -t 129.93.239.157:2811 -s sh\n" in director.ipvsadm("-Sn")


def test_health_change_reaches_the_kernel_within_one_interval(netns: Lab, tmp_path: Path) -> None:
    vip, rip = netns.vip4, netns.node("rs1").ipv4
    listener = netns.spawn("rs1", [sys.executable, "-c", LISTENER, str(rip), "2811"])
    site = tmp_path / "site.yaml"
    site.write_text(
        f"keepalived::virtual_servers:\n  svc:\n    ip_address: {vip}\n    port: 2811\n"
        f"    lb_algo: wlc\n    lb_kind: DR\n    delay_loop: {CHECK_INTERVAL_S}\n"
        "    tcp_check: {connect_timeout: 1, retry: 0}\n"
        f"    real_servers:\n      - ip_address: {rip}\n        port: 2811\n"
        "gridlb:\n  dataplane: ipvs\n"
    )
    director = Director(netns.node("dir1").ns, tmp_path, [site], "--flush-on-exit")
    director.start()
    try:
        line = f"-a -t {vip}:2811 -r {rip}:2811 -g -w 1\n"
        # Without alpha a real server is in the table before its first check: this is no check yet.
        wait_for(lambda: line in director.ipvsadm("-Sn"), 60, "the real server in the kernel's table")

        # The server dies halfway between two checks: the next check is due one interval after the
        # last one, so it comes half an interval after the death. (Killed just after a check, it
        # would come a whole interval later, and the bound below would then also have to hold the
        # netlink change and the ipvsadm poll that sees it: a race under emulation.)
        def fresh_check() -> dict[str, Any] | None:
            last: dict[str, Any] | None = director.only_real()["last_check"]
            return last if last is not None and last["age_s"] < CHECK_INTERVAL_S / 4 else None

        fresh = wait_for(fresh_check, 3 * CHECK_INTERVAL_S, "a fresh check")
        assert fresh["verdict"] == "up", fresh
        assert line in director.ipvsadm("-Sn")
        time.sleep(CHECK_INTERVAL_S / 2 - fresh["age_s"])
        listener.kill()
        listener.wait(timeout=10)
        down_at = time.monotonic()
        wait_for(lambda: line not in director.ipvsadm("-Sn"), 30, "the failed check to reach the kernel")
        took = time.monotonic() - down_at
        # A check that came later than its interval, or a change that took more than half an
        # interval to reach the kernel after it (here it takes about 0.05 s), fails this bound.
        assert took <= CHECK_INTERVAL_S, f"the kernel changed {took:.1f} s after the server died"
        real = director.only_real()
        assert real["last_check"]["verdict"] == "down", real
        assert real["health"] == "down", real
        director.assert_same_listings()
    finally:
        director.stop()
    assert director.ipvsadm("-Sn") == ""  # --flush-on-exit
