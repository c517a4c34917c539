"""Scale-out benchmark: new connections per second through 1, 2 and 3 directors behind a BGP/ECMP router,
and the share of flows a real-server change moves against the theoretical minimum and the table's bound.

One `gridlb lab up --scaleout --directors 3 --realservers 4` (real BIRD on the router and on every
director, Linux multipath with the L4 hash through a resilient next-hop group, the proxy dataplane
with `mh` + `mh-port` + `mh-fallback`, gridlb's GridFTP servers). The number of directors the router
uses is set with `gridlb director drain/undrain` (the drained ones withdraw the VIP); a round starts
once the router's FIB has them and its buckets are shared evenly. A load generator on the client
behind the router opens connections (connect, read the 220 banner, close) with 32 in flight. Rounds
are interleaved (3, 2, 1 directors, repeated `--rounds` times); each reports conn/s, the time to the
banner (p50/p99) and how many connections each director accepted.

Each round opens its connections from 4 fresh client addresses. One address that opened thousands
of connections to the VIP holds as many ephemeral ports in TIME_WAIT for 60 s; once they fill the
even half of the range (Linux's connect() tries even ports first), every connect() scans it, about
2 ms each, and a one-thread load generator stalls at ~500 conn/s whatever sits behind the VIP.

Disruption: 200 flows with fixed source ports are opened and their real servers read from the
directors' connection tables; then rs4 changes on every director, the flows are opened again from
the same ports and the fraction that changed real server is compared with the minimum (the flows
on rs4 before or after) and with the pure table's bound (the entries of the 4093-entry Maglev table
that change owner, `gridlb.scaleout.consistency`). Changes: quiesce (weight 0; with
`inhibit_on_failure`, the table keeps its entries and `mh-fallback` moves only rs4's flows), remove
(the table is rebuilt from 3 servers) and add (rs4 back: built from 4 again). The same flows sent
through each director alone show whether the directors agree. The flow maps run before the load:
afterwards the directors' connection lists are long to read.

    python bench/scaleout.py [--quick] [--rounds N] [--seconds S]    # root; --quick < 1 minute

This machine is shared and small (2 cores for every director, real server, router and the load
generator), so absolute figures and the scaling ratio are indicative only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gridlb.api.client import ControlClient
from gridlb.lab import scaleout, system
from gridlb.scaleout.consistency import disruption
from gridlb.table import RealKey

DIRECTORS = 3
ROUNDS = 3
CLIENTS_PER_ROUND = 4  # fresh client addresses per round (see the docstring)
PORTS = list(range(62000, 62200))  # above the ephemeral range: never in TIME_WAIT from the load

#: Run in `remote`: open connections to VIP:2811 (connect, read the 220 banner, close) from the given
#: source addresses in turn, `inflight` at a time, for `seconds`; print done, errors and the median and
#: 99th percentile of the time to the banner (ms).
LOAD = """
import asyncio, socket, sys, time
vip, seconds, inflight, sources = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(",")
IP_BIND_ADDRESS_NO_PORT = 24  # the port is chosen at connect(), per 4-tuple
done = errors = turn = 0
took = []
async def one(loop):
    global turn
    s = socket.socket()
    s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    s.bind((sources[turn % len(sources)], 0))
    turn += 1
    s.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(s, (vip, 2811)), 5)
    except BaseException:
        s.close()
        raise
    r, w = await asyncio.open_connection(sock=s)
    try:
        return await asyncio.wait_for(r.readline(), 5)
    finally:
        w.close()
async def worker(end):
    global done, errors
    loop = asyncio.get_running_loop()
    while time.monotonic() < end:
        t0 = time.monotonic()
        try:
            line = await one(loop)
        except (OSError, asyncio.TimeoutError):
            errors += 1
            continue
        if line.startswith(b"220"):
            done += 1
            took.append(time.monotonic() - t0)
        else:
            errors += 1
async def main():
    end = time.monotonic() + seconds
    await asyncio.gather(*(worker(end) for _ in range(inflight)))
asyncio.run(main())
took.sort()
q = lambda f: took[min(len(took) - 1, int(len(took) * f))] * 1000 if took else 0.0
print(done, errors, f"{q(0.5):.2f}", f"{q(0.99):.2f}")
"""


@dataclass(frozen=True, slots=True)
class Round:
    """One load round through n directors."""

    rate: float  # connections per second
    errors: int
    p50_ms: float  # time to the banner
    p99_ms: float
    accepted: dict[str, int]  # connections each director accepted (its TCP PassiveOpens)


def socket_of(state: system.LabState, node: str) -> str:
    return f"{state.workdir}/{node}.sock"


def announce_through(state: system.LabState, n: int) -> None:
    """Let the router use dir1..dirN only (the others drained); wait until its FIB says so and the
    resilient group has moved buckets to a director that joined (they move once idle 5 s)."""
    for i in range(DIRECTORS):
        with ControlClient(socket_of(state, f"dir{i + 1}"), timeout_s=20) as c:
            c.director_undrain() if i < n else c.director_drain()
    want = {state.nodes[f"dir{i + 1}"]["ipv4"] for i in range(n)}
    deadline = time.monotonic() + 30
    while set(scaleout.nexthops(state)) != want or not scaleout.balanced(state):
        if time.monotonic() > deadline:
            raise RuntimeError(f"router next hops {scaleout.nexthops(state)}, want {sorted(want)}")
        time.sleep(0.05)


def in_remote(state: system.LabState, script: str, *args: str, timeout_s: float = 120) -> str:
    argv = system.exec_argv(state, "remote", [sys.executable, "-c", script, *args])
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=True).stdout


def passive_opens(state: system.LabState) -> dict[str, int]:
    """Return each director's TCP PassiveOpens (connections its stack accepted)."""
    out = {}
    for i in range(DIRECTORS):
        node = f"dir{i + 1}"
        argv = system.exec_argv(state, node, ["cat", "/proc/net/snmp"])
        lines = [
            ln.split()
            for ln in subprocess.run(argv, capture_output=True, text=True, check=True).stdout.splitlines()
        ]
        tcp = [ln for ln in lines if ln and ln[0] == "Tcp:"]
        out[node] = int(dict(zip(tcp[0], tcp[1], strict=True))["PassiveOpens"])
    return out


def load(state: system.LabState, seconds: float, sources: list[str]) -> Round:
    before = passive_opens(state)
    done, errors, p50, p99 = in_remote(state, LOAD, state.vip4, str(seconds), "32", ",".join(sources)).split()
    after = passive_opens(state)
    accepted = {k: after[k] - before[k] for k in after}
    return Round(int(done) / seconds, int(errors), float(p50), float(p99), accepted)


def mapping(state: system.LabState) -> dict[int, str]:
    """Open the fixed-port flows, read each flow's real server from the directors, close them."""
    return scaleout.flow_map(state, PORTS, sys.executable)


def moved(before: dict[int, str], after: dict[int, str], changed: str) -> tuple[float, float]:
    """Return (fraction of flows that changed real server, fraction that had to: those on `changed`,
    the server that left or joined)."""
    ports = [p for p in PORTS if p in before and p in after]
    moved_ = sum(before[p] != after[p] for p in ports) / len(ports)
    minimum = sum(changed in (before[p], after[p]) for p in ports) / len(ports)
    return moved_, minimum


def all_directors(state: system.LabState, method: str, *args: str) -> None:
    for i in range(DIRECTORS):
        with ControlClient(socket_of(state, f"dir{i + 1}"), timeout_s=20) as c:
            getattr(c, method)(*args)


def spread(values: list[float]) -> tuple[float, float, float]:
    """Return (median, min, max)."""
    return statistics.median(values), min(values), max(values)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run, under a minute")
    ap.add_argument("--seconds", type=float, default=None, help="load time per round (quick 2, else 10)")
    ap.add_argument("--rounds", type=int, default=ROUNDS, help=f"rounds per setting (at least 3; {ROUNDS})")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/scaleout.py: needs root (network namespaces)", file=sys.stderr)
        return 2
    if a.rounds < 3:
        print("bench/scaleout.py: --rounds: at least 3", file=sys.stderr)
        return 2
    seconds = a.seconds or (2.0 if a.quick else 10.0)
    options = system.LabOptions(
        name=f"sob{os.getpid() % 10000}",
        realservers=4,
        gridftp="gridlb",
        directors=DIRECTORS,
        net_a=98,
        net_b=250,
        scaleout=True,
    )
    t0 = time.monotonic()
    state = system.up(options, timeout_s=120)
    t_up = time.monotonic()
    try:
        # flow maps first: after the load the directors' connection lists are long to read
        # the same flows through each director alone: do the directors agree?
        alone = []
        for i in range(DIRECTORS):
            announce_through_only(state, i)
            alone.append(mapping(state))
        announce_through(state, DIRECTORS)
        agree = sum(1 for p in PORTS if len({m.get(p) for m in alone}) == 1 and p in alone[0]) / len(PORTS)
        rs4 = str(RealKey.parse(f"{state.nodes['rs4']['ipv4']}:2811"))
        before = mapping(state)
        all_directors(state, "drain", rs4)
        quiesce = moved(before, mapping(state), rs4)
        all_directors(state, "enable", rs4)
        back = mapping(state)
        all_directors(state, "remove", rs4)
        three = mapping(state)
        removed = moved(back, three, rs4)
        all_directors(state, "add", rs4, f"{state.vip4}:2811")
        added = moved(three, mapping(state), rs4)
        keys = [RealKey.parse(f"{state.nodes[f'rs{i + 1}']['ipv4']}:2811") for i in range(4)]
        t_maps = time.monotonic()
        rounds: dict[int, list[Round]] = {1: [], 2: [], 3: []}
        # interleaved, 3-2-1 in each cycle: a director that leaves gives its buckets up at once
        order = [n for _ in range(a.rounds) for n in (3, 2, 1)]
        for i, n in enumerate(order):
            announce_through(state, n)
            clients = scaleout.add_client_addresses(state, CLIENTS_PER_ROUND, 100 + i * CLIENTS_PER_ROUND)
            rounds[n].append(load(state, seconds, clients))
        t_load = time.monotonic()
    finally:
        system.down(state)
    out_table = disruption([(k, 1) for k in keys], [(k, 1) for k in keys[:3]])
    in_table = disruption([(k, 1) for k in keys[:3]], [(k, 1) for k in keys])

    med = {n: spread([r.rate for r in rs]) for n, rs in rounds.items()}
    one = med[1][0]
    print(
        "scale-out through a BIRD router with ECMP (resilient group), proxy dataplane + mh, 4 real servers "
        f"({a.rounds} rounds x {seconds:g} s per setting, interleaved)"
    )
    print(
        f"{'directors':>9} {'conn/s median':>13} {'min-max':>13} {'ratio to 1':>10} {'errors':>6} "
        f"{'p50 ms':>7} {'p99 ms':>7}  accepted per director"
    )
    for n, rs in rounds.items():
        m, lo, hi = med[n]
        acc = {k: sum(r.accepted[k] for r in rs) for k in rs[0].accepted}
        total = sum(acc.values()) or 1
        shares = " ".join(f"{k} {v / total * 100:.0f}%" for k, v in acc.items())
        p50 = statistics.median(r.p50_ms for r in rs)
        p99 = statistics.median(r.p99_ms for r in rs)
        errors = sum(r.errors for r in rs)
        print(
            f"{n:>9} {m:>13.0f} {f'{lo:.0f}-{hi:.0f}':>13} {m / one:>10.2f} {errors:>6} "
            f"{p50:>7.1f} {p99:>7.1f}  {shares}"
        )
    print(
        "flows that map to the same real server through each director alone: "
        f"{agree * 100:.1f} % of {len(PORTS)}"
    )
    print(f"{'rs4 (of 4) by':<28} {'flows moved':>12} {'minimum':>9} {'table bound':>12}")
    for label, (frac, least), bound in (
        ("quiesce (weight 0, fallback)", quiesce, out_table.entries_changed),
        ("remove (table rebuilt)", removed, out_table.entries_changed),
        ("add (table rebuilt)", added, in_table.entries_changed),
    ):
        print(f"{label:<28} {frac * 100:>11.1f}% {least * 100:>8.1f}% {bound * 100:>11.2f}%")
    print(
        f"(table bound: entries of the 4093-entry Maglev table that change owner, pure; minimum "
        f"{out_table.minimum * 100:.2f} % out, {in_table.minimum * 100:.2f} % in. "
        f"{len(PORTS)} flows: a sample, so +-3 points)"
    )
    print(
        f"(took {time.monotonic() - t0:.0f} s: lab up {t_up - t0:.0f}, flow maps {t_maps - t_up:.0f}, "
        f"load rounds {t_load - t_maps:.0f}; a shared 2-core machine: figures are indicative)"
    )
    kv = {
        **{f"cps_{n}": f"{med[n][0]:.0f}" for n in rounds},
        **{f"cps_{n}_min": f"{med[n][1]:.0f}" for n in rounds},
        **{f"cps_{n}_max": f"{med[n][2]:.0f}" for n in rounds},
        "ratio_2": f"{med[2][0] / one:.2f}",
        "ratio_3": f"{med[3][0] / one:.2f}",
        "errors": str(sum(r.errors for rs in rounds.values() for r in rs)),
        "agree": f"{agree:.3f}",
        "moved_quiesce": f"{quiesce[0]:.3f}",
        "min_quiesce": f"{quiesce[1]:.3f}",
        "moved_remove": f"{removed[0]:.3f}",
        "min_remove": f"{removed[1]:.3f}",
        "moved_add": f"{added[0]:.3f}",
        "min_add": f"{added[1]:.3f}",
        "table_remove": f"{out_table.entries_changed:.4f}",
        "table_add": f"{in_table.entries_changed:.4f}",
    }
    print("RESULT scaleout " + " ".join(f"{k}={v}" for k, v in kv.items()))
    return 0


def announce_through_only(state: system.LabState, index: int) -> None:
    """Let the router use dir<index+1> alone."""
    for i in range(DIRECTORS):
        with ControlClient(socket_of(state, f"dir{i + 1}"), timeout_s=20) as c:
            c.director_undrain() if i == index else c.director_drain()
    want = [state.nodes[f"dir{index + 1}"]["ipv4"]]
    deadline = time.monotonic() + 20
    while scaleout.nexthops(state) != want:
        if time.monotonic() > deadline:
            raise RuntimeError(f"router next hops {scaleout.nexthops(state)}, want {want}")
        time.sleep(0.05)


if __name__ == "__main__":
    raise SystemExit(main())
