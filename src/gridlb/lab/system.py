"""The seed's whole system in network namespaces, as `gridlb lab` builds, records, inspects and removes it.

`up` builds the topology of `netns.Lab` (one bridge; a client; one or two directors; N real servers),
writes the site files, sets every real server up with `gridlb realserver apply` (VIPs on lo, ARP
suppressed), starts a GridFTP server on each real server whose data interface is its own address
(Globus' `globus-gridftp-server`, or gridlb's embedded one) and a `gridlb director run` with VRRP on
each director, then waits until a master holds the VIP and every real server is in its table
(`start` may stop short of that: real servers only, or bare namespaces for a caller's own programs). It
records what it made (namespaces, and every process by PID and start time) in a state file under
`/run/gridlb-lab/`, so `down` - another process - kills exactly those processes (by PID, checking the
start time so a reused PID is never hit), then anything else left inside the lab's namespaces, then
deletes the namespaces (which takes the veths and the bridge with them) and the lab's files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from gridlb.errors import GridlbError
from gridlb.lab import procfs, scaleout
from gridlb.lab.netns import Lab, LabSpec, gridlb_env, kill_all_in
from gridlb.lab.vrrp_pair import PairSettings, RouterSpec, gridlb_site, vip_of

STATE_ROOT = Path("/run/gridlb-lab")
NETNS_ETC = Path("/etc/netns")
PORT = 2811
GRIDFTP_KINDS = ("globus", "gridlb")
DATAPLANES = ("proxy", "dr")
#: What `up` starts: everything; the real servers only (the directors' namespaces stay empty for the
#: caller's own director or keepalived); nothing (namespaces and addresses only).
START_KINDS = ("all", "realservers", "none")
SAMPLE_SIZE = 1 << 20


LabStateError = scaleout.LabStateError  # the lab named does not exist, already exists, or failed to build


@dataclass(frozen=True, slots=True)
class LabOptions:
    """What `gridlb lab up` was asked for."""

    name: str = "lab"
    realservers: int = 3
    gridftp: str = "globus"
    directors: int = 2
    dataplane: str = "proxy"
    ipv6: bool = False
    net_a: int = 90
    net_b: int = 1
    scaleout: bool = False  # a router running BIRD with ECMP over the directors (gridlb.lab.scaleout)
    resilient: bool = True  # scale-out: the router's ECMP route as a resilient next-hop group
    start: str = "all"

    @property
    def prefix(self) -> str:
        return f"glbLab-{self.name}"

    @property
    def families(self) -> tuple[int, ...]:
        return (4, 6) if self.ipv6 else (4,)


@dataclass
class Proc:
    """One process the lab started: where, what, its PID and start time (clock ticks since boot)."""

    node: str
    role: str
    pid: int
    start: int
    log: str


@dataclass
class LabState:
    """What exists: the options, the namespaces, the nodes, the processes and the lab's directory."""

    options: LabOptions
    namespaces: list[str]
    nodes: dict[str, dict[str, str]]
    vip4: str
    vip6: str
    workdir: str
    procs: list[Proc] = field(default_factory=list)
    created: list[str] = field(default_factory=list)  # directories outside workdir the lab made

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> LabState:
        data = json.loads(text)
        return cls(
            options=LabOptions(**data["options"]),
            namespaces=list(data["namespaces"]),
            nodes=dict(data["nodes"]),
            vip4=data["vip4"],
            vip6=data["vip6"],
            workdir=data["workdir"],
            procs=[Proc(**p) for p in data["procs"]],
            created=list(data.get("created", [])),
        )

    def ns_of(self, node: str) -> str:
        if node == "lan":
            return f"{self.options.prefix}-lan"
        if node not in self.nodes:
            known = ", ".join(["lan", *self.nodes])
            raise LabStateError(f"no node {node!r} in lab {self.options.name!r} (nodes: {known})")
        return self.nodes[node]["ns"]

    def url_path(self, name: str) -> str:
        """The path part of an ftp:// URL for a file in every real server's export directory."""
        if self.options.gridftp == "gridlb":
            return f"/{name}"
        return f"{self.workdir}/export/{name}"


def state_path(name: str) -> Path:
    return STATE_ROOT / f"{name}.json"


def state_of(lab: Lab) -> LabState:
    """The recorded state of the lab whose topology `running` yielded."""
    return load_state(lab.spec.prefix.split("-", 1)[1])


def load_state(name: str) -> LabState:
    path = state_path(name)
    try:
        return LabState.from_json(path.read_text())
    except FileNotFoundError:
        raise LabStateError(
            f"no lab named {name!r} ({path} does not exist; `gridlb lab up` makes one)"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise LabStateError(f"{path}: unreadable state file ({exc}); remove the lab by hand") from None


def alive(proc: Proc) -> bool:
    """True while the recorded process (same PID and start time) runs and is not a zombie."""
    return procfs.start_time(proc.pid) == proc.start and procfs.exists(proc.pid)


# ------------------------------------------------------------------------------------------- site files


def _settings(options: LabOptions) -> PairSettings:
    return PairSettings(
        version=3, advert_int_s=1.0, vrid=51, families=options.families, unicast=options.directors == 2
    )


def director_site(lab: Lab, options: LabOptions, spec: RouterSpec, socket_path: Path) -> str:
    """A director's site file: the VRRP instance(s) and one service per VIP over every real server."""
    out = [gridlb_site(lab, _settings(options), spec).rstrip("\n"), "keepalived::virtual_servers:"]
    out += _services(lab, options, "DR" if options.dataplane == "dr" else "NAT", check=True)
    out += ["gridlb:", f"  dataplane: {options.dataplane}", f"  control_socket: {socket_path}"]
    if options.dataplane == "dr" and options.directors == 2:
        out.append("  dr: {sync_interface: eth0}")  # connection sync between the two directors
    return "\n".join(out) + "\n"


def realserver_site(lab: Lab, options: LabOptions) -> str:
    """The real servers' view: the same VIPs and real servers as DR services (what they are set up for)."""
    return "\n".join(["keepalived::virtual_servers:", *_services(lab, options, "DR", check=False)]) + "\n"


def _services(lab: Lab, options: LabOptions, kind: str, *, check: bool) -> list[str]:
    out: list[str] = []
    names = [n for n in lab.nodes if n.startswith("rs")]
    for fam in options.families:
        out += [f"  gridftp{fam}:", f"    ip_address: '{vip_of(lab, fam)}'", f"    port: {PORT}"]
        out += ["    lb_algo: wlc", f"    lb_kind: {kind}"]
        if check:
            out += ["    delay_loop: 1", "    tcp_check: {connect_timeout: 1}"]
        out.append("    real_servers:")
        for n in names:
            addr = lab.node(n).ipv4 if fam == 4 else lab.node(n).ipv6
            out += [f"      - ip_address: '{addr}'", f"        port: {PORT}"]
    return out


# ------------------------------------------------------------------------------------------- up


def _gridlb_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "gridlb", *args]


def realserver_apply(lab: Lab, name: str, site: Path, addresses: Sequence[str]) -> None:
    """Run `gridlb realserver apply SITE --method sysctl` in node `name` for its own `addresses`;
    raise LabStateError with the command's own words when it fails."""
    addrs = [f"--address={a}" for a in addresses]
    argv = _gridlb_argv("realserver", "apply", str(site), "--method", "sysctl", *addrs)
    proc = subprocess.run(
        lab.argv_in(name, argv), capture_output=True, text=True, timeout=60, env=gridlb_env(), check=False
    )
    if proc.returncode != 0:
        raise LabStateError(f"{name}: gridlb realserver apply: {proc.stderr.strip()}")


class _Builder:
    """Builds one lab; on any failure `abort()` removes everything made so far."""

    def __init__(self, options: LabOptions, say: Callable[[str], None] | None = None) -> None:
        self.options = options
        self.say = say or (lambda _text: None)
        self.workdir = STATE_ROOT / options.name
        self.lab = Lab(
            LabSpec(
                prefix=options.prefix,
                realservers=options.realservers,
                net_a=options.net_a,
                net_b=options.net_b,
                directors=options.directors,
            )
        )
        self.procs: list[Proc] = []
        self.created: list[str] = []

    def state(self) -> LabState:
        nodes = {
            n.name: {"ns": n.ns, "ipv4": str(n.ipv4), "ipv6": str(n.ipv6), "mac": n.mac}
            for n in self.lab.nodes.values()
        }
        return LabState(
            self.options,
            self.lab.namespaces,
            nodes,
            str(self.lab.vip4),
            str(self.lab.vip6),
            str(self.workdir),
            list(self.procs),
            list(self.created),
        )

    def spawn(self, node: str, role: str, argv: list[str]) -> Proc:
        log = self.workdir / "logs" / f"{node}-{role}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            popen = subprocess.Popen(
                self.lab.argv_in(node, argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=gridlb_env(),
                start_new_session=True,  # outlives `gridlb lab up`; not killed by its terminal's signals
            )
        start = procfs.start_time(popen.pid)
        proc = Proc(node, role, popen.pid, start if start is not None else -1, str(log))
        self.procs.append(proc)
        state_path(self.options.name).write_text(self.state().to_json())
        return proc

    def build(self, timeout_s: float) -> LabState:
        STATE_ROOT.mkdir(parents=True, exist_ok=True)
        self.workdir.mkdir(parents=True)
        os.chmod(self.workdir, 0o755)
        state_path(self.options.name).write_text(self.state().to_json())
        self.say(f"creating namespaces {self.options.prefix}-* and the bridge")
        self.lab.build()
        if self.options.scaleout:
            scaleout.build_network(self)
        state_path(self.options.name).write_text(self.state().to_json())
        self._exports()
        if self.options.start in ("all", "realservers"):
            self._realservers()
            self.say(f"starting the GridFTP servers ({self.options.gridftp})")
            self._gridftp()
        if self.options.start == "all":
            wait = "the router's routes to the VIP" if self.options.scaleout else "dir1 to hold the VIPs"
            self.say(f"starting {self.options.directors} director(s); waiting for {wait}")
            if self.options.scaleout:
                scaleout.start(self, timeout_s)
            else:
                self._directors(timeout_s)
        return self.state()

    def _exports(self) -> None:
        (self.workdir / "realserver.yaml").write_text(realserver_site(self.lab, self.options))
        sample = os.urandom(SAMPLE_SIZE)
        for name in [n for n in self.lab.nodes if n.startswith("rs")]:
            export = self.workdir / name
            (export / "upload").mkdir(parents=True)
            (export / "hello.txt").write_text(f"served by {name}\n")
            (export / "random-1MiB.bin").write_bytes(sample)
            os.chmod(export, 0o755)
            os.chmod(export / "upload", 0o1777)
        (self.workdir / "export").mkdir()

    def _realservers(self) -> None:
        site = self.workdir / "realserver.yaml"
        for name in [n for n in self.lab.nodes if n.startswith("rs")]:
            self.say(f"{name}: gridlb realserver apply (VIPs on lo, ARP suppressed)")
            node = self.lab.node(name)
            addrs = [str(node.ipv4)] + ([str(node.ipv6)] if self.options.ipv6 else [])
            realserver_apply(self.lab, name, site, addrs)

    def _gridftp(self) -> None:
        for name in [n for n in self.lab.nodes if n.startswith("rs")]:
            node = self.lab.node(name)
            export = self.workdir / name
            if self.options.gridftp == "gridlb":
                for fam in self.options.families:
                    addr = str(node.ipv4 if fam == 4 else node.ipv6)
                    # with direct routing, clients reach the server at the VIP (on its lo) as well as at
                    # its own address: listen on every address, advertise its own for data
                    host = ("::" if fam == 6 else "0.0.0.0") if self.options.dataplane == "dr" else addr
                    listen = f"[{host}]:{PORT}" if fam == 6 else f"{host}:{PORT}"
                    argv = _gridlb_argv(
                        "gridftp-server", "--root", str(export), "--listen", listen, "--data-address", addr
                    )
                    self.spawn(name, f"gridftp{fam}", argv)
                continue
            globus = ["globus-gridftp-server", "-aa", "-anonymous-user", "nobody", "-p", str(PORT)]
            globus += ["-home-dir", f"{self.workdir}/export"]
            if self.options.ipv6:
                # Globus takes one -data-interface, and an address of the wrong family makes it
                # advertise 127.0.0.1 (IPv4) or the dialled address (IPv6). A name that resolves to both
                # of the server's addresses works for both: the namespace's own /etc/hosts (ip netns
                # exec mounts /etc/netns/NS/hosts over /etc/hosts) has it; -epsv-ip puts the address
                # in EPSV replies.
                if not NETNS_ETC.exists():
                    self.created.append(str(NETNS_ETC))
                hosts = NETNS_ETC / node.ns / "hosts"
                hosts.parent.mkdir(parents=True, exist_ok=True)
                me = os.uname().nodename  # Globus must resolve its host name to start
                hosts.write_text(f"127.0.0.1 localhost\n{node.ipv4} {name} {me}\n{node.ipv6} {name} {me}\n")
                globus += ["-data-interface", name, "-epsv-ip"]
            else:
                globus += ["-data-interface", str(node.ipv4)]
            # the export directory is bind-mounted on one path in the server's own mount namespace
            # (ip netns exec gives each command one), so URLs are the same on every real server
            # while each serves its own files
            script = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
            self.spawn(
                name, "gridftp", ["sh", "-c", script, "sh", str(export), f"{self.workdir}/export", *globus]
            )
        for name in [n for n in self.lab.nodes if n.startswith("rs")]:
            wanted = len(self.options.families) if self.options.gridftp == "gridlb" else 1
            self._wait_listening(name, wanted, 20.0)

    def _wait_listening(self, node: str, count: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            out = self.lab.exec(node, ["ss", "-ltnH", f"sport = :{PORT}"], check=False).stdout
            if len(out.splitlines()) >= count:
                return
            for proc in self.procs:
                if proc.node == node and not alive(proc):
                    raise LabStateError(f"{node}: {proc.role} exited: {_tail(proc.log)}")
            time.sleep(0.05)
        raise LabStateError(
            f"{node}: the GridFTP server does not listen on port {PORT} after {timeout_s:g} s"
        )

    def _directors(self, timeout_s: float) -> None:
        sockets = []
        for i in range(self.options.directors):
            node = f"dir{i + 1}"
            spec = RouterSpec(node, "gridlb", 150 if i == 0 else 100, state="MASTER" if i == 0 else "BACKUP")
            sock = self.workdir / f"{node}.sock"
            site = self.workdir / f"{node}.yaml"
            site.write_text(director_site(self.lab, self.options, spec, sock))
            self.spawn(node, "director", _gridlb_argv("director", "run", str(site), "--grace", "0"))
            sockets.append((node, sock))
        deadline = time.monotonic() + timeout_s
        for node, sock in sockets:
            while not director_ready(sock):
                proc = next(p for p in self.procs if p.node == node and p.role == "director")
                if not alive(proc):
                    raise LabStateError(f"{node}: gridlb director exited: {_tail(proc.log)}")
                if time.monotonic() > deadline:
                    raise LabStateError(f"{node}: the director was not ready after {timeout_s:g} s")
                time.sleep(0.1)
        # dir1 has the highest priority: the lab is up once it holds every VIP
        while not all(vip_holder(self.state(), fam) == "dir1" for fam in self.options.families):
            if time.monotonic() > deadline:
                raise LabStateError(f"dir1 does not hold the VIPs after {timeout_s:g} s")
            time.sleep(0.1)


def _tail(path: str, n: int = 1500) -> str:
    try:
        return Path(path).read_text(errors="replace")[-n:].strip()
    except OSError:
        return "(no log)"


def director_ready(sock: Path, part: str = "vrrp") -> bool:
    """Return True when the director on `sock` reports `part` (its VRRP or its scale-out status) and
    has every real server in its table."""
    from gridlb.api.client import ControlClient

    if not sock.exists():
        return False
    try:
        with ControlClient(str(sock), timeout_s=5) as client:
            status: dict[str, Any] = client.status()
    except Exception:
        return False
    reals = [r for s in status.get("services", []) for r in s["reals"]]
    return bool(status.get(part)) and bool(reals) and all(r["in_table"] for r in reals)


def up(options: LabOptions, *, timeout_s: float = 60.0, say: Callable[[str], None] | None = None) -> LabState:
    """Build the lab, telling `say` each step; on failure remove everything made and raise LabStateError."""
    return _build(options, timeout_s, say).state()


@contextlib.contextmanager
def running(options: LabOptions, *, timeout_s: float = 90.0) -> Iterator[Lab]:
    """`up`, then `down` on leaving (also on failure): the lab for tests and scripts in this process.

    Yields the topology (`netns.Lab`: nodes, addresses, `exec`, `spawn`); what the caller spawns in it
    is killed by `down` with everything else in the lab's namespaces.
    """
    builder = _build(options, timeout_s)
    try:
        yield builder.lab
    finally:
        down(builder.state())
        builder.lab.close()  # reaps the caller's processes (already killed) and forgets the namespaces


def _build(options: LabOptions, timeout_s: float, say: Callable[[str], None] | None = None) -> _Builder:
    if options.dataplane not in DATAPLANES:
        have = ", ".join(DATAPLANES)
        raise LabStateError(f"dataplane {options.dataplane!r} is not in this build (available: {have})")
    if options.start not in START_KINDS:
        raise LabStateError(f"start {options.start!r}: expected one of {', '.join(START_KINDS)}")
    if options.start == "all" and 0 in (options.realservers, options.directors):
        raise LabStateError("--realservers 0 and --directors 0 need --start realservers or none")
    if state_path(options.name).exists():
        raise LabStateError(
            f"a lab named {options.name!r} exists already (`gridlb lab down --name {options.name}`)"
        )
    stale = [ns for ns in _netns_list() if ns.startswith(options.prefix + "-")]
    if stale:
        raise LabStateError(f"namespaces {', '.join(stale)} exist without a state file; delete them first")
    builder = _Builder(options, say)
    try:
        builder.build(timeout_s)
        return builder
    except BaseException as exc:
        with contextlib.suppress(Exception):
            down(builder.state())
        if isinstance(exc, (GridlbError, OSError, subprocess.SubprocessError)):
            raise LabStateError(f"lab {options.name!r} not built: {exc}") from None
        raise


def _netns_list() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------- down / status


def down(state: LabState, *, grace_s: float = 3.0) -> list[str]:
    """Stop every recorded process (SIGTERM, then SIGKILL after `grace_s`), clear the namespaces, delete."""
    done: list[str] = []
    running = [p for p in state.procs if alive(p)]
    for proc in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(alive(p) for p in running) and time.monotonic() < deadline:
        time.sleep(0.05)
    for proc in running:
        if alive(proc):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        done.append(f"stopped {proc.role} on {proc.node} (pid {proc.pid})")
    existing = set(_netns_list())
    for ns in reversed(state.namespaces):
        if ns not in existing:
            continue
        kill_all_in(ns, rounds=20)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        done.append(f"deleted namespace {ns}")
    for ns in state.namespaces:
        shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)  # the real servers' own /etc/hosts
    shutil.rmtree(state.workdir, ignore_errors=True)
    state_path(state.options.name).unlink(missing_ok=True)
    for made in [*state.created, str(STATE_ROOT)]:
        with contextlib.suppress(OSError):
            Path(made).rmdir()  # directories the lab created, when nothing else is in them
    return done


_STARTED = {"realservers": "the real servers only", "none": "nothing"}


def vip_holder(state: LabState, family: int = 4) -> str | None:
    """The director whose eth0 holds the VIP, or None."""
    vip = ip_address(state.vip4 if family == 4 else state.vip6)
    for node in state.nodes:
        if not node.startswith("dir"):
            continue
        out = subprocess.run(
            ["ip", "-n", state.ns_of(node), "-br", "addr", "show", "dev", "eth0"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        if f" {vip}/" in " " + out.replace("\n", " "):
            return node
    return None


def status_lines(state: LabState) -> tuple[list[str], bool]:
    """A human description of the lab and whether every recorded process still runs."""
    o = state.options
    lines = [
        f"lab {o.name}: {o.realservers} real server(s) running {o.gridftp} GridFTP, "
        f"{o.directors} director(s), dataplane {o.dataplane}{', IPv6' if o.ipv6 else ''}"
        f"{', scale-out (BGP to a router, ECMP)' if o.scaleout else ''}"
        + ("" if o.start == "all" else f"; started: {_STARTED[o.start]}"),
        f"{'NODE':<8} {'NAMESPACE':<24} {'IPv4':<15} {'IPv6':<22} MAC",
    ]
    for name, n in state.nodes.items():
        lines.append(f"{name:<8} {n['ns']:<24} {n['ipv4']:<15} {n['ipv6']:<22} {n['mac']}")
    healthy = True
    if o.scaleout:
        router_lines, healthy = scaleout.status_lines(state)
        lines += router_lines
    for fam in () if o.scaleout else o.families:
        vip = state.vip4 if fam == 4 else state.vip6
        holder = vip_holder(state, fam)
        lines.append(f"VIP {vip}: {'held by ' + holder if holder else 'held by no director'}")
        healthy = healthy and (holder is not None or o.start != "all")
    for proc in state.procs:
        ok = alive(proc)
        healthy = healthy and ok
        running = "running" if ok else "NOT RUNNING"
        lines.append(f"{proc.node:<8} {proc.role:<10} pid {proc.pid:<8} {running}  {proc.log}")
    path = state.url_path("random-1MiB.bin")
    host = f"[{state.vip6}]" if o.ipv6 and not state.vip4 else state.vip4
    lines += [
        "try:",
        f"  gridlb lab exec --name {o.name} client -- globus-url-copy ftp://{host}:{PORT}{path} file:///tmp/x",
        f"  gridlb lab exec --name {o.name} dir1 -- gridlb status --socket {state.workdir}/dir1.sock",
    ]
    if o.scaleout:
        lines += [
            f"  gridlb lab exec --name {o.name} remote -- globus-url-copy ftp://{state.vip4}:{PORT}{path} "
            "file:///tmp/x   (through the router)",
            f"  birdc -s {state.workdir}/router-bird.ctl show route   (the router's RIB)",
            f"  gridlb lab exec --name {o.name} dir2 -- gridlb director drain "
            f"--socket {state.workdir}/dir2.sock",
        ]
    return lines, healthy


def exec_argv(state: LabState, node: str, argv: list[str]) -> list[str]:
    """The command line that runs `argv` inside `node`."""
    return ["ip", "netns", "exec", state.ns_of(node), *argv]
