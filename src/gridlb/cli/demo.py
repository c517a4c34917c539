"""`gridlb demo`: a whole load-balanced GridFTP endpoint on loopback, with no root and no set-up.

Three embedded GridFTP real servers on 127.0.0.2, 127.0.0.3 and 127.0.0.4 port 2811 serve one demo
directory, each advertising its own address for data connections; a director with the userspace
proxy dataplane balances 127.0.0.1:2811 over them (wlc, GridFTP checks every second) and serves
their passive data ports 61100-61163 on 127.0.0.1 too (for curl and ftplib), serves its
control socket in a private run directory and Prometheus metrics on 127.0.0.1:9100. The live status
table is shown until Ctrl-C (or --duration); --no-tui prints plain logs instead.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from gridlb.config.load import site_from_mapping
from gridlb.director.daemon import DaemonOptions, DirectorDaemon
from gridlb.director.director import DirectorConfig
from gridlb.errors import ConfigError
from gridlb.gridftp.server import GridftpServer, ServerConfig

VIP = "127.0.0.1"
PORT = 2811
REALS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
#: The real servers' passive ports; the VIP serves them too, for clients that ignore the PASV address.
DATA_PORTS = (61100, 61163)  # above the ephemeral ports (32768-60999): no client holds them
FILES = {"hello.txt": None, "random-1MiB.bin": 1 << 20, "random-16MiB.bin": 16 << 20}

log = logging.getLogger("gridlb.demo")


def register(subparsers: Any) -> None:
    """Add `gridlb demo`."""
    p = subparsers.add_parser(
        "demo",
        help="run a load-balanced GridFTP endpoint on loopback (no root, no set-up)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--duration", type=float, default=0.0, metavar="S", help="stop after S seconds (0 = until Ctrl-C)"
    )
    p.add_argument("--no-tui", action="store_true", help="plain logs instead of the live status table")
    p.add_argument(
        "--metrics", default=f"{VIP}:9100", metavar="ADDR:PORT", help="metrics listener ('' = off)"
    )
    p.add_argument(
        "--dashboard",
        default="",
        metavar="ADDR:PORT",
        help="serve the web dashboard there, e.g. 127.0.0.1:8080 (default: off)",
    )
    p.add_argument(
        "--dir", metavar="DIR", help="run directory (default: a new temporary one, removed at exit)"
    )
    p.set_defaults(func=run)


def demo_site(run_dir: Path, metrics: str, dashboard: str = "") -> DirectorConfig:
    """Return the demo's director config: one wlc service over the three real servers."""
    site = site_from_mapping(
        {
            "virtual_servers": {
                "demo-gridftp": {
                    "ip_address": VIP,
                    "port": PORT,
                    "lb_algo": "wlc",
                    "lb_kind": "NAT",
                    "delay_loop": 1,
                    "delay_before_retry": 1,
                    "retry": 1,
                    "warmup": 0,
                    "gridftp_check": {"connect_timeout": 2},
                    "real_servers": [{"ip_address": ip, "port": PORT} for ip in REALS],
                }
            },
            "gridlb": {
                "dataplane": "proxy",
                "control_socket": str(run_dir / "control.sock"),
                **({"metrics_listen": metrics} if metrics else {}),
                **({"dashboard_listen": dashboard} if dashboard else {}),
                "timeouts": {"tcpfin": 10},
                "gridftp_services": {f"{VIP}:{PORT}": {"data_ports": "{}-{}".format(*DATA_PORTS)}},
            },
        },
        source="<demo>",
    )
    return DirectorConfig.from_site(site, ())


def make_demo_files(root: Path) -> None:
    """Write the files the demo serves."""
    root.mkdir(parents=True, exist_ok=True)
    for name, size in FILES.items():
        path = root / name
        if size is None:
            path.write_text("Hello from the gridlb demo: this file came through 127.0.0.1:2811.\n")
        else:
            with path.open("wb") as f:
                chunk = os.urandom(1 << 20)
                for _ in range(size // len(chunk)):
                    f.write(chunk)


def instructions(run_dir: Path, data: Path, metrics: str, dashboard: str = "") -> str:
    """Return the how-to-try text."""
    sock = run_dir / "control.sock"
    lines = [
        "gridlb demo: one GridFTP endpoint balanced over three real servers",
        f"  endpoint      ftp://{VIP}:{PORT}/  (proxy dataplane, wlc, GridFTP checks every second)",
        f"  real servers  {', '.join(f'{ip}:{PORT}' for ip in REALS)}  serving {data}",
        f"  control       {sock}",
    ]
    if metrics:
        lines.append(f"  metrics       http://{metrics}/metrics")
    if dashboard:
        lines.append(f"  dashboard     http://{dashboard}/")
    lines += [
        "Try, from another terminal:",
        f"  gridlb gridftp-client get ftp://{VIP}:{PORT}/hello.txt /tmp/hello.txt",
        f"  gridlb gridftp-client get ftp://{VIP}:{PORT}/random-16MiB.bin /tmp/r.bin --parallel 4",
    ]
    if shutil.which("curl"):  # curl ignores the PASV address: the VIP serves the data ports too
        lines.append(f"  curl ftp://{VIP}:{PORT}/hello.txt")
    if shutil.which("globus-url-copy"):
        lines.append(f"  globus-url-copy ftp://{VIP}:{PORT}/random-1MiB.bin file:///tmp/random-1MiB.bin")
    lines += [
        f"  gridlb status --socket {sock}",
        f"  gridlb drain {REALS[1]} --wait --socket {sock}",
        f"  gridlb enable {REALS[1]} --socket {sock}",
        f"  gridlb ipvsadm -Ln --stats --socket {sock}",
        "Stop with Ctrl-C.",
    ]
    return "\n".join(lines)


async def _demo(args: argparse.Namespace, run_dir: Path) -> int:
    data = run_dir / "data"
    make_demo_files(data)
    servers = [
        GridftpServer(
            ServerConfig(root=str(data), host=ip, port=PORT, data_address=ip, port_range=DATA_PORTS)
        )
        for ip in REALS
    ]
    started: list[GridftpServer] = []
    try:
        for server in servers:
            try:
                await server.start()
            except OSError as exc:
                raise ConfigError(
                    f"cannot start the real server on {server.config.host}:{PORT}: {exc.strerror or exc}",
                    key="demo",
                ) from None
            started.append(server)
        config = demo_site(run_dir, args.metrics, args.dashboard)
        daemon = DirectorDaemon(config, DaemonOptions(socket_path=str(run_dir / "control.sock"), grace_s=1.0))
        try:
            await daemon.start()
        except OSError as exc:
            await daemon.stop()
            raise ConfigError(f"cannot start the director: {exc.strerror or exc}", key="demo") from None
        director = daemon.director
        assert director is not None
        if director.last_errors:
            errors = "; ".join(r.error for r in director.last_errors)
            await daemon.stop()
            raise ConfigError(f"the proxy cannot serve {VIP}:{PORT}: {errors}", key="demo")
        print(instructions(run_dir, data, args.metrics, args.dashboard), flush=True)
        loop = asyncio.get_running_loop()
        if args.duration > 0:
            loop.call_later(args.duration, daemon.request_stop)
        try:
            if args.no_tui:
                await daemon.wait()
            else:
                from gridlb.cli.ctl import render_status

                console = Console()
                with Live(
                    render_status(await director.status()), console=console, auto_refresh=False
                ) as live:
                    while not daemon.stopping:
                        try:
                            await asyncio.wait_for(daemon.wait(), 1.0)
                        except TimeoutError:
                            live.update(render_status(await director.status()), refresh=True)
        finally:
            await daemon.stop()
        print("gridlb demo: stopped", flush=True)
        return 0
    finally:
        for server in started:
            await server.stop()


def run(args: argparse.Namespace) -> int:
    """Run the demo until Ctrl-C or --duration."""
    logging.basicConfig(
        level=logging.INFO if args.no_tui else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    own_dir = args.dir is None
    run_dir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="gridlb-demo-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return asyncio.run(_demo(args, run_dir))
    finally:
        if own_dir:
            shutil.rmtree(run_dir, ignore_errors=True)
