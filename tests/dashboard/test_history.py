"""Tests of the dashboard's in-memory history (pure: snapshots and times are given)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gridlb.dashboard.history import History
from gridlb.status import DirectorStatus, RealStatus, ServiceStatus

SVC = "TCP 127.0.0.1:2811"


def real(
    name: str, *, active: int = 0, health: str = "up", inbytes: int = 0, outbytes: int = 0
) -> RealStatus:
    return RealStatus(
        real=name,
        in_table=True,
        weight=1,
        desired_weight=1,
        forward="Masq",
        active=active,
        inactive=0,
        connections=0,
        inbytes=inbytes,
        outbytes=outbytes,
        overloaded=False,
        health=health,
        reason="serving",
        drained=False,
        retiring=False,
        retire_reason=None,
        runtime_added=False,
        passive_failure=None,
        passive_failures=0,
    )


def status(*reals: RealStatus) -> DirectorStatus:
    svc = ServiceStatus(SVC, "wlc", True, True, False, 0, 0, 0, 0, 0, reals=reals)
    return DirectorStatus("0", "proxy", (), 1, 0.0, None, "", False, services=(svc,))


def test_one_point_per_step_with_peak_connections_and_worst_health() -> None:
    h = History(window_s=60, step_s=10)
    h.observe(0.0, status(real("a", active=1)))  # the first snapshot is a point at once
    h.observe(3.0, status(real("a", active=7, health="down")))
    h.observe(6.0, status(real("a", active=2)))
    assert len(h.points(SVC, "a")) == 1
    h.observe(13.0, status(real("a", active=3)))  # closes the step that began at 3.0
    points = h.points(SVC, "a")
    assert [(p.at, p.active, p.health) for p in points] == [(0.0, 1, 1.0), (13.0, 7, 0.0)]


def test_window_is_a_ring_buffer() -> None:
    h = History(window_s=60, step_s=10)
    for i in range(100):
        h.observe(i * 10.0, status(real("a", active=i)))
    points = h.points(SVC, "a")
    assert len(points) == 6 and points[-1].active == 99
    assert all(990.0 - p.at <= 60 for p in points)
    doc = h.to_json(990.0)
    assert doc["reals"][0]["points"][-1] == [0.0, 99, 0, 1.0]


def test_throughput_from_counter_rises_and_resets() -> None:
    h = History(window_s=60, step_s=10)
    h.observe(0.0, status(real("a", inbytes=0, outbytes=0)))
    h.observe(0.5, status(real("a", inbytes=100, outbytes=100)))  # too soon: kept for later
    h.observe(2.0, status(real("a", inbytes=2000, outbytes=4000)))
    rs = h.to_json(2.0)["reals"][0]
    assert (rs["in_bps"], rs["out_bps"]) == (1000.0, 2000.0)
    h.observe(4.0, status(real("a", inbytes=10, outbytes=10)))  # counters reset (restart): no negative rate
    rs = h.to_json(4.0)["reals"][0]
    assert (rs["in_bps"], rs["out_bps"]) == (0.0, 0.0)


def test_gone_real_servers_are_forgotten_and_refusing_is_half() -> None:
    h = History(window_s=60, step_s=10)
    h.observe(0.0, status(real("a"), real("b", health="refusing")))
    assert h.points(SVC, "b")[0].health == 0.5
    h.observe(10.0, status(real("a")))
    assert [r["real"] for r in h.to_json(10.0)["reals"]] == ["a"]
    assert replace(h).step_s == 10


def test_bad_window() -> None:
    with pytest.raises(ValueError):
        History(window_s=5, step_s=10)
