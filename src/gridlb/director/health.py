"""Connects the health runner to the director: site check specs in, every result and every change out.

The runner (gridlb.health.runner) checks each real server once, keyed by `RealKey`, and announces
state changes; the director also wants every single result (for status, the check-latency
histogram, and to clear a passive failure once a check *started after it* has passed). So each
checker is wrapped in `ReportingChecker`, which forwards its result before the tracker sees it.

A real server listed in several services is checked once, with the checks of the first service
that lists it, and its results count for every service that has it. Of several checker blocks on
one real server the first is used (keepalived would require all of them to pass).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from gridlb.config.schema import CheckKind, CheckSpec
from gridlb.director.reconcile import HealthKey, HealthState
from gridlb.health.base import Checker, CheckResult, Verdict
from gridlb.health.runner import HealthRunner
from gridlb.health.spec import from_check_spec
from gridlb.health.tracker import CheckPolicy, HealthChanged
from gridlb.table import RealKey

#: (pair, result, new state or None, new dynamic weight, checker kind, monotonic time the check started)
ReportFn = Callable[[HealthKey, CheckResult, HealthState | None, int | None, str, float], None]

_STATE = {Verdict.UP: HealthState.UP, Verdict.REFUSING: HealthState.REFUSING, Verdict.DOWN: HealthState.DOWN}


class ReportingChecker(Checker):
    """Runs another checker and hands every result to `on_result` as well as to the runner."""

    kind = "reporting"

    def __init__(self, inner: Checker, on_result: Callable[[RealKey, CheckResult, str, float], None]) -> None:
        super().__init__(inner=inner.kind, **inner.options)
        self.inner = inner
        self.on_result = on_result

    async def check(self, target: RealKey, *, timeout_s: float) -> CheckResult:
        """Check with the wrapped checker and report the result."""
        started = time.monotonic()
        result = await self.inner.check(target, timeout_s=timeout_s)
        self.on_result(target, result, self.inner.kind, started)
        return result


class RunnerMonitor:
    """The director's `HealthMonitor` on top of `HealthRunner`."""

    def __init__(
        self,
        report: ReportFn,
        *,
        vips: tuple[str, ...] = (),
        runner_factory: Callable[..., HealthRunner] = HealthRunner,
    ) -> None:
        self.report = report
        self.vips = vips
        self.pairs: dict[RealKey, list[HealthKey]] = {}
        self.runner = runner_factory(self._on_change)

    def set_targets(self, targets: Mapping[HealthKey, tuple[CheckSpec, ...]]) -> None:
        """Check exactly the real servers of `targets`, keeping the state of those already checked."""
        pairs: dict[RealKey, list[HealthKey]] = {}
        wanted: dict[RealKey, tuple[Checker, CheckPolicy]] = {}
        for pair, specs in targets.items():
            specs = tuple(s for s in specs if s.kind is not CheckKind.NONE)
            if not specs:
                continue
            real = pair[1]
            pairs.setdefault(real, []).append(pair)
            if real in wanted:
                continue
            made = from_check_spec(specs[0], real=real, vips=self.vips)  # every schema option, one place
            if made is None:
                continue
            inner, policy = made
            wanted[real] = (ReportingChecker(inner, self._on_result), policy)
        self.pairs = pairs
        self.runner.sync(wanted)

    def _on_result(self, real: RealKey, result: CheckResult, kind: str, started: float) -> None:
        for pair in self.pairs.get(real, ()):
            self.report(pair, result, None, None, kind, started)

    def _on_change(self, event: HealthChanged) -> None:
        for pair in self.pairs.get(event.real, ()):
            self.report(pair, event.result, _STATE[event.new], event.new_weight, "", -1.0)

    async def close(self) -> None:
        """Stop every check."""
        await self.runner.stop()
