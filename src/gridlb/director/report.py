"""The director's typed status (`gridlb.status`), built from its state and the dataplane's table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from gridlb import __version__
from gridlb.director.reconcile import (
    HealthKey,
    RealDecision,
    RealHealth,
)
from gridlb.director.records import describe_op
from gridlb.status import (
    CheckStatus,
    CounterStatus,
    DirectorStatus,
    FaultStatus,
    OpErrorStatus,
    RealStatus,
    ServiceStatus,
)
from gridlb.table import (
    DestCounters,
    IpvsTable,
    Service,
)

if TYPE_CHECKING:
    from gridlb.director.director import Director


def snapshot(self: Director, table: IpvsTable) -> DirectorStatus:
    """Return the typed status of this director with `table` as the dataplane's view."""
    now = self.clock()
    effective = self.effective_health()
    services = []
    for plan in self._plans():
        svc = table.service(plan.key)
        reals = tuple(
            _real_status(self, d, svc, effective, now)
            for d in self.desired.decisions
            if d.service == plan.key
        )
        services.append(
            ServiceStatus(
                service=str(plan.key),
                scheduler=plan.spec.scheduler,
                in_table=svc is not None,
                quorum_up=self.quorum_up.get(plan.key, True),
                retiring=plan.key in self.ghost_plans,
                active=sum(r.active for r in reals),
                inactive=sum(r.inactive for r in reals),
                connections=svc.stats.conns if svc is not None else 0,
                inbytes=svc.stats.inbytes if svc is not None else 0,
                outbytes=svc.stats.outbytes if svc is not None else 0,
                reals=reals,
            )
        )
    fault = self.guard.fault
    c = self.counters
    return DirectorStatus(
        version=__version__,
        dataplane=self.dataplane.name,
        config=tuple(self.config.paths),
        generation=self.generation,
        uptime_s=round(self.wall_clock() - self.started_at, 3),
        role=self.role,
        role_reason=self.role_reason,
        degraded=bool(self.last_errors) or fault.failing,
        last_errors=tuple(OpErrorStatus(describe_op(r.op), r.error) for r in self.last_errors),
        dataplane_fault=None
        if fault.since is None
        else FaultStatus(fault.last_error, round(now - fault.since, 3), fault.consecutive),
        counters=CounterStatus(
            c.reconciles,
            c.ops_applied,
            dict(c.op_errors),
            c.reloads,
            c.reload_failures,
            dict(fault.by_method),
            dict(self._dataplane_errors),
            dict(self._dataplane_events),
        ),
        services=tuple(services),
    )


def _real_status(
    self: Director,
    d: RealDecision,
    svc: Service | None,
    effective: Mapping[HealthKey, RealHealth],
    now: float,
) -> RealStatus:
    pair = (d.service, d.key)
    dest = svc.dest(d.key) if svc is not None else None
    counters = dest.counters if dest is not None else DestCounters()
    last = self.last_check.get(pair)
    mark = self.passive.get(pair)
    retiring = self.overrides.retiring_entry(d.service, d.key)
    return RealStatus(
        real=str(d.key),
        in_table=dest is not None,
        weight=dest.spec.weight if dest is not None else None,
        desired_weight=d.weight,
        forward=dest.spec.forward.ipvsadm_name if dest is not None else None,
        active=counters.active,
        inactive=counters.inactive,
        connections=counters.stats.conns,
        inbytes=counters.stats.inbytes,
        outbytes=counters.stats.outbytes,
        overloaded=counters.overloaded,
        health=str(effective.get(pair, RealHealth()).state),
        reason=str(d.reason),
        drained=d.drained,
        retiring=retiring is not None,
        retire_reason=retiring.reason if retiring is not None else None,
        runtime_added=d.runtime_added,
        passive_failure=mark.reason if mark is not None else None,
        passive_failures=self.counters.passive_failures.get(pair, 0),
        last_check=None
        if last is None
        else CheckStatus(
            str(last.result.verdict),
            last.result.reason,
            round(last.result.latency_s, 6),
            round(max(0.0, now - last.at), 3),
            last.kind,
            last.result.cert_days_left,
        ),
    )
