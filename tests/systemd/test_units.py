"""The shipped systemd unit: `systemd-analyze verify` accepts it, its hardening, and its ExecStart and
ExecReload run as systemd would run them (no systemd as PID 1: the test binds the notify socket and
checks READY=1, WATCHDOG=1, RELOADING=1 on SIGHUP, STOPPING=1 and a clean exit on SIGTERM).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gridlb.systemd.units import UNITS, render_director_unit, unit_text
from tests.support import need_tool

GRIDLB = str(Path(sys.executable).with_name("gridlb"))
ROOT = Path(__file__).resolve().parents[2]

SITE = """\
virtual_servers:
  gridftp:
    ip_address: 127.46.0.1
    port: {port}
    lb_algo: wlc
    lb_kind: NAT
    real_servers:
      - ip_address: 127.46.0.2
{more}gridlb:
  dataplane: proxy
  control_socket: {sock}
"""


def settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.46.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_systemd_analyze_verify_accepts_the_unit_and_rejects_a_broken_one(tmp_path: Path) -> None:
    need_tool("systemd-analyze")
    site = tmp_path / "director.yaml"
    site.write_text("")
    unit = tmp_path / "gridlb-director.service"
    unit.write_text(render_director_unit([str(site)], GRIDLB))
    ok = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and str(unit) not in ok.stderr, ok.stderr
    broken = tmp_path / "broken" / "gridlb-director.service"
    broken.parent.mkdir()
    broken.write_text(unit.read_text().replace(f"ExecStart={GRIDLB}", "ExecStart=/nonexistent/gridlb"))
    bad = subprocess.run(
        ["systemd-analyze", "verify", str(broken)], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode != 0 and "/nonexistent/gridlb" in bad.stderr


def test_unit_keeps_only_the_network_capabilities_and_notifies() -> None:
    for name in UNITS:
        s = settings(unit_text(name))
        assert s["CapabilityBoundingSet"] == ["CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE"]
        assert "AmbientCapabilities" not in s
        assert (s["Type"], s["Restart"], s["ExecReload"]) == (
            ["notify"],
            ["on-failure"],
            ["/bin/kill -HUP $MAINPID"],
        )
        assert s["WatchdogSec"] and s["NoNewPrivileges"] == ["yes"] and s["ProtectSystem"] == ["strict"]


def test_exec_start_and_exec_reload_without_systemd(tmp_path: Path) -> None:
    port = free_port()
    sock_path = tmp_path / "control.sock"
    site = tmp_path / "director.yaml"
    site.write_text(SITE.format(port=port, more="", sock=sock_path))
    unit = settings(render_director_unit([str(site)], GRIDLB))
    notify_path = str(tmp_path / "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(30)
    env = {**os.environ, "NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "400000"}
    proc = subprocess.Popen(shlex.split(unit["ExecStart"][0]), env=env, stderr=subprocess.PIPE, text=True)
    try:

        def next_message() -> str:
            return notify.recv(4096).decode()

        seen: list[str] = []
        while not any(m.startswith("READY=1") for m in seen):
            seen.append(next_message())
        assert sock_path.exists()  # ready means serving
        t0 = time.monotonic()
        pings = 0
        while pings < 3:
            pings += next_message() == "WATCHDOG=1"
        assert time.monotonic() - t0 < 2.0  # every 0.2 s: half of WATCHDOG_USEC

        site.write_text(SITE.format(port=port, more="      - ip_address: 127.46.0.3\n", sock=sock_path))
        reload_argv = shlex.split(unit["ExecReload"][0].replace("$MAINPID", str(proc.pid)))
        subprocess.run(reload_argv, check=True, timeout=10)
        messages: list[str] = []
        while not any(m.startswith("READY=1") for m in messages):
            messages.append(next_message())
        assert any(m.startswith("RELOADING=1\nMONOTONIC_USEC=") for m in messages)
        assert messages[-1] == "READY=1\nSTATUS=reloaded"
        status = subprocess.run(
            [GRIDLB, "status", "--json", "--socket", str(sock_path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        reals = [r["real"] for r in json.loads(status.stdout)["services"][0]["reals"]]
        assert reals == [f"127.46.0.2:{port}", f"127.46.0.3:{port}"]

        proc.send_signal(signal.SIGTERM)  # systemctl stop
        while next_message() != "STOPPING=1":
            pass
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "director stopped" in err and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()


@pytest.mark.parametrize("argv", [["director", "unit"], ["director", "unit", "--site", "/etc/gridlb/a.yaml"]])
def test_gridlb_director_unit_prints_this_installations_paths(argv: list[str]) -> None:
    out = subprocess.run([GRIDLB, *argv], capture_output=True, text=True, timeout=60, check=True).stdout
    exec_start = settings(out)["ExecStart"][0]
    assert shlex.split(exec_start)[0] == GRIDLB
    assert shlex.split(exec_start)[-1].endswith(".yaml")


def test_systemd_analyze_verify_accepts_the_realserver_unit(tmp_path: Path) -> None:
    """`gridlb realserver apply --persist` installs its own unit (oneshot apply, remove on stop)."""
    need_tool("systemd-analyze")
    site = ROOT / "src" / "gridlb" / "examples" / "nebraska-red-gridftp.yaml"
    printed = subprocess.run(
        [GRIDLB, "realserver", "apply", str(site), "--print-unit", "--address", "129.93.239.168"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert printed.returncode == 0, printed.stderr
    unit = tmp_path / "gridlb-realserver.service"
    unit.write_text(printed.stdout)
    s = settings(printed.stdout)
    assert s["Type"] == ["oneshot"] and " realserver apply " in s["ExecStart"][0]
    ok = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and str(unit) not in ok.stderr, ok.stderr
