"""`gridlb gridftp-server`: help text, argument errors, and a real process switched by SIGUSR1/SIGUSR2."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gridlb.cli.main import main
from tests.gridftp.helpers import free_port


def banner(port: int, host: str = "127.0.0.1") -> bytes:
    with socket.create_connection((host, port), timeout=5) as s:
        return s.recv(500)


def test_help_says_gsi_is_out_of_scope(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ei:
        main(["gridftp-server", "--help"])
    assert ei.value.code == 0
    out = capsys.readouterr().out
    assert "GSI" in out and "out of scope" in out and "anonymous ftp://" in out
    for opt in (
        "--root",
        "--listen",
        "--data-address",
        "--port-range",
        "--max-connections",
        "--disable-file",
    ):
        assert opt in out
    assert "SIGUSR1" in out and "422" in out and "421" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--root", "/nonexistent-glbE", "--listen", "127.0.0.1:0"], "--root"),
        (["--root", "/tmp", "--listen", "0.0.0.0:2811"], "--data-address"),
        (["--root", "/tmp", "--listen", "127.0.0.1:0", "--max-connections", "0"], "--max-connections"),
    ],
)
def test_user_errors_are_one_line_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["gridftp-server", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err


@pytest.mark.parametrize("bad", ["nope", "127.0.0.1", "host:1", "127.0.0.1:99999"])
def test_bad_listen_is_a_usage_error(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ei:
        main(["gridftp-server", "--root", "/tmp", "--listen", bad])
    assert ei.value.code == 2
    assert "--listen" in capsys.readouterr().err


def test_process_signals_and_disable_file(tmp_path: Path) -> None:
    port = free_port()
    flag = tmp_path / "maintenance"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gridlb",
            "gridftp-server",
            "--root",
            str(tmp_path),
            "--listen",
            f"127.0.0.1:{port}",
            "--data-address",
            "127.0.0.1",
            "--disable-file",
            str(flag),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                first = banner(port)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        assert first.startswith(b"220 ")
        os.kill(proc.pid, signal.SIGUSR1)
        time.sleep(0.3)
        assert banner(port).startswith(b"422 ")
        os.kill(proc.pid, signal.SIGUSR2)
        time.sleep(0.3)
        assert banner(port).startswith(b"220 ")
        flag.write_text("")
        assert banner(port).startswith(b"422 ")
        flag.unlink()
        assert banner(port).startswith(b"220 ")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
