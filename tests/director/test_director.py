"""Tests of the director loop against a recording in-memory dataplane (no sockets, hand-moved clock)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from gridlb.api.messages import (
    AddRequest,
    ApiError,
    DrainRequest,
    EnableRequest,
    ErrorCode,
    ReloadRequest,
    RemoveRequest,
)
from gridlb.config.load import site_from_mapping
from gridlb.director.director import Director, DirectorConfig
from gridlb.director.reconcile import HealthState
from gridlb.errors import ConfigError
from gridlb.health.base import CheckResult, Verdict
from gridlb.status import status_to_json
from gridlb.table import DelDest, DestSpec, EditDest, ForwardMethod, RealKey, ServiceKey
from tests.director.fakes import FakeClock, FakeDataplane, FakeHealth

SVC = ServiceKey.tcp("127.0.0.1", 2811)
A, B, C, D = (RealKey.parse(f"127.0.0.{i}:2811") for i in (2, 3, 4, 5))
UP = CheckResult(Verdict.UP, "220 banner", 0.001)
DOWN_RESULT = CheckResult(Verdict.DOWN, "connection refused", 0.001)


def site_config(*reals: RealKey, weight: int = 1, delay_loop: float = 1, **vs: Any) -> DirectorConfig:
    site = site_from_mapping(
        {
            "virtual_servers": {
                "gridftp": {
                    "ip_address": "127.0.0.1",
                    "port": 2811,
                    "lb_algo": "wlc",
                    "lb_kind": "NAT",
                    "delay_loop": delay_loop,
                    "tcp_check": {"connect_timeout": 1},
                    "real_servers": [{"ip_address": str(r.addr), "weight": weight} for r in reals],
                    **vs,
                }
            }
        }
    )
    return DirectorConfig.from_site(site, ["site.yaml"])


class Harness:
    def __init__(self, config: DirectorConfig) -> None:
        self.clock = FakeClock()
        self.dp = FakeDataplane()
        self.health = FakeHealth()
        self.next_config: DirectorConfig | Exception = config
        self.director = Director(
            config,
            self.dp,
            health=self.health,
            clock=self.clock,
            resync_interval_s=3600,
            loader=self._load,
        )

    def _load(self, paths: Sequence[str]) -> DirectorConfig:
        if isinstance(self.next_config, Exception):
            raise self.next_config
        return self.next_config

    async def settle(self) -> None:
        """Let queued inputs be processed."""
        for _ in range(20):
            await asyncio.sleep(0)
        await self.director.resync()

    def weights(self) -> dict[str, int]:
        return self.dp.weights(SVC)

    def check(self, real: RealKey, result: CheckResult, state: HealthState | None) -> None:
        self.director.report_check((SVC, real), result, state)


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness(site_config(A, B, C))
    await harness.director.start()
    yield harness
    await harness.director.stop()


async def test_start_programs_the_site_and_starts_checks(h: Harness) -> None:
    assert h.weights() == {str(A): 1, str(B): 1, str(C): 1}
    svc = h.dp.table.service(SVC)
    assert svc is not None and svc.spec.scheduler == "wlc"
    assert [d.key for d in svc.dests] == [C, B, A]
    assert all(d.spec.forward is ForwardMethod.MASQ for d in svc.dests)
    assert set(h.health.targets) == {(SVC, A), (SVC, B), (SVC, C)}


async def test_start_adopts_an_existing_table_without_touching_it() -> None:
    first = Harness(site_config(A, B))
    await first.director.start()
    await first.director.stop()
    second = Harness(site_config(A, B))
    second.dp.table = first.dp.table  # a restarted director finds the live table
    await second.director.start()
    assert second.dp.applied == []  # nothing re-added: live connections are not disturbed
    await second.director.stop()


async def test_health_down_removes_and_up_restores(h: Harness) -> None:
    h.check(B, DOWN_RESULT, HealthState.DOWN)
    await h.settle()
    assert h.weights() == {str(A): 1, str(C): 1}
    assert DelDest(SVC, B) in h.dp.applied
    h.check(B, UP, HealthState.UP)
    await h.settle()
    assert h.weights() == {str(A): 1, str(B): 1, str(C): 1}


async def test_passive_failure_marks_down_until_a_later_check_passes(h: Harness) -> None:
    h.director.passive_failure(B, SVC, "connect refused")
    await h.settle()
    assert str(B) not in h.weights()
    # a check that started before the failure (latency reaches back past it) does not count
    h.clock.advance(0.5)
    h.check(B, CheckResult(Verdict.UP, "220", latency_s=1.0), HealthState.UP)
    await h.settle()
    assert str(B) not in h.weights()
    # a check started after the failure brings it back
    h.clock.advance(2.0)
    h.check(B, CheckResult(Verdict.UP, "220", latency_s=0.01), None)
    await h.settle()
    assert h.weights()[str(B)] == 1
    status = status_to_json(await h.director.status())
    (real,) = [r for r in status["services"][0]["reals"] if r["real"] == str(B)]
    assert real["passive_failures"] == 1 and real["passive_failure"] is None


async def test_passive_failure_is_retried_after_passive_retry_s(h: Harness) -> None:
    retry_s = h.director.config.settings.passive_retry_s
    h.director.passive_failure(B, SVC, "connect refused")
    await h.settle()
    assert str(B) not in h.weights()
    h.clock.advance(retry_s - 0.1)
    await h.settle()
    assert str(B) not in h.weights()  # not yet
    assert h.director._next_tick_s() == pytest.approx(0.1)  # the loop wakes for the expiry
    h.clock.advance(0.1)
    await h.settle()
    assert h.weights()[str(B)] == 1  # back, though no check passed (a failing one would keep it out)
    # with a failing checker the tracker's DOWN state keeps it out after the retry
    h.director.passive_failure(C, SVC, "connect refused")
    h.check(C, DOWN_RESULT, HealthState.DOWN)
    h.clock.advance(retry_s)
    await h.settle()
    assert str(C) not in h.weights()


async def test_reload_refuses_what_start_refuses_and_names_restart_settings(h: Harness) -> None:
    # a protocol the dataplane lacks: start refuses it (check_dataplane), so reload does too
    with pytest.raises(ConfigError):
        site_config(A, protocol="UDP").check_dataplane()
    h.next_config = site_config(A, protocol="UDP")
    with pytest.raises(ApiError) as exc:
        await h.director.call(ReloadRequest())
    assert exc.value.code is ErrorCode.CONFIG and "protocol UDP" in exc.value.message
    assert h.weights() == {str(A): 1, str(B): 1, str(C): 1}
    # a setting a running director cannot change is named in the reply, not silently ignored
    new = site_config(A, B, C)
    settings = new.settings.model_copy(update={"metrics_listen": "127.0.0.1:9999"})
    h.next_config = DirectorConfig(new.plans, new.checks, settings, new.paths)
    result = await h.director.call(ReloadRequest())
    assert result["restart_needed"] == ["gridlb.metrics_listen"]


async def test_drain_is_applied_before_the_reply(h: Harness) -> None:
    result = await h.director.call(DrainRequest("127.0.0.3"))
    assert result == {"drained": [str(B)]}
    assert h.weights()[str(B)] == 0  # already programmed when the reply arrives
    assert EditDest(SVC, B, DestSpec(0, ForwardMethod.MASQ)) in h.dp.applied
    status = status_to_json(await h.director.status())
    (real,) = [r for r in status["services"][0]["reals"] if r["real"] == str(B)]
    assert real["drained"] and real["reason"] == "drained" and real["weight"] == 0
    # a drained server that goes down and up again stays drained
    h.check(B, DOWN_RESULT, HealthState.DOWN)
    h.check(B, UP, HealthState.UP)
    await h.settle()
    assert h.weights()[str(B)] == 0
    assert await h.director.call(EnableRequest(str(B))) == {"enabled": [str(B)], "was_drained": [str(B)]}
    assert h.weights()[str(B)] == 1


async def test_unknown_real_server_is_refused(h: Harness) -> None:
    with pytest.raises(ApiError) as exc:
        await h.director.call(DrainRequest("127.0.0.9"))
    assert exc.value.code is ErrorCode.NOT_FOUND
    with pytest.raises(ApiError) as exc:
        await h.director.call(AddRequest(str(D), "127.0.0.1:2812"))
    assert exc.value.code is ErrorCode.NOT_FOUND
    with pytest.raises(ApiError) as exc:
        await h.director.call(AddRequest(str(A), "127.0.0.1:2811"))
    assert "already" in exc.value.message


async def test_add_and_remove_now(h: Harness) -> None:
    await h.director.call(AddRequest("127.0.0.5", "127.0.0.1:2811", weight=4))
    assert h.weights()[str(D)] == 4
    # the added server is checked like the service's others
    (spec,) = h.health.targets[(SVC, D)]
    assert spec.target == D and spec.kind == h.health.targets[(SVC, A)][0].kind
    h.check(D, DOWN_RESULT, HealthState.DOWN)
    await h.settle()
    assert str(D) not in h.weights()
    h.check(D, UP, HealthState.UP)
    await h.settle()
    svc = h.dp.table.service(SVC)
    assert svc is not None and svc.dests[0].key == D
    await h.director.call(RemoveRequest(str(A)))
    assert str(A) not in h.weights()
    await h.director.call(RemoveRequest(str(D)))
    assert (SVC, D) not in h.health.targets
    # health reports for a removed server change nothing
    h.check(A, UP, HealthState.UP)
    await h.settle()
    assert str(A) not in h.weights()


async def test_remove_drain_waits_for_the_last_active_connection(h: Harness) -> None:
    h.dp.set_active(SVC, C, 3)
    result = await h.director.call(RemoveRequest(str(C), drain=True))
    assert result == {"retiring": [{"service": str(SVC), "real": str(C)}]}
    assert h.weights()[str(C)] == 0
    h.dp.set_active(SVC, C, 1, inactive=4)
    await h.settle()
    assert str(C) in h.weights()
    h.dp.set_active(SVC, C, 0, inactive=4)  # inactive (FIN_WAIT) connections do not hold it
    await h.settle()
    assert str(C) not in h.weights()


async def test_remove_drain_deadline(h: Harness) -> None:
    h.dp.set_active(SVC, C, 3)
    await h.director.call(RemoveRequest(str(C), drain=True, timeout_s=10))
    h.clock.advance(5)
    await h.settle()
    assert str(C) in h.weights()
    h.clock.advance(6)
    await h.settle()
    assert str(C) not in h.weights()


async def test_reload_keeps_unchanged_health_and_retires_dropped(h: Harness) -> None:
    h.check(A, DOWN_RESULT, HealthState.DOWN)
    await h.settle()
    h.dp.set_active(SVC, C, 2)
    targets_before = dict(h.health.targets)
    h.dp.applied.clear()
    h.next_config = site_config(A, B, D)
    result = await h.director.call(ReloadRequest())
    assert result["added"] == [{"service": str(SVC), "real": str(D)}]
    assert result["retiring"] == [{"service": str(SVC), "real": str(C)}]
    # A stays down (no flap back up), B untouched, C held at 0 while busy, D added
    assert h.weights() == {str(B): 1, str(C): 0, str(D): 1}
    assert not any(op for op in h.dp.applied if getattr(op, "key", None) in (A, B))
    assert h.health.targets[(SVC, A)] == targets_before[(SVC, A)]
    assert (SVC, C) not in h.health.targets
    h.dp.set_active(SVC, C, 0)
    await h.settle()
    assert h.weights() == {str(B): 1, str(D): 1}


async def test_reload_with_changed_check_resets_that_pair_only(h: Harness) -> None:
    h.check(A, DOWN_RESULT, HealthState.DOWN)
    h.check(B, DOWN_RESULT, HealthState.DOWN)
    await h.settle()
    cfg = site_config(A, B, C)
    # same servers; B's check changes (its connect_timeout) so B starts afresh (up, no alpha)
    site = site_from_mapping(
        {
            "virtual_servers": {
                "gridftp": {
                    "ip_address": "127.0.0.1",
                    "port": 2811,
                    "lb_algo": "wlc",
                    "lb_kind": "NAT",
                    "delay_loop": 1,
                    "tcp_check": {"connect_timeout": 1},
                    "real_servers": [
                        {"ip_address": "127.0.0.2"},
                        {"ip_address": "127.0.0.3", "tcp_check": {"connect_timeout": 2}},
                        {"ip_address": "127.0.0.4"},
                    ],
                }
            }
        }
    )
    h.next_config = DirectorConfig.from_site(site, ["site.yaml"])
    result = await h.director.call(ReloadRequest())
    assert result["checks_changed"] == [{"service": str(SVC), "real": str(B)}]
    assert h.weights() == {str(B): 1, str(C): 1}
    del cfg


async def test_reload_keeps_drains_and_drops_runtime_membership(h: Harness) -> None:
    await h.director.call(DrainRequest(str(A)))
    await h.director.call(AddRequest(str(D), str(SVC)))
    h.next_config = site_config(A, B, C)
    await h.director.call(ReloadRequest())
    # the runtime-added D was idle, so it retired at once; A is still drained
    assert h.weights() == {str(A): 0, str(B): 1, str(C): 1}


async def test_bad_reload_keeps_running_config(h: Harness) -> None:
    h.next_config = ConfigError("bad value", key="virtual_servers.gridftp.port")
    with pytest.raises(ApiError) as exc:
        await h.director.call(ReloadRequest())
    assert exc.value.code is ErrorCode.CONFIG
    assert "virtual_servers.gridftp.port" in exc.value.message
    assert h.weights() == {str(A): 1, str(B): 1, str(C): 1}
    assert h.director.counters.reload_failures == 1


async def test_reload_dropping_a_service_retires_it(h: Harness) -> None:
    h.dp.set_active(SVC, A, 1)
    empty = DirectorConfig.from_site(site_from_mapping({"virtual_servers": {}}), ["site.yaml"])
    h.next_config = empty
    await h.director.call(ReloadRequest())
    assert h.weights() == {str(A): 0}  # the busy server keeps the service alive at weight 0
    h.dp.set_active(SVC, A, 0)
    await h.settle()
    assert h.dp.table.service(SVC) is None


async def test_resync_repairs_drift(h: Harness) -> None:
    from gridlb.table import apply_ops

    h.dp.table = apply_ops(h.dp.table, [DelDest(SVC, A), EditDest(SVC, B, DestSpec(9, ForwardMethod.MASQ))])
    await h.settle()
    assert h.weights() == {str(A): 1, str(B): 1, str(C): 1}


async def test_one_dump_per_pass_the_view_after_apply_is_derived(h: Harness) -> None:
    h.dp.set_active(SVC, B, 3)  # counters come from the pass's dump and stay
    before = h.dp.dumps
    await h.director.call(DrainRequest(str(A)))
    assert h.dp.dumps == before + 1  # dump, diff, apply; no second dump
    assert h.director.observed == h.dp.table  # derived: the dump plus the accepted op
    svc = h.director.observed.service(SVC)
    dest_b = svc.dest(B) if svc is not None else None
    assert dest_b is not None and dest_b.counters.active == 3
    h.dp.fail[EditDest] = "Operation not permitted"  # a refused op is not in the derived view
    with pytest.raises(ApiError):
        await h.director.call(EnableRequest(str(A)))
    assert h.director.observed == h.dp.table


async def test_dataplane_error_is_reported_and_retried(h: Harness) -> None:
    h.dp.fail[EditDest] = "Operation not permitted"
    with pytest.raises(ApiError) as exc:
        await h.director.call(DrainRequest(str(A)))
    assert exc.value.code is ErrorCode.DATAPLANE and "Operation not permitted" in exc.value.message
    status = status_to_json(await h.director.status())
    assert status["degraded"] and status["counters"]["op_errors"] == {"EditDest": 1}
    del h.dp.fail[EditDest]
    await h.settle()
    assert h.weights()[str(A)] == 0
    assert not status_to_json(await h.director.status())["degraded"]


async def test_quorum_loss_brings_in_the_sorry_server() -> None:
    h = Harness(site_config(A, B, quorum=2, sorry_server="127.0.0.9"))
    await h.director.start()
    try:
        h.check(A, DOWN_RESULT, HealthState.DOWN)
        await h.settle()
        assert h.weights() == {"127.0.0.9:2811": 1}
        h.check(A, UP, HealthState.UP)
        await h.settle()
        assert h.weights() == {str(A): 1, str(B): 1}
    finally:
        await h.director.stop()


async def test_status_snapshot_shapes(h: Harness) -> None:
    h.check(A, UP, None)
    await h.settle()
    status = status_to_json(await h.director.status())
    assert status["dataplane"] == "fake" and status["generation"] == 1
    (svc,) = status["services"]
    assert svc["service"] == str(SVC) and svc["scheduler"] == "wlc" and svc["quorum_up"]
    real = svc["reals"][0]
    assert real["real"] == str(A) and real["health"] == "up"
    assert real["last_check"]["verdict"] == "up" and real["last_check"]["reason"] == "220 banner"


async def test_role_change_is_shown_and_unchanged_checks_cost_no_pass(h: Harness) -> None:
    h.director.set_role("MASTER", "higher priority")
    await h.settle()
    status = status_to_json(await h.director.status())
    assert (status["role"], status["role_reason"]) == ("MASTER", "higher priority")
    assert h.weights() == {str(A): 1, str(B): 1, str(C): 1}  # the table does not depend on the role
    dumps = h.dp.dumps
    for _ in range(50):
        h.check(A, UP, None)
    for _ in range(20):
        await asyncio.sleep(0)
    assert h.dp.dumps == dumps  # results that change nothing do not touch the dataplane
    assert h.director.last_check[(SVC, A)].result == UP
