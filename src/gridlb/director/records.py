"""What the director's queue carries (inputs) and what it keeps (records of changes, checks, counters)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gridlb.api.messages import (
    Request,
)
from gridlb.config.schema import CheckSpec
from gridlb.dataplane.base import (
    OpResult,
)
from gridlb.director.reconcile import (
    HealthKey,
    HealthState,
)
from gridlb.health.base import CheckResult
from gridlb.table import (
    AddDest,
    AddService,
    DelService,
    EditDest,
    EditService,
    Op,
    RealKey,
    ServiceKey,
    SetTimeouts,
)

# --- inputs ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckReport:
    """One health check finished: its result and the tracker's state after it (None = unchanged)."""

    service: ServiceKey
    real: RealKey
    result: CheckResult
    state: HealthState | None = None
    weight: int | None = None  # dynamic weight (MISC_CHECK misc_dynamic), when set
    kind: str = ""
    at: float = 0.0  # monotonic time the result arrived (0 = when queued)
    started: float = -1.0  # monotonic time the check began (negative = unknown)


@dataclass(frozen=True, slots=True)
class PassiveFailure:
    """The dataplane failed to connect to a real server (refused or timed out)."""

    real: RealKey
    service: ServiceKey | None = None  # None = every service that has the real server
    reason: str = "connect failed"
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class Intent:
    """An operator request from the control API, answered through `reply` after it is applied."""

    request: Request
    reply: asyncio.Future[Any]


@dataclass(frozen=True, slots=True)
class Reload:
    """Re-read the site files (SIGHUP, or the API with `reply`)."""

    reply: asyncio.Future[Any] | None = None


@dataclass(frozen=True, slots=True)
class RoleChange:
    """The VRRP role changed (shown in status; tables are the same on both directors)."""

    role: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Resync:
    """Compare the dataplane with the desired table and repair any difference."""


DirectorInput = CheckReport | PassiveFailure | Intent | Reload | RoleChange | Resync


# --- collaborators --------------------------------------------------------------------------------


class HealthMonitor(Protocol):
    """Runs the health checks; the director tells it which pairs to watch with which checks.

    `set_targets` keeps the running checks (and their state) of pairs whose checks did not change,
    starts new ones and stops the rest. Results go to the callback given at construction.
    """

    def set_targets(self, targets: Mapping[HealthKey, tuple[CheckSpec, ...]]) -> None: ...

    async def close(self) -> None: ...


# --- records --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """One applied change: when, why, the ops and how each fared."""

    at: float  # wall clock
    cause: str
    results: tuple[OpResult, ...]

    @property
    def errors(self) -> tuple[OpResult, ...]:
        """Return the ops that failed."""
        return tuple(r for r in self.results if not r.ok)


@dataclass(slots=True)
class PassiveMark:
    """A real server marked down by a failed dataplane connect, until a check started later passes."""

    at: float
    reason: str


@dataclass(slots=True)
class LastCheck:
    """The most recent check result of a pair, for status."""

    result: CheckResult
    at: float
    kind: str = ""


@dataclass(slots=True)
class Counters:
    """Director-level counters for status and metrics."""

    reconciles: int = 0
    ops_applied: int = 0
    op_errors: dict[str, int] = field(default_factory=dict)  # op class name -> failures
    passive_failures: dict[HealthKey, int] = field(default_factory=dict)
    reloads: int = 0
    reload_failures: int = 0


def op_name(op: Op) -> str:
    return type(op).__name__


def describe_op(op: Op) -> str:
    """Return `op` in a few words, e.g. ``AddDest TCP 10.0.0.1:2811 -> 10.0.1.1:2811 weight 1``."""
    if isinstance(op, SetTimeouts):
        t = op.timeouts
        return f"SetTimeouts tcp {t.tcp} tcpfin {t.tcpfin} udp {t.udp}"
    if isinstance(op, AddService | EditService):
        return f"{op_name(op)} {op.key} scheduler {op.spec.scheduler}"
    if isinstance(op, DelService):
        return f"DelService {op.key}"
    if isinstance(op, AddDest | EditDest):
        return f"{op_name(op)} {op.service} -> {op.key} weight {op.spec.weight}"
    return f"DelDest {op.service} -> {op.key}"


def fmt_pair(pair: HealthKey) -> str:
    return f"{pair[0]} -> {pair[1]}"
