"""Two `gridlb director run` processes (VRRP + proxy dataplane) in namespaces: crash, restart, failover.

Topology (`gridlb lab up --realservers 2 --gridftp gridlb --start realservers`): a client, two real
servers running `gridlb gridftp-server`, one bridge, and dir1 (priority 150) and dir2 (priority 100)
running the directors this test starts, kills and restarts (`gridlb.lab.director_pair`). The client
downloads through the VIP; dir1 is SIGKILLed and dir2 takes the VIP (its proxy already listens
there, IP_FREEBIND); dir1 restarts, drops the VIP its crash left behind, joins as BACKUP and
preempts; `gridlb failover` on dir1 moves the VIP to dir2 cleanly. Status, events and metrics show
the role, the peer and each transition's reason. Every process is killed and every namespace
deleted by the lab's `down`, also on failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gridlb.lab import system
from gridlb.lab.director_pair import DirectorRouter
from gridlb.lab.netns import Lab
from gridlb.lab.vrrp_pair import PairSettings, RouterSpec, instance_names
from tests.support import lab as lab_up
from tests.support import wait_for

pytestmark = pytest.mark.privileged

GRIDLB = [sys.executable, "-m", "gridlb"]
PORT = 2811
METRICS = "127.0.0.1:9464"
PRIORITY = {"dir1": 150, "dir2": 100}
FILE = "file.bin"  # put in every real server's export directory by the test
SETTINGS = PairSettings(
    version=3, advert_int_s=0.2, vrid=61, families=(4,), unicast=True, garp_master_delay_s=1.0
)
VI = instance_names(SETTINGS)[0]  # the IPv4 instance's name


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one Prometheus sample in exposition `text` (labels sorted as the client prints them)."""
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    want = f"{name}{{{inner}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(want):
            return float(line.split()[-1])
    return None


class Pair:
    """The lab (real servers serving, directors' namespaces empty) and its two directors."""

    def __init__(self, lab: Lab, work: Path) -> None:
        self.lab = lab
        self.work = work
        self.payload = os.urandom(256 << 10)
        workdir = Path(system.state_of(lab).workdir)
        for rs in ("rs1", "rs2"):
            (workdir / rs / FILE).write_bytes(self.payload)
        work.chmod(0o755)
        self.routers = {
            node: DirectorRouter(
                lab,
                SETTINGS,
                RouterSpec(node, "director", prio, listen_port=PORT),
                work,
                connect_timeout_s=2,
                metrics_listen=METRICS,
                extra_args=("--resync", "1"),
            )
            for node, prio in PRIORITY.items()
        }

    def proc(self, node: str) -> subprocess.Popen[Any]:
        proc = self.routers[node].proc
        assert proc is not None
        return proc

    def log(self, node: str) -> str:
        path = self.routers[node].log
        return path.read_text()[-4000:] if path.exists() else ""

    def start_director(self, node: str) -> None:
        self.routers[node].start()
        self.routers[node].wait_ready(30)

    def status(self, node: str) -> dict[str, Any]:
        return self.routers[node].control_status(timeout_s=10)

    def instance(self, node: str) -> dict[str, Any]:
        inst: dict[str, Any] = self.status(node)["vrrp"]["instances"][0]
        return inst

    def state(self, node: str) -> str:
        try:
            return str(self.instance(node)["state"])
        except Exception:
            return "unreachable"

    def holds_vip(self, node: str) -> bool:
        return self.routers[node].holds_vip(4)

    def download(self, tag: str) -> bool:
        out = self.work / f"got-{tag}.bin"
        out.unlink(missing_ok=True)
        url = f"ftp://{self.lab.vip4}:{PORT}/{FILE}"
        argv = [*GRIDLB, "gridftp-client", "get", url, str(out), "--timeout", "3", "-q"]
        proc = self.lab.exec("client", argv, timeout_s=20, check=False)
        return proc.returncode == 0 and out.exists() and out.read_bytes() == self.payload

    def ctl(self, node: str, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [*GRIDLB, *args, "--socket", str(self.routers[node].socket)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)

    def metrics(self, node: str) -> str:
        code = (
            "import urllib.request,sys\nprint(urllib.request.urlopen(sys.argv[1],timeout=5).read().decode())"
        )
        url = f"http://{METRICS}/metrics"
        return self.lab.exec(node, [sys.executable, "-c", code, url], timeout_s=20).stdout


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    with lab_up("h", realservers=2, gridftp="gridlb", start="realservers", net_a=78) as lab:
        yield Pair(lab, tmp_path)


def test_crash_restart_and_failover(pair: Pair) -> None:
    lab = pair.lab
    pair.start_director("dir1")
    wait_for(lambda: pair.state("dir1") == "MASTER", 10, "dir1 MASTER")
    pair.start_director("dir2")
    wait_for(lambda: pair.state("dir2") == "BACKUP", 10, "dir2 BACKUP")
    wait_for(lambda: pair.instance("dir2").get("master") == str(lab.node("dir1").ipv4), 5, "dir2 sees dir1")
    assert pair.holds_vip("dir1") and not pair.holds_vip("dir2")
    # Both directors keep the same table; only the VIP follows the role.
    assert pair.status("dir1")["services"][0]["reals"] == pair.status("dir2")["services"][0]["reals"] or all(
        len(pair.status(n)["services"][0]["reals"]) == 2 for n in ("dir1", "dir2")
    )
    assert pair.download("before"), pair.log("dir1")

    # 1. SIGKILL the master: the backup takes the VIP and serves new downloads through it.
    pair.proc("dir1").kill()
    pair.proc("dir1").wait(10)
    wait_for(lambda: pair.state("dir2") == "MASTER", 10, "dir2 MASTER after the crash")
    assert pair.holds_vip("dir2")
    last = pair.instance("dir2")["last_transition"]
    assert (last["from"], last["to"], last["trigger"]) == ("BACKUP", "MASTER", "master_down"), last
    wait_for(lambda: pair.download("after-crash"), 15, "a download through the VIP on dir2", interval_s=0.2)
    assert pair.holds_vip("dir1")  # the crash left the VIP on dir1's interface

    # 2. dir1 restarts: it drops the stale VIP, joins as BACKUP, then preempts (priority 150 > 100).
    pair.start_director("dir1")
    inst = pair.instance("dir1")
    assert inst["stale_vips_removed"] == [f"{lab.vip4}/24"]
    wait_for(lambda: pair.state("dir1") == "MASTER", 10, "dir1 preempting")
    wait_for(lambda: pair.state("dir2") == "BACKUP", 10, "dir2 back to BACKUP")
    wait_for(lambda: not pair.holds_vip("dir2"), 5, "dir2 to release the VIP")
    events = json.loads("[" + ",".join(pair.ctl("dir1", "events", "--json").stdout.split("\n")[:-1]) + "]")
    kinds = [(e["kind"], e.get("from"), e.get("to")) for e in events]
    assert kinds[0] == ("stale_vips_removed", None, None), kinds
    assert ("state", "INIT", "BACKUP") in kinds and ("state", "BACKUP", "MASTER") in kinds, kinds
    wait_for(lambda: pair.download("after-restart"), 15, "a download through dir1 again", interval_s=0.2)

    # 3. `gridlb failover` on the master hands the VIP over cleanly and dir1 stays BACKUP.
    done = pair.ctl("dir1", "failover")
    assert done.returncode == 0, done.stderr + pair.log("dir1")
    assert f"{VI}: handed over to {lab.node('dir2').ipv4} (priority 100)" in done.stdout, done.stdout
    assert not pair.holds_vip("dir1")
    wait_for(lambda: pair.holds_vip("dir2"), 5, "dir2 to take the VIP")
    assert pair.state("dir2") == "MASTER"
    last2 = pair.instance("dir2")["last_transition"]
    assert (last2["to"], last2["trigger"]) == ("MASTER", "master_down"), last2
    assert "no advert within" in last2["reason"]
    time.sleep(1.5)  # > 2 master-down intervals: a preempting dir1 would be MASTER again by now
    assert pair.state("dir1") == "BACKUP" and pair.holds_vip("dir2") and not pair.holds_vip("dir1")
    wait_for(
        lambda: pair.download("after-failover"), 15, "a download through dir2 after failover", interval_s=0.2
    )

    # Status shows role, peer and the last transition with its reason.
    text = pair.ctl("dir1", "status")
    assert text.returncode == 0, text.stderr
    assert f"VRRP {VI}: BACKUP" in text.stdout and f"peer {lab.node('dir2').ipv4}" in text.stdout, text.stdout
    assert f"master {lab.node('dir2').ipv4}" in text.stdout, text.stdout
    assert "INIT -> BACKUP (operator failover: rejoined as BACKUP" in text.stdout, text.stdout
    status = pair.status("dir1")
    assert status["role"] == "BACKUP" and "INIT -> BACKUP (operator failover" in status["role_reason"]
    events = pair.ctl("dir1", "events").stdout
    assert f"{VI}: MASTER -> INIT (operator failover: priority-0 advert sent, VIPs removed)" in events, events
    failed_again = pair.ctl("dir1", "failover")
    assert failed_again.returncode == 1 and "not MASTER" in failed_again.stderr

    # Metrics: role gauge, transitions, adverts received/sent/dropped.
    m2 = pair.metrics("dir2")
    assert sample(m2, "gridlb_vrrp_role", instance=VI, state="MASTER") == 1.0, m2
    assert sample(m2, "gridlb_director_role", role="MASTER") == 1.0
    t = "gridlb_vrrp_transitions_total"
    assert sample(m2, t, **{"from": "BACKUP"}, instance=VI, to="MASTER", trigger="master_down") == 2.0
    m1 = pair.metrics("dir1")
    assert sample(m1, t, **{"from": "MASTER"}, instance=VI, to="INIT", trigger="failover") == 1.0
    assert sample(m1, t, **{"from": "INIT"}, instance=VI, to="BACKUP", trigger="failover") == 1.0
    assert sample(m1, "gridlb_vrrp_failovers_total", instance=VI) == 1.0
    for text_m in (m1, m2):
        rx = [ln for ln in text_m.splitlines() if ln.startswith("gridlb_vrrp_adverts_received_total")]
        tx = [ln for ln in text_m.splitlines() if ln.startswith("gridlb_vrrp_adverts_sent_total")]
        assert rx and float(rx[0].split()[-1]) > 0 and tx and float(tx[0].split()[-1]) > 0

    # A clean stop of the master (SIGTERM): priority-0 advert; dir1 takes over, nothing left on dir2.
    pair.proc("dir2").terminate()
    assert pair.proc("dir2").wait(20) == 0, pair.log("dir2")
    wait_for(lambda: pair.state("dir1") == "MASTER", 5, "dir1 after dir2's clean stop")
    assert not pair.holds_vip("dir2")
    wait_for(
        lambda: pair.download("after-stop"), 15, "a download through dir1 after dir2 stopped", interval_s=0.2
    )
