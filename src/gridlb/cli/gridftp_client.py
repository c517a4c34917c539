"""`gridlb gridftp-client get|put|copy`: move files with the built-in GridFTP client (anonymous ftp://)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

from gridlb.errors import EXIT_OK, EXIT_USAGE
from gridlb.gridftp.client import ClientError, transfer
from gridlb.gridftp.protocol import Scheme, parse_url

EXIT_FAILED = 1


def register(subparsers: Any) -> None:
    """Add the `gridftp-client` subcommand with get/put/copy."""
    p = subparsers.add_parser(
        "gridftp-client",
        help="download, upload or third-party copy with the built-in GridFTP client (anonymous ftp://)",
        description="GridFTP transfers over anonymous ftp:// (GSI/gsiftp:// is out of scope). "
        "With --parallel N > 1 the transfer uses MODE E with N TCP streams.",
    )
    sub = p.add_subparsers(dest="gridftp_action", metavar="ACTION", required=True)
    for name, a, b, text in (
        ("get", "URL", "LOCAL", "download ftp://host:port/path to a local file"),
        ("put", "LOCAL", "URL", "upload a local file to ftp://host:port/path"),
        ("copy", "SRC_URL", "DST_URL", "third-party copy between two servers (data flows between them)"),
    ):
        sp = sub.add_parser(name, help=text, description=text)
        sp.add_argument(a.lower(), metavar=a)
        sp.add_argument(b.lower(), metavar=b)
        sp.add_argument("-p", "--parallel", type=int, default=1, help="TCP streams (MODE E when > 1)")
        sp.add_argument(
            "--timeout", type=float, default=30.0, help="seconds to wait for a reply or connection"
        )
        sp.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
        sp.set_defaults(func=run)


def _url(text: str, *, local: bool) -> str:
    """Return a URL for `text`: local arguments may be plain paths (made file:// URLs)."""
    if local and "://" not in text:
        return "file://" + os.path.abspath(text)
    return text


def run(args: argparse.Namespace) -> int:
    """Run one transfer; exit 0 on success, 1 with one line on stderr on failure, 2 on bad arguments."""
    action = args.gridftp_action
    if action == "get":
        src, dst = _url(args.url, local=False), _url(args.local, local=True)
    elif action == "put":
        src, dst = _url(args.local, local=True), _url(args.url, local=False)
    else:
        src, dst = args.src_url, args.dst_url
    if not 1 <= args.parallel <= 64:
        print("gridlb gridftp-client: --parallel must be between 1 and 64", file=sys.stderr)
        return EXIT_USAGE
    try:
        s, d = parse_url(src), parse_url(dst)
    except ValueError as exc:
        print(f"gridlb gridftp-client: {exc}", file=sys.stderr)
        return EXIT_USAGE
    want = {
        "get": (Scheme.FTP, Scheme.FILE),
        "put": (Scheme.FILE, Scheme.FTP),
        "copy": (Scheme.FTP, Scheme.FTP),
    }
    if (s.scheme, d.scheme) != want[action]:
        print(f"gridlb gridftp-client: {action}: wrong kind of URL (see --help)", file=sys.stderr)
        return EXIT_USAGE
    t0 = time.monotonic()
    try:
        res = asyncio.run(transfer(src, dst, parallel=args.parallel, timeout_s=args.timeout))
    except ClientError as exc:
        print(f"gridlb gridftp-client: {action} failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"gridlb gridftp-client: {action} failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    dt = time.monotonic() - t0
    if not args.quiet:
        if res is None:
            print(f"{action}: done in {dt:.3f} s ({args.parallel} stream(s))")
        else:
            rate = res.bytes / dt / 1e6 if dt > 0 else 0.0
            print(f"{action}: {res.bytes} bytes in {dt:.3f} s, {rate:.1f} MB/s, {res.streams} stream(s)")
    return EXIT_OK
