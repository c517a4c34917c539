"""Test helpers for the GridFTP tests: our server in a thread, a real globus-gridftp-server, files, checks."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from gridlb.gridftp.server import GridftpServer, ServerConfig

T = TypeVar("T")

#: Test file sizes the acceptance names: 0 B, 1 B, 1 MiB + 1 B and 64 MiB.
SIZES = {"zero": 0, "one": 1, "mib1": (1 << 20) + 1, "mib64": 64 << 20}
SMALL = ("zero", "one", "mib1")

#: Every globus-url-copy runs under `timeout` with this many seconds (it can hang).
GUC_TIMEOUT_S = 60


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on `host` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def md5(path: str | Path) -> str:
    """Return the MD5 hex digest of a file."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def shared_dir(prefix: str) -> Path:
    """Return a new directory under /tmp that globus-gridftp-server's `nobody` can read and write."""
    d = Path(tempfile.mkdtemp(prefix=f"glbE-{prefix}-", dir="/tmp"))
    d.chmod(0o777)
    return d


def make_files(directory: Path, names: tuple[str, ...] = tuple(SIZES)) -> dict[str, Path]:
    """Write random files of the acceptance sizes into `directory` (world-readable)."""
    out = {}
    for name in names:
        p = directory / f"{name}.bin"
        with open(p, "wb") as f:
            left = SIZES[name]
            while left:
                n = min(left, 1 << 22)
                f.write(os.urandom(n))
                left -= n
        p.chmod(0o644)
        out[name] = p
    return out


def guc(*args: str, timeout_s: int = GUC_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run globus-url-copy under `timeout` and return the finished process."""
    cmd = ["timeout", "-k", "5", str(timeout_s), "globus-url-copy", *args]
    env = dict(os.environ, GLOBUS_USAGE_OPTOUT="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s + 15, env=env, check=False)


class ThreadedServer:
    """Our GridftpServer running on its own event loop in a background thread (for sync tests and tools)."""

    def __init__(self, root: str | Path, **options: Any) -> None:
        options.setdefault("host", "127.0.0.1")
        options.setdefault("port", 0)
        self.config = ServerConfig(root=str(root), **options)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = GridftpServer(self.config)

    def call(self, fn: Callable[[], Coroutine[Any, Any, T]], timeout_s: float = 30.0) -> T:
        """Run coroutine function `fn` on the server's loop and return its result."""
        fut: Future[T] = asyncio.run_coroutine_threadsafe(fn(), self.loop)
        return fut.result(timeout_s)

    def start(self) -> ThreadedServer:
        """Start the loop thread and the server."""
        self.thread.start()
        self.call(self.server.start)
        return self

    @property
    def port(self) -> int:
        """Return the control port."""
        return self.server.port

    @property
    def url(self) -> str:
        """Return ``ftp://host:port``."""
        return f"ftp://{self.config.host}:{self.port}"

    def stop(self) -> None:
        """Stop the server and the loop thread."""
        with contextlib.suppress(Exception):
            self.call(self.server.stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class GlobusServer:
    """A real globus-gridftp-server on loopback (anonymous, runs transfers as `nobody`), started by PID."""

    def __init__(self, home: Path, *, data_interface: str = "127.0.0.1", extra: tuple[str, ...] = ()) -> None:
        self.home = home
        self.data_interface = data_interface
        self.port = free_port()
        base = 50000 + (os.getpid() * 7 + self.port) % 9000
        self.log = home / f"gfs-{self.port}.log"
        self.cmd = [
            "globus-gridftp-server",
            "-aa",
            "-anonymous-user",
            "nobody",
            "-p",
            str(self.port),
            "-control-interface",
            "127.0.0.1",
            "-data-interface",
            data_interface,
            "-port-range",
            f"{base},{base + 199}",
            "-home-dir",
            str(home),
            "-d",
            "error,warn",
            "-l",
            str(self.log),
            *extra,
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Return ``ftp://127.0.0.1:port`` (paths on it are host paths)."""
        return f"ftp://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 15.0) -> GlobusServer:
        """Start the server (foreground daemon, forks per connection) and wait for its banner."""
        env = dict(os.environ, GLOBUS_USAGE_OPTOUT="1")
        self.proc = subprocess.Popen(
            self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"globus-gridftp-server exited with {self.proc.returncode}: {self.cmd}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1) as s:
                s.settimeout(5)
                if s.recv(200).startswith(b"220"):
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("globus-gridftp-server did not answer in time")

    def stop(self) -> None:
        """Kill the server by PID (and its per-connection children, in its own session) and reap it."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group it leads: only processes it started
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self.proc = None


def rmtree(path: Path) -> None:
    """Remove a test directory (errors ignored)."""
    shutil.rmtree(path, ignore_errors=True)
