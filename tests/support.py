"""Test helpers shared by every test package: the privileged-test gate and tool checks.

A privileged test calls `need_root()` (or is marked `privileged`); it is skipped with the reason
when not root, and fails instead when CI sets GRIDLB_REQUIRE_PRIVILEGED=1.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

REQUIRE_PRIVILEGED = os.environ.get("GRIDLB_REQUIRE_PRIVILEGED") == "1"
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
