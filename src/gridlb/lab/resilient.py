"""The lab router's glue from BIRD's multipath route to a resilient next-hop group (Linux ≥ 5.13).

BIRD 2.0.12 installs ECMP routes as plain multipath routes (hash-threshold): when one next hop
goes, flows of the others move too. In the lab, BIRD exports its routes to a table of their own
(`kernel table 100`), and this loop, run in the router's namespace, mirrors the VIP's next hops
from that table into a resilient group (`ip nexthop ... type resilient`) that the main table's
route uses: a next hop that leaves gives up only its own buckets. Desired state (the next hops in
BIRD's table) → compare with what was installed → `ip nexthop replace` / `ip route replace`.

    python -m gridlb.lab.resilient --prefix 10.90.1.100/32 --dev eth0 [--table 100] [--buckets 128]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from ipaddress import IPv4Address

GROUP_ID = 100
MEMBER_BASE = 1000
POLL_S = 0.05
#: A bucket moves to rebalance the group (after a next hop joins) only once it carried no packet
#: for this long; a next hop that leaves gives its buckets away at once.
IDLE_TIMER_S = 5


def hops_in(route_json: str) -> tuple[str, ...]:
    """Return the gateways of the (one) route in `ip -j route show` output, sorted; () without one."""
    routes = json.loads(route_json or "[]")
    if not routes:
        return ()
    r = routes[0]
    gateways = [h["gateway"] for h in r.get("nexthops", []) if "gateway" in h]
    if not gateways and "gateway" in r:
        gateways = [r["gateway"]]
    return tuple(sorted(gateways, key=lambda g: int(IPv4Address(g))))


def member_id(gateway: str) -> int:
    """Return the next-hop object id of a gateway (its last two address bytes over MEMBER_BASE)."""
    return MEMBER_BASE + (int(IPv4Address(gateway)) & 0xFFFF)


def commands(
    old: tuple[str, ...], new: tuple[str, ...], prefix: str, dev: str, buckets: int
) -> list[list[str]]:
    """Return the `ip` commands that take the installed group from `old` to `new` next hops."""
    out: list[list[str]] = []
    if not new:
        if old:
            out += [["route", "del", prefix], ["nexthop", "del", "id", str(GROUP_ID)]]
        out += [["nexthop", "del", "id", str(member_id(g))] for g in old]
        return out
    out += [
        ["nexthop", "replace", "id", str(member_id(g)), "via", g, "dev", dev] for g in new if g not in old
    ]
    group = "/".join(str(member_id(g)) for g in new)
    verb = "replace" if old else "add"
    resilient = ["type", "resilient", "buckets", str(buckets), "idle_timer", str(IDLE_TIMER_S)]
    out.append(["nexthop", verb, "id", str(GROUP_ID), "group", group, *resilient])
    if not old:
        out.append(["route", "replace", prefix, "nhid", str(GROUP_ID)])
    out += [["nexthop", "del", "id", str(member_id(g))] for g in old if g not in new]
    return out


def main(argv: list[str] | None = None) -> int:
    """Mirror the route until killed."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--dev", required=True)
    ap.add_argument("--table", default="100")
    ap.add_argument("--buckets", type=int, default=128)
    a = ap.parse_args(argv)
    installed: tuple[str, ...] = ()
    while True:
        shown = subprocess.run(
            ["ip", "-j", "route", "show", "table", a.table, a.prefix],
            capture_output=True,
            text=True,
            check=False,
        )
        want = hops_in(shown.stdout) if shown.returncode == 0 else installed
        if want != installed:
            for cmd in commands(installed, want, a.prefix, a.dev, a.buckets):
                done = subprocess.run(["ip", *cmd], capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    print(f"ip {' '.join(cmd)}: {done.stderr.strip()}", file=sys.stderr, flush=True)
            print(f"next hops: {', '.join(want) or 'none'}", flush=True)
            installed = want
        time.sleep(POLL_S)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
