"""Builds the seed's topology in network namespaces (client, two directors, real servers on one bridge).

Every node is a namespace `<prefix>-<node>` with one veth `eth0` whose peer is a port of the bridge
`br0`, which lives in its own namespace `<prefix>-lan`; nothing is created in the root namespace.
Addresses are `10.<a>.<b>.<host>/24` and `fd00:<a>:<b>::<host>/64`, MACs `02:<a>:<b>:00:00:<host>`
(deterministic, readable in captures). Use it as a context manager; leaving it kills every process
it started (by PID), then every PID still inside its namespaces, then deletes the namespaces.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

#: Host part of each well-known node's addresses (real servers get 11, 12, ...).
CLIENT_HOST = 50
DIRECTOR_HOSTS = (2, 3, 4, 5)  # dir3 and dir4 exist only in a scale-out lab
RS_FIRST_HOST = 11
VIP_HOST = 100


class LabError(RuntimeError):
    """Building or using the lab failed (a command inside a namespace returned non-zero)."""


@dataclass(frozen=True, slots=True)
class Node:
    """One host of the lab: its namespace, interface and addresses."""

    name: str
    ns: str
    ifname: str
    mac: str
    ipv4: ipaddress.IPv4Address
    ipv6: ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class LabSpec:
    """What to build: the name prefix, the number of real servers and directors, and the subnet id."""

    prefix: str
    realservers: int = 2
    net_a: int = 77
    net_b: int = 1
    directors: int = 2


def default_prefix(tag: str = "glbL") -> str:
    """A unique namespace prefix for this process, e.g. `glbL-12345`."""
    return f"{tag}-{os.getpid()}"


def _run(
    argv: Sequence[str], *, timeout_s: float = 30.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, check=False)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)}: rc={proc.returncode}: {proc.stderr.strip()}")
    return proc


def gridlb_env() -> dict[str, str]:
    """This environment with the source tree gridlb runs from first on PYTHONPATH (for `python -m gridlb`)."""
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def ns_pids(ns: str) -> list[int]:
    """The PIDs of every process inside namespace `ns` (none when it does not exist)."""
    out = _run(["ip", "netns", "pids", ns], check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def kill_all_in(ns: str, *, rounds: int) -> None:
    """SIGKILL every process inside `ns`, again up to `rounds` times while new ones show up."""
    for _ in range(rounds):
        pids = ns_pids(ns)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


@dataclass
class Lab:
    """A running topology; `with Lab(LabSpec(...)) as lab:` builds it and always tears it down."""

    spec: LabSpec
    nodes: dict[str, Node] = field(default_factory=dict)
    _procs: list[subprocess.Popen[Any]] = field(default_factory=list)
    _namespaces: list[str] = field(default_factory=list)

    # ----------------------------------------------------------------- addresses
    @property
    def net4(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"10.{self.spec.net_a}.{self.spec.net_b}.0/24")

    @property
    def net6(self) -> ipaddress.IPv6Network:
        return ipaddress.IPv6Network(f"fd00:{self.spec.net_a:x}:{self.spec.net_b:x}::/64")

    def addr4(self, host: int) -> ipaddress.IPv4Address:
        return self.net4.network_address + host

    def addr6(self, host: int) -> ipaddress.IPv6Address:
        return ipaddress.IPv6Address(int(self.net6.network_address) + int(f"{host}", 16))

    def mac(self, host: int) -> str:
        return f"02:{self.spec.net_a:02x}:{self.spec.net_b:02x}:00:00:{host:02x}"

    @property
    def vip4(self) -> ipaddress.IPv4Address:
        return self.addr4(VIP_HOST)

    @property
    def vip6(self) -> ipaddress.IPv6Address:
        return self.addr6(VIP_HOST)

    @property
    def namespaces(self) -> list[str]:
        """The namespaces created so far, in creation order."""
        return list(self._namespaces)

    @property
    def lan_ns(self) -> str:
        return f"{self.spec.prefix}-lan"

    def node_specs(self) -> list[tuple[str, int]]:
        specs = [("client", CLIENT_HOST)]
        specs += [(f"dir{i + 1}", DIRECTOR_HOSTS[i]) for i in range(self.spec.directors)]
        specs += [(f"rs{i + 1}", RS_FIRST_HOST + i) for i in range(self.spec.realservers)]
        return specs

    # ----------------------------------------------------------------- lifecycle
    def __enter__(self) -> Lab:
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _add_ns(self, ns: str) -> None:
        _run(["ip", "netns", "add", ns])
        self._namespaces.append(ns)
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])

    def build(self) -> None:
        """Create the bridge namespace, every node namespace, their veths and addresses."""
        lan = self.lan_ns
        self._add_ns(lan)
        _run(
            ["ip", "-n", lan, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0"]
        )
        self.sysctl(lan, {"net.ipv6.conf.all.disable_ipv6": "1"})
        _run(["ip", "-n", lan, "link", "set", "br0", "up"])
        for name, host in self.node_specs():
            ns = f"{self.spec.prefix}-{name}"
            node = Node(name, ns, "eth0", self.mac(host), self.addr4(host), self.addr6(host))
            self._add_ns(ns)
            port = f"p-{name}"
            veth = f"add eth0 netns {ns} address {node.mac} type veth peer name {port} netns {lan}"
            _run(["ip", "link", *veth.split()])
            _run(["ip", "-n", lan, "link", "set", port, "master", "br0", "up"])
            self.sysctl(
                ns,
                {
                    "net.ipv6.conf.all.accept_dad": "0",
                    "net.ipv6.conf.default.accept_dad": "0",
                    "net.ipv6.conf.eth0.accept_dad": "0",
                },
            )
            _run(["ip", "-n", ns, "addr", "add", f"{node.ipv4}/24", "dev", "eth0"])
            _run(["ip", "-n", ns, "addr", "add", f"{node.ipv6}/64", "dev", "eth0", "nodad"])
            _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            self.nodes[name] = node

    def close(self) -> None:
        """Kill tracked processes, then anything left in our namespaces (by PID), then delete them."""
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self._procs.clear()
        for ns in reversed(self._namespaces):
            kill_all_in(ns, rounds=3)
            _run(["ip", "netns", "del", ns], check=False)
        self._namespaces.clear()

    # ----------------------------------------------------------------- running things
    def node(self, name: str) -> Node:
        return self.nodes[name]

    def _ns_of(self, node: str) -> str:
        return self.lan_ns if node == "lan" else self.nodes[node].ns

    def argv_in(self, node: str, argv: Sequence[str]) -> list[str]:
        """The command line that runs `argv` inside the node's namespace."""
        return ["ip", "netns", "exec", self._ns_of(node), *argv]

    def exec(
        self, node: str, argv: Sequence[str], *, timeout_s: float = 30.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` in the node's namespace to completion (under a timeout) and return its result."""
        return _run(self.argv_in(node, argv), timeout_s=timeout_s, check=check)

    def spawn(self, node: str, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
        """Start `argv` in the node's namespace; the process is tracked and killed on close."""
        proc: subprocess.Popen[Any] = subprocess.Popen(self.argv_in(node, argv), **popen_kwargs)
        self._procs.append(proc)
        return proc

    def ns_pids(self, ns: str) -> list[int]:
        return ns_pids(ns)

    def sysctl(self, ns: str, values: Mapping[str, str]) -> None:
        """Set sysctls inside a namespace (by writing /proc/sys within it)."""
        args = [f"{k}={v}" for k, v in values.items()]
        _run(["ip", "netns", "exec", ns, "sysctl", "-qw", *args])

    # ----------------------------------------------------------------- observations
    def neigh_mac(self, node: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        """The node's neighbour-cache MAC for `address` (None when there is no entry with a lladdr)."""
        words = self.exec(node, ["ip", "neigh", "show", str(address)], check=False).stdout.split()
        return words[words.index("lladdr") + 1] if "lladdr" in words else None

    def has_address(self, node: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        out = self.exec(node, ["ip", "-br", "addr", "show", "dev", self.nodes[node].ifname]).stdout
        return f" {address}/" in f" {out.replace(chr(10), ' ')}"
