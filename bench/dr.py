"""Benchmark of the `dr` dataplane in network namespaces: packets/s, new connections/s, GridFTP uploads.

Topology (tests/dataplane/dr_lab.py): client, one director running `gridlb director run` with the dr
dataplane, three real servers with the VIP on lo, one bridge. Each round measures, ours then the peer
(or the peer first, alternating), and every figure is the median and spread of the rounds:

* pps: one established flow per CPU (held connections through the VIP, so each is in the director's
  flow map), 60-byte ACK frames of each flow blasted by netsniff-ng's `trafgen` (one process pinned
  per CPU, C, TX ring) along three paths: through the director, through the least nft rule that
  forwards on the director (bare MAC rewrite and `fwd`), and straight at each flow's real server. A
  benchmark-only nft netdev rule on each real server's ingress counts and drops the marked frames, so
  no real server's TCP stack is in the path. Offered (trafgen), forwarded (the director's chain
  counters) and delivered (the real servers' drop counters) pps, and the softirq CPU-seconds the
  machine spent: on veths the whole path runs in softirq on the sender's CPU, so the difference of
  softirq time per packet between a path and the direct one is the director's share (an upper
  bound: it also holds the second bridge pass and veth hop);
* the same for gridlb's ruleset alone (`dr_rules.transaction`, one flow per CPU) in three
  namespaces of its own (generator, veth, director, veth, sink; no bridge), against a bare `fwd`;
* new connections/s: connect, read the banner, close, with 32 concurrent clients, through the VIP
  and straight to one real server;
* upload MB/s: globus-url-copy -p 4 of a file through `ftp://VIP:2811` and straight to a real
  server (data channels go to the real server's own address either way), twice: with few flows
  tracked (before the connections/s phase) and with the tens of thousands that phase leaves
  tracked (closing, for the FIN timeout). Each row says how many flows the director tracked then
  (`ipvsadm -Ln` ActiveConn + InActConn) and the CPU the director process used in that phase.

Every load loop is bounded in count and time; namespaces carry a unique prefix and are deleted with
their processes (by PID) at the end. The machine is shared: figures are indicative.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from ipaddress import ip_address
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.dataplane.dr_lab import DrLab  # noqa: E402

from gridlb.dataplane.dr_rules import DestRule, FlowKey, Ruleset, transaction  # noqa: E402
from gridlb.lab import procfs  # noqa: E402

PORT = 2811  # GridFTP
BANNER_PORT = 2899  # the name servers (pps and connections/s)
#: The blasted frames carry this TTL (the real servers' sinks drop exactly those) and IP id.
MARK_TTL, MARK_ID = 61, 0x6B6B
#: The three paths a frame is blasted along: through gridlb's table, through the least nft rule
#: that can forward (the floor for any netdev DR on this path), and straight to the real server.
PATHS = ("dr", "bare", "direct")
SINK_TABLE = "gridlb_bench"

#: Opens N connections to VIP:PORT, prints "local-port name" for each, then waits for stdin to close.
HOLD = r"""
import socket, sys
held = []
for _ in range(int(sys.argv[3])):
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
    held.append(s)
    print(s.getsockname()[1], s.recv(64).decode().strip(), flush=True)
sys.stdin.read()
"""

#: C concurrent clients for at most SECONDS and MAX connections: connect, read the banner, close.
CPS = r"""
import asyncio, json, sys, time
host, port, conc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
secs, maxc, srcs = float(sys.argv[4]), int(sys.argv[5]), sys.argv[6].split(",")
done = errors = 0
async def worker(end, src):
    global done, errors
    while time.monotonic() < end and done + errors < maxc:
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(host, port, local_addr=(src, 0)), 5)
            await asyncio.wait_for(r.readline(), 5)
            w.close()
            done += 1
        except (OSError, asyncio.TimeoutError):
            errors += 1
async def main():
    t0 = time.monotonic()
    await asyncio.gather(*(worker(t0 + secs, srcs[i % len(srcs)]) for i in range(conc)))
    print(json.dumps({"conns": done, "errors": errors, "elapsed": time.monotonic() - t0}))
asyncio.run(main())
"""


def chain_packets(t: DrLab) -> int:
    """Packets counted by the director's destination chains (what it forwarded)."""
    total = 0
    for item in t.nft_json("dir1", "counters table netdev gridlb_dr"):
        if "counter" in item:
            total += int(item["counter"]["packets"])
    return total


def rule_packets(t: DrLab, node: str) -> int:
    """Packets counted by the rules of the node's benchmark table (0 without one)."""
    total = 0
    for item in t.nft_json(node, f"table netdev {SINK_TABLE}"):
        expr = item.get("rule", {}).get("expr", [])
        total += sum(int(e["counter"]["packets"]) for e in expr if "counter" in e)
    return total


def ingress_table(rules: list[str]) -> str:
    """The benchmark's own table: `rules` at eth0's ingress, ahead of any other chain."""
    script = f"table netdev {SINK_TABLE} {{\n chain in {{\n"
    script += '  type filter hook ingress device "eth0" priority -500;\n'
    return script + "".join(f"  {r}\n" for r in rules) + " }\n}\n"


def bench_table(t: DrLab, node: str, rules: list[str]) -> None:
    """Install `ingress_table(rules)` on `node`."""
    path = t.workdir / f"bench-{node}.nft"
    path.write_text(ingress_table(rules))
    t.lab.exec(node, ["nft", "-f", str(path)])


def install_sinks(t: DrLab) -> None:
    """On every real server: count and drop the marked frames at eth0's ingress (benchmark only)."""
    for rs in t.realservers:
        bench_table(t, rs, [f"ip ttl {MARK_TTL} ip daddr {t.vip4} tcp dport {BANNER_PORT} counter drop"])


def sink_packets(t: DrLab) -> int:
    """Marked frames the real servers' sinks dropped (what was delivered)."""
    return sum(rule_packets(t, rs) for rs in t.realservers)


def bare_forward(t: DrLab, flows: list[tuple[int, str]]) -> None:
    """On the director: the least rule that forwards each flow's frames (MAC rewrite and fwd)."""
    me = t.lab.node("dir1").mac
    rules = [
        f"ip id {MARK_ID} tcp sport {port} counter ether saddr set {me} "
        f'ether daddr set {t.lab.node(rs).mac} fwd to "eth0"'
        for port, rs in flows
    ]
    bench_table(t, "dir1", rules)


def softirq_s() -> float:
    """CPU-seconds the whole machine has spent in softirq (from /proc/stat)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return int(fields[7]) / procfs.TICKS_PER_S


def _bytes(mac: str) -> str:
    return ", ".join("0x" + b for b in mac.split(":"))


def _octets(addr: str) -> str:
    return ", ".join(addr.split("."))


def trafgen_config(t: DrLab, flows: list[tuple[int, str]], via_director: bool) -> str:
    """One 60-byte ACK frame per flow (client port, real server), flow i on CPU i (trafgen's syntax)."""
    lab = t.lab
    client = lab.node("client")
    out = []
    for cpu, (sport, rs) in enumerate(flows):
        dst_mac = lab.node("dir1").mac if via_director else lab.node(rs).mac
        out.append(
            f"cpu({cpu}): {{ {_bytes(dst_mac)}, {_bytes(client.mac)}, c16(0x0800), "
            f"0x45, 0, c16(40), c16({MARK_ID}), c16(0x4000), {MARK_TTL}, 6, csumip(14, 33), "
            f"{_octets(str(client.ipv4))}, {_octets(t.vip4)}, c16({sport}), c16({BANNER_PORT}), "
            "c32(1), c32(1), 0x50, 0x10, c16(65535), csumtcp(14, 34), c16(0), fill(0, 6) }"
        )
    return "\n".join(out) + "\n"


def blast(
    t: DrLab, flows: list[tuple[int, str]], path: str, seconds: float, max_packets: int
) -> dict[str, float]:
    """Blast every flow's frames along `path` for `seconds`: offered, forwarded, delivered pps, softirq."""
    cfg = t.workdir / "trafgen.cfg"
    cfg.write_text(trafgen_config(t, flows, path != "direct"))
    if path == "bare":
        bare_forward(t, flows)
    counters: dict[str, Callable[[], int]] = {
        "dr": lambda: chain_packets(t),
        "bare": lambda: rule_packets(t, "dir1"),
    }
    forwarded_now = counters.get(path, lambda: 0)
    argv = ["timeout", "-s", "INT", str(seconds), "trafgen", "-i", str(cfg), "-o", "eth0"]
    argv += ["-P", str(len(flows)), "-Q", "-n", str(max_packets)]
    before_sink, before_fwd, before_si = sink_packets(t), forwarded_now(), softirq_s()
    try:
        t0 = time.monotonic()
        r = t.lab.exec("client", argv, timeout_s=seconds + 30, check=False)
        el = time.monotonic() - t0
        si = softirq_s() - before_si
        forwarded = forwarded_now() - before_fwd
    finally:
        if path == "bare":
            t.lab.exec("dir1", ["nft", "delete", "table", "netdev", SINK_TABLE])
    sent = re.search(r"(\d+) packets outgoing", r.stdout + r.stderr)
    if sent is None:
        raise RuntimeError(f"trafgen: rc={r.returncode}: {(r.stdout + r.stderr)[-500:]}")
    delivered = sink_packets(t) - before_sink
    return {
        "offered": int(sent.group(1)) / el,
        "forwarded": forwarded / el,
        "delivered": delivered / el,
        "softirq_per_packet_s": si / max(delivered, 1),
        # packets delivered per softirq CPU-second: the path's capacity per core
        "per_core": delivered / si if si > 0 else 0.0,
    }


def _sh(argv: list[str], timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=True)


def ruleset_alone(rounds: int, seconds: float, ncpu: int) -> dict[str, list[dict[str, float]]]:
    """gridlb's ruleset alone against a bare `fwd`: generator -veth- director -veth- sink, no bridge.

    The director's table is the one `dr_rules.transaction` renders (one destination, one flow per
    CPU, as the dataplane would program them). Three namespaces with a unique prefix, deleted at
    the end; trafgen is the only process started in them and ends by its timeout.
    """
    pre = f"Bdrr{os.getpid()}"
    ns = {n: f"{pre}-{n}" for n in ("gen", "dir", "sink")}
    got: dict[str, list[dict[str, float]]] = {"dr": [], "bare": []}
    work = Path(tempfile.mkdtemp(prefix="gdrr-", dir="/tmp"))
    try:
        for name in ns.values():
            _sh(["ip", "netns", "add", name])
        for a, adev, b, bdev in (("gen", "eth0", "dir", "eth0"), ("dir", "eth1", "sink", "eth0")):
            _sh(["ip", "link", "add", adev, "netns", ns[a], "type", "veth", "peer", bdev, "netns", ns[b]])
        for node, dev in (("gen", "eth0"), ("dir", "eth0"), ("dir", "eth1"), ("sink", "eth0")):
            _sh(["ip", "-n", ns[node], "link", "set", dev, "up"])

        def mac(node: str, dev: str) -> str:
            out = _sh(["ip", "-n", ns[node], "-j", "link", "show", dev]).stdout
            return str(json.loads(out)[0]["address"])

        dir_in, dir_out, sink = mac("dir", "eth0"), mac("dir", "eth1"), mac("sink", "eth0")
        client, vip = "10.0.0.1", "10.0.0.100"

        def nft(node: str, script: str) -> None:
            path = work / f"{node}.nft"
            path.write_text(script)
            _sh(["ip", "netns", "exec", ns[node], "nft", "-f", str(path)])

        def sink_count() -> int:
            out = _sh(["ip", "netns", "exec", ns["sink"], "nft", "-j", "list", "table", "netdev", SINK_TABLE])
            items = json.loads(out.stdout)["nftables"]
            exprs = [e for i in items for e in i.get("rule", {}).get("expr", [])]
            return sum(int(e["counter"]["packets"]) for e in exprs if "counter" in e)

        nft("sink", ingress_table([f"ip ttl {MARK_TTL} counter drop"]))
        dest = DestRule("d1", 4, "eth1", dir_out, sink)
        rules = Ruleset(("eth0",), True, frozenset({(ip_address(vip), BANNER_PORT)}), (dest,))
        keys = [FlowKey(ip_address(client), 40000 + i, ip_address(vip), BANNER_PORT) for i in range(ncpu)]
        gridlb_table = transaction(None, rules, add_flows=[(k, "d1") for k in keys])
        fwd = f'ether saddr set {dir_out} ether daddr set {sink} fwd to "eth1"'
        bare_table = ingress_table([f"ip ttl {MARK_TTL} {fwd}"])
        cfg = work / "trafgen.cfg"
        cfg.write_text(
            "\n".join(
                f"cpu({i}): {{ {_bytes(dir_in)}, {_bytes('02:00:00:00:00:01')}, c16(0x0800), "
                f"0x45, 0, c16(40), c16({MARK_ID}), c16(0x4000), {MARK_TTL}, 6, csumip(14, 33), "
                f"{_octets(client)}, {_octets(vip)}, c16({k.client_port}), c16({BANNER_PORT}), "
                "c32(1), c32(1), 0x50, 0x10, c16(65535), csumtcp(14, 34), c16(0), fill(0, 6) }"
                for i, k in enumerate(keys)
            )
            + "\n"
        )
        for r in range(rounds):
            for variant in ("dr", "bare") if r % 2 == 0 else ("bare", "dr"):
                nft("dir", gridlb_table if variant == "dr" else bare_table)
                before, before_si = sink_count(), softirq_s()
                argv = ["ip", "netns", "exec", ns["gen"], "timeout", "-s", "INT", str(seconds)]
                argv += ["trafgen", "-i", str(cfg), "-o", "eth0", "-P", str(ncpu), "-Q", "-n", "200000000"]
                t0 = time.monotonic()
                subprocess.run(argv, capture_output=True, timeout=seconds + 30, check=False)
                el = time.monotonic() - t0
                si = softirq_s() - before_si
                n = sink_count() - before
                got[variant].append({"delivered": n / el, "per_core": n / si if si > 0 else 0.0})
                table = "gridlb_dr" if variant == "dr" else SINK_TABLE
                _sh(["ip", "netns", "exec", ns["dir"], "nft", "delete", "table", "netdev", table])
    finally:
        for name in ns.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)
    return got


def hold_flows(t: DrLab, n: int) -> tuple[subprocess.Popen[str], list[tuple[int, str]]]:
    """`n` connections through the VIP, held open: (the holder, [(client port, real server)])."""
    hold = t.lab.spawn(
        "client",
        [sys.executable, "-c", HOLD, t.vip4, str(BANNER_PORT), str(n)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert hold.stdout is not None
    flows = []
    for _ in range(n):
        port, rs = hold.stdout.readline().split()
        flows.append((int(port), rs))
    time.sleep(1.2)  # two polls: the flows are ESTABLISHED in the dataplane's bookkeeping
    return hold, flows


#: Host numbers on the lab's network for the client's extra source addresses (fresh ones per measure).
_CPS_HOSTS = iter(range(150, 250))


def cps_sources(t: DrLab, count: int = 4) -> str:
    """Give the client `count` fresh addresses on its network; return them comma-separated.

    The client closes first, so each connection leaves a TIME_WAIT socket on it for 60 s; once tens
    of thousands sit on one address and destination, every connect() searches them (ms each) and
    the client, not the path, sets the rate. Fresh addresses per measurement spread them, as many
    clients would.
    """
    lab = t.lab
    out = lab.exec("client", ["ip", "-j", "-4", "addr", "show", "dev", "eth0"]).stdout
    info = next(a for a in json.loads(out)[0]["addr_info"] if a["local"] == str(lab.node("client").ipv4))
    net = ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}").network
    addrs = []
    for _ in range(count):
        addr = str(net.network_address + next(_CPS_HOSTS))
        lab.exec("client", ["ip", "addr", "add", f"{addr}/32", "dev", "eth0"])
        addrs.append(addr)
    return ",".join(addrs)


def measure_cps(t: DrLab, host: str, seconds: float, max_conns: int) -> float:
    srcs = cps_sources(t)
    argv = [sys.executable, "-c", CPS, host, str(BANNER_PORT), "32", str(seconds), str(max_conns), srcs]
    out = t.lab.exec("client", argv, timeout_s=seconds + 60).stdout
    got = json.loads(out.strip().splitlines()[-1])
    if got["errors"]:
        raise RuntimeError(f"connections to {host}: {got['errors']} failed")
    return float(got["conns"]) / float(got["elapsed"])


def measure_upload(t: DrLab, host: str, src: Path) -> float:
    argv = ["timeout", "120", "globus-url-copy", "-p", "4", f"file://{src}", f"ftp://{host}:{PORT}/dev/null"]
    t0 = time.monotonic()
    r = t.lab.exec("client", argv, timeout_s=150, check=False)
    el = time.monotonic() - t0
    if r.returncode != 0:
        raise RuntimeError(f"globus-url-copy to {host}: {r.stderr[-500:]}")
    return src.stat().st_size / el / 1e6


def tracked_flows(t: DrLab) -> int:
    """The flows the director tracks now: ActiveConn + InActConn of every real server (`ipvsadm -Ln`)."""
    out = t.gridlb("ipvsadm", "--socket", str(t.socket), "-Ln").stdout
    rows = [x.split() for x in out.splitlines() if x.strip().startswith("->")]
    return sum(int(r[4]) + int(r[5]) for r in rows if len(r) >= 6 and r[4].isdigit())  # not the header


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread) process `pid` has used."""
    return sum(procfs.cpu_times(pid))


def spread(xs: list[float], spec: str) -> str:
    """`median (min–max)`."""
    return f"{statistics.median(xs):{spec}} ({min(xs):{spec}}–{max(xs):{spec}})"


def paired(
    rounds: int, ours: Callable[[], float], peer: Callable[[], float]
) -> tuple[list[float], list[float]]:
    """Run ours and the peer once per round, alternating which goes first."""
    a: list[float] = []
    b: list[float] = []
    for i in range(rounds):
        if i % 2:
            b.append(peer())
            a.append(ours())
        else:
            a.append(ours())
            b.append(peer())
    return a, b


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short runs, 3 rounds (under a minute)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/dr.py needs root (network namespaces, nftables)", file=sys.stderr)
        return 2
    if not shutil.which("trafgen"):
        print("bench/dr.py needs trafgen (Debian netsniff-ng)", file=sys.stderr)
        return 2
    q = args.quick
    pps_s, cps_s, up_mib, rounds = (1.5, 1.0, 256, 3) if q else (5.0, 5.0, 1024, 5)
    ncpu = max(2, os.cpu_count() or 1)
    alone = ruleset_alone(rounds, pps_s, ncpu)
    workdir = Path(tempfile.mkdtemp(prefix="gdrb-", dir="/tmp"))
    workdir.chmod(0o755)
    rows: list[tuple[str, str, str, str]] = []
    result: dict[str, str] = {}
    try:
        with DrLab(f"Bdr{os.getpid()}", workdir, net_b=7) as t:
            t.start_name_servers(BANNER_PORT)
            have_globus = shutil.which("globus-gridftp-server") and shutil.which("globus-url-copy")
            if have_globus:
                for rs in t.realservers:
                    node = t.lab.node(rs)
                    argv = ["globus-gridftp-server", "-aa", "-anonymous-user", "nobody", "-p", str(PORT)]
                    argv += ["-data-interface", str(node.ipv4)]
                    t.lab.spawn(rs, argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for rs in t.realservers:
                    t.wait_listening(rs, PORT)
            # Two services: the banner servers (pps, cps) on BANNER_PORT, GridFTP on PORT.
            t.start_director(t.site([(4, PORT), (4, BANNER_PORT)]))
            install_sinks(t)
            hold, flows = hold_flows(t, ncpu)
            got: dict[str, list[dict[str, float]]] = {p: [] for p in PATHS}
            try:
                for i in range(rounds):
                    for path in PATHS[i % 3 :] + PATHS[: i % 3]:  # each path first in turn
                        got[path].append(blast(t, flows, path, pps_s, 200_000_000))
            finally:
                if hold.stdin is not None:
                    hold.stdin.close()
                hold.wait(timeout=10)
            col = {p: {k: [r[k] for r in got[p]] for k in got[p][0]} for p in PATHS}
            dr, bare, direct = col["dr"], col["bare"], col["direct"]

            def ratio(a: list[float], b: list[float]) -> list[float]:
                return [x / max(y, 1e-9) for x, y in zip(a, b, strict=True)]

            def extra(a: list[float]) -> list[float]:
                """pps per core of what a path adds to the direct one (1 / extra softirq s per packet)."""
                d = [x - y for x, y in zip(a, direct["softirq_per_packet_s"], strict=True)]
                return [1.0 / x if x > 0 else 0.0 for x in d]

            dir_per_core, bare_per_core = (
                extra(dr["softirq_per_packet_s"]),
                extra(bare["softirq_per_packet_s"]),
            )
            n = len(flows)
            rows += [
                (
                    f"pps delivered ({n} established flows, 60-byte frames, {n} trafgen CPUs)",
                    spread(dr["delivered"], ",.0f"),
                    "straight to the real servers " + spread(direct["delivered"], ",.0f"),
                    spread(ratio(dr["delivered"], direct["delivered"]), ".2f"),
                ),
                (
                    "pps delivered, against the least nft rule that forwards (bare `fwd`)",
                    spread(dr["delivered"], ",.0f"),
                    "bare fwd " + spread(bare["delivered"], ",.0f"),
                    spread(ratio(dr["delivered"], bare["delivered"]), ".2f"),
                ),
                (
                    "pps offered / forwarded (director's chain counters)",
                    f"{spread(dr['offered'], ',.0f')} / {spread(dr['forwarded'], ',.0f')}",
                    f"bare fwd {spread(bare['offered'], ',.0f')} / {spread(bare['forwarded'], ',.0f')}",
                    "",
                ),
                (
                    "pps per softirq CPU-second (whole path, per core)",
                    spread(dr["per_core"], ",.0f"),
                    "direct " + spread(direct["per_core"], ",.0f"),
                    spread(ratio(dr["per_core"], direct["per_core"]), ".2f"),
                ),
                (
                    "director's share per core: 1 / (softirq s per packet - direct's)",
                    spread(dir_per_core, ",.0f"),
                    "bare fwd " + spread(bare_per_core, ",.0f"),
                    spread(ratio(dir_per_core, bare_per_core), ".2f"),
                ),
            ]
            a_dr = {k: [r[k] for r in alone["dr"]] for k in alone["dr"][0]}
            a_bare = {k: [r[k] for r in alone["bare"]] for k in alone["bare"][0]}
            rows += [
                (
                    "gridlb's ruleset alone (veth, director, veth; no bridge): pps delivered",
                    spread(a_dr["delivered"], ",.0f"),
                    "bare fwd " + spread(a_bare["delivered"], ",.0f"),
                    spread(ratio(a_dr["delivered"], a_bare["delivered"]), ".2f"),
                ),
                (
                    "gridlb's ruleset alone: pps per softirq CPU-second (per core)",
                    spread(a_dr["per_core"], ",.0f"),
                    "bare fwd " + spread(a_bare["per_core"], ",.0f"),
                    spread(ratio(a_dr["per_core"], a_bare["per_core"]), ".2f"),
                ),
            ]
            src = workdir / "up.bin"
            if have_globus:
                with src.open("wb") as f:
                    f.write(os.urandom(1 << 20) * up_mib)
                src.chmod(0o644)

            def uploads(phase: str, tag: str) -> None:
                """Paired uploads now; a row with the tracked flows and the director's CPU share."""
                assert t.director is not None
                flows_before = tracked_flows(t)
                cpu0, t0 = cpu_s(t.director.pid), time.monotonic()
                up_vip, up_direct = paired(
                    rounds,
                    lambda: measure_upload(t, t.vip4, src),
                    lambda: measure_upload(t, str(t.lab.node("rs1").ipv4), src),
                )
                busy = (cpu_s(t.director.pid) - cpu0) / (time.monotonic() - t0)
                flows_after = tracked_flows(t)
                up_ratio = [a / max(b, 1e-9) for a, b in zip(up_vip, up_direct, strict=True)]
                rows.append(
                    (
                        f"upload MB/s (globus-url-copy -p 4, {up_mib} MiB), {phase}: "
                        f"{flows_before:,}→{flows_after:,} flows tracked, director process {busy:.0%} CPU",
                        spread(up_vip, ",.1f"),
                        "direct " + spread(up_direct, ",.1f"),
                        spread(up_ratio, ".2f"),
                    )
                )
                result.update(
                    {
                        f"upload_vip_MBps{tag}": f"{statistics.median(up_vip):.1f}",
                        f"upload_direct_MBps{tag}": f"{statistics.median(up_direct):.1f}",
                        f"upload_ratio{tag}": f"{statistics.median(up_ratio):.2f}",
                        f"upload_ratio{tag}_min": f"{min(up_ratio):.2f}",
                        f"upload_ratio{tag}_max": f"{max(up_ratio):.2f}",
                        f"upload_flows{tag}": str(flows_before),
                        f"director_cpu{tag}": f"{busy:.3f}",
                    }
                )

            if have_globus:
                uploads("few flows", "_few")
            assert t.director is not None
            cpu0, t0 = cpu_s(t.director.pid), time.monotonic()
            vip_cps, direct_cps = paired(
                rounds,
                lambda: measure_cps(t, t.vip4, cps_s, 100_000),
                lambda: measure_cps(t, str(t.lab.node("rs1").ipv4), cps_s, 100_000),
            )
            cps_busy = (cpu_s(t.director.pid) - cpu0) / (time.monotonic() - t0)
            cps_ratio = [a / max(b, 1) for a, b in zip(vip_cps, direct_cps, strict=True)]
            rows.append(
                (
                    f"new connections/s (32 concurrent), director process {cps_busy:.0%} CPU",
                    spread(vip_cps, ",.0f"),
                    "direct " + spread(direct_cps, ",.0f"),
                    spread(cps_ratio, ".2f"),
                )
            )
            result |= {
                "pps": f"{statistics.median(dr['delivered']):.0f}",
                "pps_min": f"{min(dr['delivered']):.0f}",
                "pps_max": f"{max(dr['delivered']):.0f}",
                "forwarded_pps": f"{statistics.median(dr['forwarded']):.0f}",
                "offered_pps": f"{statistics.median(dr['offered']):.0f}",
                "pps_direct": f"{statistics.median(direct['delivered']):.0f}",
                "pps_bare": f"{statistics.median(bare['delivered']):.0f}",
                "pps_ratio": f"{statistics.median(ratio(dr['delivered'], direct['delivered'])):.2f}",
                "pps_per_core": f"{statistics.median(dr['per_core']):.0f}",
                "pps_per_core_direct": f"{statistics.median(direct['per_core']):.0f}",
                "director_pps_per_core": f"{statistics.median(dir_per_core):.0f}",
                "bare_pps_per_core": f"{statistics.median(bare_per_core):.0f}",
                "ruleset_pps": f"{statistics.median(a_dr['delivered']):.0f}",
                "ruleset_pps_bare": f"{statistics.median(a_bare['delivered']):.0f}",
                "ruleset_pps_per_core": f"{statistics.median(a_dr['per_core']):.0f}",
                "ruleset_pps_per_core_bare": f"{statistics.median(a_bare['per_core']):.0f}",
                "flows": str(len(flows)),
                "cps_vip": f"{statistics.median(vip_cps):.0f}",
                "cps_direct": f"{statistics.median(direct_cps):.0f}",
                "cps_ratio": f"{statistics.median(cps_ratio):.2f}",
            }
            if have_globus:
                uploads("after the connections/s phase", "")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{rounds} rounds; each cell: median (min–max)")
    print("| measure | through dr | peer in the same round | ratio |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} |")
    print(
        "(indicative: a shared 2-core machine; the generators, the veths and the bridge share its cores with"
        " the director; the director's share also holds the second bridge pass and veth hop)"
    )
    print("RESULT dr " + " ".join(f"{k}={v}" for k, v in result.items()) + f" rounds={rounds} quick={int(q)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
