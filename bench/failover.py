"""Failover benchmark: SIGKILL of the VRRP master → the client's first TCP connect served by the new master.

A gridlb pair and a keepalived pair (`keepalived -P`) run with identical settings in namespaces
(`gridlb.lab`), both directors at priority 100, unicast peers. Each trial kills the current master
the way a crash does (keepalived: SIGSTOP parent, SIGKILL VRRP child, SIGKILL parent; gridlb: SIGKILL),
while a probe on the client connects to VIP:2811 every ~5 ms and stops at the first answer from the
other director (gridlb's own listener in its daemon; for keepalived a plain listener on each director
bound with IP_FREEBIND). The killed director's VIP is removed and it is restarted as BACKUP, so the
roles alternate and every trial measures the same thing. Run as root:

    python bench/failover.py [--quick] [--trials N] [--director]

With --director the gridlb side is the full `gridlb director run` pair (VRRP + the proxy dataplane's
listener on the VIP, relaying to a real server that answers with the director's address).

Prints median and max per setting for both pairs and their ratio (gridlb / keepalived; < 1 is faster);
the last line is `RESULT failover key=value ...`.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gridlb.lab.director_pair import DirectorRouter, start_banner
from gridlb.lab.netns import Lab
from gridlb.lab.system import LabOptions, running
from gridlb.lab.vrrp_pair import PROBE, PairSettings, Router, RouterSpec, time_until, touch_neighbour

PORT = 2811
SETTINGS = {
    "v2_1s": PairSettings(version=2, advert_int_s=1.0, families=(4,), unicast=True),
    "v3_0.1s": PairSettings(version=3, advert_int_s=0.1, families=(4,), unicast=True),
}


class PairRouter(Protocol):
    """What the benchmark does with a router of the pair (Router and DirectorRouter both have it)."""

    log: Path

    def start(self) -> None: ...

    def wait_ready(self) -> None: ...

    def holds_vip(self, family: int = 4) -> bool: ...

    def kill_hard(self) -> None: ...

    def drop_vips(self) -> None: ...

    def stop_clean(self, timeout_s: float | None = None) -> None: ...


def make_router(lab: Lab, impl: str, settings: PairSettings, node: str, workdir: Path) -> PairRouter:
    """A router of the pair: keepalived, gridlb's VRRP daemon, or the full director ("director")."""
    spec = RouterSpec(node, impl, 100, "BACKUP", listen_port=PORT)
    if impl == "director":  # `gridlb director run`: VRRP + the proxy dataplane relaying to rs1
        return DirectorRouter(lab, settings, spec, workdir / impl)
    return Router(lab, settings, spec, workdir / impl)


def run_pair(lab: Lab, impl: str, settings: PairSettings, trials: int, workdir: Path) -> list[float]:
    """Return the failover times (s) of `trials` crashes of the current master."""
    routers = {node: make_router(lab, impl, settings, node, workdir) for node in ("dir1", "dir2")}
    down_s = 3 * settings.advert_int_s + (1.0 if settings.version == 2 else settings.advert_int_s) + 2.0
    times: list[float] = []
    # The same kill phases for both pairs (paired samples: the phase alone spans one advert interval).
    rng = random.Random(f"failover-{settings.version}")
    try:
        routers["dir1"].start()
        routers["dir1"].wait_ready()
        if time_until(lambda: routers["dir1"].holds_vip(), down_s + 2) is None:
            raise RuntimeError(f"{impl}: dir1 never became master: {routers['dir1'].log.read_text()[-1500:]}")
        routers["dir2"].start()
        routers["dir2"].wait_ready()
        time.sleep(2 * settings.advert_int_s + 0.3)
        touch_neighbour(lab, lab.vip4, PORT)
        master, backup = "dir1", "dir2"
        for i in range(trials):
            if not routers[master].holds_vip() or routers[backup].holds_vip():
                raise RuntimeError(f"{impl}: trial {i}: {master} is not the only VIP holder")
            want = str(lab.node(backup).ipv4)
            probe = lab.spawn(
                "client",
                [sys.executable, "-c", PROBE, str(lab.vip4), str(PORT), want, str(down_s + 10)],
                stdout=subprocess.PIPE,
                text=True,
            )
            # The probe is looping (answered by the current master); kill at a random phase of the
            # advert cycle, or fixed sleeps would lock it and bias one pair's times.
            time.sleep(0.2 + rng.uniform(0, settings.advert_int_s))
            t0 = time.monotonic()
            routers[master].kill_hard()
            out, _ = probe.communicate(timeout=down_s + 20)
            words = out.split()
            if not words or words[0] != "OK":
                raise RuntimeError(f"{impl}: trial {i}: no connect to {backup}: {out!r}")
            times.append(float(words[1]) - t0)
            print(f"  {impl:10s} trial {i + 1:2d}/{trials}: {times[-1]:.3f} s", flush=True)
            if i == trials - 1:
                break  # no restart after the last trial
            # The dead director: drop its VIP (a crash leaves it), restart as BACKUP; roles swap.
            routers[master].drop_vips()
            routers[master].start()
            routers[master].wait_ready()
            time.sleep(2 * settings.advert_int_s + 0.3)
            master, backup = backup, master
    finally:
        for r in routers.values():
            r.stop_clean(timeout_s=5)
    return times


def fmt(xs: list[float]) -> tuple[float, float]:
    return statistics.median(xs), max(xs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few trials (finishes within a minute)")
    ap.add_argument("--trials", type=int, default=None, help="trials per setting and pair (default 20)")
    ap.add_argument(
        "--director",
        action="store_true",
        help="gridlb side: the full `gridlb director run` pair (VRRP + proxy listener), not the VRRP daemon",
    )
    ap.add_argument("--setting", choices=sorted(SETTINGS), action="append", help="only these settings")
    ap.add_argument("--prefix", default="b", help="the lab's name (a pid is appended): glbLab-NAME-*")
    args = ap.parse_args()
    if os.geteuid() != 0 or shutil.which("keepalived") is None:
        print("failover: needs root and keepalived", file=sys.stderr)
        return 2
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="glbV-bench-") as tmp:
        for name, settings in SETTINGS.items():
            if args.setting and name not in args.setting:
                continue
            quick = 2 if settings.version == 2 or args.director else 4  # a director restarts slower
            trials = args.trials or (quick if args.quick else 20)
            results[name] = {}
            for impl in ("gridlb", "keepalived"):
                runs = "director" if impl == "gridlb" and args.director else impl
                print(f"{name} {impl}: {trials} trials", flush=True)
                options = LabOptions(
                    name=f"{args.prefix}{os.getpid()}",
                    realservers=int(runs == "director"),
                    start="none",
                    net_a=77,
                )
                with running(options) as lab:
                    if (
                        runs == "director"
                    ):  # the proxy relays to rs1, which answers with the director's address
                        start_banner(lab, "rs1", PORT, settings.families)
                    results[name][impl] = run_pair(lab, runs, settings, trials, Path(tmp) / name)
    print()
    head = f"{'setting':9s} {'trials':>6s} {'gridlb med':>11s} {'gridlb max':>11s} {'kalived med':>11s}"
    head += f" {'kalived max':>11s} {'ratio med':>9s} {'ratio max':>9s}"
    print(head)
    kv = []
    for name, res in results.items():
        gm, gx = fmt(res["gridlb"])
        km, kx = fmt(res["keepalived"])
        row = f"{name:9s} {len(res['gridlb']):6d} {gm:10.3f}s {gx:10.3f}s {km:10.3f}s {kx:10.3f}s"
        print(f"{row} {gm / km:9.2f} {gx / kx:9.2f}")
        key = name.replace(".", "")
        kv += [f"{key}_gridlb_median_s={gm:.3f}", f"{key}_gridlb_max_s={gx:.3f}"]
        kv += [f"{key}_keepalived_median_s={km:.3f}", f"{key}_keepalived_max_s={kx:.3f}"]
        kv += [f"{key}_ratio_median={gm / km:.2f}", f"{key}_ratio_max={gx / kx:.2f}"]
    print("RESULT failover " + " ".join([f"gridlb={'director' if args.director else 'vrrp'}", *kv]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
