"""The asyncio runner: timers from the tracker, event delivery, run-time add/replace/remove, clean stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gridlb.health.base import Checker, CheckResult, Verdict
from gridlb.health.runner import HealthRunner
from gridlb.health.tcp import TcpChecker
from gridlb.health.tracker import CheckPolicy, HealthChanged
from gridlb.table import RealKey

A = RealKey.parse("127.0.0.81:2811")
B = RealKey.parse("127.0.0.82:2811")
FAST = CheckPolicy(delay_loop_s=0.02, delay_before_retry_s=0.01, retry=1, warmup_s=0, connect_timeout_s=1)


class Scripted(Checker):
    """A checker whose verdict the test sets (a unit-test fake; the real checkers have their own tests)."""

    kind = "scripted"

    def __init__(self, verdict: Verdict = Verdict.UP, tag: str = "") -> None:
        super().__init__(tag=tag)
        self.verdict = verdict
        self.calls = 0
        self.hang = False
        self.crash = False

    async def check(self, target: RealKey, *, timeout_s: float) -> CheckResult:
        self.calls += 1
        if self.hang:
            await asyncio.sleep(3600)
        if self.crash:
            raise RuntimeError("boom")
        return CheckResult(self.verdict, f"scripted {self.verdict}")


async def next_event(queue: asyncio.Queue[HealthChanged]) -> HealthChanged:
    return await asyncio.wait_for(queue.get(), timeout=10)


@pytest.fixture
async def queue_runner() -> AsyncIterator[tuple[HealthRunner, asyncio.Queue[HealthChanged]]]:
    queue: asyncio.Queue[HealthChanged] = asyncio.Queue()
    async with HealthRunner(queue) as runner:
        yield runner, queue
    assert not runner._tasks  # stop() leaves nothing running


async def test_events_follow_the_tracker(
    queue_runner: tuple[HealthRunner, asyncio.Queue[HealthChanged]],
) -> None:
    runner, queue = queue_runner
    checker = Scripted(Verdict.DOWN)
    snap = runner.add(A, checker, CheckPolicy(delay_loop_s=0.2, delay_before_retry_s=0.01, warmup_s=0))
    assert snap.state is Verdict.UP and snap.checks == 0
    event = await next_event(queue)
    assert (event.real, event.old, event.new) == (A, Verdict.UP, Verdict.DOWN)
    assert event.result.reason == "scripted down"
    assert checker.calls == 2  # the first failure was retried once (retry 1)
    checker.verdict = Verdict.REFUSING
    event = await next_event(queue)
    assert (event.old, event.new) == (Verdict.DOWN, Verdict.REFUSING)
    assert runner.effective_weight(A, 5) == 0
    checker.verdict = Verdict.UP
    assert (await next_event(queue)).new is Verdict.UP
    assert runner.snapshot(A).reason == "scripted up"
    assert runner.effective_weight(A, 5) == 5


async def test_callbacks_sync_async_and_failing() -> None:
    seen: list[str] = []

    def sync_cb(event: HealthChanged) -> None:
        seen.append(f"sync {event.real}")
        raise RuntimeError("a broken sink must not stop the checks")

    async def async_cb(event: HealthChanged) -> None:
        seen.append(f"async {event.real}")

    async with HealthRunner(sync_cb) as r1, HealthRunner(async_cb) as r2:
        c1, c2 = Scripted(Verdict.DOWN), Scripted(Verdict.DOWN)
        r1.add(A, c1, FAST)
        r2.add(B, c2, FAST)
        for _ in range(500):
            if len(seen) >= 2:
                break
            await asyncio.sleep(0.01)
        c1.verdict = Verdict.UP
        for _ in range(500):
            if seen.count(f"sync {A}") >= 2:
                break
            await asyncio.sleep(0.01)
    assert seen.count(f"sync {A}") == 2 and seen.count(f"async {B}") == 1


async def test_replace_keeps_state(queue_runner: tuple[HealthRunner, asyncio.Queue[HealthChanged]]) -> None:
    runner, queue = queue_runner
    old = Scripted(Verdict.DOWN, tag="v1")
    runner.add(A, old, FAST)
    assert (await next_event(queue)).new is Verdict.DOWN
    task = runner._targets[A].task

    runner.set(A, Scripted(Verdict.DOWN, tag="v1"), FAST)  # same kind and options: nothing restarts
    assert runner._targets[A].task is task and runner._targets[A].checker is old

    slow = CheckPolicy(delay_loop_s=0.05, delay_before_retry_s=0.01, retry=2, warmup_s=0)
    snap = runner.set(A, Scripted(Verdict.DOWN, tag="v1"), slow)  # new policy: same task, same state
    assert snap.state is Verdict.DOWN and runner._targets[A].task is task

    new = Scripted(Verdict.DOWN, tag="v2")
    snap = runner.set(A, new, slow)  # new checker: restarted, state carried (no flap)
    assert snap.state is Verdict.DOWN and snap.checks >= 2
    assert runner._targets[A].task is not task
    await asyncio.sleep(0.2)
    assert new.calls >= 2 and queue.empty()  # still down: no event
    with pytest.raises(KeyError):
        runner.add(A, new, slow)


async def test_sync_adds_removes_and_keeps(
    queue_runner: tuple[HealthRunner, asyncio.Queue[HealthChanged]],
) -> None:
    runner, queue = queue_runner
    a = Scripted(Verdict.DOWN)
    runner.sync({A: (a, FAST)})
    assert (await next_event(queue)).new is Verdict.DOWN
    b = Scripted(Verdict.UP)
    runner.sync({A: (Scripted(Verdict.DOWN), FAST), B: (b, FAST)})
    assert set(runner.snapshots()) == {A, B}
    assert runner.snapshot(A).state is Verdict.DOWN
    calls = a.calls
    runner.sync({B: (b, FAST)})
    assert A not in runner and len(runner) == 1
    await asyncio.sleep(0.1)
    assert a.calls == calls  # removed: no more checks
    assert b.calls >= 2
    assert not runner.remove(A)


async def test_overrunning_and_crashing_checkers_are_down() -> None:
    queue: asyncio.Queue[HealthChanged] = asyncio.Queue()
    policy = CheckPolicy(delay_loop_s=0.02, retry=0, warmup_s=0, connect_timeout_s=0.05)
    async with HealthRunner(queue, overrun_grace_s=0.05) as runner:
        hung = Scripted()
        hung.hang = True
        runner.add(A, hung, policy)
        event = await next_event(queue)
        assert event.new is Verdict.DOWN
        assert event.result.reason == "scripted check overran its 0.05 s timeout"
        broken = Scripted()
        broken.crash = True
        runner.add(B, broken, policy)
        event = await next_event(queue)
        assert (event.real, event.new) == (B, Verdict.DOWN)
        assert event.result.reason == "scripted check crashed: RuntimeError: boom"


async def test_check_now(queue_runner: tuple[HealthRunner, asyncio.Queue[HealthChanged]]) -> None:
    runner, _ = queue_runner
    checker = Scripted()
    runner.add(A, checker, CheckPolicy(delay_loop_s=3600, warmup_s=0))
    for _ in range(500):
        if checker.calls:
            break
        await asyncio.sleep(0.01)
    assert checker.calls == 1
    runner.check_now(A)
    for _ in range(500):
        if checker.calls == 2:
            break
        await asyncio.sleep(0.01)
    assert checker.calls == 2


async def test_stop_cancels_everything() -> None:
    runner = HealthRunner(asyncio.Queue())
    hung = Scripted()
    hung.hang = True
    runner.add(A, hung, FAST)
    runner.add(B, Scripted(), FAST)
    await asyncio.sleep(0.05)
    tasks = set(runner._tasks)
    assert len(tasks) == 2
    await runner.stop()
    assert all(t.done() for t in tasks) and not runner._tasks
    with pytest.raises(RuntimeError, match="stopped"):
        runner.add(A, Scripted(), FAST)


async def test_real_tcp_checks_follow_a_real_server() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.83", 0)
    port = server.sockets[0].getsockname()[1]
    target = RealKey.parse(f"127.0.0.83:{port}")
    queue: asyncio.Queue[HealthChanged] = asyncio.Queue()
    policy = CheckPolicy(delay_loop_s=0.05, delay_before_retry_s=0.02, retry=1, warmup_s=0, alpha=True)
    async with HealthRunner(queue) as runner:
        runner.add(target, TcpChecker(), policy)
        assert runner.snapshot(target).state is Verdict.DOWN  # alpha: down until the first success
        event = await next_event(queue)
        assert (event.old, event.new) == (Verdict.DOWN, Verdict.UP)
        server.close()
        await server.wait_closed()
        event = await next_event(queue)
        assert (event.old, event.new) == (Verdict.UP, Verdict.DOWN)
        assert event.result.reason == f"TCP connect to {target}: connection refused"
