"""`gridlb gridftp-client get|put|copy`: real transfers against our server, and clear failures."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gridftp.helpers import ThreadedServer, free_port, md5


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gridlb", "gridftp-client", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ThreadedServer]:
    root = tmp_path / "root"
    root.mkdir()
    srv = ThreadedServer(root).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.mark.parametrize("streams", ["1", "4"])
def test_get_put_copy(server: ThreadedServer, tmp_path: Path, streams: str) -> None:
    root = Path(server.config.root)
    src = tmp_path / "src.bin"
    src.write_bytes(bytes(range(256)) * 5000)
    r = cli("put", str(src), f"{server.url}/up.bin", "--parallel", streams)
    assert r.returncode == 0, r.stderr
    assert f"{streams} stream(s)" in r.stdout
    assert md5(root / "up.bin") == md5(src)
    r = cli("copy", f"{server.url}/up.bin", f"{server.url}/copy.bin", "-p", streams)
    assert r.returncode == 0, r.stderr
    assert md5(root / "copy.bin") == md5(src)
    out = tmp_path / "out.bin"
    r = cli("get", f"{server.url}/copy.bin", str(out), "-p", streams, "-q")
    assert r.returncode == 0 and r.stdout == "", r.stderr
    assert md5(out) == md5(src)


def test_failures_exit_non_zero_with_one_clear_line(server: ThreadedServer, tmp_path: Path) -> None:
    r = cli("get", f"{server.url}/missing.bin", str(tmp_path / "x"))
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1 and "550" in r.stderr and "RETR /missing.bin" in r.stderr
    r = cli("get", f"ftp://127.0.0.1:{free_port()}/x", str(tmp_path / "x"), "--timeout", "5")
    assert r.returncode == 1 and "cannot connect" in r.stderr
    server.server.disabled = True
    r = cli("get", f"{server.url}/x", str(tmp_path / "x"))
    assert r.returncode == 1 and "422" in r.stderr
    server.server.disabled = False
    r = cli("get", "gsiftp://127.0.0.1/x", str(tmp_path / "x"))
    assert r.returncode == 2 and "GSI" in r.stderr
    r = cli("put", f"{server.url}/x", str(tmp_path / "x"))
    assert r.returncode == 2 and "not a URL" in r.stderr
    r = cli("copy", f"{server.url}/x", f"file://{tmp_path}/x")
    assert r.returncode == 2 and "wrong kind of URL" in r.stderr
    r = cli("get", f"{server.url}/x", str(tmp_path / "x"), "-p", "0")
    assert r.returncode == 2 and "Traceback" not in r.stderr
