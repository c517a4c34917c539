"""`gridlb demo` as an unprivileged user from a fresh venv: transfers through 127.0.0.1:2811 work.

The venv gets only what `pip install gridlb` brings (the package and its runtime dependencies, no
extras), the demo runs as `nobody` for 20 s, and a file is fetched through it with our client and
with globus-url-copy and curl (which dials the VIP for data), then compared with the demo's own copy.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import need_root, need_tool, pip_install

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="glbD-demo-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def fresh_venv(where: Path) -> Path:
    """Create a venv with gridlb installed from this tree (runtime dependencies only)."""
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
    pip_install(pip, str(ROOT), timeout_s=240)
    return venv


def test_demo_as_nobody_from_a_fresh_venv(workdir: Path) -> None:
    need_root()
    need_tool("setpriv", "globus-url-copy", "curl")
    venv = fresh_venv(workdir)
    gridlb = str(venv / "bin" / "gridlb")
    proc = subprocess.Popen(
        [
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            gridlb,
            "demo",
            "--duration",
            "20",
            "--no-tui",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent"},
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Stop with Ctrl-C"):
                break
        text = "".join(lines)
        assert "Stop with Ctrl-C" in text, text + (proc.stderr.read() if proc.poll() is not None else "")
        assert "gridlb gridftp-client get ftp://127.0.0.1:2811/hello.txt" in text
        assert "globus-url-copy ftp://127.0.0.1:2811/" in text
        m = re.search(r"serving (\S+)", text)
        s = re.search(r"control\s+(\S+)", text)
        assert m and s, text
        data = Path(m.group(1))
        original = (data / "random-1MiB.bin").read_bytes()

        out = workdir / "client.bin"
        got = subprocess.run(
            [gridlb, "gridftp-client", "get", "ftp://127.0.0.1:2811/random-1MiB.bin", str(out)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert got.returncode == 0, got.stderr
        assert out.read_bytes() == original

        guc = workdir / "guc.bin"
        copied = subprocess.run(
            ["timeout", "30", "globus-url-copy", "ftp://127.0.0.1:2811/random-1MiB.bin", f"file://{guc}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert copied.returncode == 0, copied.stderr
        assert guc.read_bytes() == original

        # curl with its default options dials the VIP for data: the demo serves its data ports too
        assert "curl ftp://127.0.0.1:2811/hello.txt" in text
        by_curl = workdir / "curl.bin"
        fetched = subprocess.run(
            ["curl", "-sS", "-o", str(by_curl), "ftp://127.0.0.1:2811/random-1MiB.bin"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert fetched.returncode == 0, fetched.stderr
        assert by_curl.read_bytes() == original

        status = subprocess.run(
            [
                "setpriv",
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                gridlb,
                "status",
                "--socket",
                s.group(1),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert status.returncode == 0, status.stderr
        assert all(f"127.0.0.{i}:2811" in status.stdout for i in (2, 3, 4))
        with urllib.request.urlopen("http://127.0.0.1:9100/metrics", timeout=10) as resp:
            metrics = resp.read().decode()
        total = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("gridlb_real_server_connections_total{")
        )
        assert total >= 4  # the downloads went through the director (curl's data connection too)

        rest, err = proc.communicate(timeout=40)
        assert proc.returncode == 0, err
        assert "gridlb demo: stopped" in rest
        assert not data.exists()  # the demo removed its run directory
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
