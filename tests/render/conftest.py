"""Fixtures of the render tests: a lab director namespace holding the interfaces the configs name,
and a runner of the real `keepalived -t` inside it."""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import lab, need_tool

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


@pytest.fixture(scope="module")
def keepalived_netns() -> Iterator[KeepalivedTest]:
    """The lab's dir1 (its eth0) with veth ends named em1, eth1, ..., bond0 added; deleted afterwards."""
    need_tool("keepalived", "ip")
    with lab(f"k{next(_counter)}_", realservers=0, directors=1, start="none") as built:
        for i, ifname in enumerate(INTERFACES):
            if ifname != "eth0":  # the lab's own
                built.exec("dir1", ["ip", "link", "add", ifname, "type", "veth", "peer", "name", f"glbBp{i}"])
                built.exec("dir1", ["ip", "link", "set", ifname, "up"])
        yield KeepalivedTest(built.node("dir1").ns)
