"""`gridlb lint SITE.yaml [MORE.yaml ...]`: say what is wrong with a site; exit 0, 1 findings, 2 unusable."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gridlb.config.lint import Severity, lint_site
from gridlb.config.load import ConfigErrors, load_site
from gridlb.errors import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, ConfigError

HELP = """\
Read the site files (the seed's Hiera YAML and/or gridlb's own keys; one file per director is
fine) and print one line per finding: FILE:LINE: SEVERITY: KEY: MESSAGE. Exit status: 0 clean,
1 findings, 2 unusable input (bad YAML, unknown key, wrong type, out-of-range value, missing file).
"""


def register(subparsers: Any) -> None:
    """Add the `lint` subcommand."""
    p = subparsers.add_parser(
        "lint",
        help="check site files for errors and mistakes (exit 0 clean, 1 findings, 2 unusable)",
        description=HELP,
    )
    p.add_argument("files", nargs="+", metavar="SITE.yaml", help="site files (e.g. one per director)")
    p.add_argument("-q", "--quiet", action="store_true", help="print no summary line")
    p.add_argument("--errors-only", action="store_true", help="report only findings of severity error")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Lint `args.files`; print findings to stdout and a summary to stderr."""
    try:
        site = load_site(args.files)
    except ConfigErrors as exc:
        for err in exc.errors:
            print(err, file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    findings = lint_site(site)
    if args.errors_only:
        findings = [f for f in findings if f.severity is Severity.ERROR]
    for finding in findings:
        print(finding)
    if not args.quiet:
        errors = sum(1 for f in findings if f.severity is Severity.ERROR)
        if findings:
            warnings = len(findings) - errors
            print(f"{len(findings)} finding(s): {errors} error(s), {warnings} warning(s)", file=sys.stderr)
        else:
            print(f"{', '.join(args.files)}: clean", file=sys.stderr)
    return EXIT_FINDINGS if findings else EXIT_OK
