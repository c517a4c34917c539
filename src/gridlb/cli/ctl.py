"""Operator commands against a running director's control socket.

`gridlb status [--json] [--watch [S]]`, `gridlb drain RS [--wait] [--timeout S]`, `gridlb enable RS`,
`gridlb add RS --service VIP:PORT [--weight W]`, `gridlb remove RS [--service VIP:PORT] [--drain]`,
`gridlb reload`; each takes `--socket PATH` (default $GRIDLB_SOCKET or /run/gridlb/control.sock).
RS is ``ADDR`` (every port) or ``ADDR:PORT``. Anyone who can connect may read `status`; the other
commands need root or the socket's group. A refused request prints the director's reason and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from gridlb.api.client import ControlClient, default_socket
from gridlb.api.messages import ApiError, parse_real
from gridlb.errors import EXIT_OK
from gridlb.status import DirectorStatus, RealStatus

EXIT_REFUSED = 1


def add_socket_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--socket",
        metavar="PATH",
        default=None,
        help="the director's control socket (default: $GRIDLB_SOCKET or /run/gridlb/control.sock)",
    )


def register(subparsers: Any) -> None:
    """Add status, drain, enable, add, remove and reload."""
    p = subparsers.add_parser(
        "status",
        help="show services, real servers, connections, health and drain state",
        description="Show the running director's table like `ipvsadm -Ln`, with health and drain state.",
    )
    add_socket_option(p)
    p.add_argument("--json", action="store_true", help="print the raw status as JSON")
    p.add_argument(
        "--watch",
        nargs="?",
        const=1.0,
        type=float,
        metavar="S",
        help="refresh every S seconds (default 1) until Ctrl-C, like `watch ipvsadm -Ln`",
    )
    p.set_defaults(func=run_status)

    p = subparsers.add_parser(
        "drain",
        help="set a real server to weight 0: no new connections, open ones continue",
        description="Set RS to weight 0 in every service that has it. Returns once the dataplane has it.",
    )
    add_socket_option(p)
    p.add_argument("real", metavar="RS", help="ADDR or ADDR:PORT")
    p.add_argument("--wait", action="store_true", help="then wait until RS has no active connection")
    p.add_argument(
        "--timeout", type=float, default=0.0, metavar="S", help="give up waiting after S seconds (0 = never)"
    )
    p.set_defaults(func=run_drain)

    p = subparsers.add_parser("enable", help="lift a drain", description="Give RS its weight back.")
    add_socket_option(p)
    p.add_argument("real", metavar="RS", help="ADDR or ADDR:PORT")
    p.set_defaults(func=run_enable)

    p = subparsers.add_parser(
        "add",
        help="add a real server to a service at run time (until the next reload)",
        description="Add RS to a service at run time; it is health-checked like the service's others.",
    )
    add_socket_option(p)
    p.add_argument("real", metavar="RS", help="ADDR[:PORT] (port defaults to the service's)")
    p.add_argument("--service", required=True, metavar="VIP:PORT", help="the virtual service")
    p.add_argument("--weight", type=int, default=1, metavar="W", help="weight (1)")
    p.set_defaults(func=run_add)

    p = subparsers.add_parser(
        "remove",
        help="take a real server out (with --drain: once it has no active connection)",
        description="Take RS out of its services (or of --service). With --drain it first goes to weight 0 "
        "and leaves once it has no active connection (or after --timeout).",
    )
    add_socket_option(p)
    p.add_argument("real", metavar="RS", help="ADDR or ADDR:PORT")
    p.add_argument("--service", default="", metavar="VIP:PORT", help="only from this service")
    p.add_argument("--drain", action="store_true", help="wait for open connections to finish first")
    p.add_argument(
        "--timeout",
        type=float,
        default=0.0,
        metavar="S",
        help="drain deadline (default: the director's, 1 h)",
    )
    p.set_defaults(func=run_remove)

    p = subparsers.add_parser(
        "reload",
        help="re-read and validate the site files, then switch to them",
        description="Like SIGHUP: the director validates the whole new config first; health state is kept.",
    )
    add_socket_option(p)
    p.set_defaults(func=run_reload)


def _client(args: argparse.Namespace) -> ControlClient:
    return ControlClient(args.socket or default_socket())


def _refused(command: str, exc: ApiError) -> int:
    print(f"gridlb {command}: {exc.message}", file=sys.stderr)
    return EXIT_REFUSED


# --- status ---------------------------------------------------------------------------------------


def _age(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m"


def _last_check(real: RealStatus) -> str:
    last = real.last_check
    if last is None:
        return "-"
    text = f"{last.verdict} {last.latency_s * 1000:.1f}ms {_age(last.age_s)} ago"
    if last.reason and last.verdict != "up":
        text += f": {last.reason}"
    return text


def _state(real: RealStatus) -> str:
    parts = [real.reason]
    if real.passive_failure:
        parts.append(f"passive: {real.passive_failure}")
    if real.runtime_added:
        parts.append("added at run time")
    return "; ".join(parts)


_HEALTH_STYLE = {"up": "green", "refusing": "yellow", "down": "red"}


def render_status(status: DirectorStatus) -> Group:
    """Return the status as rich renderables: a header line and one table."""
    head = (
        f"gridlb {status.version} director: {status.dataplane} dataplane, "
        f"config {', '.join(status.config) or '-'} (generation {status.generation}), "
        f"up {_age(status.uptime_s)}"
    )
    if status.role:
        head += f", VRRP {status.role}"
    lines: list[Any] = [Text(head)]
    if status.dataplane_choice:  # `dataplane: auto`: which one and why
        lines.append(Text(status.dataplane_choice))
    from gridlb.cli.failover import vrrp_lines  # VRRP role, peer, last transition

    lines.extend(vrrp_lines(status.vrrp))
    from gridlb.scaleout.view import scaleout_lines  # BGP announcements, sessions

    lines.extend(Text(line) for line in scaleout_lines(status.scaleout))
    if status.dataplane_fault is not None:
        f = status.dataplane_fault
        lines.append(
            Text(
                f"dataplane failing for {_age(f.since_s)} ({f.failed_calls} calls): {f.error}; retrying",
                style="bold red",
            )
        )
    for err in status.last_errors:
        lines.append(Text(f"dataplane error: {err.op}: {err.error}", style="bold red"))
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for col, just in (
        ("Prot LocalAddress:Port Scheduler", "left"),
        ("Forward", "left"),
        ("Weight", "right"),
        ("ActiveConn", "right"),
        ("InActConn", "right"),
        ("Health", "left"),
        ("Last check", "left"),
        ("State", "left"),
    ):
        table.add_column(col, justify=just, no_wrap=col != "Last check")  # type: ignore[arg-type]
    table.add_row("  -> RemoteAddress:Port", "", "", "", "", "", "", "", style="bold")
    for svc in status.services:
        flags = []
        if not svc.quorum_up:
            flags.append("quorum lost")
        if svc.retiring:
            flags.append("retiring")
        if not svc.in_table:
            flags.append("not in dataplane")
        table.add_row(
            f"{svc.service.replace('TCP ', 'TCP  ', 1)} {svc.scheduler}",
            "",
            "",
            str(svc.active),
            str(svc.inactive),
            "",
            "",
            ", ".join(flags),
        )
        for real in svc.reals:
            table.add_row(
                f"  -> {real.real}",
                real.forward or "-",
                "-" if real.weight is None else str(real.weight),
                str(real.active),
                str(real.inactive),
                Text(real.health, style=_HEALTH_STYLE.get(real.health, "")),
                _last_check(real),
                Text(_state(real), style="yellow" if real.drained or real.retiring else ""),
            )
    lines.append(table)
    return Group(*lines)


def run_status(args: argparse.Namespace) -> int:
    """Print the status once, as JSON, or live."""
    with _client(args) as client:
        try:
            if args.json:
                print(json.dumps(client.status(), indent=2, sort_keys=True))
                return EXIT_OK
            console = Console() if sys.stdout.isatty() else Console(width=400)
            if args.watch is None:
                console.print(render_status(client.snapshot()), soft_wrap=False)
                return EXIT_OK
            interval = max(0.1, args.watch)
            with Live(render_status(client.snapshot()), console=console, auto_refresh=False) as live:
                try:
                    while True:
                        time.sleep(interval)
                        live.update(render_status(client.snapshot()), refresh=True)
                except KeyboardInterrupt:
                    pass
        except ApiError as exc:
            return _refused("status", exc)
    return EXIT_OK


# --- changes --------------------------------------------------------------------------------------


def _active_of(status: DirectorStatus, match: Callable[[str], bool]) -> dict[str, int]:
    active: dict[str, int] = {}
    for _, real in status.reals():
        if match(real.real):
            active[real.real] = active.get(real.real, 0) + real.active
    return active


def _matcher(text: str) -> Callable[[str], bool]:
    addr, port = parse_real(text)

    def match(real: str) -> bool:
        r_addr, r_port = parse_real(real)
        return r_addr == addr and (port is None or r_port == port)

    return match


def run_drain(args: argparse.Namespace) -> int:
    """Drain, and with --wait, wait for the last active connection."""
    with _client(args) as client:
        try:
            result = client.drain(args.real)
        except ApiError as exc:
            return _refused("drain", exc)
        names = ", ".join(result["drained"])
        print(f"drained {names}: no new connections")
        if not args.wait:
            return EXIT_OK
        view = DrainView(names, tty=sys.stdout.isatty())
        try:
            return _wait_drained(client, args, names, view)
        finally:
            view.close()


class DrainView:
    """Shows the active connections left falling to zero: a rich bar on a terminal, else a line per change."""

    def __init__(self, names: str, *, tty: bool, console: Console | None = None) -> None:
        self.names = names
        self.console = console
        self.tty = tty
        self.shown = -1
        self.first: int | None = None
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def update(self, left: int) -> None:
        """Show `left` active connections."""
        if self.first is None:
            self.first = left
            if self.tty and left > 0:
                self.progress = Progress(
                    TextColumn(f"draining {self.names}"),
                    BarColumn(),
                    TextColumn("{task.fields[left]} active connection(s) left"),
                    TimeElapsedColumn(),
                    console=self.console,
                    transient=True,
                )
                self.progress.start()
                self.task = self.progress.add_task("drain", total=left, left=left)
        if self.progress is not None and self.task is not None:
            first = max(self.first, left)
            self.progress.update(self.task, total=first, completed=first - left, left=left)
        elif left != self.shown and left > 0:
            print(f"waiting: {left} active connection{'s' if left != 1 else ''}", flush=True)
        self.shown = left

    def close(self) -> None:
        """Remove the bar."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _wait_drained(client: ControlClient, args: argparse.Namespace, names: str, view: DrainView) -> int:
    match = _matcher(args.real)
    deadline = time.monotonic() + args.timeout if args.timeout > 0 else None
    while True:
        try:
            active = _active_of(client.snapshot(), match)
        except ApiError as exc:
            return _refused("drain", exc)
        total = sum(active.values())
        view.update(total)
        if total == 0:
            view.close()
            print(f"{names}: no active connection")
            return EXIT_OK
        if deadline is not None and time.monotonic() >= deadline:
            view.close()
            print(
                f"gridlb drain: timed out after {args.timeout:g} s; {names} still has {total} active "
                "connection(s) (it stays drained)",
                file=sys.stderr,
            )
            return EXIT_REFUSED
        time.sleep(0.2)


def run_enable(args: argparse.Namespace) -> int:
    """Lift a drain."""
    with _client(args) as client:
        try:
            result = client.enable(args.real)
        except ApiError as exc:
            return _refused("enable", exc)
    note = "" if result["was_drained"] else " (it was not drained)"
    print(f"enabled {', '.join(result['enabled'])}{note}")
    return EXIT_OK


def run_add(args: argparse.Namespace) -> int:
    """Add a real server at run time."""
    with _client(args) as client:
        try:
            result = client.add(args.real, args.service, args.weight)
        except ApiError as exc:
            return _refused("add", exc)
    print(f"added {result['added']} to {result['service']} with weight {result['weight']}")
    return EXIT_OK


def run_remove(args: argparse.Namespace) -> int:
    """Remove a real server, at once or after draining."""
    with _client(args) as client:
        try:
            result = client.remove(args.real, args.service, args.drain, args.timeout)
        except ApiError as exc:
            return _refused("remove", exc)
    if args.drain:
        for r in result["retiring"]:
            print(f"draining {r['real']} out of {r['service']}: it leaves when its last connection ends")
    else:
        for r in result["removed"]:
            print(f"removed {r['real']} from {r['service']}")
    return EXIT_OK


def run_reload(args: argparse.Namespace) -> int:
    """Ask the director to reload its site files."""
    with ControlClient(args.socket or default_socket(), timeout_s=120) as client:
        try:
            result = client.reload()
        except ApiError as exc:
            return _refused("reload", exc)
    print(
        f"reloaded (generation {result['generation']}): {result['services']} services, "
        f"{len(result['added'])} real servers added, {len(result['retiring'])} retiring, "
        f"{len(result['checks_changed'])} with changed checks"
    )
    for r in result["retiring"]:
        print(f"  retiring {r['real']} from {r['service']} (leaves when its last connection ends)")
    for r in result["added"]:
        print(f"  added {r['real']} to {r['service']}")
    for text in result.get("warnings", []):
        print(f"  warning: {text}")
    for name in result.get("restart_needed", []):
        print(f"  {name} changed: it takes effect when the director restarts (still using the old value)")
    return EXIT_OK
