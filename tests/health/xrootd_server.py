"""A real Debian `xrootd` data server for tests, on a free port with a canary file, stopped by PID."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support import freeze, need_tool

CANARY = b"gridlb xrootd canary\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class XrootdServer:
    """`xrootd` exporting a temporary directory (with `/canary.txt`); `stop()`, `pause()`, `resume()`."""

    def __init__(self) -> None:
        need_tool("xrootd")
        self.dir = Path(tempfile.mkdtemp(prefix="glbH-xrd-"))
        self.data = self.dir / "data"
        self.data.mkdir()
        (self.data / "canary.txt").write_bytes(CANARY)
        (self.dir / "admin").mkdir()
        self.dir.chmod(0o755)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.listened = False  # once it has, a restart must keep its port
        self.run_as: list[str] = []
        if os.geteuid() == 0:  # xrootd will not run as root: it drops to its own user
            user = pwd.getpwnam("xrootd")
            for p in (self.dir, self.data, self.data / "canary.txt", self.dir / "admin"):
                os.chown(p, user.pw_uid, user.pw_gid)
            self.run_as = ["-R", "xrootd"]
        config = self.dir / "xrootd.cfg"
        config.write_text(
            f"all.export /\noss.localroot {self.data}\nall.adminpath {self.dir}/admin\n"
            f"all.pidpath {self.dir}/admin\n"
        )
        self.config = config

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start xrootd and wait until it listens.

        The port was free when chosen, but something else (an outgoing connection's source port) may
        take it before xrootd binds: a first start that finds it in use moves to another free port,
        twice at most. A restart keeps its port (a test may hold it in a config).
        """
        for attempt in range(3):
            argv = ["xrootd", "-c", str(self.config), "-p", str(self.port), "-n", "glbH"]
            argv += ["-l", str(self.dir / "xrootd.log"), *self.run_as]
            quiet = subprocess.DEVNULL
            self.proc = subprocess.Popen(argv, stdout=quiet, stderr=quiet, cwd=self.dir)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    log = self.log()
                    if not self.listened and attempt < 2 and "address already in use" in log:
                        break
                    raise RuntimeError(f"xrootd exited with {self.proc.returncode}: {log}")
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                    self.listened = True
                    return
                time.sleep(0.05)
            else:
                raise RuntimeError(f"xrootd did not listen on {self.port}: {self.log()}")
            for old in self.dir.glob("**/xrootd.log*"):  # the next attempt's log alone
                old.unlink()
            self.port = free_port()

    def log(self) -> str:
        logs = list(self.dir.glob("**/xrootd.log*"))
        return logs[0].read_text(errors="replace")[-2000:] if logs else "(no log)"

    def pause(self) -> None:
        assert self.proc is not None
        freeze(self.proc.pid)  # returns once every thread has stopped

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGCONT)
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
