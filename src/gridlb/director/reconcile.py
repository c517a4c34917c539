"""The desired IPVS table, built purely from the site plan, health, operator overrides and quorum state.

`build_table` is the director's whole policy. For each virtual service (in site order) and each of its
real servers (site order, then runtime additions) it decides a weight or absence:

- retiring (``remove --drain``, or dropped by a reload): weight 0 until the director takes it out;
- down (health check or passive failure): absent, or weight 0 with ``inhibit_on_failure``;
- refusing (GridFTP 421/422) or drained by an operator: weight 0;
- otherwise the configured weight, or the dynamic weight a MISC_CHECK reported.

Quorum and the sorry server follow keepalived (check/ipwrapper.c): the quorum weight is the sum of
the effective weights of live real servers; a service with quorum down gains it when the sum reaches
``quorum + hysteresis``; with quorum up it loses it when the sum is 0 or below ``quorum - hysteresis``.
The first state is "up when sum >= quorum + hysteresis". While quorum is down and a sorry server is
configured, live real servers leave the pool (inhibited ones stay at weight 0) and the sorry server
takes their place; while quorum is up the sorry server is absent, or at weight 0 with
``sorry_server_inhibit``. Without a sorry server quorum changes nothing in the table.

The kernel adds a destination at the head of its list, so the desired table lists destinations newest
first: the reverse of plan order.

After an apply the director does not dump again: `observed_after` derives what the dataplane now
holds from the pass's one dump and the ops it accepted (counters as that dump had them). A change
made behind the director's back (ipvsadm by hand) is found by the next pass's dump, at the latest
the periodic resync.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gridlb.config.load import Site
from gridlb.config.schema import CheckSpec
from gridlb.dataplane.base import OpResult
from gridlb.director.overrides import Overrides
from gridlb.table import (
    Dest,
    DestSpec,
    ForwardMethod,
    IpvsTable,
    RealKey,
    Service,
    ServiceKey,
    ServiceSpec,
    Timeouts,
    apply_ops,
)

HealthKey = tuple[ServiceKey, RealKey]


class HealthState(enum.Enum):
    """What the director believes about a real server's health."""

    UP = "up"
    REFUSING = "refusing"  # answering but refusing work: kept at weight 0
    DOWN = "down"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class RealHealth:
    """A real server's health as the reconciler needs it: state and an optional dynamic weight."""

    state: HealthState = HealthState.UP
    weight: int | None = None


@dataclass(frozen=True, slots=True)
class RealPlan:
    """One configured real server of a service."""

    key: RealKey
    spec: DestSpec = field(default_factory=DestSpec)
    inhibit_on_failure: bool = False
    alpha: bool = False  # keepalived `alpha`: starts down until its first successful check


@dataclass(frozen=True, slots=True)
class SorryServer:
    """A service's sorry_server: takes all traffic while the service has no quorum."""

    key: RealKey
    forward: ForwardMethod = ForwardMethod.ROUTE
    inhibit: bool = False  # sorry_server_inhibit: kept at weight 0 while quorum is up
    weight: int = 1


@dataclass(frozen=True, slots=True)
class ServicePlan:
    """One configured virtual service: its spec, real servers and keepalived quorum settings."""

    key: ServiceKey
    spec: ServiceSpec = field(default_factory=ServiceSpec)
    reals: tuple[RealPlan, ...] = ()
    quorum: int = 1
    hysteresis: int = 0
    sorry: SorryServer | None = None

    def real(self, key: RealKey) -> RealPlan | None:
        """Return the configured real server `key`, or None."""
        for r in self.reals:
            if r.key == key:
                return r
        return None


class Reason(enum.Enum):
    """Why a real server has the weight (or absence) it has in the desired table."""

    SERVING = "serving"
    DYNAMIC = "dynamic weight"
    DRAINED = "drained"
    REFUSING = "refusing"
    DOWN = "down"
    INHIBITED = "down (inhibited)"
    RETIRING = "retiring"
    REMOVED = "removed"
    NO_QUORUM = "no quorum: sorry server in use"
    SORRY_STANDBY = "sorry server (standby)"
    SORRY_ACTIVE = "sorry server (in use)"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class RealDecision:
    """The reconciler's verdict on one (service, real server) pair."""

    service: ServiceKey
    key: RealKey
    weight: int | None  # None = absent from the table
    reason: Reason
    health: HealthState
    drained: bool = False
    runtime_added: bool = False


@dataclass(frozen=True, slots=True)
class Desired:
    """The result of `build_table`: the table, the new quorum states, and one decision per pair."""

    table: IpvsTable
    quorum_up: Mapping[ServiceKey, bool] = field(default_factory=dict)
    decisions: tuple[RealDecision, ...] = ()

    def decision(self, service: ServiceKey, key: RealKey) -> RealDecision | None:
        """Return the decision for (service, key), or None."""
        for d in self.decisions:
            if d.service == service and d.key == key:
                return d
        return None


def initial_health(plan: RealPlan) -> RealHealth:
    """Return the health a real server starts with: up, or down with keepalived's `alpha`."""
    return RealHealth(HealthState.DOWN if plan.alpha else HealthState.UP)


def quorum_step(was_up: bool | None, weight_sum: int, quorum: int, hysteresis: int) -> bool:
    """Return the quorum state after observing `weight_sum` (keepalived update_quorum_state)."""
    if was_up is None:
        return weight_sum >= quorum + hysteresis
    if not was_up:
        return weight_sum >= quorum + hysteresis
    return not (weight_sum == 0 or weight_sum < quorum - hysteresis)


def _effective(
    plan: ServicePlan,
    real: RealPlan,
    health: RealHealth,
    overrides: Overrides,
    runtime_added: bool,
) -> RealDecision:
    svc = plan.key
    drained = overrides.is_drained(real.key)
    retiring = overrides.retiring_entry(svc, real.key)

    def decide(weight: int | None, reason: Reason) -> RealDecision:
        return RealDecision(svc, real.key, weight, reason, health.state, drained, runtime_added)

    if retiring is not None:
        return decide(0, Reason.RETIRING)
    if health.state is HealthState.DOWN:
        return decide(0, Reason.INHIBITED) if real.inhibit_on_failure else decide(None, Reason.DOWN)
    if health.state is HealthState.REFUSING:
        return decide(0, Reason.REFUSING)
    if drained:
        return decide(0, Reason.DRAINED)
    if health.weight is not None:
        return decide(max(0, health.weight), Reason.DYNAMIC)
    return decide(real.spec.weight, Reason.SERVING)


def build_table(
    plans: Sequence[ServicePlan],
    health: Mapping[HealthKey, RealHealth],
    overrides: Overrides,
    quorum_up: Mapping[ServiceKey, bool] | None = None,
    timeouts: Timeouts | None = None,
) -> Desired:
    """Return the desired table for `plans` given health, overrides, the previous quorum states and
    the connection timeouts."""
    quorum_prev = quorum_up or {}
    services: list[Service] = []
    quorum_next: dict[ServiceKey, bool] = {}
    decisions: list[RealDecision] = []
    for plan in plans:
        reals: list[tuple[RealPlan, bool]] = []
        seen: set[RealKey] = set()
        for real in plan.reals:
            if real.key in seen or (plan.key, real.key) in overrides.removed:
                continue
            seen.add(real.key)
            reals.append((real, False))
        for added in overrides.added_to(plan.key):
            if added.key in seen:
                continue
            seen.add(added.key)
            reals.append((RealPlan(added.key, DestSpec(weight=added.weight, forward=_forward(plan))), True))
        for r in overrides.retiring:
            if r.service == plan.key and r.key not in seen:
                seen.add(r.key)
                reals.append((RealPlan(r.key, DestSpec(weight=0, forward=_forward(plan))), True))
        svc_decisions = [
            _effective(
                plan, real, health.get((plan.key, real.key)) or initial_health(real), overrides, runtime
            )
            for real, runtime in reals
        ]
        weight_sum = sum(
            d.weight or 0
            for d in svc_decisions
            if d.health is not HealthState.DOWN and d.reason is not Reason.RETIRING
        )
        up = quorum_step(quorum_prev.get(plan.key), weight_sum, plan.quorum, plan.hysteresis)
        quorum_next[plan.key] = up
        by_key = {real.key: real for real, _ in reals}
        if not up and plan.sorry is not None:
            svc_decisions = [_without_quorum(d, by_key[d.key].inhibit_on_failure) for d in svc_decisions]
        dests: list[Dest] = []
        for d in svc_decisions:
            if d.weight is None:
                continue
            spec = by_key[d.key].spec
            dests.append(Dest(d.key, DestSpec(d.weight, spec.forward, spec.u_threshold, spec.l_threshold)))
        if plan.sorry is not None and plan.sorry.key not in by_key:
            sorry = plan.sorry
            if not up:
                dests.append(Dest(sorry.key, DestSpec(sorry.weight, sorry.forward)))
                decisions_reason = Reason.SORRY_ACTIVE
                sorry_weight: int | None = sorry.weight
            elif sorry.inhibit:
                dests.append(Dest(sorry.key, DestSpec(0, sorry.forward)))
                decisions_reason, sorry_weight = Reason.SORRY_STANDBY, 0
            else:
                decisions_reason, sorry_weight = Reason.SORRY_STANDBY, None
            svc_decisions.append(
                RealDecision(plan.key, sorry.key, sorry_weight, decisions_reason, HealthState.UP)
            )
        decisions.extend(svc_decisions)
        services.append(Service(plan.key, plan.spec, tuple(reversed(dests))))
    return Desired(
        IpvsTable(services=tuple(services), timeouts=timeouts or Timeouts()), quorum_next, tuple(decisions)
    )


def _without_quorum(d: RealDecision, inhibit: bool) -> RealDecision:
    """Return `d` as it is while the sorry server is in use: live servers out (inhibited ones at 0)."""
    if d.weight is None or d.reason in (Reason.INHIBITED, Reason.RETIRING):
        return d
    weight = 0 if inhibit else None
    return RealDecision(d.service, d.key, weight, Reason.NO_QUORUM, d.health, d.drained, d.runtime_added)


def _forward(plan: ServicePlan) -> ForwardMethod:
    """Return the forwarding method real servers added at run time get: the service's usual one."""
    if plan.reals:
        return plan.reals[0].spec.forward
    return ForwardMethod.ROUTE


def observed_after(observed: IpvsTable, results: Sequence[OpResult]) -> IpvsTable | None:
    """Return `observed` with the ops that succeeded applied, counters kept (None: they do not fit it).

    None means the dataplane accepted an op that the dump says it could not (someone changed the
    table between the dump and the apply): the caller dumps again instead.
    """
    try:
        return apply_ops(observed, (r.op for r in results if r.ok))
    except (KeyError, ValueError):
        return None


def configured_pairs(plans: Sequence[ServicePlan]) -> frozenset[HealthKey]:
    """Return every (service, real server) pair the plans configure (sorry servers excluded)."""
    return frozenset((p.key, r.key) for p in plans for r in p.reals)


def plan_site(site: Site) -> tuple[tuple[ServicePlan, ...], dict[HealthKey, tuple[CheckSpec, ...]]]:
    """Return the service plans and the resolved health checks of every (service, real) pair of `site`.

    Services keep site order; a real server listed twice in one service counts once (the first
    listing wins, as lint reports). Checks follow keepalived's inheritance (`VirtualServer.checks_for`).
    """
    plans: list[ServicePlan] = []
    checks: dict[HealthKey, tuple[CheckSpec, ...]] = {}
    for vs in site.virtual_servers.values():
        skey = vs.service_key()
        reals: list[RealPlan] = []
        seen: set[RealKey] = set()
        for rs in vs.real_servers:
            rkey = rs.real_key(vs)
            if rkey in seen:
                continue
            seen.add(rkey)
            specs = vs.checks_for(rs, site.gridlb)
            inhibit = vs.check_for(rs, site.gridlb).inhibit_on_failure
            alpha = any(c.alpha for c in specs)
            reals.append(RealPlan(rkey, rs.dest_spec(vs), inhibit_on_failure=inhibit, alpha=alpha))
            checks[(skey, rkey)] = specs
        sorry = None
        if vs.sorry_server is not None:
            port = vs.sorry_server.port if vs.sorry_server.port is not None else (vs.port or 0)
            sorry = SorryServer(
                RealKey(vs.sorry_server.ip_address, port), vs.forward, inhibit=vs.sorry_server_inhibit
            )
        plans.append(
            ServicePlan(
                skey,
                vs.service_spec(),
                tuple(reals),
                quorum=vs.quorum,
                hysteresis=vs.hysteresis,
                sorry=sorry,
            )
        )
    return tuple(plans), checks
