"""Every call the director makes into a dataplane, under a deadline, with failures kept as visible state.

A dataplane may raise, hang or return garbage (a netlink socket closes, a relay thread dies). The
director must not: `GuardedDataplane` turns each such failure into a `DataplaneCallError`, counts it
by method in `DataplaneFault`, schedules a retry with exponential backoff (`retry_at`) and tells the
director's timer (`on_fault`). The first successful pass clears the fault.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gridlb.dataplane.base import Dataplane, DataplaneCounters, OpResult, Role
from gridlb.table import ConnEntry, IpvsTable, Op

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Deadline of one dataplane call; a call that takes longer counts as a dataplane fault.
DATAPLANE_DEADLINE_S = 5.0
#: First retry after a dataplane fault; doubled per consecutive fault up to `max_backoff_s`.
FAULT_BACKOFF_S = 0.1


class DataplaneCallError(Exception):
    """A dataplane call raised, timed out or returned something that is not what the protocol says."""


@dataclass(slots=True)
class DataplaneFault:
    """The dataplane's health as the director sees it: failed calls by method, the last one, backoff."""

    total: int = 0
    by_method: dict[str, int] = field(default_factory=dict)
    consecutive: int = 0
    last_error: str = ""
    since: float | None = None  # monotonic time of the first fault of the current run; None = healthy
    retry_at: float | None = None  # monotonic time of the next retry while failing

    @property
    def failing(self) -> bool:
        """Return True while the latest dataplane call failed."""
        return self.since is not None


class GuardedDataplane:
    """Wraps a `Dataplane`: deadlines, result checks, fault counting and backoff (see the module doc)."""

    def __init__(
        self,
        dataplane: Dataplane,
        *,
        clock: Callable[[], float],
        deadline_s: float = DATAPLANE_DEADLINE_S,
        max_backoff_s: float = 5.0,
        on_fault: Callable[[], None] | None = None,
    ) -> None:
        self.dataplane = dataplane
        self.clock = clock
        self.deadline_s = deadline_s
        self.max_backoff_s = max_backoff_s
        self.on_fault = on_fault
        self.fault = DataplaneFault()
        self.role: Role | None = None  # the role the dataplane was last told

    @property
    def name(self) -> str:
        """Return the dataplane's name."""
        return self.dataplane.name

    async def call(
        self,
        method: str,
        call: Callable[[], Awaitable[T]],
        valid: Callable[[Any], bool],
        deadline_s: float | None = None,
    ) -> T:
        """Run one dataplane call under a deadline; raise DataplaneCallError (recorded) on any failure."""
        limit = self.deadline_s if deadline_s is None else deadline_s
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation of
            # the caller that arrives as the call completes, and the director's loop would never stop
            async with asyncio.timeout(limit):
                value = await call()
        except TimeoutError:
            error = f"{method}: no answer within {limit:g} s"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the dataplane is broken; the director must not be
            error = f"{method}: {type(exc).__name__}: {exc}"
        else:
            if valid(value):
                return value
            error = f"{method}: returned {type(value).__name__}, which the dataplane protocol does not allow"
        self._record(method, error)
        raise DataplaneCallError(error)

    def _record(self, method: str, error: str) -> None:
        f = self.fault
        f.total += 1
        f.by_method[method] = f.by_method.get(method, 0) + 1
        f.consecutive += 1
        now = self.clock()
        if f.since is None:
            f.since = now
            log.error("dataplane %s failing: %s", self.name, error)
        else:
            log.debug("dataplane %s still failing: %s", self.name, error)
        f.last_error = error
        f.retry_at = now + min(self.max_backoff_s, FAULT_BACKOFF_S * 2 ** min(f.consecutive - 1, 16))
        if self.on_fault is not None:
            self.on_fault()

    def recovered(self) -> None:
        """Note a whole successful pass: the fault, if any, is over."""
        f = self.fault
        if f.since is not None:
            log.warning(
                "dataplane %s recovered after %.1f s (%d failed calls)",
                self.name,
                self.clock() - f.since,
                f.consecutive,
            )
        f.since = f.retry_at = None
        f.consecutive = 0

    async def dump(self, deadline_s: float | None = None) -> IpvsTable:
        """Return the dataplane's table."""
        return await self.call("dump", self.dataplane.dump, lambda v: isinstance(v, IpvsTable), deadline_s)

    async def apply(self, ops: Sequence[Op]) -> tuple[OpResult, ...]:
        """Apply `ops`; the dataplane must answer one OpResult per op, in order."""

        def valid(v: Any) -> bool:
            return (
                isinstance(v, list | tuple)
                and len(v) == len(ops)
                and all(isinstance(r, OpResult) and r.op == op for r, op in zip(v, ops, strict=True))
            )

        return tuple(await self.call("apply", lambda: self.dataplane.apply(ops), valid))

    async def set_role(self, role: Role) -> None:
        """Tell the dataplane the director's role, once per change."""
        if role is self.role:
            return
        await self.call("set_role", lambda: self.dataplane.set_role(role), lambda v: v is None)
        self.role = role
        log.info("dataplane %s follows role %s", self.name, role)

    async def connections(self) -> list[ConnEntry]:
        """Return the dataplane's connection list."""
        conns = await self.call(
            "connections",
            self.dataplane.connections,
            lambda v: isinstance(v, list | tuple) and all(isinstance(c, ConnEntry) for c in v),
        )
        return list(conns)

    async def counters(self, deadline_s: float | None = None) -> DataplaneCounters:
        """Return the dataplane's own error counters."""
        return await self.call(
            "counters", self.dataplane.counters, lambda v: isinstance(v, DataplaneCounters), deadline_s
        )


__all__ = ["DataplaneCallError", "DataplaneFault", "GuardedDataplane"]
