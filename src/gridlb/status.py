"""The typed status of a running director: what `gridlb status`, the control API, metrics and dashboards read.

The director produces one `DirectorStatus` per request (`Director.snapshot`); the control API sends it
as JSON (`status_to_json`), and clients turn that back into the same types (`status_from_json`), so
every consumer reads one model and none reaches into the director. Field names are the JSON keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class CheckStatus:
    """The latest health check of one real server."""

    verdict: str
    reason: str
    latency_s: float
    age_s: float
    kind: str = ""
    cert_days_left: float | None = None  # HTTPS checks: days until the real server's certificate expires


@dataclass(frozen=True, slots=True)
class RealStatus:
    """One real server of one service: what the director decided and what the dataplane reports."""

    real: str
    in_table: bool
    weight: int | None  # programmed weight; None when not in the dataplane's table
    desired_weight: int | None
    forward: str | None
    active: int
    inactive: int
    connections: int
    inbytes: int
    outbytes: int
    overloaded: bool
    health: str  # up, refusing, down (after passive failures)
    reason: str  # why it has its weight: serving, drained, down, refusing, retiring, ...
    drained: bool
    retiring: bool
    retire_reason: str | None
    runtime_added: bool
    passive_failure: str | None  # the reason while out through a passive failure
    passive_failures: int
    last_check: CheckStatus | None = None


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """One virtual service."""

    service: str
    scheduler: str
    in_table: bool
    quorum_up: bool
    retiring: bool
    active: int
    inactive: int
    connections: int
    inbytes: int
    outbytes: int
    reals: tuple[RealStatus, ...] = ()


@dataclass(frozen=True, slots=True)
class OpErrorStatus:
    """An op the dataplane refused in the latest pass."""

    op: str
    error: str


@dataclass(frozen=True, slots=True)
class FaultStatus:
    """The dataplane is failing: its latest error, for how long, how many calls in a row."""

    error: str
    since_s: float
    failed_calls: int


@dataclass(frozen=True, slots=True)
class CounterStatus:
    """The director's own counters."""

    reconciles: int = 0
    ops_applied: int = 0
    op_errors: Mapping[str, int] = field(default_factory=dict)
    reloads: int = 0
    reload_failures: int = 0
    dataplane_faults: Mapping[str, int] = field(default_factory=dict)  # by dataplane method
    dataplane_errors: Mapping[str, int] = field(default_factory=dict)  # the dataplane's own, by reason
    dataplane_events: Mapping[str, int] = field(default_factory=dict)  # the dataplane's non-error counts


@dataclass(frozen=True, slots=True)
class DirectorStatus:
    """Everything a front end shows about one director."""

    version: str
    dataplane: str
    config: tuple[str, ...]
    generation: int
    uptime_s: float
    role: str | None
    role_reason: str
    degraded: bool
    last_errors: tuple[OpErrorStatus, ...] = ()
    dataplane_fault: FaultStatus | None = None
    counters: CounterStatus = CounterStatus()
    services: tuple[ServiceStatus, ...] = ()
    vrrp: Mapping[str, Any] | None = None  # the VRRP instances' status, when the director runs VRRP
    scaleout: Mapping[str, Any] | None = None  # BGP announcements, when the director scales out
    dataplane_choice: str = ""  # with `dataplane: auto`: which one runs and why

    def reals(self) -> list[tuple[ServiceStatus, RealStatus]]:
        """Return every (service, real server) pair in order."""
        return [(s, r) for s in self.services for r in s.reals]


def status_to_json(status: DirectorStatus) -> dict[str, Any]:
    """Return `status` as a JSON-ready dict (field names as keys, tuples as lists)."""
    data: dict[str, Any] = dataclasses.asdict(status)
    return data


def status_from_json(data: Mapping[str, Any]) -> DirectorStatus:
    """Return the status in `data` (as `status_to_json` wrote it); ValueError when it is not one."""
    try:
        services = tuple(
            ServiceStatus(
                **{k: v for k, v in s.items() if k != "reals"},
                reals=tuple(_real(r) for r in s["reals"]),
            )
            for s in data["services"]
        )
        fault = data.get("dataplane_fault")
        return DirectorStatus(
            **{
                k: v
                for k, v in data.items()
                if k not in ("services", "last_errors", "dataplane_fault", "counters", "config")
            },
            config=tuple(data["config"]),
            last_errors=tuple(OpErrorStatus(**e) for e in data.get("last_errors", ())),
            dataplane_fault=FaultStatus(**fault) if fault else None,
            counters=CounterStatus(**data.get("counters", {})),
            services=services,
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a director status: {exc}") from None


def _real(data: Mapping[str, Any]) -> RealStatus:
    last = data.get("last_check")
    return RealStatus(
        **{k: v for k, v in data.items() if k != "last_check"},
        last_check=CheckStatus(**last) if last else None,
    )


__all__ = [
    "CheckStatus",
    "CounterStatus",
    "DirectorStatus",
    "FaultStatus",
    "OpErrorStatus",
    "RealStatus",
    "ServiceStatus",
    "status_from_json",
    "status_to_json",
]
