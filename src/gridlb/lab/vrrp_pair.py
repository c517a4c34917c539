"""Runs a director pair's VRRP in a Lab: keepalived (`-P`) or gridlb's daemon, with identical settings.

Renders keepalived.conf and the equivalent gridlb site file for one router of the pair, starts it in
the node's namespace, and kills it the way a crash does (keepalived: SIGSTOP the parent, SIGKILL the
VRRP child, SIGKILL the parent, so neither can say goodbye) or stops it cleanly (SIGTERM). Used by the
interop tests and bench/failover.py; later by `gridlb lab`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gridlb.lab.netns import Lab, gridlb_env

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class PairSettings:
    """What both routers share."""

    version: int = 2
    advert_int_s: float = 1.0
    vrid: int = 51
    families: tuple[int, ...] = (4,)
    unicast: bool = True
    auth_pass: str = ""
    garp_master_delay_s: float = 5.0
    garp_master_repeat: int = 3


@dataclass(frozen=True, slots=True)
class RouterSpec:
    """One router: where it runs, which implementation, priority, initial state, nopreempt."""

    node: str
    impl: str  # "keepalived" | "gridlb"
    priority: int
    state: str = "BACKUP"
    nopreempt: bool = False
    listen_port: int | None = None


def instance_names(settings: PairSettings) -> list[str]:
    return [f"VI_{fam}" for fam in settings.families]


def vip_of(lab: Lab, family: int) -> IPAddress:
    return lab.vip4 if family == 4 else lab.vip6


def _peer(spec: RouterSpec) -> str:
    return "dir2" if spec.node == "dir1" else "dir1"


def _addr(lab: Lab, node: str, family: int) -> IPAddress:
    n = lab.node(node)
    return n.ipv4 if family == 4 else n.ipv6


def keepalived_conf(lab: Lab, settings: PairSettings, spec: RouterSpec) -> str:
    """keepalived.conf for `spec` (VRRP only)."""
    out = [
        "global_defs {",
        f"  router_id glb-{spec.node}",
        f"  vrrp_version {settings.version}",
        f"  vrrp_garp_master_delay {settings.garp_master_delay_s:g}",
        f"  vrrp_garp_master_repeat {settings.garp_master_repeat}",
        "}",
    ]
    for fam, name in zip(settings.families, instance_names(settings), strict=True):
        out += [f"vrrp_instance {name} {{", f"  state {spec.state}", "  interface eth0"]
        out += [f"  virtual_router_id {settings.vrid}", f"  priority {spec.priority}"]
        out += [f"  advert_int {settings.advert_int_s:g}"]
        if spec.nopreempt:
            out.append("  nopreempt")
        if settings.auth_pass:
            out += ["  authentication {", "    auth_type PASS", f"    auth_pass {settings.auth_pass}", "  }"]
        if settings.unicast:
            out += [f"  unicast_src_ip {_addr(lab, spec.node, fam)}"]
            out += ["  unicast_peer {", f"    {_addr(lab, _peer(spec), fam)}", "  }"]
        plen = 24 if fam == 4 else 64
        out += ["  virtual_ipaddress {", f"    {vip_of(lab, fam)}/{plen} dev eth0", "  }", "}"]
    return "\n".join(out) + "\n"


def gridlb_site(lab: Lab, settings: PairSettings, spec: RouterSpec) -> str:
    """The site YAML (seed Hiera keys) with the same settings."""
    out = ["keepalived::vrrp_instances:"]
    for fam, name in zip(settings.families, instance_names(settings), strict=True):
        plen = 24 if fam == 4 else 64
        out += [
            f"  {name}:",
            "    interface: eth0",
            f"    state: {spec.state}",
            f"    virtual_router_id: {settings.vrid}",
            f"    priority: {spec.priority}",
            f"    advert_int: {settings.advert_int_s:g}",
            f"    version: {settings.version}",
            f"    virtual_ipaddress: ['{vip_of(lab, fam)}/{plen}']",
            f"    garp_master_delay: {settings.garp_master_delay_s:g}",
            f"    garp_master_repeat: {settings.garp_master_repeat}",
        ]
        if spec.nopreempt:
            out.append("    nopreempt: true")
        if settings.auth_pass:
            out += ["    auth_type: PASS", f"    auth_pass: '{settings.auth_pass}'"]
        if settings.unicast:
            out += [f"    unicast_source_ip: '{_addr(lab, spec.node, fam)}'"]
            out += [f"    unicast_peers: ['{_addr(lab, _peer(spec), fam)}']"]
    return "\n".join(out) + "\n"


LISTENER = r"""
import socket, sys, time
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IP, 15, 1)  # IP_FREEBIND: bind before the VIP arrives
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(64)
end = time.monotonic() + float(sys.argv[4])
s.settimeout(1)
while time.monotonic() < end:
    try: c, _ = s.accept()
    except socket.timeout: continue
    c.sendall(sys.argv[3].encode() + b"\n"); c.close()
"""


class PairMember:
    """What every router of a lab pair shares: its node, a clean stop, and the VIPs on its eth0."""

    lab: Lab
    settings: PairSettings
    spec: RouterSpec
    proc: subprocess.Popen[Any] | None
    #: How long a clean stop may take before it becomes a crash.
    stop_timeout_s = 10.0

    def kill_hard(self) -> None:
        """A crash: no priority-0 advert, the VIPs stay on the interface."""
        raise NotImplementedError

    def stop_clean(self, timeout_s: float | None = None) -> None:
        """SIGTERM: priority-0 advert, VIPs removed (SIGKILL after `timeout_s`)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.stop_timeout_s if timeout_s is None else timeout_s)
            except subprocess.TimeoutExpired:
                self.kill_hard()

    def holds_vip(self, family: int = 4) -> bool:
        return self.lab.has_address(self.spec.node, vip_of(self.lab, family))

    def drop_vips(self) -> None:
        """Remove the VIPs a killed router left behind (it would answer ARP for them until restarted)."""
        for fam in self.settings.families:
            vip = f"{vip_of(self.lab, fam)}/{24 if fam == 4 else 64}"
            self.lab.exec(self.spec.node, ["ip", "addr", "del", vip, "dev", "eth0"], check=False)


class Router(PairMember):
    """A running (or stopped) VRRP router in one node of the lab."""

    def __init__(self, lab: Lab, settings: PairSettings, spec: RouterSpec, workdir: Path) -> None:
        self.lab = lab
        self.settings = settings
        self.spec = spec
        self.dir = workdir / f"{spec.node}-{spec.impl}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[Any] | None = None
        self.listeners: list[subprocess.Popen[Any]] = []
        self.log = self.dir / "log.txt"

    @property
    def status_file(self) -> Path:
        return self.dir / "status.json"

    def start(self, spec: RouterSpec | None = None) -> None:
        """Start (again), optionally with a changed spec (same node and implementation)."""
        assert self.proc is None or self.proc.poll() is not None
        if spec is not None:
            self.spec = spec
        logf = self.log.open("ab")
        if self.spec.impl == "keepalived":
            conf = self.dir / "keepalived.conf"
            conf.write_text(keepalived_conf(self.lab, self.settings, self.spec))
            for f in ("k.pid", "v.pid", "c.pid"):
                (self.dir / f).unlink(missing_ok=True)
            argv = ["keepalived", "-n", "-l", "-D", "-G", "-P", "-f", str(conf)]
            argv += [
                "-p",
                str(self.dir / "k.pid"),
                "-r",
                str(self.dir / "v.pid"),
                "-c",
                str(self.dir / "c.pid"),
            ]
            if self.spec.listen_port is not None and not self.listeners:
                for fam in self.settings.families:
                    vip = str(vip_of(self.lab, fam))
                    banner = f"listener {self.spec.node} {_addr(self.lab, self.spec.node, fam)}"
                    port = str(self.spec.listen_port)
                    argv_l = [sys.executable, "-c", LISTENER, vip, port, banner, "3600"]
                    self.listeners.append(self.lab.spawn(self.spec.node, argv_l))
        else:
            site = self.dir / "site.yaml"
            site.write_text(gridlb_site(self.lab, self.settings, self.spec))
            self.status_file.unlink(missing_ok=True)
            argv = [
                sys.executable,
                "-m",
                "gridlb.vrrp",
                "run",
                str(site),
                "-v",
                "--status-file",
                str(self.status_file),
            ]
            if self.spec.listen_port is not None:
                argv += ["--listen", str(self.spec.listen_port)]
        env = gridlb_env()
        self.proc = self.lab.spawn(self.spec.node, argv, stdout=logf, stderr=subprocess.STDOUT, env=env)
        logf.close()

    def _pids(self) -> list[int]:
        if self.spec.impl == "keepalived":
            pids = []
            for f in ("k.pid", "v.pid"):
                with contextlib.suppress(OSError, ValueError):
                    pids.append(int((self.dir / f).read_text().split()[0]))
            return pids
        return [self.proc.pid] if self.proc is not None else []

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Wait until the process runs its VRRP part (keepalived: the VRRP child's pid file)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.spec.impl} on {self.spec.node} exited: {self.log.read_text()[-2000:]}"
                )
            if self.spec.impl == "keepalived" and (self.dir / "v.pid").exists():
                return
            if self.spec.impl == "gridlb" and self.status_file.exists():
                return
            time.sleep(0.02)
        raise TimeoutError(
            f"{self.spec.impl} on {self.spec.node} did not start: {self.log.read_text()[-2000:]}"
        )

    def kill_hard(self) -> None:
        """A crash: no priority-0 advert, the VIPs stay on the interface."""
        pids = self._pids()
        if self.spec.impl == "keepalived" and len(pids) == 2:
            parent, child = pids
            with contextlib.suppress(ProcessLookupError):
                os.kill(parent, signal.SIGSTOP)
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def status(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return {}
        return data


def time_until(predicate: Callable[[], object], timeout_s: float, interval_s: float = 0.01) -> float | None:
    """Poll `predicate` every `interval_s` until it holds; return the seconds it took, or None on timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if predicate():
            return time.monotonic() - start
        time.sleep(interval_s)
    return None


PROBE = r"""
import socket, sys, time
host, port, want, limit = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
end = time.monotonic() + limit
while time.monotonic() < end:
    s = socket.socket(fam, socket.SOCK_STREAM); s.settimeout(0.2)
    try:
        s.connect((host, port)); data = s.recv(200).decode().split()
        if want in data or (want == "*" and data):
            print("OK", repr(time.monotonic()), " ".join(data), flush=True); sys.exit(0)
    except OSError:
        pass
    finally:
        s.close()
    time.sleep(0.005)
print("TIMEOUT", flush=True); sys.exit(1)
"""


def touch_neighbour(lab: Lab, address: IPAddress, port: int = 9) -> None:
    """Make the client resolve `address` (a TCP connect attempt; refused is fine)."""
    code = (
        "import socket,sys\nfam=socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET\n"
        "s=socket.socket(fam);s.settimeout(1)\ntry: s.connect((sys.argv[1],int(sys.argv[2])))\n"
        "except OSError: pass\n"
    )
    lab.exec("client", [sys.executable, "-c", code, str(address), str(port)], timeout_s=10, check=False)
