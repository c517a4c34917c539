"""End-to-end harness on loopback: real GridFTP servers and a director as processes, clients in the test.

Addresses are 127.44.N.x (N per test) so that nothing here collides with other suites; the real
servers are `gridlb gridftp-server` processes (killed by PID at the end, also on failure), the
director is `gridlb director run` with the proxy dataplane, and clients use the GridFTP client
library. Every load loop is bounded in time and count.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gridlb.gridftp.client import GridftpClient
from tests.support import ROOT, reachable_by_others, wait_for

GRIDLB = [sys.executable, "-m", "gridlb"]
PORT = 2811
#: Makes the test-only dataplane known to a director process (and to `gridlb lint` run by a test).
PLUGIN_ENV = {"GRIDLB_DATAPLANE_MODULES": "asyncio=tests.director.asyncio_dataplane"}


class RealServer:
    """One `gridlb gridftp-server` process on ADDR:2811 advertising ADDR."""

    def __init__(self, addr: str, root: Path, log_dir: Path) -> None:
        self.addr = addr
        self.root = root
        self.log_path = log_dir / f"rs-{addr}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def key(self) -> str:
        return f"{self.addr}:{PORT}"

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                *GRIDLB,
                "gridftp-server",
                "--root",
                str(self.root),
                "--listen",
                self.key,
                "--data-address",
                self.addr,
                "--max-connections",
                "2000",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for(self._listening, 20, f"{self.key} to listen")

    def _listening(self) -> bool:
        import socket

        try:
            with socket.create_connection((self.addr, PORT), timeout=0.5):
                return True
        except OSError:
            assert self.proc is not None and self.proc.poll() is None, self.log_path.read_text()
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None


@dataclass
class Site:
    """A site file for the director: one wlc service on VIP over the given real servers."""

    vip: str
    reals: list[tuple[str, int]]  # (addr, weight)
    socket: Path
    delay_loop_s: float = 1.0
    dataplane: str = "proxy"
    check: bool = True  # a GRIDFTP_CHECK on every real server
    passive_retry_s: float = 10.0
    workers: int = 1  # gridlb.proxy.workers (the proxy dataplane only)

    def text(self) -> str:
        reals = "\n".join(f"      - ip_address: {a}\n        weight: {w}" for a, w in self.reals)
        return (
            "virtual_servers:\n"
            "  gridftp:\n"
            f"    ip_address: {self.vip}\n"
            f"    port: {PORT}\n"
            "    lb_algo: wlc\n"
            "    lb_kind: NAT\n"
            f"    delay_loop: {self.delay_loop_s}\n"
            "    delay_before_retry: 0.5\n"
            "    retry: 1\n"
            "    warmup: 0\n"
            + ("    gridftp_check:\n      connect_timeout: 2\n" if self.check else "")
            + "    real_servers:\n"
            f"{reals}\n"
            "gridlb:\n"
            f"  dataplane: {self.dataplane}\n"
            f"  control_socket: {self.socket}\n"
            f"  passive_retry_s: {self.passive_retry_s}\n"
            "  timeouts:\n"
            "    tcpfin: 2\n"
            + (f"  proxy:\n    workers: {self.workers}\n" if self.dataplane == "proxy" else "")
        )


@dataclass
class Loopback:
    """Real servers, a director process and its control socket, all under one temporary directory."""

    net: int
    dataplane: str = "proxy"  # "asyncio": the test-only dataplane of tests/director/asyncio_dataplane.py
    workers: int = 1  # relay threads of the proxy dataplane
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="glbD-e2e-")))
    servers: dict[str, RealServer] = field(default_factory=dict)
    director: subprocess.Popen[bytes] | None = None
    site_path: Path | None = None

    def __post_init__(self) -> None:
        self.dir.chmod(0o755)
        self.root = self.dir / "data"
        self.root.mkdir()
        (self.root / "small.bin").write_bytes(os.urandom(64 << 10))
        (self.root / "file.bin").write_bytes(os.urandom(1 << 20))
        self.socket = self.dir / "control.sock"
        self.log_path = self.dir / "director.log"

    @property
    def vip(self) -> str:
        return f"127.44.{self.net}.1"

    def addr(self, i: int) -> str:
        return f"127.44.{self.net}.{i}"

    def start_server(self, i: int) -> RealServer:
        addr = self.addr(i)
        server = self.servers.get(addr) or RealServer(addr, self.root, self.dir)
        self.servers[addr] = server
        server.start()
        return server

    def write_site(
        self,
        reals: list[tuple[int, int]],
        delay_loop_s: float = 1.0,
        *,
        check: bool = True,
        passive_retry_s: float = 10.0,
    ) -> Path:
        listed = [(self.addr(i), w) for i, w in reals]
        site = Site(
            self.vip, listed, self.socket, delay_loop_s, self.dataplane, check, passive_retry_s, self.workers
        )
        path = self.dir / "site.yaml"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(site.text())
        tmp.replace(path)
        self.site_path = path
        return path

    def start_director(self, *extra: str) -> None:
        assert self.site_path is not None
        log = self.log_path.open("ab")
        self.director = subprocess.Popen(
            [*GRIDLB, "director", "run", str(self.site_path), "--resync", "1", *extra],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **PLUGIN_ENV},
            cwd=ROOT,
        )
        log.close()
        wait_for(self._director_up, 30, "the director's control socket")

    def _director_up(self) -> bool:
        assert self.director is not None
        if self.director.poll() is not None:
            raise AssertionError(f"director exited: {self.log_path.read_text()}")
        if not self.socket.exists():
            return False
        try:
            status = self.status()
        except Exception:
            return False
        return all(r["in_table"] for s in status["services"] for r in s["reals"])

    def log(self) -> str:
        return self.log_path.read_text()

    def status(self) -> dict[str, Any]:
        from gridlb.api.client import ControlClient

        with ControlClient(str(self.socket), timeout_s=10) as c:
            return c.status()

    def real(self, addr: str) -> dict[str, Any] | None:
        for svc in self.status()["services"]:
            for r in svc["reals"]:
                if r["real"] == f"{addr}:{PORT}":
                    return dict(r)
        return None

    def ctl(
        self, *args: str, user: str | None = None, timeout_s: float = 60
    ) -> subprocess.CompletedProcess[str]:
        cmd = [*GRIDLB, *args, "--socket", str(self.socket)]
        if user is None:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        cmd = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", *cmd]
        with reachable_by_others():  # a checkout in a private directory: `user` must reach it
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)

    def close(self) -> None:
        if self.director is not None and self.director.poll() is None:
            self.director.send_signal(signal.SIGTERM)
            try:
                self.director.wait(15)
            except subprocess.TimeoutExpired:
                self.director.kill()
                self.director.wait(5)
        for server in self.servers.values():
            server.kill()
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass(frozen=True)
class Transfer:
    """One download through the director."""

    started: float
    ended: float
    ok: bool
    error: str = ""


async def download(vip: str, name: str, expected: bytes, out_dir: Path, tag: str) -> Transfer:
    """Download `name` through `vip` and compare it with `expected`."""
    started = time.monotonic()
    local = out_dir / f"{tag}.out"
    try:
        async with await GridftpClient.connect(vip, PORT, timeout_s=30) as c:
            await c.get(name, str(local), idle_timeout_s=30)
            await c.quit()
        ok = local.read_bytes() == expected
        return Transfer(started, time.monotonic(), ok, "" if ok else "content differs")
    except Exception as exc:
        return Transfer(started, time.monotonic(), False, f"{type(exc).__name__}: {exc}")
    finally:
        with contextlib.suppress(OSError):
            local.unlink()


async def load(
    lb: Loopback, workers: int, stop: asyncio.Event, *, name: str = "file.bin", max_each: int = 400
) -> list[Transfer]:
    """Run `workers` download loops until `stop` is set (at most `max_each` downloads each)."""
    expected = (lb.root / name).read_bytes()
    out_dir = lb.dir / "out"
    out_dir.mkdir(exist_ok=True)
    results: list[Transfer] = []

    async def worker(w: int) -> None:
        for i in range(max_each):
            if stop.is_set():
                return
            results.append(await download(lb.vip, name, expected, out_dir, f"{w}-{i}"))

    await asyncio.gather(*(worker(w) for w in range(workers)))
    return results


def conns(status: dict[str, Any]) -> dict[str, int]:
    """Return {real: connections scheduled to it} from a status snapshot."""
    return {r["real"]: r["connections"] for s in status["services"] for r in s["reals"]}


def metric(text: str, name: str, **labels: str) -> float:
    """Return the value of one sample in Prometheus text, 0 when absent."""
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = re.match(r"^(\w+)(\{[^}]*\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return 0.0


def as_json(text: str) -> Any:
    return json.loads(text)
