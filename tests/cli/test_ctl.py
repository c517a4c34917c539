"""Tests of the operator commands (status, drain, enable, add, remove, reload, ipvsadm --socket).

The director runs in the test's event loop with the real control socket and a recording in-memory
dataplane; each command runs through `gridlb.cli.main.main` in a thread, as a user would run it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gridlb.cli.main import main
from gridlb.director.daemon import DaemonOptions, DirectorDaemon
from gridlb.director.director import DirectorConfig
from gridlb.table import RealKey, ServiceKey
from tests.director.fakes import FakeDataplane

SITE = """\
virtual_servers:
  gridftp:
    ip_address: 127.44.0.1
    port: 2811
    lb_algo: wlc
    lb_kind: NAT
    real_servers:
      - ip_address: 127.44.0.2
      - ip_address: 127.44.0.3
        weight: 2
"""
SVC = ServiceKey.tcp("127.44.0.1", 2811)
B = RealKey.parse("127.44.0.3:2811")


class Env:
    def __init__(self, directory: Path, daemon: DirectorDaemon, dp: FakeDataplane) -> None:
        self.dir = directory
        self.daemon = daemon
        self.dp = dp
        self.socket = str(directory / "control.sock")

    async def run(self, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(main, [*argv, "--socket", self.socket])
        out, err = capsys.readouterr()
        return code, out, err


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    directory = Path(tempfile.mkdtemp(prefix="glbD-ctl-"))
    site = directory / "site.yaml"
    site.write_text(SITE)
    dp = FakeDataplane()
    config = DirectorConfig.load([str(site)])
    daemon = DirectorDaemon(
        config,
        DaemonOptions(socket_path=str(directory / "control.sock"), metrics_listen="", install_signals=False),
        dataplane=dp,
    )
    await daemon.start()
    try:
        yield Env(directory, daemon, dp)
    finally:
        await daemon.stop()
        shutil.rmtree(directory, ignore_errors=True)


async def test_status_table_and_json(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await env.run(capsys, "status")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("gridlb ") and "fake dataplane" in lines[0]
    assert (
        "Prot LocalAddress:Port Scheduler" in lines[1] and "ActiveConn" in lines[1] and "Health" in lines[1]
    )
    assert "TCP  127.44.0.1:2811 wlc" in out
    row = next(ln for ln in lines if "-> 127.44.0.3:2811" in ln)
    assert row.split()[2:7] == ["Masq", "2", "0", "0", "up"]
    code, out, _ = await env.run(capsys, "status", "--json")
    data: dict[str, Any] = json.loads(out)
    assert [r["real"] for r in data["services"][0]["reals"]] == ["127.44.0.2:2811", "127.44.0.3:2811"]


async def test_drain_enable(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await env.run(capsys, "drain", "127.44.0.3")
    assert (code, out) == (0, "drained 127.44.0.3:2811: no new connections\n")
    assert env.dp.weights(SVC)["127.44.0.3:2811"] == 0
    code, out, _ = await env.run(capsys, "status")
    assert "drained" in next(ln for ln in out.splitlines() if "-> 127.44.0.3:2811" in ln)
    code, out, _ = await env.run(capsys, "enable", "127.44.0.3:2811")
    assert (code, out) == (0, "enabled 127.44.0.3:2811\n")
    assert env.dp.weights(SVC)["127.44.0.3:2811"] == 2


async def test_drain_wait_returns_when_idle_and_times_out(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env.dp.set_active(SVC, B, 3)
    task = asyncio.ensure_future(env.run(capsys, "drain", "127.44.0.3", "--wait"))
    await asyncio.sleep(0.6)
    assert not task.done()
    env.dp.set_active(SVC, B, 0, inactive=3)
    code, out, _ = await asyncio.wait_for(task, 10)
    assert code == 0
    assert out.splitlines() == [
        "drained 127.44.0.3:2811: no new connections",
        "waiting: 3 active connections",
        "127.44.0.3:2811: no active connection",
    ]
    env.dp.set_active(SVC, B, 1)
    code, _, err = await env.run(capsys, "drain", "127.44.0.3", "--wait", "--timeout", "0.3")
    assert code == 1 and "timed out after 0.3 s" in err and "1 active connection" in err


async def test_add_remove_and_errors(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await env.run(capsys, "add", "127.44.0.4", "--service", "127.44.0.1:2811", "--weight", "5")
    assert (code, out) == (0, "added 127.44.0.4:2811 to TCP 127.44.0.1:2811 with weight 5\n")
    assert env.dp.weights(SVC)["127.44.0.4:2811"] == 5
    code, out, _ = await env.run(capsys, "remove", "127.44.0.4")
    assert (code, out) == (0, "removed 127.44.0.4:2811 from TCP 127.44.0.1:2811\n")
    env.dp.set_active(SVC, B, 1)
    code, out, _ = await env.run(capsys, "remove", "127.44.0.3", "--drain")
    assert code == 0 and out.startswith("draining 127.44.0.3:2811 out of TCP 127.44.0.1:2811")
    assert env.dp.weights(SVC)["127.44.0.3:2811"] == 0
    env.dp.set_active(SVC, B, 0)
    assert env.daemon.director is not None
    await env.daemon.director.resync()
    assert "127.44.0.3:2811" not in env.dp.weights(SVC)

    code, _, err = await env.run(capsys, "drain", "127.44.0.9")
    assert (code, err) == (1, "gridlb drain: no real server 127.44.0.9 in any service\n")
    code, _, err = await env.run(capsys, "add", "127.44.0.4", "--service", "127.44.0.1:80")
    assert code == 1 and err.startswith("gridlb add: no service 127.44.0.1:80")
    code, _, err = await env.run(capsys, "drain", "not-an-address")
    assert code == 1 and "is not ADDR[:PORT]" in err


async def test_reload(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    site = env.dir / "site.yaml"
    site.write_text(SITE.replace("port: 2811\n    lb_algo", "port: 99999\n    lb_algo"))
    code, _, err = await env.run(capsys, "reload")
    assert code == 1
    assert err.startswith("gridlb reload: reload refused, still running the previous config:")
    assert f"{site}:4: error: virtual_servers.gridftp.port" in err
    site.write_text(SITE + "      - ip_address: 127.44.0.5\n")
    code, out, _ = await env.run(capsys, "reload")
    assert code == 0
    assert out.splitlines() == [
        "reloaded (generation 2): 1 services, 1 real servers added, 0 retiring, 0 with changed checks",
        "  added 127.44.0.5:2811 to TCP 127.44.0.1:2811",
    ]
    assert env.dp.weights(SVC)["127.44.0.5:2811"] == 1


async def test_ipvsadm_reads_the_running_director(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await env.run(capsys, "ipvsadm", "-Ln")
    assert code == 0
    assert out.splitlines()[1:] == [
        "Prot LocalAddress:Port Scheduler Flags",
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
        "TCP  127.44.0.1:2811 wlc",
        "  -> 127.44.0.2:2811              Masq    1      0          0         ",
        "  -> 127.44.0.3:2811              Masq    2      0          0         ",
    ]
    code, out, _ = await env.run(capsys, "ipvsadm", "-Ln", "--stats")
    assert code == 0 and "Conns" in out
    code, _, err = await env.run(capsys, "ipvsadm", "-d", "-t", "127.44.0.1:2811", "-r", "127.44.0.2:2811")
    assert code == 2 and "use gridlb add, remove" in err


def test_no_director(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["status", "--socket", str(tmp_path / "none.sock")])
    _, err = capsys.readouterr()
    assert code == 2
    sock = tmp_path / "none.sock"
    assert (
        err == f"gridlb: {sock}: no director is listening (is `gridlb director run` running? --socket PATH)\n"
    )


def test_status_says_which_dataplane_auto_picked() -> None:
    from rich.console import Console

    from gridlb.cli.ctl import render_status
    from gridlb.status import DirectorStatus, status_from_json, status_to_json

    choice = "dataplane auto: proxy (not ipvs: it needs root (gridlb runs as uid 1000))"
    status = DirectorStatus("0", "proxy", ("site.yaml",), 1, 1.0, None, "", False, dataplane_choice=choice)
    assert status_from_json(status_to_json(status)) == status
    console = Console(width=200, record=True)
    console.print(render_status(status))
    assert choice in console.export_text()
