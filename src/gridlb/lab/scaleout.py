"""The scale-out lab: an upstream router running BIRD with ECMP over N directors, and a client behind it.

`gridlb lab up --scaleout --directors N` adds to the lab's bridge a node `router` (host 1 on the
lab's subnet) whose second interface leads to a client network `10.A.(B+1).0/24` with the node
`remote` in it. The router runs a real routing daemon, BIRD 2, with one eBGP session per director
(router AS 65000, directors AS 65001) and `merge paths on`, so the VIP's routes from all directors
become one Linux multipath route; `fib_multipath_hash_policy=1` hashes on the 5-tuple, so flows
from many source ports of one client spread over the directors. Each director runs
`gridlb director run` without VRRP and with `gridlb.scaleout` (its own BIRD, announcing the VIP
while a real server is up); the VIP is on its `lo` (ARP for it suppressed) so the proxy accepts
what the router sends it. The services use `mh` with `mh-port`, `mh-fallback` and
`inhibit_on_failure`, so every director picks the same real server for a flow.

BIRD 2.0.12 installs plain multipath routes (hash-threshold): when a director leaves, flows of the
remaining ones move too. Where the kernel has resilient next-hop groups (Linux >= 5.13), the lab
lets BIRD export to a table of its own and `gridlb.lab.resilient` mirrors the VIP's next hops into
a resilient group, so a director that leaves gives up only its own flows (`--plain-multipath`
keeps BIRD's route as it is). With `mh` moved flows keep their real server; with the proxy
dataplane (which terminates TCP) a moved connection is reset. With `--dataplane dr` the services are DR
and the directors hold no VIP: their ingress rules forward what the router sends, and the real
servers answer the client through the router.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from gridlb.errors import GridlbError
from gridlb.lab.netns import Node

if TYPE_CHECKING:
    from gridlb.lab.system import LabOptions, LabState, _Builder


class LabStateError(GridlbError):
    """The lab named does not exist, already exists, or could not be built (`system` re-exports it)."""


ROUTER_HOST = 1
REMOTE_HOST = 50
ROUTER_ASN = 65000
DIRECTOR_ASN = 65001
#: BGP hold time of the lab's sessions (seconds): a silent director's routes go after this.
HOLD_TIME_S = 6
PORT = 2811


def remote_net(options: LabOptions) -> ipaddress.IPv4Network:
    """Return the client network behind the router."""
    return ipaddress.IPv4Network(f"10.{options.net_a}.{(options.net_b + 1) % 256}.0/24")


#: The kernel table BIRD exports to when `gridlb.lab.resilient` mirrors it into a resilient group.
BIRD_TABLE = 100


def router_conf(
    lab_net: ipaddress.IPv4Network, directors: list[ipaddress.IPv4Address], *, resilient: bool = True
) -> str:
    """Return the router's BIRD configuration: eBGP to every director, multipath into the kernel.

    With `resilient`, BIRD's routes go to kernel table `BIRD_TABLE`, from which
    `gridlb.lab.resilient` builds the resilient group the main table uses.
    """
    me = lab_net.network_address + ROUTER_HOST
    lines = [
        "log stderr { info, remote, warning, error, auth, fatal, bug };",
        f"router id {me};",
        "protocol device {",
        "}",
        "protocol kernel {",
        "  ipv4 { import none; export all; };",
        "  merge paths on;  # equal routes from several directors -> one multipath route (ECMP)",
        *([f"  kernel table {BIRD_TABLE};  # mirrored into a resilient group"] if resilient else []),
        "}",
        "template bgp director {",
        f"  local {me} as {ROUTER_ASN};",
        f"  hold time {HOLD_TIME_S};",
        f"  keepalive time {max(1, HOLD_TIME_S // 3)};",
        "  connect retry time 2;",
        "  error wait time 1, 10;",
        "  ipv4 { import all; export none; };",
        "}",
    ]
    for i, addr in enumerate(directors):
        lines.append(f"protocol bgp dir{i + 1} from director {{ neighbor {addr} as {DIRECTOR_ASN}; }}")
    return "\n".join(lines) + "\n"


def scaleout_section(b: _Builder, node: str, socket_path: Path) -> list[str]:
    """Return the `gridlb:` lines of a scaled-out director's site file."""
    me = b.lab.node(node).ipv4
    router = b.lab.addr4(ROUTER_HOST)
    names = ", ".join(f"dir{i + 1}" for i in range(b.options.directors))
    return [
        "gridlb:",
        f"  director_name: {node}",
        f"  dataplane: {b.options.dataplane}",
        f"  control_socket: {socket_path}",
        "  scaleout:",
        f"    directors: [{names}]",
        f"    local_asn: {DIRECTOR_ASN}",
        f"    router_id: {me}",
        f"    peers: [{{address: {router}, asn: {ROUTER_ASN}, local_address: {me}}}]",
        f"    announce: [{b.lab.vip4}]",
        f"    hold_time_s: {HOLD_TIME_S}",
        "    check_interval_s: 0.5",
        f"    bird_config: {b.workdir}/{node}-bird.conf",
        f"    bird_socket: {b.workdir}/{node}-bird.ctl",
    ]


def director_site(b: _Builder, node: str, socket_path: Path) -> str:
    """A scaled-out director's site file: the VIP's service over every real server, with `mh`."""
    out = [
        "keepalived::virtual_servers:",
        "  gridftp4:",
        f"    ip_address: '{b.lab.vip4}'",
        f"    port: {PORT}",
    ]
    out += ["    lb_algo: mh", "    mh_port: true", "    mh_fallback: true", "    inhibit_on_failure: true"]
    kind = "DR" if b.options.dataplane == "dr" else "NAT"  # the proxy relays (NAT); dr forwards frames
    out += [
        f"    lb_kind: {kind}",
        "    delay_loop: 1",
        "    tcp_check: {connect_timeout: 1}",
        "    real_servers:",
    ]
    for n in [n for n in b.lab.nodes if n.startswith("rs")]:
        out += [f"      - ip_address: '{b.lab.node(n).ipv4}'", f"        port: {PORT}"]
    out += scaleout_section(b, node, socket_path)
    return "\n".join(out) + "\n"


def build_network(b: _Builder) -> None:
    """Add the router and the remote client, and the routes between the two networks."""
    lab, opts = b.lab, b.options
    net = remote_net(opts)
    lan = lab.lan_ns
    router_ns, remote_ns = f"{opts.prefix}-router", f"{opts.prefix}-remote"
    lab._add_ns(router_ns)
    lab._add_ns(remote_ns)
    rmac = lab.mac(ROUTER_HOST)
    _ip(
        "link",
        "add",
        "eth0",
        "netns",
        router_ns,
        "address",
        rmac,
        "type",
        "veth",
        "peer",
        "name",
        "p-router",
        "netns",
        lan,
    )
    _ip("-n", lan, "link", "set", "p-router", "master", "br0", "up")
    _ip("link", "add", "eth1", "netns", router_ns, "type", "veth", "peer", "name", "eth0", "netns", remote_ns)
    router_addr, remote_addr = net.network_address + ROUTER_HOST, net.network_address + REMOTE_HOST
    _ip("-n", router_ns, "addr", "add", f"{lab.addr4(ROUTER_HOST)}/24", "dev", "eth0")
    _ip("-n", router_ns, "addr", "add", f"{router_addr}/24", "dev", "eth1")
    _ip("-n", remote_ns, "addr", "add", f"{remote_addr}/24", "dev", "eth0")
    for ns, dev in ((router_ns, "eth0"), (router_ns, "eth1"), (remote_ns, "eth0")):
        _ip("-n", ns, "link", "set", dev, "up")
    _ip("-n", remote_ns, "route", "add", "default", "via", str(router_addr))
    lab.sysctl(router_ns, {"net.ipv4.ip_forward": "1", "net.ipv4.fib_multipath_hash_policy": "1"})
    if opts.resilient:  # refuse plainly when this kernel has no resilient groups (Linux < 5.13)
        try:
            _ip("-n", router_ns, "nexthop", "add", "id", "1", "dev", "eth0")
            _ip(
                "-n",
                router_ns,
                "nexthop",
                "add",
                "id",
                "2",
                "group",
                "1",
                "type",
                "resilient",
                "buckets",
                "8",
            )
        except LabStateError as exc:
            raise LabStateError(f"no resilient next-hop groups here ({exc}); use --plain-multipath") from None
        _ip("-n", router_ns, "nexthop", "flush")
    lab.nodes["router"] = Node(
        "router", router_ns, "eth0", rmac, lab.addr4(ROUTER_HOST), lab.addr6(ROUTER_HOST)
    )
    lab.nodes["remote"] = Node("remote", remote_ns, "eth0", "", remote_addr, ipaddress.IPv6Address("::"))
    for name, node in lab.nodes.items():
        if name.startswith(("dir", "rs")):
            _ip("-n", node.ns, "route", "add", str(net), "via", str(lab.addr4(ROUTER_HOST)))
        if name.startswith("dir") and opts.dataplane == "proxy":  # the proxy accepts on a local VIP
            _ip("-n", node.ns, "addr", "add", f"{lab.vip4}/32", "dev", "lo")
            lab.sysctl(node.ns, {"net.ipv4.conf.all.arp_ignore": "1", "net.ipv4.conf.all.arp_announce": "2"})


def _ip(*argv: str) -> None:
    proc = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        raise LabStateError(f"ip {' '.join(argv)}: {proc.stderr.strip()}")


def start(b: _Builder, timeout_s: float) -> None:
    """Start the router's BIRD and every director, and wait for an ECMP route over all of them."""
    from gridlb.lab.system import _gridlb_argv, _tail, alive

    directors = [b.lab.node(f"dir{i + 1}").ipv4 for i in range(b.options.directors)]
    conf = b.workdir / "router-bird.conf"
    conf.write_text(router_conf(b.lab.net4, directors, resilient=b.options.resilient))
    if b.options.resilient:
        glue = ["-m", "gridlb.lab.resilient", "--prefix", f"{b.lab.vip4}/32", "--dev", "eth0"]
        b.spawn("router", "resilient", [sys.executable, *glue, "--table", str(BIRD_TABLE)])
    b.spawn("router", "bird", ["bird", "-f", "-c", str(conf), "-s", str(router_socket(b.workdir))])
    sockets = []
    for i in range(b.options.directors):
        node = f"dir{i + 1}"
        sock = b.workdir / f"{node}.sock"
        site = b.workdir / f"{node}.yaml"
        site.write_text(director_site(b, node, sock))
        b.spawn(node, "director", _gridlb_argv("director", "run", str(site), "--grace", "0"))
        sockets.append((node, sock))
    from gridlb.lab.system import director_ready  # system imports this module

    deadline = time.monotonic() + timeout_s
    for node, sock in sockets:
        while not director_ready(sock, "scaleout"):
            proc = next(p for p in b.procs if p.node == node and p.role == "director")
            if not alive(proc):
                raise LabStateError(f"{node}: gridlb director exited: {_tail(proc.log)}")
            if time.monotonic() > deadline:
                raise LabStateError(f"{node}: the director was not ready after {timeout_s:g} s")
            time.sleep(0.1)
    while len(nexthops(b.state())) < b.options.directors or not balanced(b.state()):
        if time.monotonic() > deadline:
            raise LabStateError(
                f"the router has {len(nexthops(b.state()))} of {b.options.directors} routes to the VIP "
                f"after {timeout_s:g} s"
            )
        time.sleep(0.1)


def balanced(state: LabState) -> bool:
    """Return True unless the router's resilient group is still moving buckets to a new next hop.

    Reads the buckets themselves: right after a member joins, the group's `unbalanced_time` can
    still read 0 while the new member holds fewer buckets than its share.
    """
    if not state.options.resilient:
        return True
    router = state.ns_of("router")
    show = ["ip", "-n", router, "-j", "nexthop"]
    group = subprocess.run([*show, "show", "id", "100"], capture_output=True, text=True, check=False).stdout
    buckets = subprocess.run(
        [*show, "bucket", "show", "id", "100"], capture_output=True, text=True, check=False
    ).stdout
    try:
        members = [m["id"] for m in json.loads(group)[0]["group"]]
        owners = [b["bucket"]["nhid"] for b in json.loads(buckets)]
    except (ValueError, LookupError, TypeError):
        return False
    return bucket_shares_even(members, owners)


def bucket_shares_even(members: list[int], owners: list[int]) -> bool:
    """Return True when every member of an equal-weight group owns its share of the buckets (±1)."""
    if not members or not owners:
        return False
    share = len(owners) / len(members)
    return all(abs(owners.count(m) - share) < 1 for m in members) and set(owners) <= set(members)


def router_socket(workdir: Path | str) -> Path:
    """Return the router BIRD's control socket."""
    return Path(workdir) / "router-bird.ctl"


def nexthops(state: LabState) -> list[str]:
    """Return the addresses the router's FIB sends the VIP to (one per director announcing it)."""
    out = subprocess.run(
        ["ip", "-n", state.ns_of("router"), "route", "show", f"{state.vip4}/32"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return re.findall(r"via (\S+)", out)


def rib(state: LabState) -> str:
    """Return the router BIRD's routes to the VIP (`birdc show route for VIP all`)."""
    proc = subprocess.run(
        ["birdc", "-s", str(router_socket(state.workdir)), "show", "route", f"{state.vip4}/32"],
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    )
    return proc.stdout


#: Run in `remote`: open one connection per source port given, read the banner and hold them. Each
#: stdin line `probe` sends NOOP on every connection and prints the ports whose reply is not 200
#: (`bad PORT ...`); any other line resets them all (SO_LINGER 0: no TIME_WAIT) and ends.
HOLD_FLOWS = """
import select, socket, struct, sys
vip, ports = sys.argv[1], [int(p) for p in sys.argv[2].split(",")]
def reply(s):
    line = b""
    while not line.endswith(b"\\n"):
        chunk = s.recv(256)
        if not chunk:
            break
        line += chunk
    return line
socks = {}
for p in ports:  # every connect() at once, then each banner
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.bind(("", p))
    s.setblocking(False)
    s.connect_ex((vip, 2811))
    socks[p] = s
for s in socks.values():
    assert select.select([], [s], [], 5)[1] and not s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    s.settimeout(5)
    assert reply(s).startswith(b"220")
print("ready", flush=True)
while sys.stdin.readline().strip() == "probe":
    bad = []
    for p, s in socks.items():
        try:
            s.sendall(b"NOOP\\r\\n")
            if not reply(s).startswith(b"200"):
                bad.append(p)
        except OSError:
            bad.append(p)
    print("bad", *bad, flush=True)
for s in socks.values():
    s.close()
"""


class HeldFlows:
    """Connections from `remote` with fixed source ports, held open: which director and real server
    each one went through, and which still answer (`probe`). A context manager; leaving resets them.

    The router hashes a connection's packets with the hash its socket put on them (veth keeps the
    sender's skb hash), so a port reopened later may take another path; a held connection keeps one.
    """

    def __init__(self, state: LabState, ports: list[int], python: str) -> None:
        from gridlb.lab.system import exec_argv

        self.state, self.ports = state, ports
        argv = exec_argv(state, "remote", [python, "-c", HOLD_FLOWS, state.vip4, ",".join(map(str, ports))])
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def __enter__(self) -> HeldFlows:
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            self.close()
            raise LabStateError("the flows did not open")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def places(self, wait_s: float = 5.0) -> dict[int, tuple[str, str]]:
        """Return port → (director, real server) from the directors' connection tables.

        Waits up to `wait_s` for every port to show up ESTABLISHED (a dataplane may report its
        connection states with a lag, as dr's poll does).
        """
        deadline = time.monotonic() + wait_s
        while True:
            found = self._places()
            if len(found) == len(self.ports) or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def _places(self) -> dict[int, tuple[str, str]]:
        from gridlb.api.client import ControlClient

        out: dict[int, tuple[str, str]] = {}
        remote = self.state.nodes["remote"]["ipv4"]
        wanted = set(self.ports)
        for name in [n for n in self.state.nodes if n.startswith("dir")]:
            sock = Path(self.state.workdir) / f"{name}.sock"
            if not sock.exists():
                continue
            try:
                with ControlClient(str(sock), timeout_s=20) as client:
                    conns = client.table(connections=True).connections
            except (OSError, GridlbError):
                continue  # a director that is down holds no flow
            for c in conns:
                if str(c.client.addr) == remote and c.client.port in wanted and c.state == "ESTABLISHED":
                    out[c.client.port] = (name, str(c.dest))
        return out

    def probe(self) -> list[int]:
        """Return the ports whose connection no longer answers NOOP with 200."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("probe\n")
        self.proc.stdin.flush()
        words = self.proc.stdout.readline().split()
        if words[:1] != ["bad"]:
            raise LabStateError("the flow holder stopped")
        return [int(w) for w in words[1:]]

    def close(self) -> None:
        """Reset every connection and wait for the holder to end."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.write("close\n")
                self.proc.stdin.flush()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        time.sleep(0.3)  # the directors see the resets


def flow_map(state: LabState, ports: list[int], python: str) -> dict[int, str]:
    """Open flows from `remote` with these source ports and return each one's real server, then reset
    them. Use ports above the ephemeral range (62000+)."""
    with HeldFlows(state, ports, python) as flows:
        return {port: real for port, (_, real) in flows.places().items()}


def add_client_addresses(state: LabState, count: int, first: int) -> list[str]:
    """Give `remote` `count` more addresses on the client network (host numbers from `first`); return them.

    A load generator spreads its connections over them as many clients would: one address opening
    thousands of connections a second to one VIP and port fills its ephemeral ports with TIME_WAIT,
    and then every `connect()` searches them (milliseconds each).
    """
    net = remote_net(state.options)
    ns = state.ns_of("remote")
    out = []
    for host in range(first, first + count):
        if not REMOTE_HOST < host < net.num_addresses - 1:
            raise LabStateError(f"client address host {host} is outside {net} (or the remote's own)")
        addr = str(net.network_address + host)
        _ip("-n", ns, "addr", "replace", f"{addr}/32", "dev", "eth0")
        out.append(addr)
    return out


def status_lines(state: LabState) -> tuple[list[str], bool]:
    """Return the router's view for `gridlb lab status`: which directors it sends the VIP to."""
    dirs = {str(n["ipv4"]): name for name, n in state.nodes.items() if name.startswith("dir")}
    hops = nexthops(state)
    named = ", ".join(f"{dirs.get(h, h)} ({h})" for h in hops) or "no director"
    how = "resilient next-hop group" if state.options.resilient else "hash-threshold multipath"
    lines = [
        f"VIP {state.vip4}: the router sends it to {named} "
        f"(ECMP, {how}, L4 hash; BGP hold time {HOLD_TIME_S} s)",
        f"remote client: {state.nodes['remote']['ipv4']} (behind the router)",
    ]
    return lines, bool(hops)
