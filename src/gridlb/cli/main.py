"""The `gridlb` entry point: finds each subcommand's module, runs it, and turns user errors into messages."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from gridlb import __version__
from gridlb.errors import EXIT_USAGE, GridlbError

#: Modules that each add one or more subcommands with `register(subparsers)`.
COMMAND_MODULES = (
    "gridlb.cli.lint",
    "gridlb.cli.render",
    "gridlb.cli.import_conf",
    "gridlb.cli.gridftp_server",
    "gridlb.cli.gridftp_client",
    "gridlb.cli.director",
    "gridlb.cli.ctl",
    "gridlb.cli.demo",
    "gridlb.cli.realserver",
    "gridlb.cli.lab",
    "gridlb.cli.check",
    "gridlb.cli.failover",
    "gridlb.cli.vrrp",
)

#: Subcommands that parse their own argv (ipvsadm's option grammar is not argparse's).
RAW_COMMANDS = {"ipvsadm": "gridlb.cli.ipvsadm"}


def _import_optional(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every available subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="gridlb",
        description="A load-balanced, highly available GridFTP endpoint and its operator tools.",
    )
    parser.add_argument("--version", action="version", version=f"gridlb {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        mod = _import_optional(name)
        if mod is not None:
            mod.register(sub)
    for raw, modname in RAW_COMMANDS.items():
        if _import_optional(modname) is not None:
            sub.add_parser(raw, help="ipvsadm-compatible table views and edits (see `gridlb ipvsadm -h`)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line in `argv` and return the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        if args_list and args_list[0] in RAW_COMMANDS:
            mod = _import_optional(RAW_COMMANDS[args_list[0]])
            if mod is None:
                print(f"gridlb: {args_list[0]}: not available in this build", file=sys.stderr)
                return EXIT_USAGE
            code: int = mod.main(args_list[1:])
            return code
        parser = build_parser()
        args = parser.parse_args(args_list)
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        result: int = args.func(args)
        return result
    except GridlbError as exc:
        print(f"gridlb: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
