"""`gridlb gridftp-client` progress: a rich bar on a terminal (run under a pty), plain lines otherwise."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridlb.cli.gridftp_client import PLAIN_EVERY_S, TransferView, io_counter
from tests.gridftp.helpers import ThreadedServer, md5


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ThreadedServer]:
    root = tmp_path / "root"
    root.mkdir()
    srv = ThreadedServer(root).start()
    try:
        yield srv
    finally:
        srv.stop()


def run_in_pty(argv: list[str], timeout_s: float = 60) -> tuple[int, bytes]:
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=slave, env={**os.environ, "TERM": "xterm", "COLUMNS": "100"}
    )
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the pty
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=10), out
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("streams", ["1", "4"])
def test_a_terminal_gets_a_progress_bar(server: ThreadedServer, tmp_path: Path, streams: str) -> None:
    src = Path(server.config.root) / "big.bin"
    with src.open("wb") as f:
        for _ in range(64):
            f.write(os.urandom(1 << 20))
    out = tmp_path / "out.bin"
    code, raw = run_in_pty(
        [
            sys.executable,
            "-m",
            "gridlb",
            "gridftp-client",
            "get",
            f"{server.url}/big.bin",
            str(out),
            "-p",
            streams,
        ]
    )
    text = raw.decode(errors="replace")
    assert code == 0, text
    assert md5(out) == md5(src)
    assert "\x1b[" in text and "━" in text  # drawn with rich, on the terminal
    assert "/64.0 MiB" in text or "64.0 MiB" in text
    assert f"get: {64 << 20} bytes in" in text


def test_not_a_terminal_gets_plain_lines_only(server: ThreadedServer, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(8 << 20))
    r = subprocess.run(
        [sys.executable, "-m", "gridlb", "gridftp-client", "put", str(src), f"{server.url}/up.bin"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stderr + r.stdout
    assert r.stdout.startswith(f"put: {8 << 20} bytes in")


def test_plain_lines_say_bytes_percent_rate_and_time_left() -> None:
    stream = io.StringIO()
    view = TransferView("get", stream, tty=False)
    done = [0]
    view.counter = lambda: done[0]
    view.set_total(100 << 20)
    t0 = view.t0
    done[0] = 25 << 20
    view.tick(t0 + 1.0)  # too soon for a line
    assert stream.getvalue() == ""
    view.tick(t0 + PLAIN_EVERY_S)
    line = stream.getvalue()
    assert line.startswith("get: 25.0 MiB of 100.0 MiB (25%), ") and "MB/s" in line and "s left" in line
    done[0] = 200 << 20  # more than the total (other writes of the process): capped
    assert view.done_bytes() == 100 << 20
    view.close()


def test_io_counter_reads_this_process(tmp_path: Path) -> None:
    wchar = io_counter("wchar")
    before = wchar()
    (tmp_path / "f").write_bytes(b"x" * 100_000)
    assert wchar() - before >= 100_000
    assert io_counter("wchar", str(tmp_path / "missing"))() == 0
