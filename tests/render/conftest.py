"""Fixtures of the render tests: a network namespace holding the interfaces the configs name, and
a runner of the real `keepalived -t` inside it."""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import need_root, need_tool

#: Interfaces the seed and the corpus name (veth ends inside the namespace; no dummy links here).
INTERFACES = ("em1", "eth0", "eth1", "eth2", "eth3", "eth0.1", "bond0")
_counter = itertools.count()


@dataclass(frozen=True)
class KeepalivedTest:
    """Runs `keepalived -t -e -f FILE` inside a namespace; returns (exit code, stderr text)."""

    netns: str

    def check(self, path: Path) -> tuple[int, str]:
        proc = subprocess.run(
            ["ip", "netns", "exec", self.netns, "keepalived", "-t", "-e", "-f", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return proc.returncode, proc.stderr + proc.stdout


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def keepalived_netns() -> Iterator[KeepalivedTest]:
    """A namespace `glbB-<pid>-ka<n>` with veth ends named em1, eth0, eth1, bond0; deleted afterwards."""
    need_root()
    need_tool("keepalived", "ip")
    name = f"glbB-{os.getpid()}-ka{next(_counter)}"
    _ip("netns", "add", name)
    try:
        for i, ifname in enumerate(INTERFACES):
            _ip("-n", name, "link", "add", ifname, "type", "veth", "peer", "name", f"glbBp{i}")
            _ip("-n", name, "link", "set", ifname, "up")
        yield KeepalivedTest(name)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True, timeout=30)
