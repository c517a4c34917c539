"""`gridlb check tcp|gridftp|xrootd|script TARGET`: run one health check; exit 0 (up) or 1 (down/refusing).

Made to be called by keepalived's MISC_CHECK (`misc_path "gridlb check gridftp --timeout 3 RIP:2811"`).
With `--misc-dynamic-weight W` (for `misc_dynamic`) the exit status carries the weight instead: up exits
W + 2 (weight W), refusing exits 2 (weight 0: drain), down exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import math
from typing import Any

from gridlb.config import defaults as D
from gridlb.errors import ConfigError
from gridlb.health import http as http_check
from gridlb.health.base import CheckResult, Verdict, create_checker
from gridlb.table import RealKey

DEFAULT_PORT = 2811
DEFAULT_PORTS = {"xrootd": D.XROOTD_PORT, "http": 80, "https": 443}


def _target(text: str, kind: str = "") -> RealKey:
    try:
        return RealKey.parse(text, default_port=DEFAULT_PORTS.get(kind, DEFAULT_PORT))
    except ValueError as exc:
        raise ConfigError(f"{text!r} is not ADDR[:PORT] or [V6ADDR]:PORT ({exc})", key="TARGET") from None


def _common(p: argparse.ArgumentParser, port: int = DEFAULT_PORT) -> None:
    p.add_argument("target", metavar="TARGET", help=f"real server ADDR[:PORT] (port {port} if omitted)")
    p.add_argument("--timeout", type=float, default=5.0, metavar="S", help="seconds the check may take (5)")
    p.add_argument(
        "--misc-dynamic-weight",
        type=int,
        metavar="W",
        help="exit W+2 when up, 2 when refusing, 1 when down (for keepalived misc_dynamic)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing; only the exit status")


def _connect_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bindto", metavar="ADDR", help="source address of the check (never the VIP)")
    p.add_argument("--bind-port", type=int, default=0, metavar="PORT", help="source port")
    p.add_argument("--bind-if", metavar="IF", help="interface to leave from (SO_BINDTODEVICE; needs root)")
    p.add_argument("--connect-ip", metavar="ADDR", help="connect here instead of TARGET's address")
    p.add_argument("--connect-port", type=int, metavar="PORT", help="connect here instead of TARGET's port")


def register(subparsers: Any) -> None:
    """Add `gridlb check` and its kinds."""
    check = subparsers.add_parser(
        "check",
        help="run one health check (tcp, gridftp, xrootd, script); exit 0 up, 1 down or refusing",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = check.add_subparsers(dest="kind", metavar="KIND", required=True)

    tcp = kinds.add_parser("tcp", help="keepalived TCP_CHECK: a TCP connect within the timeout")
    _common(tcp)
    _connect_opts(tcp)

    gftp = kinds.add_parser(
        "gridftp",
        help="GridFTP banner / login / canary check with the PASV data-address check",
        description="220 = up; 421/422 = refusing (drain); anything else or a timeout = down.",
    )
    _common(gftp)
    _connect_opts(gftp)
    gftp.add_argument("--level", choices=("banner", "login", "canary"), default=D.GRIDFTP_CHECK_LEVEL)
    gftp.add_argument("--user", default=D.GRIDFTP_CHECK_USER)
    gftp.add_argument("--password", default=D.GRIDFTP_CHECK_PASSWORD)
    gftp.add_argument(
        "--vip",
        action="append",
        default=[],
        metavar="ADDR",
        help="a VIP; PASV advertising it is a fault (repeatable)",
    )
    gftp.add_argument(
        "--no-data-address-check", action="store_true", help="skip PASV after login (login/canary levels)"
    )
    gftp.add_argument("--canary", metavar="PATH", help="small file on the server (canary level)")
    gftp.add_argument("--canary-method", choices=("cksm", "retr"), default="cksm")
    gftp.add_argument(
        "--canary-algorithm", default="ADLER32", metavar="ALG", help="ADLER32 (default), MD5, ..."
    )
    gftp.add_argument("--canary-checksum", metavar="HEX", help="expected checksum of the canary")

    xrd = kinds.add_parser(
        "xrootd",
        help="XRootD handshake + kXR_protocol / kXR_login / kXR_stat or kXR_ping check",
        description="Every step answered = up; kXR_wait or kXR_Overloaded = refusing (drain); "
        "anything else, not XRootD, closed or a timeout = down. A redirect to a --vip or to loopback "
        "is a fault.",
    )
    _common(xrd, D.XROOTD_PORT)
    _connect_opts(xrd)
    xrd.add_argument("--level", choices=("connect", "login", "canary"), default=D.XROOTD_CHECK_LEVEL)
    xrd.add_argument("--user", default=D.XROOTD_CHECK_USER, help="kXR_login user name (1 to 8 bytes)")
    xrd.add_argument("--canary", metavar="PATH", help="canary level: kXR_stat this path (default: kXR_ping)")
    xrd.add_argument(
        "--vip",
        action="append",
        default=[],
        metavar="ADDR",
        help="a VIP; a redirect to it is a fault (repeatable)",
    )
    xrd.add_argument("--no-redirect-check", action="store_true", help="accept any redirect target")

    script = kinds.add_parser(
        "script",
        help="keepalived MISC_CHECK: run COMMAND; exit 0 up, 1 down, 2..255 weight-2 with --dynamic",
    )
    _common(script)
    script.add_argument(
        "--dynamic", action="store_true", help="misc_dynamic: exit 2..255 = up, weight = exit-2"
    )
    script.add_argument(
        "--user", metavar="USER[:GROUP]", help="run COMMAND as this user (MISC_CHECK `user`; needs root)"
    )
    script.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        metavar="COMMAND ...",
        help="the command (options go before TARGET)",
    )

    web = [
        kinds.add_parser(k, help=f"keepalived {ka} + WebDAV levels")
        for k, ka in (("http", "HTTP_GET"), ("https", "SSL_GET"))
    ]
    for p in web:
        _common(p)
        _connect_opts(p)
        http_check.add_cli_options(p)

    for p in (tcp, gftp, xrd, script, *web):
        p.set_defaults(func=run)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if args.kind in ("http", "https"):
        opts.update(http_check.cli_options(args))
    if args.kind in ("tcp", "gridftp", "xrootd", "http", "https"):
        opts.update(
            bindto=args.bindto,
            bind_port=args.bind_port,
            bind_if=args.bind_if,
            connect_ip=args.connect_ip,
            connect_port=args.connect_port,
        )
    if args.kind == "xrootd":
        opts.update(
            level=args.level,
            user=args.user,
            canary_path=args.canary,
            vips=args.vip,
            check_redirect=not args.no_redirect_check,
        )
    if args.kind == "gridftp":
        opts.update(
            level=args.level,
            user=args.user,
            password=args.password,
            vips=args.vip,
            data_address_check=not args.no_data_address_check,
            canary_path=args.canary,
            canary_method=args.canary_method,
            canary_algorithm=args.canary_algorithm,
            canary_checksum=args.canary_checksum,
        )
    if args.kind == "script":
        command = list(args.command)
        if command[:1] == ["--"]:
            command = command[1:]
        if not command:
            raise ConfigError("no command given (gridlb check script TARGET -- COMMAND ...)", key="COMMAND")
        user = args.user.replace(":", " ", 1) if args.user else None
        opts.update(path=command, dynamic=args.dynamic, user=user)
    return opts


def exit_status(result: CheckResult, misc_dynamic_weight: int | None) -> int:
    """Return the exit status for `result` (see the module docstring)."""
    if misc_dynamic_weight is None:
        return 0 if result.verdict is Verdict.UP else 1
    if result.verdict is Verdict.DOWN:
        return 1
    if result.verdict is Verdict.REFUSING:
        return 2
    weight = result.weight if result.weight is not None else misc_dynamic_weight
    return min(max(weight, 0), 253) + 2


def run(args: argparse.Namespace) -> int:
    """Run the check and print one line: verdict, target, reason, time."""
    target = _target(args.target, args.kind)
    if not 0 < args.timeout < math.inf:  # also refuses nan
        raise ConfigError(f"{args.timeout} must be > 0", key="--timeout")
    if args.misc_dynamic_weight is not None and not 0 <= args.misc_dynamic_weight <= 253:
        raise ConfigError(f"{args.misc_dynamic_weight} is not in 0..253", key="--misc-dynamic-weight")
    try:
        checker = create_checker(args.kind, **_options(args))
    except ValueError as exc:
        raise ConfigError(str(exc), key=args.kind) from None
    result = asyncio.run(checker.check(target, timeout_s=args.timeout))
    if not args.quiet:
        weight = f" weight={result.weight}" if result.weight is not None else ""
        print(f"{result.verdict} {target}{weight}: {result.reason} ({result.latency_s * 1000:.1f} ms)")
    return exit_status(result, args.misc_dynamic_weight)
