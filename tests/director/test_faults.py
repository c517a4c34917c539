"""The director's loop cannot die: a fault-injecting dataplane raises, hangs past the deadline and
returns garbage on every method; the director keeps answering, counts every fault and applies what
operators asked once the dataplane recovers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest

from gridlb.api.messages import ApiError, DrainRequest, EnableRequest, ErrorCode
from gridlb.dataplane.base import DataplaneCounters, OpResult, Role
from gridlb.director.director import Director
from gridlb.director.guard import GuardedDataplane
from gridlb.metrics import Metrics
from gridlb.table import ConnEntry, IpvsTable, Op
from tests.director.fakes import FakeDataplane, FakeHealth
from tests.director.test_director import SVC, A, B, site_config

FAULTS = ("raise", "hang", "garbage")
METHODS = ("dump", "apply", "set_role", "connections")


class FaultyDataplane(FakeDataplane):
    """A FakeDataplane whose every method fails as `self.fault[method]` says ("" = works)."""

    def __init__(self) -> None:
        super().__init__()
        self.fault: dict[str, str] = {}
        self.injected = 0

    async def _maybe_fail(self, method: str) -> Any:
        how = self.fault.get(method, "")
        if not how:
            return None
        self.injected += 1
        if how == "raise":
            raise OSError(f"injected {method} failure")
        if how == "hang":
            await asyncio.sleep(3600)
        return object()  # garbage: not what the protocol says

    async def dump(self) -> IpvsTable:
        bad = await self._maybe_fail("dump")
        return bad if bad is not None else await super().dump()

    async def apply(self, ops: Sequence[Op]) -> list[OpResult]:
        bad = await self._maybe_fail("apply")
        return bad if bad is not None else await super().apply(ops)

    async def set_role(self, role: Role) -> None:
        bad = await self._maybe_fail("set_role")
        if bad is None:
            await super().set_role(role)
        else:
            return bad  # type: ignore[no-any-return]  # deliberate: garbage where None is due

    async def connections(self) -> list[ConnEntry]:
        bad = await self._maybe_fail("connections")
        return bad if bad is not None else await super().connections()

    async def counters(self) -> DataplaneCounters:
        bad = await self._maybe_fail("counters")
        return bad if bad is not None else await super().counters()


@pytest.fixture
async def faulty() -> Any:
    dp = FaultyDataplane()
    director = Director(
        site_config(A, B), dp, health=FakeHealth(), resync_interval_s=0.5, dataplane_deadline_s=0.01
    )
    await director.start()
    try:
        yield director, dp
    finally:
        await director.stop()


async def test_thousand_faults_status_answers_drain_applies_after_recovery(faulty: Any) -> None:
    director, dp = faulty
    metrics = Metrics(director)
    assert dp.weights(SVC) == {str(A): 1, str(B): 1}
    rounds = 0
    while dp.injected < 1000:
        how = FAULTS[rounds % len(FAULTS)]
        method = METHODS[(rounds // len(FAULTS)) % len(METHODS)]
        dp.fault = {method: how}
        if method == "set_role":  # a role the dataplane was not told yet: set_role is called
            director.set_role("MASTER" if rounds % 2 else "BACKUP")
        if method == "apply":  # a change to apply: drain A where it serves, else enable it
            request = DrainRequest(str(A)) if dp.weights(SVC)[str(A)] else EnableRequest(str(A))
            with pytest.raises(ApiError) as err:
                await director.call(request)
            assert err.value.code is ErrorCode.DATAPLANE
        if method == "connections":
            with pytest.raises(ApiError) as err:
                await director.connections()
            assert err.value.code is ErrorCode.DATAPLANE
        await director.resync()
        rounds += 1
        # status answers within 1 s whatever the dataplane is doing
        started = time.monotonic()
        status = await asyncio.wait_for(director.status(), 1.0)
        assert time.monotonic() - started < 1.0
        assert status.services  # the last good table still shows the service
        assert rounds < 5000
    # now the dataplane is broken on every method: an operator drains; the reply says it is pending
    dp.fault = dict.fromkeys(METHODS, "raise")
    with pytest.raises(ApiError) as err:
        await director.call(DrainRequest(str(B)))
    assert err.value.code is ErrorCode.DATAPLANE and "applied as soon as" in err.value.message
    status = await asyncio.wait_for(director.status(), 1.0)
    assert status.degraded and status.dataplane_fault is not None
    assert "injected" in status.dataplane_fault.error
    # it recovers: the loop (not a test call) retries with backoff and applies the drain
    dp.fault = {}
    for _ in range(200):
        if dp.weights(SVC).get(str(B)) == 0 and not director.guard.fault.failing:
            break
        await asyncio.sleep(0.05)
    assert dp.weights(SVC)[str(B)] == 0
    status = await asyncio.wait_for(director.status(), 1.0)
    assert not status.degraded and status.dataplane_fault is None
    # every fault is counted, by method, in status and in the metrics
    by_method = director.guard.fault.by_method
    assert sum(by_method.values()) == director.guard.fault.total >= 1000
    assert set(by_method) >= {"dump", "apply", "set_role", "connections"}
    text = (await metrics.scrape()).decode()
    for method, n in by_method.items():
        line = f'gridlb_dataplane_faults_total{{dataplane="fake",method="{method}"}} {float(n)}'
        assert line in text, (line, [x for x in text.splitlines() if "faults" in x])


async def test_hung_dataplane_does_not_block_status(faulty: Any) -> None:
    director, dp = faulty
    dp.fault = {"dump": "hang"}
    director.guard.deadline_s = 5.0  # a batch now waits 5 s on the hung dump
    task = asyncio.ensure_future(director.resync())
    await asyncio.sleep(0.05)
    started = time.monotonic()
    status = await asyncio.wait_for(director.status(), 1.0)
    assert time.monotonic() - started < 1.0 and status.services
    dp.fault = {}
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_cancel_as_a_dataplane_call_completes_is_not_swallowed() -> None:
    """The director's stop cancels its loop; a dataplane call finishing at that moment must not eat the
    cancellation (asyncio.wait_for on Python 3.11 did: `gridlb director run` then never exited)."""
    guard = GuardedDataplane(FakeDataplane(), clock=time.monotonic, deadline_s=5.0)
    done = asyncio.get_running_loop().create_future()

    async def call() -> None:
        await done

    task = asyncio.ensure_future(guard.call("set_role", call, lambda _: True))
    for _ in range(3):
        await asyncio.sleep(0)
    done.set_result(None)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
