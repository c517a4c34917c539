"""Tests of the health adapter: real TCP checks through the runner, every result and each change reported."""

from __future__ import annotations

import asyncio
from typing import Any

from gridlb.config.schema import CheckKind, CheckSpec
from gridlb.director.health import ReportingChecker, RunnerMonitor
from gridlb.director.reconcile import HealthState
from gridlb.health.script import ScriptChecker
from gridlb.health.tcp import TcpChecker
from gridlb.table import RealKey, ServiceKey, parse_address

S1 = ServiceKey.tcp("127.0.0.1", 2811)
S2 = ServiceKey.tcp("127.0.0.1", 2812)


def spec(real: RealKey, **kw: Any) -> CheckSpec:
    return CheckSpec(
        kind=CheckKind.TCP,
        target=real,
        delay_loop_s=0.1,
        delay_before_retry_s=0.1,
        connect_timeout_s=1,
        warmup_s=0,
        **kw,
    )


async def test_results_and_changes_reach_every_pair_of_the_real_server() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    real = RealKey.parse(f"127.0.0.1:{port}")
    reports: list[tuple[Any, ...]] = []
    monitor = RunnerMonitor(lambda *a: reports.append(a))
    try:
        monitor.set_targets({(S1, real): (spec(real),), (S2, real): (spec(real),)})
        await asyncio.sleep(0.35)
        ups = [r for r in reports if r[2] is None]
        assert {r[0] for r in ups} == {(S1, real), (S2, real)}
        assert all(r[1].ok and r[4] == "tcp" and r[5] > 0 for r in ups)
        runner_target = monitor.runner._targets[real]
        monitor.set_targets({(S1, real): (spec(real),)})  # same check: state and task kept
        assert monitor.runner._targets[real] is runner_target
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.6)
        changes = [r for r in reports if r[2] is not None]
        assert [(r[0], r[2]) for r in changes] == [((S1, real), HealthState.DOWN)]
        assert "refused" in changes[0][1].reason
    finally:
        await monitor.close()


async def test_every_spec_option_reaches_the_checker() -> None:
    """The monitor builds checkers through health.spec.from_check_spec: bind_if, user, ... all arrive."""
    real = RealKey.parse("127.0.0.1:2811")
    tcp = spec(real, bindto=parse_address("127.0.0.7"), bind_if="lo", bind_port=0)
    script = CheckSpec(kind=CheckKind.SCRIPT, target=real, script="true", script_user="nobody", warmup_s=9)
    monitor = RunnerMonitor(lambda *a: None, vips=("127.0.0.100",))
    other = RealKey.parse("127.0.0.2:2811")
    try:
        monitor.set_targets({(S1, real): (tcp,), (S1, other): (script,)})
        t = monitor.runner._targets[real].checker
        assert isinstance(t, ReportingChecker) and isinstance(t.inner, TcpChecker)
        assert (str(t.inner.conn.bindto), t.inner.conn.bind_if) == ("127.0.0.7", "lo")
        sc = monitor.runner._targets[other].checker
        assert isinstance(sc, ReportingChecker) and isinstance(sc.inner, ScriptChecker)
        assert sc.inner.user is not None and sc.inner.user.uid == 65534
        assert monitor.runner._targets[other].tracker.policy.warmup_s == 9
    finally:
        await monitor.close()
