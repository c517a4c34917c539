"""Recording fakes for director unit tests: an in-memory dataplane, a health monitor and a clock."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from gridlb.config.schema import CheckSpec
from gridlb.dataplane.base import DataplaneCounters, OpResult, Role
from gridlb.dataplane.proxy import CAPABILITIES
from gridlb.director.reconcile import HealthKey
from gridlb.table import ConnEntry, DestCounters, IpvsTable, Op, RealKey, ServiceKey, apply_ops


class FakeDataplane:
    """Applies ops to an in-memory table with `table.apply_ops`, records them, fails on request."""

    name = "fake"
    capabilities = CAPABILITIES

    def __init__(self, table: IpvsTable | None = None) -> None:
        self.table = table or IpvsTable()
        self.applied: list[Op] = []
        self.batches: list[list[Op]] = []
        self.fail: dict[type, str] = {}  # op type -> error to report (once per op)
        self.dumps = 0
        self.closed = False
        self.roles: list[Role] = []
        self.events: dict[str, int] = {}  # counts that are no error, as a dataplane reports them

    async def dump(self) -> IpvsTable:
        self.dumps += 1
        return self.table

    async def apply(self, ops: Sequence[Op]) -> list[OpResult]:
        self.batches.append(list(ops))
        results = []
        for op in ops:
            error = self.fail.get(type(op))
            if error is None:
                try:
                    self.table = apply_ops(self.table, [op])
                except (KeyError, ValueError) as exc:
                    error = str(exc)
            if error is None:
                self.applied.append(op)
            results.append(OpResult(op, error or ""))
        return results

    async def connections(self) -> list[ConnEntry]:
        return []

    async def counters(self) -> DataplaneCounters:
        return DataplaneCounters(events=dict(self.events))

    async def set_role(self, role: Role) -> None:
        self.roles.append(role)

    async def close(self, grace_s: float = 0.0) -> None:
        self.closed = True

    def set_active(self, service: ServiceKey, real: RealKey, active: int, inactive: int = 0) -> None:
        """Pretend `real` in `service` has these connection counts."""
        svc = self.table.service(service)
        assert svc is not None
        dests = tuple(
            replace(d, counters=DestCounters(active, inactive)) if d.key == real else d for d in svc.dests
        )
        self.table = self.table.with_service(replace(svc, dests=dests))

    def weights(self, service: ServiceKey) -> dict[str, int]:
        """Return {real: weight} of `service` as programmed."""
        svc = self.table.service(service)
        return {} if svc is None else {str(d.key): d.spec.weight for d in svc.dests}


class FakeHealth:
    """Records the targets the director asks for."""

    def __init__(self) -> None:
        self.targets: dict[HealthKey, tuple[CheckSpec, ...]] = {}
        self.history: list[dict[HealthKey, tuple[CheckSpec, ...]]] = []
        self.closed = False

    def set_targets(self, targets: Mapping[HealthKey, tuple[CheckSpec, ...]]) -> None:
        self.targets = dict(targets)
        self.history.append(dict(targets))

    async def close(self) -> None:
        self.closed = True


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
