"""Scale-out benchmark: new connections per second through 1, 2 and 3 directors behind a BGP/ECMP router,
and the share of flows a real-server change moves against the theoretical minimum.

One `gridlb lab up --scaleout --directors 3 --realservers 4` (real BIRD on the router and on every
director, Linux multipath with the L4 hash, the proxy dataplane with `mh` + `mh-port` +
`mh-fallback`, gridlb's GridFTP servers). The number of directors the router uses is set with
`gridlb director drain/undrain` (the drained ones withdraw the VIP). A load generator on the client
behind the router opens connections (connect, read the 220 banner, close) from many source ports
with 32 in flight, for a fixed time per setting.

Disruption: 200 flows with fixed source ports are held open and their real servers read from the
directors' connection tables; then rs4 is taken out on every director, the flows are opened again
from the same ports and the fraction that changed real server is compared with the minimum (the
flows that were on rs4). Two ways out: quiesce (weight 0; with `inhibit_on_failure`, the table keeps
its entries and `mh-fallback` moves only rs4's flows) and remove (the table is rebuilt from 3
servers). The same flows sent through each director alone show whether the directors agree.
The pure table figures for the kernel's 4093 entries come from `gridlb.scaleout.consistency`.

    python bench/scaleout.py [--quick]     # root; --quick < 1 minute

This machine is shared and small (2 cores for every director, real server, router and the load
generator), so absolute figures and the scaling ratio are indicative only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gridlb.api.client import ControlClient
from gridlb.lab import scaleout, system
from gridlb.scaleout.consistency import disruption
from gridlb.table import RealKey

DIRECTORS = 3
PORTS = list(range(62000, 62200))  # above the ephemeral range: never in TIME_WAIT from the load

LOAD = """
import asyncio, sys, time
vip, seconds, inflight = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
done = errors = 0
async def worker(end):
    global done, errors
    while time.monotonic() < end:
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(vip, 2811), 5)
            line = await asyncio.wait_for(r.readline(), 5)
            w.close()
            if line.startswith(b"220"):
                done += 1
            else:
                errors += 1
        except (OSError, asyncio.TimeoutError):
            errors += 1
async def main():
    end = time.monotonic() + seconds
    await asyncio.gather(*(worker(end) for _ in range(inflight)))
asyncio.run(main())
print(done, errors)
"""


def socket_of(state: system.LabState, node: str) -> str:
    return f"{state.workdir}/{node}.sock"


def announce_through(state: system.LabState, n: int) -> None:
    """Let the router use dir1..dirN only (the others drained), and wait until its FIB says so."""
    for i in range(DIRECTORS):
        with ControlClient(socket_of(state, f"dir{i + 1}"), timeout_s=20) as c:
            c.director_undrain() if i < n else c.director_drain()
    want = {state.nodes[f"dir{i + 1}"]["ipv4"] for i in range(n)}
    deadline = time.monotonic() + 20
    while set(scaleout.nexthops(state)) != want:
        if time.monotonic() > deadline:
            raise RuntimeError(f"router next hops {scaleout.nexthops(state)}, want {sorted(want)}")
        time.sleep(0.05)


def in_remote(state: system.LabState, script: str, *args: str, timeout_s: float = 120) -> str:
    argv = system.exec_argv(state, "remote", [sys.executable, "-c", script, *args])
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=True).stdout


def load(state: system.LabState, seconds: float) -> tuple[float, int]:
    done, errors = in_remote(state, LOAD, state.vip4, str(seconds), "32").split()
    return int(done) / seconds, int(errors)


def mapping(state: system.LabState) -> dict[int, str]:
    """Open the fixed-port flows, read each flow's real server from the directors, close them."""
    return scaleout.flow_map(state, PORTS, sys.executable)


def moved(before: dict[int, str], after: dict[int, str], gone: str) -> tuple[float, float]:
    """Return (fraction of flows that changed real server, fraction that had to: those on `gone`)."""
    ports = [p for p in PORTS if p in before and p in after]
    changed = sum(before[p] != after[p] for p in ports) / len(ports)
    minimum = sum(before[p] == gone for p in ports) / len(ports)
    return changed, minimum


def all_directors(state: system.LabState, method: str, real: str) -> None:
    for i in range(DIRECTORS):
        with ControlClient(socket_of(state, f"dir{i + 1}"), timeout_s=20) as c:
            getattr(c, method)(real)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run, under a minute")
    ap.add_argument("--seconds", type=float, default=None, help="load time per setting (quick 3, else 10)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/scaleout.py: needs root (network namespaces)", file=sys.stderr)
        return 2
    seconds = a.seconds or (3.0 if a.quick else 10.0)
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
    try:
        rates: dict[int, tuple[float, int]] = {}
        for n in (1, 2, 3):
            announce_through(state, n)
            rates[n] = load(state, seconds)
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
        removed = moved(back, mapping(state), rs4)
    finally:
        system.down(state)
    keys = [RealKey.parse(f"10.98.250.{11 + i}:2811") for i in range(4)]
    table = disruption([(k, 1) for k in keys], [(k, 1) for k in keys[:3]])

    one = rates[1][0]
    print(
        "scale-out through a BIRD router with ECMP, proxy dataplane + mh, 4 real servers "
        f"({seconds:g} s/setting)"
    )
    print(f"{'directors':>9} {'new conn/s':>11} {'ratio to 1':>11} {'errors':>7}")
    for n, (rate, errors) in rates.items():
        print(f"{n:>9} {rate:>11.0f} {rate / one:>11.2f} {errors:>7}")
    print(
        "flows that map to the same real server through each director alone: "
        f"{agree * 100:.1f} % of {len(PORTS)}"
    )
    print(f"{'rs4 out by':<28} {'flows moved':>12} {'minimum':>9}")
    print(f"{'quiesce (weight 0, fallback)':<28} {quiesce[0] * 100:>11.1f}% {quiesce[1] * 100:>8.1f}%")
    print(f"{'remove (table rebuilt)':<28} {removed[0] * 100:>11.1f}% {removed[1] * 100:>8.1f}%")
    print(
        f"{'table, 4093 entries, 4->3':<28} {table.entries_changed * 100:>11.2f}% "
        f"{table.minimum * 100:>8.2f}%  (entries; pure)"
    )
    print(f"(took {time.monotonic() - t0:.0f} s; a shared 2-core machine: figures are indicative)")
    kv = {
        "cps_1": f"{rates[1][0]:.0f}",
        "cps_2": f"{rates[2][0]:.0f}",
        "cps_3": f"{rates[3][0]:.0f}",
        "ratio_2": f"{rates[2][0] / one:.2f}",
        "ratio_3": f"{rates[3][0] / one:.2f}",
        "errors": str(sum(e for _, e in rates.values())),
        "agree": f"{agree:.3f}",
        "moved_quiesce": f"{quiesce[0]:.3f}",
        "min_quiesce": f"{quiesce[1]:.3f}",
        "moved_remove": f"{removed[0]:.3f}",
        "min_remove": f"{removed[1]:.3f}",
        "table_changed": f"{table.entries_changed:.4f}",
        "table_min": f"{table.minimum:.4f}",
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
