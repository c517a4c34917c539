"""Tests of the announce/withdraw decision: serve-ability from the typed status, drain, shutdown."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_address

from gridlb.scaleout.decide import announced, decide
from gridlb.status import DirectorStatus, FaultStatus, RealStatus, ServiceStatus

VIP = ip_address("10.0.9.1")
VIP2 = ip_address("10.0.9.2")
SVC = "TCP  10.0.9.1:2811"


def real(addr: str, *, weight: int | None = 1, health: str = "up", in_table: bool = True) -> RealStatus:
    return RealStatus(
        real=addr,
        in_table=in_table,
        weight=weight,
        desired_weight=weight,
        forward="Route",
        active=0,
        inactive=0,
        connections=0,
        inbytes=0,
        outbytes=0,
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


def status(*reals: RealStatus, in_table: bool = True, quorum_up: bool = True) -> DirectorStatus:
    svc = ServiceStatus(SVC, "mh", in_table, quorum_up, False, 0, 0, 0, 0, 0, reals=reals)
    return DirectorStatus("0", "dr", ("d.yaml",), 1, 1.0, None, "", False, services=(svc,))


def one(st: DirectorStatus | None, **kw: bool) -> tuple[bool, str]:
    (d,) = decide(st, {VIP: (SVC,)}, **kw)
    return d.announce, d.reason


def test_announces_while_a_real_server_is_up_in_the_table() -> None:
    assert one(status(real("a"), real("b", health="down"))) == (True, f"{SVC}: 1 real server up")
    assert one(status(real("a"), real("b")))[1].endswith("2 real servers up")


def test_withdraws_when_no_real_server_can_take_a_flow() -> None:
    for r in (real("a", health="down"), real("a", weight=0), real("a", in_table=False, weight=None)):
        assert one(status(r)) == (False, f"{SVC}: no real server up")
    assert one(status()) == (False, f"{SVC}: no real server up")


def test_withdraws_when_the_service_is_not_programmed_or_below_quorum_or_the_dataplane_fails() -> None:
    assert one(status(real("a"), in_table=False)) == (False, f"{SVC} not in the dataplane")
    assert one(status(real("a"), quorum_up=False)) == (False, f"{SVC} below quorum")
    failing = replace(status(real("a")), dataplane_fault=FaultStatus("netlink timeout", 3.0, 4))
    assert one(failing) == (False, "dataplane failing: netlink timeout")
    assert one(None) == (False, "director not started")


def test_drain_and_shutdown_withdraw_whatever_the_status() -> None:
    up = status(real("a"))
    assert one(up, drained=True)[0] is False and "drained" in one(up, drained=True)[1]
    assert one(up, stopping=True) == (False, "director shutting down")
    assert one(up, drained=True, stopping=True)[1] == "director shutting down"


def test_a_vip_is_announced_when_any_of_its_services_serves_and_each_vip_on_its_own() -> None:
    other = replace(status().services[0], service="TCP  10.0.9.1:1094", reals=(real("a"),))
    st = replace(status(real("a", health="down")), services=(status().services[0], other))
    decisions = decide(st, {VIP: (SVC, "TCP  10.0.9.1:1094"), VIP2: ()})
    assert [(str(d.vip), d.announce) for d in decisions] == [("10.0.9.1", True), ("10.0.9.2", False)]
    assert decisions[1].reason == "no service has this address"
    assert announced(decisions) == frozenset({VIP})
