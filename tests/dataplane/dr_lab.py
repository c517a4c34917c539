"""A direct-routing topology for the `dr` dataplane's tests and benchmark, built by the lab.

Client, one director (dir1) and N real servers on one bridge. Each real server is set up by
`gridlb realserver apply --method sysctl`, as `gridlb lab` does: the VIPs on `lo` (IPv4 /32, IPv6
/128), ARP suppressed by arp_ignore=1 and arp_announce=2 (Linux answers neighbour solicitations only
for addresses of the receiving interface, so IPv6 needs nothing);
the director holds the VIPs on `eth0` and runs `gridlb director run --no-vrrp` with the dr dataplane.
`NameServer` answers each TCP connection with the real server's name and keeps it open until the
client closes, so established connections stay established while a test counts them.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gridlb.lab.netns import Lab, gridlb_env
from gridlb.lab.system import LabOptions, realserver_apply, running

#: Answers each connection on [::]:PORT (dual stack) with NAME, then echoes until the peer closes.
NAME_SERVER = r"""
import socket, sys, threading
name, port = sys.argv[1].encode() + b"\n", int(sys.argv[2])
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", port)); s.listen(1024)
def serve(c):
    try:
        c.sendall(name)
        while True:
            data = c.recv(65536)
            if not data:
                break
            c.sendall(data)
    except OSError:
        pass
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


class DrLab:
    """The topology plus a director process; `with DrLab(name, workdir) as t:` always tears it down."""

    lab: Lab

    def __init__(
        self, name: str, workdir: Path, *, realservers: int = 3, net_b: int = 1, static_vip: bool = True
    ) -> None:
        # the lab's namespaces only (`gridlb lab up --start none`); the real servers are set up here
        self.options = LabOptions(name=name, realservers=realservers, net_a=77, net_b=net_b, start="none")
        self._stack = contextlib.ExitStack()
        self.static_vip = static_vip  # False: the directors' VRRP instances move the VIP
        self.workdir = workdir
        self.realservers = [f"rs{i + 1}" for i in range(realservers)]
        self.director: subprocess.Popen[Any] | None = None
        self.directors: dict[str, subprocess.Popen[Any]] = {}
        self.socket = workdir / "control.sock"

    def __enter__(self) -> DrLab:
        try:
            self.lab = self._stack.enter_context(running(self.options))
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the director and every process, delete the namespaces."""
        self._stack.close()

    @property
    def vip4(self) -> str:
        return str(self.lab.vip4)

    @property
    def vip6(self) -> str:
        return str(self.lab.vip6)

    def _setup(self) -> None:
        """Set every real server up with the product's `gridlb realserver apply`, as `gridlb lab` does."""
        lab = self.lab
        site = self.workdir / "realserver.yaml"
        out = ["keepalived::virtual_servers:"]
        for fam, vip in ((4, lab.vip4), (6, lab.vip6)):
            out += [f"  rs{fam}:", f"    ip_address: '{vip}'", "    port: 2811", "    lb_kind: DR"]
            out.append("    real_servers:")
            for rs in self.realservers:
                node = lab.node(rs)
                out += [f"      - ip_address: '{node.ipv4 if fam == 4 else node.ipv6}'", "        port: 2811"]
        site.write_text("\n".join(out) + "\n")
        for rs in self.realservers:
            node = lab.node(rs)
            realserver_apply(lab, rs, site, [str(node.ipv4), str(node.ipv6)])
        if not self.static_vip:
            return
        lab.exec("dir1", ["ip", "addr", "add", f"{lab.vip4}/32", "dev", "eth0"])
        # deprecated (preferred_lft 0), as the VIP manager does: checks must not leave from the VIP
        lab.exec(
            "dir1", ["ip", "addr", "add", f"{lab.vip6}/128", "dev", "eth0", "nodad", "preferred_lft", "0"]
        )

    def start_name_servers(self, port: int) -> None:
        """Start a `NAME_SERVER` on every real server."""
        for rs in self.realservers:
            self.lab.spawn(rs, [sys.executable, "-c", NAME_SERVER, rs, str(port)])
        for rs in self.realservers:
            self.wait_listening(rs, port)

    def wait_listening(self, node: str, port: int, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            out = self.lab.exec(node, ["ss", "-Hltn", f"sport = :{port}"], check=False).stdout
            if out.strip():
                return
            time.sleep(0.05)
        raise TimeoutError(f"nothing listens on {node}:{port}")

    def site(
        self,
        ports: dict[int, int] | list[tuple[int, int]],
        *,
        lb_algo: str = "wlc",
        weights: dict[str, int] | None = None,
        node: str = "dir1",
        head: str = "",
        gridlb_extra: tuple[str, ...] = (),
    ) -> str:
        """The director's site file: a DR service per (family, port) of `ports` over every real server."""
        lab = self.lab
        out = [head.rstrip("\n")] if head else []
        out.append("keepalived::virtual_servers:")
        for fam, port in ports.items() if isinstance(ports, dict) else ports:
            vip = lab.vip4 if fam == 4 else lab.vip6
            out += [
                f"  svc{fam}_{port}:",
                f"    ip_address: '{vip}'",
                f"    port: {port}",
                f"    lb_algo: {lb_algo}",
                "    lb_kind: DR",
                "    delay_loop: 1",
                "    tcp_check: {connect_timeout: 2}",
                "    real_servers:",
            ]
            for rs in self.realservers:
                real = lab.node(rs)
                out += [
                    f"      - ip_address: '{real.ipv4 if fam == 4 else real.ipv6}'",
                    f"        port: {port}",
                    f"        weight: {(weights or {}).get(rs, 1)}",
                ]
        out += ["gridlb:", "  dataplane: dr", f"  control_socket: {self.socket_of(node)}", *gridlb_extra]
        return "\n".join(out) + "\n"

    def start_director(self, site: str, node: str = "dir1") -> None:
        """Run `gridlb director run` in `node` and wait until its table is programmed and MACs known.

        Without VRRP instances in `site` it runs with `--no-vrrp`. Its control socket is
        `control-NODE.sock` in the work directory (`control.sock` for dir1).
        """
        path = self.workdir / f"site-{node}.yaml"
        path.write_text(site)
        log = (self.workdir / f"director-{node}.log").open("ab")
        argv = [sys.executable, "-m", "gridlb", "director", "run", str(path), "--grace", "0"]
        if "vrrp_instances" not in site:
            argv.append("--no-vrrp")
        proc = self.lab.spawn(node, argv, stdout=log, stderr=subprocess.STDOUT, env=gridlb_env())
        self.directors[node] = proc
        if node == "dir1":
            self.director = proc
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"director {node} exited: " + self.log_tail(node))
            status = self.status(node)
            if status and all(r.get("in_table") for s in status["services"] for r in s["reals"]):
                break
            time.sleep(0.1)
        else:
            raise TimeoutError(f"director {node} not ready: " + self.log_tail(node))
        want = {str(self.lab.node(rs).ipv4) for rs in self.realservers}
        if self.vip6 in site:
            want |= {str(self.lab.node(rs).ipv6) for rs in self.realservers}
        while time.monotonic() < deadline:  # the dataplane schedules a real server once its MAC is known
            neigh = self.lab.exec(node, ["ip", "neigh", "show", "dev", "eth0"]).stdout
            known = {line.split()[0] for line in neigh.splitlines() if "lladdr" in line}
            if want <= known:
                time.sleep(1.2)  # two polls of the dataplane
                return
            time.sleep(0.1)
        raise TimeoutError(f"director {node} not ready: " + self.log_tail(node))

    def socket_of(self, node: str) -> Path:
        """The control socket of the director in `node`."""
        return self.socket if node == "dir1" else self.workdir / f"control-{node}.sock"

    def log_tail(self, node: str = "dir1") -> str:
        path = self.workdir / f"director-{node}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def status(self, node: str = "dir1") -> dict[str, Any] | None:
        from gridlb.api.client import ControlClient

        sock = self.socket_of(node)
        if not sock.exists():
            return None
        try:
            with ControlClient(str(sock), timeout_s=5) as client:
                got: dict[str, Any] = client.status()
                return got
        except Exception:
            return None

    def gridlb(self, *args: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a `gridlb` command (e.g. ipvsadm, drain) against the director's control socket."""
        argv = [sys.executable, "-m", "gridlb", *args]
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout_s, env=gridlb_env(), check=False
        )

    def nft_json(self, node: str, what: str) -> list[dict[str, Any]]:
        out = self.lab.exec(node, ["nft", "-j", "list", *what.split()], check=False).stdout
        with contextlib.suppress(ValueError):
            items: list[dict[str, Any]] = json.loads(out).get("nftables", [])
            return items
        return []

    def link_stats(self, node: str, dev: str = "eth0") -> dict[str, int]:
        """Return the interface's rx/tx packet counters."""
        out = self.lab.exec(node, ["ip", "-s", "-j", "link", "show", dev]).stdout
        stats = json.loads(out)[0]["stats64"]
        return {"rx": int(stats["rx"]["packets"]), "tx": int(stats["tx"]["packets"])}


#: The clients' reader of one reply line (the name servers answer a line per request).
LINE_READER = r"""
def line(s):
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(64)
        if not chunk:
            raise OSError("closed")
        buf += chunk
    return buf.decode().strip()
"""

CLIENT = r"""
import json, socket, sys, time
vip, port, n, gap = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
hold = len(sys.argv) > 5
fam = socket.AF_INET6 if ":" in vip else socket.AF_INET
socks, names, errors = [], [], []
"""
CLIENT += (
    LINE_READER
    + r"""
for i in range(n):
    s = socket.socket(fam, socket.SOCK_STREAM); s.settimeout(10)
    try:
        s.connect((vip, port))
        names.append(line(s))
        socks.append(s)
    except OSError as exc:
        errors.append(str(exc)); s.close()
    time.sleep(gap)
print(json.dumps({"names": names, "errors": errors}), flush=True)
while hold:
    cmd = sys.stdin.readline().strip()
    if cmd != "ping":
        break
    ok = []
    for s in socks:
        try:
            s.sendall(b"ping\n"); ok.append(line(s) == "ping")
        except OSError:
            ok.append(False)
    print(json.dumps(ok), flush=True)
for s in socks:
    s.close()
"""
)


def connect_many(t: DrLab, vip: str, port: int, n: int, gap_s: float = 0.0) -> dict[str, Any]:
    """Open `n` connections to the VIP one after the other from the client; return names and errors."""
    argv = [sys.executable, "-c", CLIENT, vip, str(port), str(n), str(gap_s)]
    out = t.lab.exec("client", argv, timeout_s=120)
    got: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return got


class HeldConnections:
    """`n` connections opened from the client and held open until `release()`."""

    def __init__(self, t: DrLab, vip: str, port: int, n: int, gap_s: float = 0.0) -> None:
        self.proc = t.lab.spawn(
            "client",
            [sys.executable, "-c", CLIENT, vip, str(port), str(n), str(gap_s), "hold"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.result: dict[str, Any] = json.loads(line) if line else {"names": [], "errors": ["client died"]}

    def ping(self) -> list[bool]:
        """Send a line on every held connection; return which ones echoed it back."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("ping\n")
        self.proc.stdin.flush()
        got: list[bool] = json.loads(self.proc.stdout.readline())
        return got

    def release(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.write("\n")
                self.proc.stdin.flush()
            self.proc.wait(timeout=10)


__all__ = ["CLIENT", "NAME_SERVER", "DrLab", "HeldConnections", "connect_many"]
