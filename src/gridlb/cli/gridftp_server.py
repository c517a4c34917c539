"""`gridlb gridftp-server`: run the embedded GridFTP server from the command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import signal
import sys
from typing import Any

from gridlb.errors import EXIT_OK, ConfigError
from gridlb.gridftp.server import GridftpServer, ServerConfig

DESCRIPTION = """\
Serve --root over anonymous ftp:// with the GridFTP extensions globus-url-copy uses (MODE E parallel
streams, SPAS/SPOR, ERET/ESTO, CKSM, REST). GSI (gsiftp://, X.509 proxies, DCAU A) is out of scope:
only anonymous ftp:// logins (USER anonymous or ftp, any password) are accepted.

Paths are virtual: "/" is --root, and nothing outside it can be read, written or listed.
PASV/SPAS advertise --data-address (the real server's own address), never the address the client dialled;
so does EPSV (--epsv-ip): an RFC 2428 reply has no address and sends the client to the address it
dialled, which behind a load balancer is the VIP. With --data-address, Globus clients (SITE CLIENTINFO)
get the address by default and other clients the RFC form.
PORT/EPRT/SPOR are refused (504) for a privileged port, or for a host other than the control connection's
peer unless --allow-third-party names it (no FTP bounce).

Maintenance: SIGUSR1 makes new connections get "422 Service temporarily offline", SIGUSR2 undoes it;
while --disable-file exists new connections get 422 too. Running transfers continue.
Beyond --max-connections new connections get "421 Service busy".
"""


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected ADDR:PORT (e.g. 0.0.0.0:2811 or [::]:2811)")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: {host!r} is not an IP address") from None
    if not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: port out of range")
    return host, int(port)


def _address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None


def _network(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an address or network (CIDR)") from None


def _port_range(text: str) -> tuple[int, int]:
    a, sep, b = text.replace(",", "-").partition("-")
    if not sep or not a.isdigit() or not b.isdigit() or not 0 < int(a) <= int(b) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: expected A-B with 0 < A <= B < 65536")
    return int(a), int(b)


def register(subparsers: Any) -> None:
    """Add the `gridftp-server` subcommand."""
    p = subparsers.add_parser(
        "gridftp-server",
        help="run the embedded GridFTP server (anonymous ftp:// only; GSI is out of scope)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--root", required=True, help="directory served as /")
    p.add_argument(
        "--listen", type=_hostport, default=("0.0.0.0", 2811), help="ADDR:PORT (default 0.0.0.0:2811)"
    )
    p.add_argument(
        "--data-address",
        type=_address,
        help="address advertised in PASV/SPAS and bound by data sockets (needed with a wildcard --listen)",
    )
    p.add_argument(
        "--epsv-ip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="put the data address in every EPSV reply, as Globus' -epsv-ip (breaks RFC 2428: curl refuses "
        "it; but clients behind a VIP reach this server, not the VIP); --no-epsv-ip: never. Default with "
        "--data-address: to the clients that sent SITE CLIENTINFO (globus-url-copy), which read it",
    )
    p.add_argument(
        "--allow-third-party",
        type=_network,
        action="append",
        default=[],
        metavar="NET",
        help="let PORT/EPRT/SPOR name hosts in NET (CIDR or address; repeatable; 0.0.0.0/0 and ::/0 = any), "
        "for third-party copies and clients behind a proxying director (default: only the control "
        "connection's peer)",
    )
    p.add_argument("--port-range", type=_port_range, help="passive data ports A-B (default: any free port)")
    p.add_argument("--max-connections", type=int, default=100, help="beyond this, 421 (default 100)")
    p.add_argument("--disable-file", help="while this file exists, new connections get 422")
    p.add_argument("-v", "--verbose", action="store_true", help="log every command")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the server until SIGINT/SIGTERM."""
    host, port = args.listen
    if args.max_connections < 1:
        raise ConfigError("must be at least 1", key="--max-connections")
    if args.data_address is None and host in ("0.0.0.0", "::"):
        raise ConfigError(
            "a wildcard --listen needs --data-address (the address clients reach)", key="--listen"
        )
    try:
        cfg = ServerConfig(
            root=args.root,
            host=host,
            port=port,
            data_address=args.data_address,
            port_range=args.port_range,
            max_connections=args.max_connections,
            disable_file=args.disable_file,
            allow_third_party=tuple(args.allow_third_party),
            epsv_ip=args.epsv_ip,
        )
        server = GridftpServer(cfg)
    except ValueError as exc:
        raise ConfigError(str(exc), key="--root") from None
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return asyncio.run(_serve(server))


async def _serve(server: GridftpServer) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def disable(value: bool) -> None:
        server.disabled = value
        logging.getLogger(__name__).info("new connections %s", "refused (422)" if value else "accepted")

    loop.add_signal_handler(signal.SIGUSR1, disable, True)
    loop.add_signal_handler(signal.SIGUSR2, disable, False)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        await server.start()
    except OSError as exc:
        raise ConfigError(f"cannot listen: {exc.strerror or exc}", key="--listen") from None
    epsv = server.config.epsv_mode
    third = ", ".join(str(n) for n in server.third_party) or "none (the client only)"
    print(
        f"gridftp-server: listening on {server.config.host}:{server.port}, "
        f"data address {server.data_address} (EPSV {epsv}), third-party data to {third}",
        file=sys.stderr,
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await server.stop()
    return EXIT_OK
