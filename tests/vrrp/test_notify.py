"""Notify scripts: keepalived's argument conventions, run for real (no root needed)."""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

import pytest

from gridlb.vrrp.config import VrrpConfig
from gridlb.vrrp.events import State, StateChanged, Trigger
from gridlb.vrrp.notify import Notifier, notify_commands

VIP = ipaddress.ip_interface("10.0.0.100/24")


def change(new: State, prio: int = 100) -> StateChanged:
    return StateChanged("VI_1", State.BACKUP, new, Trigger.MASTER_DOWN, "", prio, 0.0)


def test_commands_follow_keepalived() -> None:
    cfg = VrrpConfig(
        "VI_1", "eth0", 1, vips=(VIP,), notify_master="/m 'a b'", notify_stop="/s", notify="/n x"
    )
    assert notify_commands(cfg, change(State.MASTER, 150)) == [
        ["/m", "a b"],
        ["/n", "x", "INSTANCE", "VI_1", "MASTER", "150"],
    ]
    assert notify_commands(cfg, change(State.BACKUP)) == [["/n", "x", "INSTANCE", "VI_1", "BACKUP", "100"]]
    assert notify_commands(cfg, change(State.FAULT))[0][-2] == "FAULT"
    assert notify_commands(cfg, change(State.INIT))[0] == ["/s"]
    assert notify_commands(cfg, change(State.INIT))[1][-2] == "STOP"


@pytest.mark.asyncio
async def test_scripts_run_with_arguments(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    script = tmp_path / "notify.sh"
    script.write_text(f'#!/bin/sh\necho "$@" >> {out}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    hang = tmp_path / "hang.sh"
    hang.write_text("#!/bin/sh\nexec sleep 30\n")
    hang.chmod(0o755)
    cfg = VrrpConfig(
        "VI_1",
        "eth0",
        1,
        vips=(VIP,),
        notify=str(script),
        notify_master=f"{script} master-only",
        notify_fault=str(hang),
    )
    n = Notifier(cfg, timeout_s=0.5)
    n.on_state_changed(change(State.MASTER, 150))
    n.on_state_changed(change(State.FAULT))
    await n.drain()
    lines = sorted(out.read_text().splitlines())
    assert lines == ["INSTANCE VI_1 FAULT 100", "INSTANCE VI_1 MASTER 150", "master-only"]
    assert ([str(hang)], None) in n.results  # killed by the timeout
    assert os.path.exists(out)
