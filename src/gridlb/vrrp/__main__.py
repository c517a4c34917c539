"""Command line of the VRRP-only daemon: `python -m gridlb.vrrp run SITE.yaml` (like `keepalived -P`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from gridlb.errors import EXIT_USAGE, GridlbError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `vrrp run` to a `gridlb` command line (the dispatcher calls this)."""
    p = subparsers.add_parser("vrrp", help="run VRRP instances only (like keepalived -P)")
    register_run(p.add_subparsers(dest="vrrp_command", metavar="COMMAND", required=True))


def register_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `run` subcommand."""
    run_p = sub.add_parser("run", help="run the site file's VRRP instances in the foreground")
    run_p.add_argument("site", type=Path, nargs="+", help="site YAML file(s) with keepalived::vrrp_instances")
    run_p.add_argument("--instance", action="append", default=[], help="run only this instance (repeatable)")
    run_p.add_argument(
        "--listen", type=int, metavar="PORT", help="also listen on every VIP:PORT (IP_FREEBIND)"
    )
    run_p.add_argument("--status-file", type=Path, help="keep a JSON status of every instance here")
    run_p.add_argument("-v", "--verbose", action="store_true", help="log every event")
    run_p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gridlb.vrrp.daemon import run_daemon
    from gridlb.vrrp.site import load_configs

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    configs = load_configs(args.site)
    if args.instance:
        names = {c.name for c in configs}
        for wanted in args.instance:
            if wanted not in names:
                raise GridlbError(
                    f"{args.site}: error: no instance {wanted!r} (have {', '.join(sorted(names))})"
                )
        configs = [c for c in configs if c.name in args.instance]
    return asyncio.run(run_daemon(configs, listen_port=args.listen, status_file=args.status_file))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gridlb.vrrp", description="gridlb's VRRP-only daemon")
    register_run(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except GridlbError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"gridlb vrrp: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
