"""`gridlb gridftp-client get|put|copy`: move files with the built-in GridFTP client (anonymous ftp://).

While a get or put runs, a progress bar (bytes, rate, ETA) is drawn on stderr when it is a terminal;
otherwise a plain progress line goes to stderr every few seconds. Bytes done are what this process
wrote to (get) or read from (put) its files, from /proc/self/io, whatever the number of streams.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

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
        sp.add_argument(
            "-q", "--quiet", action="store_true", help="print nothing on success, and no progress"
        )
        sp.set_defaults(func=run)


def _url(text: str, *, local: bool) -> str:
    """Return a URL for `text`: local arguments may be plain paths (made file:// URLs)."""
    if local and "://" not in text:
        return "file://" + os.path.abspath(text)
    return text


#: Plain progress lines (not a terminal) come this often.
PLAIN_EVERY_S = 5.0
#: The display refreshes this often.
TICK_S = 0.2


def io_counter(field: str, path: str = "/proc/self/io") -> Callable[[], int]:
    """Return a reader of one counter of /proc/self/io (``rchar``, ``wchar``); it reads 0 when absent."""

    def read() -> int:
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1])
        except (OSError, ValueError):
            pass
        return 0

    return read


def human_bytes(n: float) -> str:
    """Return `n` bytes as B, KiB, MiB or GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


class TransferView:
    """Shows how far a get or put is: a rich bar on a terminal, else a plain line every few seconds."""

    def __init__(self, action: str, stream: TextIO, *, tty: bool | None = None) -> None:
        self.action = action
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.counter = io_counter("wchar" if action == "get" else "rchar")
        self.base = self.counter()
        self.total: int | None = None
        self.t0 = time.monotonic()
        self.last_line = self.t0
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def set_total(self, total: int | None) -> None:
        """Take the size to move (the client's `on_total` hook) and start the display."""
        self.total = total
        self.base = self.counter()
        self.t0 = self.last_line = time.monotonic()
        if self.tty:
            self.progress = Progress(
                TextColumn(f"{self.action}"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task(self.action, total=total)

    def done_bytes(self) -> int:
        """Return the bytes moved so far (capped at the total)."""
        n = max(0, self.counter() - self.base)
        return min(n, self.total) if self.total is not None else n

    def line(self, now: float) -> str:
        """Return the plain progress line."""
        done = self.done_bytes()
        dt = max(now - self.t0, 1e-9)
        rate = done / dt
        text = f"{self.action}: {human_bytes(done)}"
        if self.total:
            text += f" of {human_bytes(self.total)} ({100 * done / self.total:.0f}%)"
        text += f", {rate / 1e6:.1f} MB/s"
        if self.total and rate > 0:
            text += f", about {max(0.0, (self.total - done) / rate):.0f} s left"
        return text

    def tick(self, now: float) -> None:
        """Refresh the bar, or print a line when one is due."""
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=self.done_bytes())
        elif not self.tty and self.total is not None and now - self.last_line >= PLAIN_EVERY_S:
            self.last_line = now
            print(self.line(now), file=self.stream, flush=True)

    def close(self) -> None:
        """Remove the bar."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


async def _run(src: str, dst: str, args: argparse.Namespace, view: TransferView | None) -> Any:
    on_total = view.set_total if view is not None else None
    job = asyncio.ensure_future(
        transfer(src, dst, parallel=args.parallel, timeout_s=args.timeout, on_total=on_total)
    )
    try:
        while view is not None and not job.done():
            await asyncio.wait({job}, timeout=TICK_S)
            view.tick(time.monotonic())
        return await job
    finally:
        if view is not None:
            view.close()
        if not job.done():
            job.cancel()


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
    view = None if args.quiet or action == "copy" else TransferView(action, sys.stderr)
    try:
        res = asyncio.run(_run(src, dst, args, view))
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
