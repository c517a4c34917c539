"""`gridlb import keepalived.conf > site.yaml`: a keepalived.conf as a site file in the seed's style."""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from gridlb.config.import_keepalived import (
    BFD_INSTANCES,
    GLOBAL_DEFS,
    STATIC_IPADDRESS,
    STATIC_ROUTES,
    STATIC_RULES,
    SYNC_GROUPS,
    TRACK_FILES,
    VIRTUAL_SERVERS,
    VRRP_INSTANCES,
    VRRP_SCRIPTS,
    import_file,
)
from gridlb.config.load import ConfigErrors
from gridlb.errors import EXIT_OK, EXIT_USAGE
from gridlb.userfiles import write_atomic

#: Section order in the written site file, as the seed lists them.
_ORDER = (
    GLOBAL_DEFS,
    STATIC_IPADDRESS,
    STATIC_ROUTES,
    STATIC_RULES,
    TRACK_FILES,
    BFD_INSTANCES,
    VRRP_SCRIPTS,
    VRRP_INSTANCES,
    SYNC_GROUPS,
    VIRTUAL_SERVERS,
    "gridlb",
)
_COMMENTS = {
    GLOBAL_DEFS: "keepalived's mail settings (smtp_alert); gridlb sends no mail",
    STATIC_IPADDRESS: "installed by keepalived at start, not by gridlb",
    STATIC_ROUTES: "installed by keepalived at start, not by gridlb",
    STATIC_RULES: "installed by keepalived at start, not by gridlb",
    TRACK_FILES: "read by keepalived's FILE_CHECK, not by gridlb",
    BFD_INSTANCES: "run by keepalived, not by gridlb",
    VRRP_SCRIPTS: "vrrp_script blocks (tracked by instances)",
    VRRP_INSTANCES: "arioch/puppet-keepalived VRRP",
    SYNC_GROUPS: "vrrp_sync_group blocks (gridlb does not synchronise them)",
    VIRTUAL_SERVERS: "arioch/puppet-keepalived LVS",
    "gridlb": "gridlb settings (router_id becomes director_name)",
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `import` subcommand."""
    p = subparsers.add_parser(
        "import",
        help="read a keepalived.conf into a site YAML file",
        description=(
            "Read a keepalived.conf (with its includes) and print it as a site file with the seed's "
            "Hiera keys (keepalived::vrrp_instances, keepalived::virtual_servers). Settings the site "
            "does not keep are reported as warnings on stderr."
        ),
    )
    p.add_argument("conf", metavar="keepalived.conf")
    p.add_argument(
        "-i",
        "--config-id",
        metavar="ID",
        help="the id `@ID` lines are for, as keepalived -i (default: keepalived's, the node name)",
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write the site file to FILE instead of stdout")
    p.set_defaults(func=run)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        out = CommentedMap()
        for k, v in value.items():
            out[k] = _plain(v)
        return out
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def to_yaml(mapping: Mapping[str, Any], source: str) -> str:
    """The site mapping as YAML text, sections in the seed's order with a comment line each."""
    doc = CommentedMap()
    doc.yaml_set_start_comment(f"Site file imported by `gridlb import` from {source}")
    for key in _ORDER:
        if key in mapping:
            doc[key] = _plain(mapping[key])
            doc.yaml_set_comment_before_after_key(key, before="\n" + _COMMENTS[key])
    yaml = YAML()
    yaml.indent(mapping=4, sequence=4, offset=2)
    yaml.width = 4096
    buf = io.StringIO()
    yaml.dump(doc, buf)
    return buf.getvalue()


def run(args: argparse.Namespace) -> int:
    """Import, validate, and write the site file."""
    imported = import_file(args.conf, config_id=args.config_id)
    for warning in imported.warnings:
        print(f"gridlb: {warning}", file=sys.stderr)
    try:
        imported.site()  # validate: errors name the keepalived.conf line
    except ConfigErrors as exc:
        for err in exc.errors:
            print(f"gridlb: {err}", file=sys.stderr)
        return EXIT_USAGE
    text = to_yaml(imported.mapping, args.conf)
    if args.output:
        write_atomic(args.output, text, what="--output")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def main(argv: Sequence[str]) -> int:  # pragma: no cover - convenience for `python -m`
    """Run `gridlb import` with `argv`."""
    parser = argparse.ArgumentParser(prog="gridlb")
    register(parser.add_subparsers())
    return int(run(parser.parse_args(["import", *argv])))
