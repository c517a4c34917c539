"""`gridlb failover` hands VRRP mastership to the peer director; `gridlb events` prints the VRRP events.

`gridlb failover [--instance NAME] [--timeout S]` asks the running director (its control socket) to
send a priority-0 advert for each MASTER instance, remove the VIPs and rejoin as BACKUP without
preemption; it waits up to S seconds for the peer's first advert as master and prints who took over.
It exits 1 when this director is not MASTER or no peer took over. `gridlb events [--follow]` prints
the director's VRRP journal (state changes with reasons, masters seen, announcements, hand-overs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from typing import Any

from rich.text import Text

from gridlb.api.client import ControlClient, default_socket
from gridlb.api.messages import ApiError, EventsRequest, FailoverRequest
from gridlb.cli.ctl import EXIT_REFUSED, add_socket_option
from gridlb.errors import EXIT_OK


def register(subparsers: Any) -> None:
    """Add `failover` and `events`."""
    p = subparsers.add_parser(
        "failover",
        help="hand VRRP mastership to the peer director cleanly (priority-0 advert)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_socket_option(p)
    p.add_argument("--instance", default="", metavar="NAME", help="only this VRRP instance (default: all)")
    p.add_argument(
        "--timeout", type=float, default=5.0, metavar="S", help="wait this long for the new master (5 s)"
    )
    p.set_defaults(func=run_failover)

    p = subparsers.add_parser(
        "events",
        help="print the director's VRRP events (state changes and why, masters seen, hand-overs)",
        description="Print the running director's VRRP journal; with --follow, keep printing new events.",
    )
    add_socket_option(p)
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events until Ctrl-C")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=run_events)


def run_failover(args: argparse.Namespace) -> int:
    """Ask the director to hand over; print the outcome per instance."""
    timeout = max(0.0, args.timeout)
    with ControlClient(args.socket or default_socket(), timeout_s=timeout + 30) as client:
        try:
            result = client.call(FailoverRequest(args.instance, timeout))
        except ApiError as exc:
            print(f"gridlb failover: {exc.message}", file=sys.stderr)
            return EXIT_REFUSED
    rc = EXIT_OK
    for name, res in sorted(result["instances"].items()):
        if res["outcome"] == "handed over":
            print(
                f"{name}: handed over to {res['new_master']} (priority {res['new_master_priority']}); "
                f"this director is {res['state']}"
            )
        else:
            print(f"{name}: {res['outcome']} (this director is {res['state']})", file=sys.stderr)
            rc = EXIT_REFUSED
    return rc


def format_event(event: dict[str, Any]) -> str:
    """Return one journal entry as a line."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event["at"]))
    head = f"{when} #{event['seq']} {event['instance']}"
    kind = event["kind"]
    if kind == "state":
        return f"{head}: {event['from']} -> {event['to']} ({event['reason']}) priority {event['priority']}"
    if kind == "master":
        return f"{head}: master is {event['address']} (priority {event['priority']})"
    if kind == "announce":
        return f"{head}: {event['repeat']} gratuitous ARP/NA per VIP ({event['reason']})"
    if kind == "priority":
        return f"{head}: priority {event['old']} -> {event['new']}"
    if kind == "stale_vips_removed":
        return f"{head}: removed VIPs left from an earlier run: {', '.join(event['vips'])}"
    if kind == "failover":
        return f"{head}: operator failover requested"
    rest = {k: v for k, v in event.items() if k not in ("seq", "at", "instance", "kind")}
    return f"{head}: {kind} {rest}"


def run_events(args: argparse.Namespace) -> int:
    """Print the journal once, or follow it."""
    since = 0
    with ControlClient(args.socket or default_socket(), timeout_s=60) as client:
        try:
            while True:
                result = client.call(EventsRequest(since, 10.0 if args.follow and since else 0.0))
                for event in result["events"]:
                    print(json.dumps(event, sort_keys=True) if args.json else format_event(event), flush=True)
                    since = max(since, int(event["seq"]))
                since = max(since, int(result["last"]))
                if not args.follow:
                    return EXIT_OK
        except ApiError as exc:
            print(f"gridlb events: {exc.message}", file=sys.stderr)
            return EXIT_REFUSED
        except KeyboardInterrupt:
            return EXIT_OK


def vrrp_lines(vrrp: Mapping[str, Any] | None) -> list[Text]:
    """Return the VRRP lines of `gridlb status`: per instance its state, peers, master, last transition."""
    if not vrrp:
        return []
    lines = []
    for inst in vrrp["instances"]:
        state = inst.get("state", "INIT")
        style = {"MASTER": "bold green", "BACKUP": "cyan", "FAULT": "bold red"}.get(state, "")
        text = Text(f"VRRP {inst['name']}: ")
        text.append(state, style=style)
        text.append(
            f" priority {inst.get('priority', '-')}, VIPs {', '.join(inst.get('vips', []))}, "
            f"peer {', '.join(inst.get('peers', []))}"
        )
        master = inst.get("master")
        if master and state != "MASTER":
            text.append(f", master {master} (priority {inst.get('master_priority')})")
        if not inst.get("preempt", True) and inst.get("handed_over"):
            text.append(", no preemption after failover")
        lines.append(text)
        last = inst.get("last_transition")
        if last:
            when = time.strftime("%H:%M:%S", time.localtime(last["at"]))
            lines.append(Text(f"  last transition {when}: {last['from']} -> {last['to']} ({last['reason']})"))
        if inst.get("stale_vips_removed"):
            lines.append(
                Text(f"  removed at start (left from a crash): {', '.join(inst['stale_vips_removed'])}")
            )
    return lines
