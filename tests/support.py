"""Test helpers shared by every test package: the privileged-test gate, tool checks and the lab.

A privileged test calls `need_root()` (or is marked `privileged`); it is skipped with the reason
when not root, and fails instead when CI sets GRIDLB_REQUIRE_PRIVILEGED=1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gridlb.lab import procfs
from gridlb.lab.netns import Lab
from gridlb.lab.system import LabOptions, running
from gridlb.lab.vrrp_pair import time_until as time_until  # the lab's: seconds until a condition held

T = TypeVar("T")

REQUIRE_PRIVILEGED = os.environ.get("GRIDLB_REQUIRE_PRIVILEGED") == "1"
#: The checkout: tests run gridlb from its `src` and `.venv`.
ROOT = Path(__file__).resolve().parent.parent
#: Set by tests/vm/run.sh inside its VM: there, tests marked `ipvs` must run.
IN_VM = os.environ.get("GRIDLB_IN_VM") == "1"


def kernel_has_ipvs() -> bool:
    """Return True when this kernel has IPVS loaded or loadable (as root)."""
    if not os.path.exists("/proc/net/ip_vs") and os.geteuid() == 0 and shutil.which("modprobe"):
        subprocess.run(["modprobe", "-q", "ip_vs"], capture_output=True, timeout=30, check=False)
    return os.path.exists("/proc/net/ip_vs")


def need(condition: bool, why: str) -> None:
    """Skip the calling test when `condition` is false, or fail it when CI requires privileged tests."""
    if condition:
        return
    if REQUIRE_PRIVILEGED:
        pytest.fail(f"GRIDLB_REQUIRE_PRIVILEGED=1 but {why}")
    pytest.skip(why)


def need_root() -> None:
    """Require root (network namespaces, raw sockets)."""
    need(os.geteuid() == 0, "this test needs root (network namespaces / raw sockets)")


def need_tool(*names: str) -> None:
    """Require the named programs on PATH (installed by `make test` when root)."""
    for name in names:
        need(shutil.which(name) is not None, f"{name} is not installed (`make test` installs it as root)")


def lab(tag: str, **options: Any) -> contextlib.AbstractContextManager[Lab]:
    """`gridlb lab up` in-process as lab TAG<pid> with `options` (`LabOptions`), `down` on leaving.

    Needs root. Every suite that needs namespaces builds them this way.
    """
    need_root()
    return running(LabOptions(name=f"{tag}{os.getpid()}", **options))


def pip_install(pip: list[str], *targets: str, timeout_s: float = 300) -> None:
    """Run `pip install -q TARGETS`, once more if the first attempt fails (a fresh build environment
    fetches hatchling from the package index, which may hiccup); fail with pip's own words."""
    for attempt in (1, 2):
        done = subprocess.run(
            [*pip, "install", "-q", *targets], timeout=timeout_s, capture_output=True, text=True, check=False
        )
        if done.returncode == 0:
            return
        if attempt == 2:
            pytest.fail(f"pip install {' '.join(targets)} failed twice:\n{done.stderr[-3000:]}")


@contextlib.contextmanager
def reachable_by_others() -> Iterator[None]:
    """Let another user (a test's `nobody`) reach the checkout and its Python while inside.

    A checkout in a private directory (`mktemp -d` makes one mode 0700) cannot be entered by any
    other user, so a test running gridlb as `nobody` would fail on the import instead of on what it
    checks. Each directory on the way to the checkout and to `sys.prefix` that lacks search
    permission for others gets it (o+x: entering, not listing) and its mode back on leaving.
    """
    changed: dict[Path, int] = {}
    for top in (ROOT, Path(sys.prefix).resolve()):
        for d in (top, *top.parents):
            mode = d.stat().st_mode
            if d not in changed and not mode & stat.S_IXOTH:
                changed[d] = stat.S_IMODE(mode)
    try:
        for d, mode in changed.items():
            d.chmod(mode | stat.S_IXOTH)
        yield
    finally:
        for d, mode in changed.items():
            d.chmod(mode)


def wait_for(
    predicate: Callable[[], T | None], timeout_s: float, what: str, interval_s: float | None = None
) -> T:
    """Poll `predicate` until it returns something truthy and return that; AssertionError naming `what`.

    The predicate is asked at least once, and once more at the deadline. By default it is asked every
    50 ms, and every 100 ms in the VM tier, where each poll (often a process) runs under emulation and
    takes CPU from the system under test.
    """
    if interval_s is None:
        interval_s = 0.1 if IN_VM else 0.05
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


@contextlib.contextmanager
def sleeping_threads(count: int = 4) -> Iterator[int]:
    """Run a Python process of `count` sleeping threads; yield its PID once all exist; kill it after."""
    code = (
        "import sys, threading, time\n"
        "for _ in range(int(sys.argv[1]) - 1):\n"
        "    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
        "print(flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(count)], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"\n"
        yield child.pid
    finally:
        child.kill()
        child.wait(10)


def freeze(pid: int, timeout_s: float = 5.0) -> None:
    """SIGSTOP `pid` and wait until every thread of it has stopped.

    kill(2) returns once the signal is queued: a thread busy on another CPU may still answer a
    request made right after it. `SIGCONT` undoes this.
    """
    os.kill(pid, signal.SIGSTOP)

    def stopped() -> bool:
        return all(state in ("T", "t", "Z", "X") for state in procfs.thread_states(pid))

    wait_for(stopped, timeout_s, f"every thread of process {pid} to stop", interval_s=0.002)
