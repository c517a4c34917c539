"""`gridlb director run SITE.yaml [MORE.yaml ...]`: run the director in the foreground; `gridlb director
drain|undrain`: take a scaled-out director out of (and back into) the router's ECMP."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from gridlb.director.daemon import DaemonOptions, DirectorDaemon
from gridlb.director.director import DEFAULT_RESYNC_INTERVAL_S, DirectorConfig
from gridlb.errors import ConfigError
from gridlb.metrics import check_listen


def _mode(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an octal mode like 0660") from None
    if not 0 <= value <= 0o777:
        raise argparse.ArgumentTypeError(f"{text!r} is not a permission mode (0000-0777)")
    return value


def register(subparsers: Any) -> None:
    """Add `gridlb director run`."""
    p = subparsers.add_parser(
        "director",
        help="run the director (balancing, health checks, control socket, metrics)",
        description=__doc__,
    )
    sub = p.add_subparsers(dest="director_command", metavar="ACTION", required=True)
    run_p = sub.add_parser(
        "run",
        help="run in the foreground until SIGTERM/SIGINT; SIGHUP reloads the site files",
        description=(
            "Program the dataplane from the site files, check the real servers, serve the control "
            "socket (gridlb status/drain/enable/add/remove/reload) and, if configured, Prometheus "
            "metrics. SIGHUP (or `gridlb reload`) re-reads and validates the files before switching; "
            "SIGTERM stops accepting and lets open connections finish for --grace seconds."
        ),
    )
    run_p.add_argument("site", nargs="+", metavar="SITE.yaml", help="site files (one director's view)")
    run_p.add_argument("--socket", metavar="PATH", help="control socket (default: gridlb.control_socket)")
    run_p.add_argument(
        "--socket-mode",
        type=_mode,
        default=0o660,
        metavar="MODE",
        help="control socket permissions (0660: root and the group; 0666 lets anyone read status)",
    )
    run_p.add_argument(
        "--group", metavar="GROUP", help="group that may change state (default: gridlb.control_group)"
    )
    run_p.add_argument(
        "--metrics",
        metavar="ADDR:PORT",
        help="Prometheus listener ('' = off; default: gridlb.metrics_listen)",
    )
    run_p.add_argument(
        "--dashboard",
        metavar="ADDR:PORT",
        help="web dashboard listener ('' = off; default: gridlb.dashboard_listen)",
    )
    run_p.add_argument(
        "--resync",
        type=float,
        default=DEFAULT_RESYNC_INTERVAL_S,
        metavar="S",
        help="drift-repair period (5 s)",
    )
    run_p.add_argument(
        "--grace", type=float, default=5.0, metavar="S", help="shutdown grace for open connections (5 s)"
    )
    run_p.add_argument(
        "--no-vrrp", action="store_true", help="do not run the site's VRRP instances (no VIPs are managed)"
    )
    run_p.add_argument(
        "--flush-on-exit",
        action="store_true",
        help="delete every virtual service from the dataplane at stop (default: the kernel table stays, "
        "so a restart drops no connection)",
    )
    run_p.add_argument("-v", "--verbose", action="store_true", help="log every change")
    run_p.set_defaults(func=run)
    unit_p = sub.add_parser(
        "unit",
        help="print the systemd unit for `gridlb director run` with this installation's paths",
        description=(
            "Print gridlb-director.service (Type=notify, watchdog, reload on SIGHUP, restart on failure, "
            "only CAP_NET_ADMIN, CAP_NET_RAW and CAP_NET_BIND_SERVICE) running this gridlb on SITE.yaml. "
            "Install: gridlb director unit --site /etc/gridlb/director.yaml "
            "> /etc/systemd/system/gridlb-director.service && systemctl daemon-reload"
        ),
    )
    unit_p.add_argument(
        "--site",
        action="append",
        default=[],
        metavar="SITE.yaml",
        help="site file (repeatable; default /etc/gridlb/director.yaml)",
    )
    unit_p.set_defaults(func=run_unit)

    from gridlb.cli.ctl import add_socket_option

    drain_p = sub.add_parser(
        "drain",
        help="scale-out: withdraw this director's VIPs from the router (flows move to the other directors)",
        description=(
            "Withdraw every VIP this director announces over BGP (gridlb.scaleout). Returns once the "
            "speaker has withdrawn them; the router then sends new flows to the other directors. The "
            "director keeps serving what still reaches it. Lasts until `gridlb director undrain` or a "
            "restart."
        ),
    )
    add_socket_option(drain_p)
    drain_p.set_defaults(func=run_drain)
    undrain_p = sub.add_parser(
        "undrain",
        help="scale-out: announce this director's VIPs again (while it can serve them)",
        description="Lift `gridlb director drain`: each VIP is announced again while a real server is up "
        "for it.",
    )
    add_socket_option(undrain_p)
    undrain_p.set_defaults(func=run_undrain)


def run_unit(args: argparse.Namespace) -> int:
    """Print the director's systemd unit."""
    from gridlb.systemd.units import render_director_unit

    print(render_director_unit(args.site or ["/etc/gridlb/director.yaml"]), end="")
    return 0


def setup_logging(verbose: bool) -> None:
    """Log to stderr, one line per event."""
    from gridlb.systemd.journal import setup_logging as journal_or_stderr

    journal_or_stderr(logging.DEBUG if verbose else logging.INFO)


def run(args: argparse.Namespace) -> int:
    """Run the director until stopped."""
    setup_logging(args.verbose)
    config = DirectorConfig.load(args.site)
    for name, value in (("--metrics", args.metrics), ("--dashboard", args.dashboard)):
        if value:
            check_listen(value, name)
    if args.resync <= 0:
        raise ConfigError("must be > 0", key="--resync")
    options = DaemonOptions(
        socket_path=args.socket,
        socket_mode=args.socket_mode,
        socket_group=args.group,
        metrics_listen=args.metrics,
        dashboard_listen=args.dashboard,
        resync_interval_s=args.resync,
        grace_s=max(0.0, args.grace),
        vrrp=not args.no_vrrp,
        flush_on_exit=args.flush_on_exit,
    )

    async def main() -> None:
        daemon = DirectorDaemon(config, options)
        await daemon.run()

    try:
        asyncio.run(main())
    except OSError as exc:
        raise ConfigError(str(exc), key="director") from None
    return 0


def run_drain(args: argparse.Namespace) -> int:
    """Withdraw this director's VIPs."""
    return _drain_op(args, drain=True)


def run_undrain(args: argparse.Namespace) -> int:
    """Announce this director's VIPs again."""
    return _drain_op(args, drain=False)


def _drain_op(args: argparse.Namespace, *, drain: bool) -> int:
    from gridlb.api.client import ControlClient, default_socket
    from gridlb.api.messages import ApiError
    from gridlb.cli.ctl import _refused

    with ControlClient(args.socket or default_socket()) as client:
        try:
            result = client.director_drain() if drain else client.director_undrain()
        except ApiError as exc:
            return _refused(f"director {'drain' if drain else 'undrain'}", exc)
    if drain:
        vips = ", ".join(result["withdrawn"]) or "no VIP"
        print(f"director drained: withdrew {vips}{' (was already drained)' if result['was_drained'] else ''}")
    else:
        vips = ", ".join(result["announced"]) or "no VIP (none can be served now)"
        print(f"director undrained: announcing {vips}")
    return 0
