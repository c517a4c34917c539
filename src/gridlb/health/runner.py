"""The asyncio adapter that runs every real server's checks on the tracker's timers and reports changes.

One task per real server sleeps until its `Tracker` says a check is due, runs the checker under a hard
timeout (the policy's `connect_timeout_s` plus a grace, in case a checker overruns), feeds the result
to the tracker and delivers any `HealthChanged` to the sink: an `asyncio.Queue` or a callback (plain or
async). Targets are added, replaced and removed at run time by `RealKey`; a replaced target keeps its
tracker, so a config reload neither resets nor flaps its health. All tasks are held here and stopped by
`stop()` (or leaving `async with`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from gridlb.health.base import Checker, CheckResult, Verdict
from gridlb.health.tracker import CheckPolicy, HealthChanged, HealthSnapshot, Tracker
from gridlb.table import RealKey

log = logging.getLogger(__name__)

EventSink = asyncio.Queue[HealthChanged] | Callable[[HealthChanged], object]


def same_checker(a: Checker, b: Checker) -> bool:
    """Return True when `a` and `b` are the same kind with the same options (no restart needed)."""
    return type(a) is type(b) and a.options == b.options


@dataclass(eq=False)
class _Target:
    real: RealKey
    checker: Checker
    tracker: Tracker
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class HealthRunner:
    """Runs the checks of many real servers; see the module docstring."""

    def __init__(
        self,
        sink: EventSink,
        *,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
        overrun_grace_s: float = 1.0,
    ) -> None:
        self._sink = sink
        self._clock = clock
        self._jitter = jitter
        self._grace_s = overrun_grace_s
        self._targets: dict[RealKey, _Target] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False

    # ------------------------------------------------------------------ targets

    def add(self, real: RealKey, checker: Checker, policy: CheckPolicy) -> HealthSnapshot:
        """Start checking `real`; KeyError if it is already checked (use `set`)."""
        if real in self._targets:
            raise KeyError(f"{real} is already being checked")
        return self.set(real, checker, policy)

    def set(self, real: RealKey, checker: Checker, policy: CheckPolicy) -> HealthSnapshot:
        """Check `real` with `checker` and `policy`, keeping its health state if it is already checked."""
        if self._stopped:
            raise RuntimeError("the health runner is stopped")
        now = self._clock()
        target = self._targets.get(real)
        if target is None:
            jitter = min(max(self._jitter(), 0.0), 0.999999)
            target = _Target(real, checker, Tracker(real, policy, now=now, jitter=jitter))
            self._targets[real] = target
            self._start(target)
            return target.tracker.snapshot()
        if target.tracker.policy != policy:
            target.tracker.set_policy(policy, now)
            target.wake.set()
        if not same_checker(target.checker, checker):
            target.checker = checker
            if target.task is not None:
                target.task.cancel()  # an in-flight check of the old kind is dropped
            self._start(target)
        return target.tracker.snapshot()

    def remove(self, real: RealKey) -> bool:
        """Stop checking `real`; return False if it was not checked."""
        target = self._targets.pop(real, None)
        if target is None:
            return False
        if target.task is not None:
            target.task.cancel()
        return True

    def sync(self, targets: Mapping[RealKey, tuple[Checker, CheckPolicy]]) -> None:
        """Make the checked set exactly `targets` (a reload): remove the rest, keep state of the survivors."""
        for real in [r for r in self._targets if r not in targets]:
            self.remove(real)
        for real, (checker, policy) in targets.items():
            self.set(real, checker, policy)

    def check_now(self, real: RealKey) -> None:
        """Run `real`'s next check now (an operator asked); KeyError if it is not checked."""
        target = self._targets[real]
        target.tracker.check_soon(self._clock())
        target.wake.set()

    # ------------------------------------------------------------------ views

    def __contains__(self, real: object) -> bool:
        return real in self._targets

    def __len__(self) -> int:
        return len(self._targets)

    def snapshot(self, real: RealKey) -> HealthSnapshot:
        """Return `real`'s current health; KeyError if it is not checked."""
        return self._targets[real].tracker.snapshot()

    def snapshots(self) -> dict[RealKey, HealthSnapshot]:
        """Return every checked server's current health."""
        return {real: t.tracker.snapshot() for real, t in sorted(self._targets.items())}

    def effective_weight(self, real: RealKey, configured: int) -> int | None:
        """The weight to program for `real` (None: remove it); see `Tracker.effective_weight`."""
        return self._targets[real].tracker.effective_weight(configured)

    # ------------------------------------------------------------------ life cycle

    async def stop(self) -> None:
        """Cancel every check and wait until all of them have ended."""
        self._stopped = True
        self._targets.clear()
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> HealthRunner:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ internals

    def _start(self, target: _Target) -> None:
        task = asyncio.get_running_loop().create_task(self._loop(target), name=f"health {target.real}")
        target.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _loop(self, target: _Target) -> None:
        me = asyncio.current_task()
        while target.task is me:
            target.wake.clear()
            delay = target.tracker.next_check_at - self._clock()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await target.wake.wait()
                continue
            result = await self._check_once(target)
            if target.task is not me or self._targets.get(target.real) is not target:
                return  # replaced or removed while checking
            event = target.tracker.record(result, self._clock())
            if event is not None:
                await self._deliver(event)

    async def _check_once(self, target: _Target) -> CheckResult:
        timeout_s = target.tracker.policy.connect_timeout_s
        start = self._clock()
        try:
            async with asyncio.timeout(timeout_s + self._grace_s):
                return await target.checker.check(target.real, timeout_s=timeout_s)
        except TimeoutError:
            return CheckResult(
                Verdict.DOWN,
                f"{target.checker.kind} check overran its {timeout_s:g} s timeout",
                self._clock() - start,
            )
        except Exception as exc:  # a checker bug must not stop the checks of this server
            log.exception("%s check of %s crashed", target.checker.kind, target.real)
            return CheckResult(
                Verdict.DOWN,
                f"{target.checker.kind} check crashed: {type(exc).__name__}: {exc}",
                self._clock() - start,
            )

    async def _deliver(self, event: HealthChanged) -> None:
        if isinstance(self._sink, asyncio.Queue):
            await self._sink.put(event)
            return
        try:
            outcome = self._sink(event)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:
            log.exception("health event sink failed on %s", event)
