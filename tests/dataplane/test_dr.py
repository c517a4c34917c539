"""The `dr` dataplane end to end in network namespaces: a real director, real servers with the VIP on lo.

Client, director (gridlb director run --no-vrrp, dr dataplane) and three real servers on one bridge.
Checked: new connections spread as the kernel's wlc decides; a drained server gets no new connection
and keeps its established ones; server-to-client packets never reach the director; the ipvsadm
views show counters and connections; globus-url-copy through the VIP onto Globus servers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dataplane.dr_lab import LINE_READER, DrLab, HeldConnections, connect_many
from tests.support import need_root, need_tool, wait_for

pytestmark = pytest.mark.privileged

PORT = 2811


@pytest.fixture
def t() -> Iterator[DrLab]:
    need_root()
    need_tool("nft")
    workdir = Path(tempfile.mkdtemp(prefix="gdr-", dir="/tmp"))
    try:
        with DrLab(f"D{os.getpid()}", workdir) as built:
            yield built
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def wlc_expected(order: list[tuple[str, int]], active: dict[str, int], n: int) -> list[str]:
    """The kernel's wlc (ip_vs_wlc.c) over `order` (kernel list order, newest first) when every
    connection is established before the next one comes: overhead = active * 256, the first
    destination with weight > 0 starts, a later one wins only on a strictly smaller cross product."""
    active = dict(active)
    picks = []
    for _ in range(n):
        cands = [(name, w) for name, w in order if w > 0]
        least, lw = cands[0]
        for name, w in cands[1:]:
            if active[least] * 256 * w > active[name] * 256 * lw:
                least, lw = name, w
        active[least] += 1
        picks.append(least)
    return picks


def install_probe_counters(t: DrLab) -> None:
    """Count TCP segments from the VIP (server-to-client) arriving at the director and at the client."""
    lab = t.lab
    dir_mac = lab.node("dir1").mac
    probe = "\n".join(
        [
            "table netdev probe {",
            "  chain in {",
            '    type filter hook ingress device "eth0" priority -500; policy accept;',
            f"    ip saddr {t.vip4} tcp sport {PORT} counter",
            f"    ip6 saddr {t.vip6} tcp sport {PORT} counter",
            f"    ether saddr {dir_mac} ip saddr {t.vip4} tcp sport {PORT} counter",
            f"    ether saddr {dir_mac} ip6 saddr {t.vip6} tcp sport {PORT} counter",
            "  }",
            "}",
        ]
    )
    for node in ("dir1", "client"):
        subprocess.run(lab.argv_in(node, ["nft", "-f", "-"]), input=probe, text=True, check=True, timeout=10)


def probe_counts(t: DrLab, node: str) -> list[int]:
    """Packet counts of the probe rules: [from VIP v4, from VIP v6, from VIP v4 with the director's
    MAC, from VIP v6 with the director's MAC]."""
    counts = []
    for item in t.nft_json(node, "chain netdev probe in"):
        rule = item.get("rule")
        if rule:
            for expr in rule["expr"]:
                if "counter" in expr:
                    counts.append(int(expr["counter"]["packets"]))
    return counts


def test_wlc_spread_drain_and_replies_bypass_the_director(t: DrLab) -> None:
    t.start_name_servers(PORT)
    weights = {"rs1": 1, "rs2": 2, "rs3": 3}
    t.start_director(t.site({4: PORT, 6: PORT}, weights=weights))
    install_probe_counters(t)
    order = [("rs3", 3), ("rs2", 2), ("rs1", 1)]  # kernel order: the last added first

    # Each connection is established (seen by the dataplane's poll) before the next one comes.
    held = HeldConnections(t, t.vip4, PORT, 12, gap_s=1.2)
    assert held.result["errors"] == []
    expected = wlc_expected(order, {"rs1": 0, "rs2": 0, "rs3": 0}, 12)
    assert held.result["names"] == expected
    v6 = connect_many(t, t.vip6, PORT, 6, gap_s=1.2)
    assert v6["errors"] == []
    assert v6["names"] == wlc_expected(order, {"rs1": 0, "rs2": 0, "rs3": 0}, 6)

    table = t.gridlb("ipvsadm", "--socket", str(t.socket), "-Ln", "--stats")
    assert table.returncode == 0, table.stderr
    rs3 = str(t.lab.node("rs3").ipv4)
    line = next(x for x in table.stdout.splitlines() if f"-> {rs3}:{PORT}" in x)
    assert int(line.split()[2]) == expected.count("rs3")  # Conns
    assert int(line.split()[3]) > 0  # InPkts, from the nft counter of its chain
    conns = t.gridlb("ipvsadm", "--socket", str(t.socket), "-Lnc")
    assert conns.returncode == 0, conns.stderr
    assert sum("ESTABLISHED" in x and f"{rs3}:{PORT}" in x for x in conns.stdout.splitlines()) == 6

    # Drain rs3: no new connection goes to it, its established ones keep working.
    drained = t.gridlb("drain", rs3, "--socket", str(t.socket))
    assert drained.returncode == 0, drained.stderr
    more = connect_many(t, t.vip4, PORT, 6, gap_s=0.2)
    assert more["errors"] == [] and len(more["names"]) == 6
    assert "rs3" not in more["names"]
    assert held.ping() == [True] * 12
    held.release()

    # Server-to-client packets: many reached the client, none from the director's MAC, none at the director.
    client = probe_counts(t, "client")
    director = probe_counts(t, "dir1")
    assert client[0] > 0 and client[1] > 0
    assert client[2:] == [0, 0]
    assert director == [0, 0, 0, 0]


GLOBUS_PORT6 = 2812


def start_globus(t: DrLab, export: Path) -> None:
    """One Globus server per family on every real server, advertising its own address for data."""
    for rs in t.realservers:
        node = t.lab.node(rs)
        for port, extra in (
            (PORT, ["-data-interface", str(node.ipv4)]),
            (GLOBUS_PORT6, ["-epsv-ip", "-data-interface", str(node.ipv6)]),
        ):
            argv = [
                "globus-gridftp-server",
                "-aa",
                "-anonymous-user",
                "nobody",
                "-p",
                str(port),
                "-home-dir",
                str(export),
                *extra,
            ]
            t.lab.spawn(rs, argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for rs in t.realservers:
        t.wait_listening(rs, PORT)
        t.wait_listening(rs, GLOBUS_PORT6)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_globus_url_copy_through_the_vip(t: DrLab) -> None:
    need_tool("globus-gridftp-server", "globus-url-copy")
    export = t.workdir / "export"
    export.mkdir()
    export.chmod(0o1777)
    t.workdir.chmod(0o755)
    src = export / "src.bin"
    src.write_bytes(os.urandom(8 << 20))
    src.chmod(0o644)
    start_globus(t, export)
    t.start_director(t.site({4: PORT, 6: GLOBUS_PORT6}))
    local = t.workdir / "client"
    local.mkdir()
    results = []
    for fam, vip, port in ((4, t.vip4, PORT), (6, f"[{t.vip6}]", GLOBUS_PORT6)):
        for parallel in ([], ["-p", "4"]):
            tag = f"v{fam}{'p4' if parallel else 's'}"
            v6 = ["-ipv6"] if fam == 6 else []
            down = local / f"down-{tag}.bin"
            argv = [
                "timeout",
                "60",
                "globus-url-copy",
                *v6,
                *parallel,
                f"ftp://{vip}:{port}{src}",
                f"file://{down}",
            ]
            r = t.lab.exec("client", argv, timeout_s=90, check=False)
            results.append((f"download {tag}", r.returncode, r.stderr[-300:]))
            assert down.exists() and sha256(down) == sha256(src), f"download {tag}: {r.stderr[-500:]}"
            up = export / f"up-{tag}.bin"
            argv = [
                "timeout",
                "60",
                "globus-url-copy",
                *v6,
                *parallel,
                f"file://{down}",
                f"ftp://{vip}:{port}{up}",
            ]
            r = t.lab.exec("client", argv, timeout_s=90, check=False)
            results.append((f"upload {tag}", r.returncode, r.stderr[-300:]))
            assert up.exists() and sha256(up) == sha256(src), f"upload {tag}: {r.stderr[-500:]}"
    assert [x for x in results if x[1] != 0] == []
    # The control connections went through the director: its chains counted client packets.
    table = t.gridlb("ipvsadm", "--socket", str(t.socket), "-Ln", "--stats")
    conns = [int(x.split()[2]) for x in table.stdout.splitlines() if x.startswith("TCP")]
    assert sum(conns) >= 8, table.stdout


def vrrp_head(t: DrLab, node: str, state: str, priority: int) -> str:
    """A VRRPv3 instance holding the IPv4 VIP, unicast between dir1 and dir2."""
    lab = t.lab
    peer = "dir2" if node == "dir1" else "dir1"
    return "\n".join(
        [
            "keepalived::vrrp_instances:",
            "  VI_4:",
            "    interface: eth0",
            f"    state: {state}",
            "    virtual_router_id: 61",
            f"    priority: {priority}",
            "    advert_int: 0.5",
            "    version: 3",
            f"    virtual_ipaddress: ['{t.vip4}/24']",
            f"    unicast_source_ip: '{lab.node(node).ipv4}'",
            f"    unicast_peers: ['{lab.node(peer).ipv4}']",
        ]
    )


@pytest.fixture
def pair() -> Iterator[DrLab]:
    need_root()
    need_tool("nft")
    workdir = Path(tempfile.mkdtemp(prefix="gdrp-", dir="/tmp"))
    try:
        with DrLab(f"E{os.getpid()}", workdir, net_b=3, static_vip=False) as built:
            yield built
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_established_connections_keep_their_real_server_after_a_failover(pair: DrLab) -> None:
    t = pair
    t.start_name_servers(PORT)
    sync = ("  dr: {sync_interface: eth0}",)
    for node, state, prio in (("dir1", "MASTER", 150), ("dir2", "BACKUP", 100)):
        head = vrrp_head(t, node, state, prio)
        t.start_director(t.site({4: PORT}, node=node, head=head, gridlb_extra=sync), node)
    wait_for(lambda: t.lab.has_address("dir1", t.lab.vip4), 20, "dir1 to hold the VIP")
    assert not t.lab.has_address("dir2", t.lab.vip4)

    held = HeldConnections(t, t.vip4, PORT, 6, gap_s=0.2)
    assert held.result["errors"] == [] and len(held.result["names"]) == 6

    def synced() -> list[str]:
        out = t.gridlb("ipvsadm", "--socket", str(t.socket_of("dir2")), "-Lnc").stdout
        return sorted(x.split()[-1] for x in out.splitlines() if "ESTABLISHED" in x)

    master = t.gridlb("ipvsadm", "--socket", str(t.socket_of("dir1")), "-Lnc").stdout
    want = sorted(x.split()[-1] for x in master.splitlines() if "ESTABLISHED" in x)
    assert len(want) == 6
    wait_for(lambda: synced() == want, 10, "the backup to learn the 6 flows")

    # The master dies: its process is killed and its link goes down (its kernel table forwards no more).
    proc = t.directors["dir1"]
    proc.kill()
    proc.wait(timeout=10)
    t.lab.exec("dir1", ["ip", "link", "set", "eth0", "down"])
    wait_for(lambda: t.lab.has_address("dir2", t.lab.vip4), 20, "dir2 to take the VIP")
    wait_for(
        lambda: t.lab.neigh_mac("client", t.lab.vip4) == t.lab.node("dir2").mac,
        20,
        "the client to follow the VIP",
    )
    assert held.ping() == [True] * 6  # every established connection reached its own real server again
    again = connect_many(t, t.vip4, PORT, 3, gap_s=0.2)
    assert again["errors"] == [] and len(again["names"]) == 3
    held.release()


#: Connects from a fixed client port, closes that connection (RST, or FIN and the client's TIME_WAIT
#: reused as with tcp_tw_reuse), connects again from the same port at once, and checks the new
#: connection still echoes after the FIN timeout of the old one ran out.
REUSE = r"""
import json, socket, struct, sys, time
vip, port, first_port, wait = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
"""
REUSE += (
    LINE_READER
    + r"""
def conn(p):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.settimeout(5)
    s.bind(("", p))
    s.connect((vip, port))
    return s, line(s)
out = []
for i, how in enumerate(["rst", "rst", "fin"]):
    p = first_port + i
    s, name = conn(p)
    if how == "rst":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    time.sleep(0.05 if i == 0 else 1.2)  # the first at once, the others once a poll has seen the close
    again, name2 = conn(p)
    again.sendall(b"ping\n")
    out.append({"port": p, "how": how, "names": [name, name2], "echo": line(again) == "ping", "s": again})
time.sleep(wait)
for o in out:
    s = o.pop("s")
    try:
        s.sendall(b"later\n"); o["later"] = line(s) == "later"
    except OSError as exc:
        o["later"] = str(exc)
    s.close()
print(json.dumps(out), flush=True)
"""
)


def test_a_client_port_reused_within_the_fin_timeout_is_a_new_connection(t: DrLab) -> None:
    """As IPVS with conn_reuse_mode: a SYN on the four numbers of a closing flow is scheduled anew,
    and the new connection outlives the old one's FIN timeout (the old code forwarded the SYN on the
    old flow, which then expired under the new connection and dropped its packets)."""
    t.start_name_servers(PORT)
    t.start_director(t.site({4: PORT}, lb_algo="rr", gridlb_extra=("  timeouts:", "    tcpfin: 3")))
    # tcp_tw_reuse lets the client's own stack reuse a port in TIME_WAIT (the FIN case)
    t.lab.exec("client", ["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"])
    argv = [sys.executable, "-c", REUSE, t.vip4, str(PORT), "41000", "5"]
    got = json.loads(t.lab.exec("client", argv, timeout_s=60).stdout.strip().splitlines()[-1])
    assert [(o["how"], o["echo"], o["later"]) for o in got] == [
        ("rst", True, True),
        ("rst", True, True),
        ("fin", True, True),
    ], got
    assert [o["names"][0] != o["names"][1] for o in got] == [True] * 3  # rr: rescheduled, not the old flow
    status = t.status()
    assert status is not None
    assert status["counters"]["dataplane_events"]["reused_ports"] == 3
