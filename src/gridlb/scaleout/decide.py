"""Which VIPs a scaled-out director announces: a pure decision from its typed status.

A director announces a VIP only while it can serve it: the dataplane answers (no fault), and at
least one service on that address is in the dataplane's table with its quorum up and a real server
that is up and has a non-zero weight there. It withdraws every VIP when drained as a director and
when it shuts down cleanly. The reasons are part of the result, for `gridlb status` and the log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gridlb.status import DirectorStatus, ServiceStatus
from gridlb.table import IPAddress


@dataclass(frozen=True, slots=True)
class VipDecision:
    """One VIP: announce it or not, and why."""

    vip: IPAddress
    announce: bool
    reason: str


def serving_reals(service: ServiceStatus) -> int:
    """Return how many real servers of `service` take new flows (in the table, up, weight > 0)."""
    return sum(1 for r in service.reals if r.in_table and (r.weight or 0) > 0 and r.health == "up")


def decide(
    status: DirectorStatus | None,
    vips: Mapping[IPAddress, Sequence[str]],
    *,
    drained: bool = False,
    stopping: bool = False,
) -> tuple[VipDecision, ...]:
    """Return the decision for every VIP of `vips` (VIP → the names of its services, as in status).

    `status` None means the director has not reported yet (not started): nothing is announced.
    """
    out: list[VipDecision] = []
    for vip, names in vips.items():
        out.append(VipDecision(vip, *_one(status, names, drained=drained, stopping=stopping)))
    return tuple(out)


def _one(
    status: DirectorStatus | None, names: Sequence[str], *, drained: bool, stopping: bool
) -> tuple[bool, str]:
    if stopping:
        return False, "director shutting down"
    if drained:
        return False, "director drained (gridlb director drain)"
    if status is None:
        return False, "director not started"
    if status.dataplane_fault is not None:
        return False, f"dataplane failing: {status.dataplane_fault.error}"
    if not names:
        return False, "no service has this address"
    by_name = {s.service: s for s in status.services}
    why: list[str] = []
    for name in names:
        svc = by_name.get(name)
        if svc is None or not svc.in_table:
            why.append(f"{name} not in the dataplane")
        elif not svc.quorum_up:
            why.append(f"{name} below quorum")
        elif (n := serving_reals(svc)) > 0:
            return True, f"{name}: {n} real server{'s' if n != 1 else ''} up"
        else:
            why.append(f"{name}: no real server up")
    return False, "; ".join(why)


def announced(decisions: Sequence[VipDecision]) -> frozenset[IPAddress]:
    """Return the VIPs the decisions announce."""
    return frozenset(d.vip for d in decisions if d.announce)
