"""The VRRP-only daemon: user errors, stale VIPs from a crash, tracking to FAULT and back, notify scripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gridlb.lab.netns import Lab
from tests.support import need_root, time_until


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gridlb.vrrp", *args], capture_output=True, text=True, timeout=60
    )


def test_missing_file_is_one_line_exit_2(tmp_path: Path) -> None:
    r = run_cli("run", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "nope.yaml" in r.stderr and "Traceback" not in r.stderr


def test_bad_setting_names_file_line_key(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(
        "keepalived::vrrp_instances:\n  VI_1:\n    interface: eth0\n    virtual_router_id: 1\n"
        "    advert_int: 0.5\n    virtual_ipaddress: ['10.0.0.1/24']\n"
    )
    r = run_cli("run", str(site))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{site}:2" in r.stderr and "advert_int" in r.stderr


def test_unknown_instance(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(
        "keepalived::vrrp_instances:\n  VI_1:\n    interface: eth0\n    virtual_router_id: 1\n"
        "    virtual_ipaddress: ['10.0.0.1/24']\n"
    )
    r = run_cli("run", str(site), "--instance", "VI_9")
    assert r.returncode == 2 and "VI_9" in r.stderr and r.stderr.count("\n") == 1


@pytest.mark.privileged
def test_stale_vip_tracking_and_notify(lab: Lab, tmp_path: Path) -> None:
    need_root()
    ns = "dir1"
    lab.exec(ns, ["ip", "link", "add", "trk0", "type", "veth", "peer", "name", "trk1"])
    lab.exec(ns, ["ip", "link", "set", "trk0", "up"])
    lab.exec(ns, ["ip", "link", "set", "trk1", "up"])
    lab.exec(ns, ["ip", "addr", "add", f"{lab.vip4}/24", "dev", "eth0"])  # left over from a "crash"
    flag = tmp_path / "script-ok"
    flag.write_text("")
    log = tmp_path / "notify.log"
    notify = tmp_path / "notify.sh"
    notify.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    notify.chmod(0o755)
    site = tmp_path / "site.yaml"
    site.write_text(
        "keepalived::vrrp_scripts:\n"
        f"  chk_flag:\n    script: 'test -f {flag}'\n    interval: 0.2\n"
        "keepalived::vrrp_instances:\n"
        "  VI_1:\n    interface: eth0\n    virtual_router_id: 51\n    priority: 100\n    advert_int: 0.1\n"
        f"    version: 3\n    virtual_ipaddress: ['{lab.vip4}/24']\n    track_interface: ['trk0']\n"
        f"    track_script: ['chk_flag']\n    notify: '{notify}'\n    garp_master_delay: 0\n"
    )
    status = tmp_path / "status.json"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    out = (tmp_path / "daemon.log").open("w")
    proc = lab.spawn(
        ns,
        [sys.executable, "-m", "gridlb.vrrp", "run", str(site), "-v", "--status-file", str(status)],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
    )

    def has_vip() -> bool:
        return lab.has_address(ns, lab.vip4)

    def notes() -> list[str]:
        return log.read_text().splitlines() if log.exists() else []

    # The stale VIP is removed before joining as BACKUP, then (alone) it becomes MASTER.
    assert time_until(lambda: status.exists(), 10) is not None
    assert time_until(lambda: "INSTANCE VI_1 MASTER 100" in notes(), 10) is not None, (
        tmp_path / "daemon.log"
    ).read_text()
    assert notes()[0] == "INSTANCE VI_1 BACKUP 100"
    assert has_vip()
    assert json.loads(status.read_text())["instances"][0]["stale_vips_removed"] == [f"{lab.vip4}/24"]
    # Tracked interface loses carrier -> FAULT, VIP removed; back -> BACKUP -> MASTER.
    lab.exec(ns, ["ip", "link", "set", "trk1", "down"])
    assert time_until(lambda: not has_vip() and "INSTANCE VI_1 FAULT 100" in notes(), 5) is not None
    lab.exec(ns, ["ip", "link", "set", "trk1", "up"])
    assert time_until(lambda: has_vip() and notes().count("INSTANCE VI_1 MASTER 100") == 2, 5) is not None
    # Tracked script fails -> FAULT; succeeds again -> MASTER.
    flag.unlink()
    assert time_until(lambda: not has_vip() and notes().count("INSTANCE VI_1 FAULT 100") == 2, 5) is not None
    flag.write_text("")
    assert time_until(lambda: has_vip() and notes().count("INSTANCE VI_1 MASTER 100") == 3, 5) is not None
    # Clean stop: VIP removed, notify STOP.
    proc.terminate()
    assert proc.wait(timeout=10) == 0
    assert not has_vip()
    assert time_until(lambda: "INSTANCE VI_1 STOP 100" in notes(), 5) is not None
