"""XRootD behind a director: real xrdcp through the VIP on 1094 (proxy dataplane); xrootd_check decides.

The same VIP serves GridFTP on 2811 too (one site, one virtual server per protocol, each with its checker).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.health.xrootd_server import XrootdServer
from tests.support import need_tool, wait_for

VIP = "127.7.12.57"
GRIDFTP_RS = "127.7.12.58"
GRIDLB = [sys.executable, "-m", "gridlb"]


class Director:
    """`gridlb director run` (no VRRP) with one XRootD service on VIP:1094 over `server`."""

    def __init__(self, server: XrootdServer, work: Path) -> None:
        self.work = work
        self.socket = work / "control.sock"
        self.site = work / "site.yaml"
        self.site.write_text(
            f"""
keepalived::virtual_servers:
    xrootd:
        ip_address: '{VIP}'
        port: 1094
        lb_algo: rr
        lb_kind: NAT
        delay_loop: 0.3
        XROOTD_CHECK: {{level: canary, canary_path: /canary.txt, connect_timeout: 1, warmup: 0, retry: 0}}
        real_servers:
            - ip_address: '127.0.0.1'
              port: {server.port}
    gridftp:
        ip_address: '{VIP}'
        port: 2811
        lb_algo: wlc
        lb_kind: NAT
        delay_loop: 0.3
        gridftp_check: {{level: login, connect_timeout: 1, warmup: 0}}
        real_servers:
            - ip_address: '{GRIDFTP_RS}'
              port: 2811
gridlb:
    dataplane: proxy
    control_socket: '{self.socket}'
"""
        )
        self.log_path = work / "director.log"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*GRIDLB, "director", "run", str(self.site), "--no-vrrp", "--resync", "1", "--grace", "0"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def status(self) -> dict[str, Any] | None:
        from gridlb.api.client import ControlClient

        if self.proc.poll() is not None:
            raise AssertionError(f"director exited: {self.log_path.read_text()}")
        if not self.socket.exists():
            return None
        try:
            with ControlClient(str(self.socket), timeout_s=5) as c:
                status: dict[str, Any] = c.status()
                return status
        except Exception:
            return None

    def real(self, port: int = 1094) -> dict[str, Any] | None:
        """The real server of the VIP's service on `port`."""
        status = self.status()
        for service in (status or {}).get("services", []):
            if str(service.get("service", "")).endswith(f":{port}") and service["reals"]:
                real: dict[str, Any] = service["reals"][0]
                return real
        return None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def setup() -> Iterator[tuple[XrootdServer, Director, Path]]:
    need_tool("xrdcp")
    server = XrootdServer()
    work = Path(tempfile.mkdtemp(prefix="glbH-xdir-"))
    (work / "ftp").mkdir()
    (work / "ftp" / "hello.txt").write_bytes(b"hello over gridftp\n")
    director: Director | None = None
    gridftp = subprocess.Popen(
        [*GRIDLB, "gridftp-server", "--root", str(work / "ftp"), "--listen", f"{GRIDFTP_RS}:2811"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        server.start()
        director = Director(server, work)
        yield server, director, work
    finally:
        if director is not None:
            director.close()
        gridftp.kill()
        gridftp.wait(10)
        server.close()
        subprocess.run(["rm", "-rf", str(work)], check=False)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def xrdcp(src: str, dst: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["xrdcp", "--force", "--nopbar", src, dst], capture_output=True, text=True, timeout=60, check=False
    )


def test_xrdcp_through_the_vip_and_health_decides(setup: tuple[XrootdServer, Director, Path]) -> None:
    server, director, work = setup
    blob = server.data / "blob.bin"
    blob.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    if os.geteuid() == 0:
        os.chown(blob, server.data.stat().st_uid, server.data.stat().st_gid)
    wait_for(
        lambda: (r := director.real()) and r.get("in_table") and r.get("health") == "up", 30, "a healthy RS"
    )
    wait_for(lambda: (r := director.real(2811)) and r.get("health") == "up", 30, "the GridFTP RS up")
    # GridFTP on 2811 of the same VIP, checked by its own checker
    hello = work / "hello.txt"
    got_ftp = subprocess.run(
        [*GRIDLB, "gridftp-client", "get", f"ftp://{VIP}:2811/hello.txt", str(hello)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert got_ftp.returncode == 0, got_ftp.stderr
    assert hello.read_bytes() == b"hello over gridftp\n"
    # download and upload through the VIP, checksums compared end to end
    got = work / "got.bin"
    done = xrdcp(f"root://{VIP}:1094//blob.bin", str(got))
    assert done.returncode == 0, done.stderr
    assert sha256(got) == sha256(blob)
    upload = work / "up.bin"
    upload.write_bytes(os.urandom(2 * 1024 * 1024 + 5))
    done = xrdcp(str(upload), f"root://{VIP}:1094//up.bin")
    assert done.returncode == 0, done.stderr
    assert sha256(server.data / "up.bin") == sha256(upload)
    # the xrootd check takes a hung server out and puts it back
    server.pause()
    wait_for(lambda: (r := director.real()) and r.get("health") == "down", 20, "the hung RS marked down")
    server.resume()
    wait_for(lambda: (r := director.real()) and r.get("health") == "up", 20, "the RS back up")
    assert "kXR_stat /canary.txt" in str(director.real())
    ftp_real = director.real(2811)
    assert ftp_real is not None and ftp_real["health"] == "up"
