"""Direct routing end to end through kernel IPVS driven by gridlb (VM tier, `make test-ipvs`).

Topology (gridlb.lab): a client, two directors and three real servers on one bridge, each in its own
namespace; the real servers hold the VIP on `lo` with ARP for it suppressed (arp_ignore=1,
arp_announce=2) and answer each line on a connection with their name. Connections stay open, so
the kernel's wlc (active*256 + inactive) spreads them evenly, a drained server gets no new one and
keeps its own, a restarted director adopts the table without losing one, and with VRRP and the
connection-sync daemon the backup already lists them and carries them after the master is killed.
Every process is killed by PID and every namespace deleted (the lab's `down`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections import Counter
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

PORT = 2811
GRIDLB = [sys.executable, "-m", "gridlb"]
NAME_SERVER = r"""
import socket, sys, threading
name = sys.argv[1].encode() + b"\n"
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[2]))); s.listen(512)
def serve(c):
    with c:
        for _ in c.makefile("rb"):
            c.sendall(name)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""
#: Holds connections to VIP:PORT; stdin commands "open N" and "ping", one JSON line of names back.
HOLDER = r"""
import json, socket, sys
vip, port = sys.argv[1], int(sys.argv[2])
conns = []
def ask(c):
    try:
        c.sendall(b"ping\n"); data = b""
        while not data.endswith(b"\n"):
            chunk = c.recv(100)
            if not chunk: return "EOF"
            data += chunk
        return data.decode().strip()
    except OSError as exc:
        return f"ERR {exc}"
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "open":
        new = []
        for _ in range(int(cmd[1])):
            c = socket.create_connection((vip, port), timeout=10); conns.append(c); new.append(ask(c))
        print(json.dumps(new), flush=True)
    elif cmd[0] == "ping":
        print(json.dumps([ask(c) for c in conns]), flush=True)
"""


class Holder:
    """A client process holding connections to the VIP."""

    def __init__(self, lab: Lab) -> None:
        self.proc = lab.spawn(
            "client",
            [sys.executable, "-c", HOLDER, str(lab.vip4), str(PORT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def _ask(self, line: str) -> list[str]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        assert reply, "the holder died"
        names: list[str] = json.loads(reply)
        return names

    def open(self, n: int) -> list[str]:
        return self._ask(f"open {n}")

    def ping(self) -> list[str]:
        return self._ask("ping")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Director:
    """`gridlb director run` in a lab node, with the ipvs dataplane."""

    def __init__(self, lab: Lab, node: str, workdir: Path, site: str, *extra: str) -> None:
        self.lab, self.node = lab, node
        self.dir = workdir / node
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket = self.dir / "control.sock"
        self.log = self.dir / "director.log"
        self.site = self.dir / "site.yaml"
        self.site.write_text(site + f"gridlb:\n  dataplane: ipvs\n  control_socket: {self.socket}\n")
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        argv = [*GRIDLB, "director", "run", str(self.site), "--metrics", "", "--grace", "0", *self.extra]
        with self.log.open("ab") as log:
            self.proc = self.lab.spawn(self.node, argv, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self.ready, 180, f"{self.node} to start: {self.tail()}")

    def tail(self) -> str:
        return self.log.read_text()[-3000:] if self.log.exists() else ""

    def status(self) -> dict[str, Any] | None:
        try:
            with ControlClient(str(self.socket), timeout_s=10) as c:
                status: dict[str, Any] = c.status()
                return status
        except (OSError, ValueError, GridlbError):
            return None

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"{self.node} exited: {self.tail()}")
        status = self.status()
        if not status:
            return False
        return all(r["in_table"] for s in status["services"] for r in s["reals"])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def ipvsadm(self, *args: str) -> str:
        return self.lab.exec(self.node, ["ipvsadm", *args]).stdout

    def established(self) -> int:
        return sum(" ESTABLISHED " in line for line in self.ipvsadm("-Lnc").splitlines())


def services(lab: Lab) -> str:
    reals = "".join(
        f"      - ip_address: {lab.node(r).ipv4}\n        port: {PORT}\n" for r in ("rs1", "rs2", "rs3")
    )
    return (
        "keepalived::virtual_servers:\n  dr:\n"
        f"    ip_address: {lab.vip4}\n    port: {PORT}\n    lb_algo: wlc\n    lb_kind: DR\n"
        "    delay_loop: 5\n    tcp_check: {connect_timeout: 2}\n"
        f"    real_servers:\n{reals}"
    )


def vrrp(lab: Lab, node: str, priority: int) -> str:
    peer = "dir2" if node == "dir1" else "dir1"
    return (
        "keepalived::vrrp_instances:\n  VI_1:\n    interface: eth0\n    state: BACKUP\n"
        f"    virtual_router_id: 61\n    priority: {priority}\n    advert_int: 1\n"
        f"    virtual_ipaddress: ['{lab.vip4}/24']\n"
        f"    unicast_source_ip: '{lab.node(node).ipv4}'\n    unicast_peers: ['{lab.node(peer).ipv4}']\n"
        "    lvs_sync_daemon_interface: eth0\n"
    )


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    need_root()
    need_tool("ipvsadm")
    with lab_up("idr", realservers=3, start="none", net_a=78) as lab:
        lab.exec("lan", ["ip", "link", "set", "br0", "type", "bridge", "mcast_snooping", "0"])
        for rs in ("rs1", "rs2", "rs3"):
            lab.sysctl(
                lab.node(rs).ns,
                {
                    "net.ipv4.conf.all.arp_ignore": "1",
                    "net.ipv4.conf.all.arp_announce": "2",
                    "net.ipv4.conf.eth0.arp_ignore": "1",
                    "net.ipv4.conf.eth0.arp_announce": "2",
                },
            )
            lab.exec(rs, ["ip", "addr", "add", f"{lab.vip4}/32", "dev", "lo"])
            lab.spawn(rs, [sys.executable, "-c", NAME_SERVER, rs, str(PORT)])
        yield lab


def test_dr_wlc_spread_drain_and_restart_under_load(lab: Lab, tmp_path: Path) -> None:
    lab.exec("dir1", ["ip", "addr", "add", f"{lab.vip4}/32", "dev", "eth0"])
    director = Director(lab, "dir1", tmp_path, services(lab), "--no-vrrp")
    director.start()
    holder = Holder(lab)
    try:
        first = holder.open(30)
        spread = Counter(first)
        assert set(spread) == {"rs1", "rs2", "rs3"} and max(spread.values()) - min(spread.values()) <= 1, (
            spread
        )
        lines = [w for w in map(str.split, director.ipvsadm("-Ln").splitlines()) if w[:1] == ["->"]]
        active = {w[1]: int(w[4]) for w in lines if w[4].isdigit()}
        assert active == {f"{lab.node(rs).ipv4}:{PORT}": n for rs, n in spread.items()}  # what the client saw
        with ControlClient(str(director.socket)) as c:
            c.drain(str(lab.node("rs3").ipv4))
        assert f"-r {lab.node('rs3').ipv4}:{PORT} -g -w 0\n" in director.ipvsadm("-Sn")
        more = holder.open(12)
        assert "rs3" not in more and Counter(more) == Counter({"rs1": 6, "rs2": 6}), more
        assert holder.ping() == first + more  # the drained server keeps its established connections

        # Restart under load: SIGTERM leaves the kernel table (no --flush-on-exit); while no director
        # runs the kernel goes on forwarding; the new director adopts the table (dump, diff, apply).
        director.stop()
        assert holder.ping() == first + more
        director.start()
        assert holder.ping() == first + more
        assert director.established() >= len(first + more)
        status = director.status()
        assert status is not None and status["counters"]["op_errors"] == {}
    finally:
        holder.close()
        director.stop()
        lab.exec("dir1", ["ipvsadm", "-C"], check=False)
        lab.exec("dir1", ["ip", "addr", "del", f"{lab.vip4}/32", "dev", "eth0"], check=False)


def test_pair_with_sync_daemon_keeps_connections_across_a_master_kill(lab: Lab, tmp_path: Path) -> None:
    d1 = Director(lab, "dir1", tmp_path, vrrp(lab, "dir1", 150) + services(lab))
    d2 = Director(lab, "dir2", tmp_path, vrrp(lab, "dir2", 100) + services(lab))
    d1.start()
    d2.start()
    holder = Holder(lab)
    try:
        wait_for(lambda: lab.has_address("dir1", lab.vip4), 60, "dir1 to become MASTER")
        wait_for(
            lambda: (
                "master sync daemon" in d1.ipvsadm("-L", "--daemon")
                and "backup sync daemon" in d2.ipvsadm("-L", "--daemon")
            ),
            60,
            "the sync daemons to follow the roles",
        )
        names = holder.open(20)
        assert holder.ping() == names
        # The backup lists the master's connections before any failure (sync daemon).
        wait_for(lambda: d2.established() >= 20, 30, "dir2 to list the 20 synced connections")
        d1.kill()
        lab.exec("dir1", ["ip", "link", "set", "eth0", "down"])  # the master's host is gone
        wait_for(lambda: lab.has_address("dir2", lab.vip4), 60, "dir2 to take the VIP")
        wait_for(
            lambda: "master sync daemon" in d2.ipvsadm("-L", "--daemon"), 30, "dir2's master sync daemon"
        )
        assert holder.ping() == names  # each connection still reaches the same real server
    finally:
        holder.close()
        d2.stop()
        d1.kill()
        lab.exec("dir1", ["ip", "link", "set", "eth0", "up"], check=False)
