"""Runs a full `gridlb director run` (VRRP + proxy dataplane) as one router of a lab pair.

`DirectorRouter` has the interface of `gridlb.lab.vrrp_pair.Router` (start, wait_ready, kill_hard,
stop_clean, status, holds_vip, drop_vips) so the failover benchmark and tests can measure the real
director: its site file has the same VRRP instances as `vrrp_pair.gridlb_site` plus one virtual
server per VIP on `listen_port`, relayed by the proxy dataplane to the lab's real servers: a banner
server, or the GridFTP servers of `gridlb lab up --start realservers`. The banner server answers each
connection with the address it came from, which is the director's own (the proxy connects from it),
so a probe expecting a director's address learns which director served it, as with the plain
listeners of the VRRP-only pair.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gridlb.lab.netns import Lab, gridlb_env
from gridlb.lab.vrrp_pair import PairMember, PairSettings, RouterSpec, gridlb_site, vip_of

#: A TCP server on ADDR:PORT answering each connection with the peer's address (the director's own).
BANNER = r"""
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(256)
while True:
    c, peer = s.accept()
    try: c.sendall((peer[0] + "\n").encode())
    except OSError: pass
    c.close()
"""


def start_banner(lab: Lab, node: str, port: int, families: tuple[int, ...]) -> list[subprocess.Popen[Any]]:
    """Start one banner server per family in `node` (tracked by the lab, killed at its close)."""
    procs = []
    for fam in families:
        addr = lab.node(node).ipv4 if fam == 4 else lab.node(node).ipv6
        procs.append(lab.spawn(node, [sys.executable, "-c", BANNER, str(addr), str(port)]))
    return procs


def director_site(
    lab: Lab,
    settings: PairSettings,
    spec: RouterSpec,
    *,
    port: int,
    socket_path: Path,
    connect_timeout_s: float = 1.0,
    metrics_listen: str | None = None,
) -> str:
    """The director's site file: the pair's VRRP instances plus a proxied service per VIP over every rs."""
    out = [gridlb_site(lab, settings, spec).rstrip("\n"), "keepalived::virtual_servers:"]
    realservers = sorted((n for n in lab.nodes if n.startswith("rs")), key=lambda n: int(n[2:]))
    for fam in settings.families:
        out += [
            f"  svc{fam}:",
            f"    ip_address: '{vip_of(lab, fam)}'",
            f"    port: {port}",
            "    lb_algo: rr",
            "    lb_kind: NAT",
            "    delay_loop: 1",
            f"    tcp_check: {{connect_timeout: {connect_timeout_s:g}}}",
            "    real_servers:",
        ]
        for rs in realservers:
            addr = lab.node(rs).ipv4 if fam == 4 else lab.node(rs).ipv6
            out += [f"      - ip_address: '{addr}'", f"        port: {port}"]
    out += ["gridlb:", "  dataplane: proxy", f"  control_socket: {socket_path}"]
    if metrics_listen is not None:
        out.append(f"  metrics_listen: {metrics_listen}")
    return "\n".join(out) + "\n"


class DirectorRouter(PairMember):
    """A `gridlb director run` process in one node of the lab (the interface of `vrrp_pair.Router`)."""

    stop_timeout_s = 15.0

    def __init__(
        self,
        lab: Lab,
        settings: PairSettings,
        spec: RouterSpec,
        workdir: Path,
        *,
        connect_timeout_s: float = 1.0,
        metrics_listen: str | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.lab = lab
        self.settings = settings
        self.spec = spec
        self.connect_timeout_s = connect_timeout_s
        self.metrics_listen = metrics_listen
        self.extra_args = extra_args
        self.dir = workdir / f"{spec.node}-director"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[Any] | None = None
        self.log = self.dir / "log.txt"
        self.socket = self.dir / "control.sock"
        self.port = spec.listen_port if spec.listen_port is not None else 2811

    def start(self) -> None:
        """Write the site file and start the director in the node's namespace."""
        assert self.proc is None or self.proc.poll() is not None
        site = self.dir / "site.yaml"
        site.write_text(
            director_site(
                self.lab,
                self.settings,
                self.spec,
                port=self.port,
                socket_path=self.socket,
                connect_timeout_s=self.connect_timeout_s,
                metrics_listen=self.metrics_listen,
            )
        )
        argv = [sys.executable, "-m", "gridlb", "director", "run", str(site), *self.extra_args]
        argv += ["--grace", "0"]
        with self.log.open("ab") as logf:
            env = gridlb_env()
            self.proc = self.lab.spawn(self.spec.node, argv, stdout=logf, stderr=subprocess.STDOUT, env=env)

    def control_status(self, timeout_s: float = 5.0) -> dict[str, Any]:
        """The director's full status from its control socket (raises when it does not answer)."""
        from gridlb.api.client import ControlClient

        with ControlClient(str(self.socket), timeout_s=timeout_s) as client:
            status: dict[str, Any] = client.status()
            return status

    def _status(self) -> dict[str, Any] | None:
        if not self.socket.exists():
            return None
        try:
            return self.control_status()
        except Exception:
            return None

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Wait until the director serves its control socket with its VRRP instances and table up."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"director on {self.spec.node} exited: {self.log.read_text()[-2000:]}")
            status = self._status()
            if (
                status
                and status.get("vrrp")
                and all(r["in_table"] for s in status["services"] for r in s["reals"])
            ):
                return
            time.sleep(0.05)
        raise TimeoutError(f"director on {self.spec.node} did not start: {self.log.read_text()[-2000:]}")

    def kill_hard(self) -> None:
        """A crash: SIGKILL, no priority-0 advert, the VIPs stay on the interface."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def status(self) -> dict[str, Any]:
        """The VRRP instances' status in the VRRP-only daemon's shape (`{"instances": [...]}`)."""
        status = self._status()
        if not status or not status.get("vrrp"):
            return {}
        return {"pid": self.proc.pid if self.proc else None, "instances": status["vrrp"]["instances"]}

    def dump_json(self) -> str:
        """The director's full status (for failure messages)."""
        return json.dumps(self._status(), indent=1)
