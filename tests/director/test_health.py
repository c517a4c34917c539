"""Tests of the health adapter: real TCP checks through the runner, every result and each change reported."""

from __future__ import annotations

import asyncio
from typing import Any

from gridlb.config.schema import CheckKind, CheckSpec
from gridlb.director.health import RunnerMonitor, check_policy, checker_options
from gridlb.director.reconcile import HealthState
from gridlb.table import RealKey, ServiceKey

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


def test_options_and_policy_from_spec() -> None:
    real = RealKey.parse("10.0.1.1:2811")
    s = CheckSpec(
        kind=CheckKind.GRIDFTP,
        target=RealKey.parse("10.0.9.9:2812"),
        retry=3,
        delay_before_retry_s=2,
        delay_loop_s=10,
        inhibit_on_failure=True,
    )
    opts = checker_options(s, real, ("10.0.0.1",))
    assert opts["connect_ip"] == "10.0.9.9" and opts["connect_port"] == 2812
    assert opts["level"] == "banner" and opts["vips"] == ("10.0.0.1",)
    policy = check_policy(s)
    assert (policy.retry, policy.delay_before_retry_s, policy.delay_loop_s) == (3, 2, 10)
    assert policy.inhibit_on_failure
    assert checker_options(spec(real), real) == {}
