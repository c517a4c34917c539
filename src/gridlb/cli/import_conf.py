"""`gridlb import keepalived.conf > site.yaml`: a keepalived.conf as a site file in the seed's style."""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from gridlb.config.import_keepalived import VIRTUAL_SERVERS, VRRP_INSTANCES, VRRP_SCRIPTS, import_file
from gridlb.errors import EXIT_OK
from gridlb.userfiles import write_atomic

#: Section order in the written site file, as the seed lists them.
_ORDER = (VRRP_SCRIPTS, VRRP_INSTANCES, VIRTUAL_SERVERS, "gridlb")
_COMMENTS = {
    VRRP_SCRIPTS: "vrrp_script blocks (tracked by instances)",
    VRRP_INSTANCES: "arioch/puppet-keepalived VRRP",
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
    imported = import_file(args.conf)
    imported.site()  # validate: errors name the keepalived.conf line
    for warning in imported.warnings:
        print(f"gridlb: {warning}", file=sys.stderr)
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
