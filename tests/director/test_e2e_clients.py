"""What a grid user's clients see through a VIP: persistence, the data ports, a 421 when nothing is up.

Real `gridlb gridftp-server` processes with separate storage on 127.44.N.x, a `gridlb director run`
with the proxy dataplane, and real clients: Python's ftplib and curl (both ignore the PASV address
and dial the VIP), wget and globus-url-copy (which use it). Every server and the director are
killed by PID at the end.
"""

from __future__ import annotations

import ftplib
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.director.loopback import GRIDLB, PORT, metric
from tests.support import ROOT, need_tool, wait_for

DATA_PORTS = (61000, 61015)  # above the ephemeral ports: no client connection holds one
PAYLOAD = os.urandom(1 << 20) + b"tail"


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Site:
    """Real servers with their own storage, a director, and the site file tying them together."""

    net: int
    workers: int = 1  # gridlb.proxy.workers
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="glbD-clients-")))
    servers: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    director: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.dir.chmod(0o755)
        self.socket = self.dir / "control.sock"
        self.metrics = f"{self.vip}:{free_port(self.vip)}"

    @property
    def vip(self) -> str:
        return f"127.44.{self.net}.1"

    def addr(self, i: int) -> str:
        return f"127.44.{self.net}.{i}"

    def start_server(self, i: int) -> None:
        root = self.dir / f"root-{i}"
        root.mkdir(exist_ok=True)
        (root / "whoami.txt").write_text(self.addr(i))
        (root / "data.bin").write_bytes(PAYLOAD)  # the same file on every server
        log = (self.dir / f"rs-{i}.log").open("ab")
        self.servers[i] = subprocess.Popen(
            [
                *GRIDLB,
                "gridftp-server",
                "--root",
                str(root),
                "--listen",
                f"{self.addr(i)}:{PORT}",
                "--data-address",
                self.addr(i),
                "--port-range",
                "{}-{}".format(*DATA_PORTS),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for(lambda: self._listening(i), 20, f"server {i}")

    def _listening(self, i: int) -> bool:
        try:
            with socket.create_connection((self.addr(i), PORT), timeout=0.5):
                return True
        except OSError:
            assert self.servers[i].poll() is None, (self.dir / f"rs-{i}.log").read_text()
            return False

    def kill_server(self, i: int) -> None:
        proc = self.servers.pop(i)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def write(self, reals: list[int], *, algo: str = "rr", persistence_s: int = 0, sorry: int = 0) -> None:
        lines = [
            "virtual_servers:",
            "  gridftp:",
            f"    ip_address: {self.vip}",
            f"    port: {PORT}",
            f"    lb_algo: {algo}",
            "    lb_kind: NAT",
            "    delay_loop: 0.5",
            "    delay_before_retry: 0.3",
            "    retry: 1",
            "    warmup: 0",
            "    gridftp_check:",
            "      connect_timeout: 1",
        ]
        if persistence_s:
            lines.append(f"    persistence_timeout: {persistence_s}")
        if sorry:
            lines.append(f"    sorry_server: {self.addr(sorry)} {PORT}")
        lines.append("    real_servers:")
        lines += [f"      - ip_address: {self.addr(i)}" for i in reals]
        lines += [
            "gridlb:",
            "  dataplane: proxy",
            "  proxy:",
            f"    workers: {self.workers}",
            f"  control_socket: {self.socket}",
            f"  metrics_listen: {self.metrics}",
            "  timeouts:",
            "    tcpfin: 1",
            "  gridftp_services:",
            f"    {self.vip}:{PORT}:",
            "      data_ports: {}-{}".format(*DATA_PORTS),
            "      unavailable_reply: '421 Service not available: every transfer server is down'",
        ]
        (self.dir / "site.yaml").write_text("\n".join(lines) + "\n")

    def start_director(self) -> None:
        log = (self.dir / "director.log").open("ab")
        self.director = subprocess.Popen(
            [*GRIDLB, "director", "run", str(self.dir / "site.yaml"), "--resync", "1"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        log.close()
        wait_for(self._up, 30, "the director")

    def _up(self) -> bool:
        assert self.director is not None
        assert self.director.poll() is None, (self.dir / "director.log").read_text()
        if not self.socket.exists():
            return False
        return bool(self.ipvsadm("-Ln").count("-> 127.") >= len(self.servers))

    def ipvsadm(self, *args: str) -> str:
        out = subprocess.run(
            [*GRIDLB, "ipvsadm", *args, "--socket", str(self.socket)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return out.stdout if out.returncode == 0 else ""

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=10) as resp:
            return str(resp.read().decode())

    def service_conns(self) -> int:
        """Return the service's connection counter (`ipvsadm -Ln --stats` Conns column)."""
        for line in self.ipvsadm("-Ln", "--stats", "--exact").splitlines():
            if line.startswith("TCP"):
                return int(line.split()[2])
        raise AssertionError("no service listed")

    def close(self) -> None:
        if self.director is not None and self.director.poll() is None:
            self.director.send_signal(signal.SIGTERM)
            try:
                self.director.wait(15)
            except subprocess.TimeoutExpired:
                self.director.kill()
                self.director.wait(5)
        for i in list(self.servers):
            self.kill_server(i)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(params=[1, 2], ids=["1worker", "2workers"])
def site(request: pytest.FixtureRequest) -> Iterator[Site]:
    s = Site(161, workers=request.param)  # 2 workers: a data connection may reach the other one
    try:
        yield s
    finally:
        s.close()


def ftp(site: Site) -> ftplib.FTP:
    f = ftplib.FTP()
    f.connect(site.vip, PORT, timeout=20)
    f.login()
    return f


def whoami(site: Site) -> str:
    """One whole client session through the VIP (ftplib: data through the VIP's data ports too)."""
    out = io.BytesIO()
    with ftp(site) as f:
        f.retrbinary("RETR whoami.txt", out.write)
    return out.getvalue().decode()


def test_persistence_holds_over_separate_storage_then_the_client_moves(site: Site) -> None:
    for i in (2, 3, 4):
        site.start_server(i)
    site.write([2, 3, 4], algo="rr", persistence_s=3)
    site.start_director()
    # 50 connections from one client: rr would spread them, the template keeps one server
    seen = [whoami(site) for _ in range(50)]
    assert len(set(seen)) == 1, seen
    held = seen[0]
    templates = [x for x in site.ipvsadm("-Lnc").splitlines() if " NONE " in x]
    assert len(templates) == 1, site.ipvsadm("-Lnc")
    assert re.fullmatch(
        rf"TCP 00:0[0-3]  NONE        127\.0\.0\.1:0 +{site.vip}:{PORT} +{held}:{PORT}", templates[0]
    )
    listing = site.ipvsadm("-Ln", "--persistent-conn").splitlines()
    persist = [x for x in listing if x.startswith("  -> 127.")]
    assert {x.split()[1]: int(x.split()[3]) for x in persist}[f"{held}:{PORT}"] == 1
    # an upload then a listing, in new sessions each: the file is there every time
    for n in range(10):
        with ftp(site) as f:
            f.storbinary(f"STOR up-{n}.bin", io.BytesIO(PAYLOAD))
        with ftp(site) as f:
            assert f"up-{n}.bin" in f.nlst()
            out = io.BytesIO()
            f.retrbinary(f"RETR up-{n}.bin", out.write)
            assert out.getvalue() == PAYLOAD
    # once the template expired (3 s after the last use, connections freed after tcpfin 1 s) the
    # client is scheduled afresh: rr moves on to another server
    wait_for(lambda: " NONE " not in site.ipvsadm("-Lnc"), 20, "the template to expire")
    assert whoami(site) != held


def test_clients_that_ignore_the_pasv_address_and_those_that_use_it(site: Site) -> None:
    need_tool("curl", "wget", "globus-url-copy")
    for i in (2, 3, 4):
        site.start_server(i)
    site.write([2, 3, 4], algo="wlc")
    site.start_director()
    url = f"ftp://{site.vip}:{PORT}/data.bin"
    out = site.dir / "out.bin"
    # a data port dialled by a client with no control connection: closed, counted
    with socket.create_connection((site.vip, DATA_PORTS[0]), timeout=10) as s:
        assert s.recv(1) == b""
    reason = "data connection: no control connection from this client"
    assert metric(site.metrics_text(), "gridlb_dataplane_errors_total", reason=reason) == 1
    # curl with its default options: dials the VIP for data (the PASV address ignored since 7.74)
    for _ in range(3):
        got = subprocess.run(
            ["curl", "-sS", "-o", str(out), url], capture_output=True, timeout=60, check=False
        )
        assert got.returncode == 0, got.stderr
        assert out.read_bytes() == PAYLOAD
        out.unlink()
    listing = subprocess.run(["curl", "-sS", f"ftp://{site.vip}:{PORT}/"], capture_output=True, timeout=60)
    assert listing.returncode == 0 and b"data.bin" in listing.stdout, listing.stderr
    # ftplib: the same, list and download
    with ftp(site) as f:
        assert "data.bin" in f.nlst()
        buf = io.BytesIO()
        f.retrbinary("RETR data.bin", buf.write)
        assert buf.getvalue() == PAYLOAD
    # wget and globus-url-copy use the PASV address: the data goes straight to the real server
    for argv in (
        ["wget", "-q", "-O", str(out), url],
        ["globus-url-copy", url, f"file://{out}"],
        ["globus-url-copy", "-p", "4", url, f"file://{out}"],
    ):
        before = site.service_conns()
        got = subprocess.run(["timeout", "50", *argv], capture_output=True, timeout=60, check=False)
        assert got.returncode == 0, (argv, got.stderr)
        assert out.read_bytes() == PAYLOAD, argv
        out.unlink()
        assert site.service_conns() - before == 1, argv  # the control connection only
    # and both list through the VIP
    guc = subprocess.run(
        ["timeout", "50", "globus-url-copy", "-list", f"ftp://{site.vip}:{PORT}/"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert guc.returncode == 0 and "data.bin" in guc.stdout, guc.stderr
    index = site.dir / "index.html"
    wget = subprocess.run(
        ["timeout", "50", "wget", "-q", "-O", str(index), f"ftp://{site.vip}:{PORT}/"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert wget.returncode == 0 and "data.bin" in index.read_text(), wget.stderr
    before = site.service_conns()
    assert subprocess.run(["curl", "-sS", "-o", str(out), url], timeout=60, check=False).returncode == 0
    assert site.service_conns() - before == 2  # control and data through the VIP


def test_every_server_failed_answers_421_and_the_sorry_server_takes_over(site: Site) -> None:
    for i in (2, 3):
        site.start_server(i)
    site.write([2, 3])
    site.start_director()
    for i in (2, 3):
        site.kill_server(i)
    wait_for(lambda: "-> 127." not in site.ipvsadm("-Ln"), 20, "both servers out of the table")
    for _ in range(3):
        with socket.create_connection((site.vip, PORT), timeout=10) as s:
            line = s.makefile("rb").readline()
        assert line == b"421 Service not available: every transfer server is down\r\n"
    with pytest.raises(ftplib.error_temp, match=r"^421 "):
        ftp(site)
    text = site.metrics_text()
    assert metric(text, "gridlb_dataplane_errors_total", reason="no destination: answered 421") == 4
    # with a sorry server the clients reach it instead (keepalived: it replaces the pool without quorum)
    site.start_server(9)
    site.write([2, 3], sorry=9)
    assert site.director is not None
    site.director.send_signal(signal.SIGHUP)
    wait_for(lambda: f"{site.addr(9)}:{PORT}" in site.ipvsadm("-Ln"), 20, "the sorry server in the table")
    assert whoami(site) == site.addr(9)
    with ftp(site) as f:
        buf = io.BytesIO()
        f.retrbinary("RETR data.bin", buf.write)
        assert buf.getvalue() == PAYLOAD
