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
        "--allow-third-party",
        "--epsv-ip",
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


@pytest.mark.parametrize("bad", ["everywhere", "10.0.0.0/33", "1.2.3"])
def test_bad_allow_third_party_is_a_usage_error(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ei:
        main(["gridftp-server", "--root", "/tmp", "--listen", "127.0.0.1:0", "--allow-third-party", bad])
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert "--allow-third-party" in err and "Traceback" not in err


def spawn(root: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    """Start `gridlb gridftp-server` on 127.0.0.1:`port` (killed by the caller, by PID)."""
    argv = [sys.executable, "-m", "gridlb", "gridftp-server", "--root", str(root)]
    argv += ["--listen", f"127.0.0.1:{port}", "--data-address", "127.0.0.1", *extra]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_banner(proc: subprocess.Popen[bytes], port: int) -> bytes:
    deadline = time.monotonic() + 20
    while True:
        try:
            return banner(port)
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    for f in (proc.stdout, proc.stderr):
        if f:
            f.close()


def dialogue(port: int, *lines: str) -> list[bytes]:
    """Log in anonymously, send `lines` one by one and return the first reply line to each."""
    out = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        f = s.makefile("rb")
        f.readline()
        for line in ("USER anonymous", "PASS x", *lines):
            s.sendall(line.encode() + b"\r\n")
            out.append(f.readline())
    return out[2:]


def test_allow_third_party_reaches_the_server(tmp_path: Path) -> None:
    port = free_port()
    proc = spawn(tmp_path, port, "--allow-third-party", "127.0.0.2", "--allow-third-party", "10.1.0.0/16")
    try:
        wait_banner(proc, port)
        replies = dialogue(
            port,
            "PORT 127,0,0,2,156,64",
            "EPRT |1|10.1.2.3|40000|",
            "PORT 127,0,0,3,156,64",
            "PORT 127,0,0,2,0,80",
            "PORT 127,0,0,1,156,64",
        )
        assert [r[:4] for r in replies] == [b"200 ", b"200 ", b"504 ", b"504 ", b"200 "], replies
    finally:
        stop(proc)


@pytest.mark.parametrize(
    ("flag", "plain", "globus"),
    [
        ((), b"(|||", b"(|1|127.0.0.1|"),
        (("--epsv-ip",), b"(|1|127.0.0.1|", b"(|1|127.0.0.1|"),
        (("--no-epsv-ip",), b"(|||", b"(|||"),
    ],
)
def test_epsv_ip_reaches_the_server(
    tmp_path: Path, flag: tuple[str, ...], plain: bytes, globus: bytes
) -> None:
    port = free_port()
    proc = spawn(tmp_path, port, *flag)
    try:
        wait_banner(proc, port)
        replies = dialogue(port, "EPSV", 'SITE CLIENTINFO appname="globus-url-copy";', "EPSV")
        assert replies[0].startswith(b"229 ") and plain in replies[0], replies
        assert replies[2].startswith(b"229 ") and globus in replies[2], replies
    finally:
        stop(proc)


def test_process_signals_and_disable_file(tmp_path: Path) -> None:
    port = free_port()
    flag = tmp_path / "maintenance"
    proc = spawn(tmp_path, port, "--disable-file", str(flag))
    try:
        first = wait_banner(proc, port)
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
        stop(proc)
