"""`gridlb lab up --scaleout` and `gridlb director drain` refusals: one line, exit 2 or 1, before building."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gridlb.api.messages import ApiError, DirectorDrainRequest
from gridlb.api.server import PeerCred
from gridlb.config.load import load_site
from gridlb.director.daemon import DaemonOptions, DirectorDaemon
from gridlb.director.director import DirectorConfig
from gridlb.errors import ConfigError
from gridlb.scaleout.controller import check_site

SRC = str(Path(__file__).resolve().parents[2] / "src")


def gridlb(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=SRC)
    argv = [sys.executable, "-m", "gridlb", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)


def test_more_than_two_directors_need_scaleout_and_scaleout_is_ipv4_only() -> None:
    out = gridlb("lab", "up", "--directors", "3")
    assert (out.returncode, out.stderr.strip()) == (
        2,
        "gridlb lab: error: --directors 3 or 4 needs --scaleout (VRRP pairs have 2)",
    )
    out = gridlb("lab", "up", "--scaleout", "--ipv6")
    assert (out.returncode, out.stderr.strip()) == (
        2,
        "gridlb lab: error: --scaleout builds IPv4 only; drop --ipv6",
    )
    assert "--scaleout" in gridlb("lab", "up", "--help").stdout


SITE = """keepalived::virtual_servers:
  g:
    ip_address: 127.0.0.1
    port: {port}
    lb_algo: mh
    real_servers: [{{ip_address: 127.0.0.2, port: {port}}}]
gridlb:
  control_socket: {sock}
{extra}"""

SCALEOUT = """  scaleout:
    directors: [{name}]
    local_asn: 65001
    router_id: 10.0.0.2
    peers: [{{address: 10.0.0.1, asn: 65000}}]
    announce: [{vip}]
"""


def write(tmp_path: Path, name: str, extra: str = "", vrrp: str = "") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        vrrp + SITE.format(port=28000 + os.getpid() % 1000, sock=tmp_path / "c.sock", extra=extra)
    )
    return path


def check(path: Path) -> str:
    so = load_site([str(path)]).gridlb.scaleout
    assert so is not None
    return check_site((str(path),), so)


def test_start_up_refuses_what_lint_reports(tmp_path: Path) -> None:
    so = write(tmp_path, "dir9", SCALEOUT.format(name="dir1", vip="127.0.0.1"))
    with pytest.raises(ConfigError, match="this director is 'dir9', not among dir1"):
        check(so)
    vrrp = (
        "keepalived::vrrp_instances:\n"
        "  VI_1: {interface: lo, virtual_router_id: 9, virtual_ipaddress: 127.0.0.1}\n"
    )
    held = write(tmp_path, "dir1", SCALEOUT.format(name="dir1", vip="127.0.0.1"), vrrp=vrrp)
    with pytest.raises(ConfigError, match="held by VRRP instance VI_1"):
        check(held)
    nosvc = write(tmp_path, "dir1", SCALEOUT.format(name="dir1", vip="127.0.0.9"))
    with pytest.raises(ConfigError, match=re.escape("127.0.0.9 is announced but no virtual server has it")):
        check(nosvc)


def test_director_drain_on_a_director_without_scaleout_is_refused(tmp_path: Path) -> None:
    config = DirectorConfig.load([str(write(tmp_path, "d"))])

    async def main() -> str:
        daemon = DirectorDaemon(config, DaemonOptions(install_signals=False, vrrp=False, metrics_listen=""))
        try:
            await daemon.handle(DirectorDrainRequest(), PeerCred(os.getpid(), os.getuid(), os.getgid()))
        except ApiError as exc:
            return exc.message
        finally:
            await daemon.dataplane.close(grace_s=0)
        return "accepted"

    assert asyncio.run(main()) == "this director does not scale out (no gridlb.scaleout)"
