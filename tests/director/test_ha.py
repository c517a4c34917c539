"""Tests of the director's HA adapter: journal, role, reasons, events, failover refusals, metrics, CLI.

The VRRP wire side (hand-over, crash, restart, VIPs) is exercised for real in
tests/e2e/test_ha_failover.py; here the controller is not started (no sockets) and events are fed
as the VRRP machine emits them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gridlb.api.messages import (
    ApiError,
    ErrorCode,
    EventsRequest,
    FailoverRequest,
    is_write,
    request_from_json,
)
from gridlb.cli.ctl import render_status
from gridlb.cli.failover import format_event, vrrp_lines
from gridlb.cli.main import main
from gridlb.director.daemon import DaemonOptions, DirectorDaemon
from gridlb.director.director import DirectorConfig
from gridlb.director.ha import (
    FAILOVER_REASON,
    REJOIN_REASON,
    HaController,
    HaJournal,
    aggregate_role,
    transition_reason,
)
from gridlb.errors import ConfigError
from gridlb.status import status_from_json
from gridlb.vrrp.config import VrrpConfig
from gridlb.vrrp.events import Announce, MasterSeen, PriorityChanged, State, StateChanged, Trigger
from tests.director.fakes import FakeDataplane
from tests.support import lab as lab_up

N, B, M, F = State.INIT, State.BACKUP, State.MASTER, State.FAULT


def changed(name: str, old: State, new: State, trigger: Trigger, detail: str = "x") -> StateChanged:
    return StateChanged(name, old, new, trigger, detail, 100, 0.0)


def config(name: str = "VI_1") -> VrrpConfig:
    return VrrpConfig(
        name=name,
        interface="eth0",
        vrid=51,
        priority=100,
        vips=(ipaddress.ip_interface("10.9.9.100/24"),),
        source_address=ipaddress.ip_address("10.9.9.2"),
        unicast_peers=(ipaddress.ip_address("10.9.9.3"),),
    )


@pytest.mark.parametrize(
    ("states", "role"),
    [
        ({}, None),
        ({"a": M}, "MASTER"),
        ({"a": B, "b": B}, "BACKUP"),
        ({"a": M, "b": B}, "MIXED"),
        ({"a": F}, "FAULT"),
        ({"a": N, "b": N}, "INIT"),
    ],
)
def test_aggregate_role(states: dict[str, State], role: str | None) -> None:
    assert aggregate_role(states) == role


@pytest.mark.parametrize(
    ("event", "handover", "reason"),
    [
        (changed("a", B, M, Trigger.MASTER_DOWN, "no advert"), False, "master_down: no advert"),
        (changed("a", M, N, Trigger.SHUTDOWN, "shutdown"), False, "shutdown: shutdown"),
        (changed("a", M, N, Trigger.SHUTDOWN, "shutdown"), True, FAILOVER_REASON),
        (changed("a", N, B, Trigger.START, "startup"), True, REJOIN_REASON),
        (changed("a", N, B, Trigger.START, "startup"), False, "start: startup"),
        (
            changed("a", M, B, Trigger.PREEMPTED, "advert from 10.0.0.3"),
            True,
            "preempted: advert from 10.0.0.3",
        ),
    ],
)
def test_transition_reason(event: StateChanged, handover: bool, reason: str) -> None:
    assert transition_reason(event, handover) == reason


def test_journal_records_states_transitions_and_other_events() -> None:
    j = HaJournal(maxlen=4)
    j.record(changed("VI_1", N, B, Trigger.START, "startup"), 10.0)
    assert j.role == "BACKUP"
    j.record(MasterSeen("VI_1", ipaddress.ip_address("10.0.0.3"), 150, 0.0), 11.0)
    j.record(changed("VI_1", B, M, Trigger.MASTER_DOWN, "no advert"), 12.0)
    j.record(Announce("VI_1", 5, "master", 0.0), 12.0)
    j.record(PriorityChanged("VI_1", 100, 90, 0.0), 13.0)
    assert j.role == "MASTER"
    assert j.seq == 5 and [e.seq for e in j.entries] == [2, 3, 4, 5]  # bounded
    assert [e.kind for e in j.since(3)] == ["announce", "priority"]
    assert j.last_transition["VI_1"] == {
        "from": "BACKUP",
        "to": "MASTER",
        "trigger": "master_down",
        "reason": "master_down: no advert",
        "priority": 100,
        "at": 12.0,
    }
    j.record(changed("VI_1", M, N, Trigger.SHUTDOWN, "shutdown"), 14.0, handover=True)
    j.record(changed("VI_1", N, B, Trigger.START, "startup"), 14.0, handover=True)
    assert j.transitions == {
        ("VI_1", "INIT", "BACKUP", "start"): 1,
        ("VI_1", "BACKUP", "MASTER", "master_down"): 1,
        ("VI_1", "MASTER", "INIT", "failover"): 1,
        ("VI_1", "INIT", "BACKUP", "failover"): 1,
    }
    data = j.entries[-1].to_json()
    assert data["seq"] == 7 and data["kind"] == "state" and data["reason"] == REJOIN_REASON
    assert format_event(j.entries[-2].to_json()).endswith(
        f"VI_1: MASTER -> INIT ({FAILOVER_REASON}) priority 100"
    )
    seen = j.add("VI_1", "master", 15.0, address="10.0.0.3", priority=150)
    assert format_event(seen.to_json()).endswith("#8 VI_1: master is 10.0.0.3 (priority 150)")


async def test_controller_role_callback_events_and_refusals() -> None:
    roles: list[tuple[str, str]] = []
    ctl = HaController([config("VI_1"), config("VI_2")], on_role=lambda r, why: roles.append((r, why)))
    with pytest.raises(ApiError) as err:
        await ctl.failover()
    assert (
        err.value.code is ErrorCode.INVALID_ARGUMENT
        and "not MASTER (VI_1 INIT, VI_2 INIT)" in err.value.message
    )
    with pytest.raises(ApiError) as err:
        await ctl.failover("VI_9")
    assert err.value.code is ErrorCode.NOT_FOUND and "VI_1, VI_2" in err.value.message
    assert await ctl.events() == {"events": [], "last": 0}

    waiter = asyncio.ensure_future(ctl.events(0, wait_s=5))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    ctl._on_event(changed("VI_1", N, B, Trigger.START, "startup"))
    got = await asyncio.wait_for(waiter, 2)
    assert [e["to"] for e in got["events"]] == ["BACKUP"] and got["last"] == 1
    assert roles == [("BACKUP", "VI_1: INIT -> BACKUP (start: startup)")]
    ctl._on_event(changed("VI_2", N, M, Trigger.START_OWNER, "address owner"))
    assert roles[-1][0] == "MIXED"
    status = ctl.status()
    assert status["role"] == "MIXED"
    first = status["instances"][0]
    assert first["name"] == "VI_1" and first["peers"] == ["10.9.9.3"] and first["vips"] == ["10.9.9.100/24"]
    assert first["last_transition"]["reason"] == "start: startup"
    # A timed-out long poll returns nothing new, promptly.
    assert (await ctl.events(2, wait_s=0.05))["events"] == []


def test_collector_exports_role_transitions_and_adverts() -> None:
    ctl = HaController([config()])
    ctl.journal.record(changed("VI_1", N, B, Trigger.START), 1.0)
    ctl.journal.record(changed("VI_1", B, M, Trigger.MASTER_DOWN), 2.0)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ctl.collector)
    text = generate_latest(registry).decode()
    assert 'gridlb_vrrp_role{instance="VI_1",state="INIT"} 1.0' in text  # not started: no machine yet
    assert 'gridlb_vrrp_role{instance="VI_1",state="MASTER"} 0.0' in text
    assert (
        'gridlb_vrrp_transitions_total{from="BACKUP",instance="VI_1",to="MASTER",trigger="master_down"} 1.0'
        in text
    )
    assert 'gridlb_vrrp_adverts_received_total{instance="VI_1"} 0.0' in text
    assert 'gridlb_vrrp_adverts_sent_total{instance="VI_1"} 0.0' in text
    assert 'gridlb_vrrp_failovers_total{instance="VI_1"} 0.0' in text


def test_api_messages_failover_is_a_write_events_a_read() -> None:
    env = request_from_json({"v": 1, "op": "failover", "args": {"instance": "VI_1", "timeout_s": 2}})
    assert env.request == FailoverRequest("VI_1", 2.0) and is_write(env.request)
    env = request_from_json({"v": 1, "op": "events", "args": {"since": 3}})
    assert env.request == EventsRequest(3, 0.0) and not is_write(env.request)
    with pytest.raises(ApiError):
        request_from_json({"v": 1, "op": "failover", "args": {"instance": 5}})


def test_from_paths(tmp_path: Path) -> None:
    plain = tmp_path / "plain.yaml"
    plain.write_text("virtual_servers: {}\n")
    assert HaController.from_paths([str(plain)]) is None
    assert HaController.from_paths([]) is None
    site = tmp_path / "dir1.yaml"
    site.write_text(
        "keepalived::vrrp_instances:\n"
        "  VI_1:\n"
        "    interface: eth0\n"
        "    virtual_router_id: 7\n"
        "    priority: 150\n"
        "    advert_int: 0.5\n"
        "    version: 3\n"
        "    nopreempt: true\n"
        "    virtual_ipaddress: ['10.9.9.100/24']\n"
        "    unicast_source_ip: 10.9.9.2\n"
        "    unicast_peers: ['10.9.9.3']\n"
    )
    ctl = HaController.from_paths([str(site)])
    assert ctl is not None
    cfg = ctl.instances["VI_1"].config
    assert (cfg.vrid, cfg.priority, cfg.version, cfg.advert_int_cs, cfg.preempt) == (7, 150, 3, 50, False)
    assert [str(p) for p in cfg.unicast_peers] == ["10.9.9.3"]
    site.write_text(site.read_text().replace("version: 3", "version: 2"))
    with pytest.raises(ConfigError) as err:
        HaController.from_paths([str(site)])
    assert str(err.value).startswith(f"{site}:2: error: VI_1.advert_int: VRRPv2 needs whole seconds")


def test_status_lines() -> None:
    status: dict[str, Any] = {  # `gridlb status --json`
        "version": "0",
        "dataplane": "proxy",
        "config": ["d.yaml"],
        "generation": 1,
        "uptime_s": 3.0,
        "role": "BACKUP",
        "services": [],
        "vrrp": {
            "role": "BACKUP",
            "instances": [
                {
                    "name": "VI_1",
                    "state": "BACKUP",
                    "priority": 150,
                    "vips": ["10.9.9.100/24"],
                    "peers": ["10.9.9.3"],
                    "master": "10.9.9.3",
                    "master_priority": 100,
                    "preempt": False,
                    "handed_over": 1,
                    "stale_vips_removed": [],
                    "last_transition": {"from": "INIT", "to": "BACKUP", "reason": REJOIN_REASON, "at": 0.0},
                }
            ],
        },
    }
    text = "\n".join(str(t) for t in vrrp_lines(status["vrrp"]))
    assert (
        "VRRP VI_1: BACKUP priority 150, VIPs 10.9.9.100/24, peer 10.9.9.3, master 10.9.9.3 (priority 100)"
        in text
    )
    assert "no preemption after failover" in text
    assert f"INIT -> BACKUP ({REJOIN_REASON})" in text
    typed = status_from_json({**status, "role_reason": "", "degraded": False})
    assert len(render_status(typed).renderables) == 4  # head, 2 VRRP lines, table
    assert vrrp_lines(None) == []


@pytest.fixture
async def plain_daemon() -> AsyncIterator[str]:
    directory = Path(tempfile.mkdtemp(prefix="glbQ-ha-"))
    site = directory / "site.yaml"
    site.write_text(
        "virtual_servers:\n  gridftp:\n    ip_address: 127.44.0.1\n    port: 2811\n"
        "    real_servers:\n      - ip_address: 127.44.0.2\n"
    )
    sock = str(directory / "control.sock")
    daemon = DirectorDaemon(
        DirectorConfig.load([str(site)]),
        DaemonOptions(socket_path=sock, metrics_listen="", install_signals=False),
        dataplane=FakeDataplane(),
    )
    assert daemon.ha is None
    await daemon.start()
    try:
        yield sock
    finally:
        await daemon.stop()
        shutil.rmtree(directory, ignore_errors=True)


async def test_cli_without_vrrp(plain_daemon: str, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["failover"], ["events"]):
        code = await asyncio.to_thread(main, [*argv, "--socket", plain_daemon])
        out, err = capsys.readouterr()
        assert code == 1 and out == ""
        assert err == f"gridlb {argv[0]}: this director runs no VRRP instance (no vrrp_instances)\n"
    code = await asyncio.to_thread(main, ["failover", "--socket", plain_daemon + ".missing"])
    _, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1


@pytest.mark.privileged
def test_director_run_with_a_missing_vrrp_interface_is_one_line(tmp_path: Path) -> None:
    """In a fresh director namespace: exit 2, one line naming the instance's interface, no socket left."""
    with lab_up("ha", realservers=0, directors=1, start="none") as lab:
        sock = tmp_path / "control.sock"
        site = tmp_path / "dir1.yaml"
        site.write_text(
            "keepalived::vrrp_instances:\n  VI_1:\n    interface: em9\n    virtual_router_id: 9\n"
            "    virtual_ipaddress: ['10.1.1.100/24']\n    unicast_source_ip: 10.1.1.2\n"
            "    unicast_peers: ['10.1.1.3']\n"
            "virtual_servers:\n  g:\n    ip_address: 10.1.1.100\n    port: 2811\n"
            "    real_servers:\n      - ip_address: 10.1.1.11\n"
            f"gridlb:\n  dataplane: proxy\n  control_socket: {sock}\n"
        )
        argv = [sys.executable, "-m", "gridlb", "director", "run", str(site)]
        proc = lab.exec("dir1", argv, timeout_s=60, check=False)
        errors = [ln for ln in proc.stderr.splitlines() if " INFO " not in ln]
        assert proc.returncode == 2
        assert errors == [
            "gridlb: error: vrrp_instances.VI_1.interface: cannot run on interface em9: No such device"
        ]
        assert not sock.exists()
