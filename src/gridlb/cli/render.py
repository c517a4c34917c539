"""`gridlb render keepalived|fwmark SITE.yaml [MORE.yaml ...]`: each director's keepalived.conf, or the
nftables rules that mark GridFTP control and data ports for firewall-mark services.

Files are written whole or not at all (a temporary file renamed over the old one), so a failed render
leaves an existing keepalived.conf as it was.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gridlb.config.load import Site, load_site
from gridlb.errors import EXIT_OK, ConfigError
from gridlb.render.fwmark import fwmark_rules
from gridlb.render.keepalived import DEFAULT_GRIDLB_COMMAND, render_site
from gridlb.userfiles import write_atomic


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `render` subcommand."""
    p = subparsers.add_parser(
        "render",
        help="render a site as keepalived.conf, one per director",
        description=(
            "Render the site's keepalived.conf for each director. A single director file also gives "
            "the peer director's config (BACKUP, priority 50 lower, unicast source and peer swapped); "
            "with one file per director each is rendered as written."
        ),
    )
    p.add_argument(
        "format",
        choices=["keepalived", "fwmark"],
        help="what to render: keepalived.conf, or the nftables rules of GridFTP firewall-mark services",
    )
    p.add_argument("site", nargs="+", metavar="SITE.yaml", help="site files (e.g. one per director)")
    p.add_argument("--director", metavar="NAME", help="render only this director (a file's or NAME-peer)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("-o", "--output", metavar="FILE", help="write the (single) config to FILE")
    out.add_argument("--output-dir", metavar="DIR", help="write DIR/<director>.conf for every director")
    p.add_argument(
        "--gridlb-command",
        default=DEFAULT_GRIDLB_COMMAND,
        metavar="PATH",
        help=f"gridlb program keepalived runs for GridFTP checks (default {DEFAULT_GRIDLB_COMMAND})",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Render and write or print the configs."""
    site = load_site(args.site)
    if args.format == "fwmark":
        return _fwmark(site, args)
    configs = render_site(site, director=args.director, gridlb_command=args.gridlb_command)
    if args.output_dir:
        out_dir = Path(args.output_dir)
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create {out_dir}: {exc.strerror}", key="--output-dir") from None
        for name, text in configs.items():
            path = out_dir / f"{name}.conf"
            write_atomic(path, text, what="--output-dir")
            print(f"gridlb: wrote {path}", file=sys.stderr)
        return EXIT_OK
    if args.output:
        if len(configs) != 1:
            names = ", ".join(configs)
            raise ConfigError(
                f"the site has several directors ({names}); pick one with --director or use --output-dir",
                key="--output",
            )
        write_atomic(args.output, next(iter(configs.values())), what="--output")
        return EXIT_OK
    several = len(configs) > 1
    for i, (name, text) in enumerate(configs.items()):
        if several:
            if i:
                sys.stdout.write("\n")
            sys.stdout.write(f"# ===== director {name} =====\n")
        sys.stdout.write(text)
    return EXIT_OK


def _fwmark(site: Site, args: argparse.Namespace) -> int:
    """Write or print the nftables script that marks the site's GridFTP firewall-mark services."""
    text = fwmark_rules(site)
    if not text:
        raise ConfigError(
            "no gridlb.gridftp_services entry names a fwmark: nothing to mark", key="gridlb.gridftp_services"
        )
    if args.output_dir:
        raise ConfigError("fwmark rules are one file for both directors: use -o FILE", key="--output-dir")
    if args.output:
        write_atomic(args.output, text, what="--output")
    else:
        sys.stdout.write(text)
    return EXIT_OK
