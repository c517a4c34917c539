"""The one interface every dataplane implements: dump the table, apply ops, report stats."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gridlb.table import IpvsTable, Op


@dataclass(frozen=True, slots=True)
class OpResult:
    """How one op fared: `error` is empty on success, else the dataplane's reason."""

    op: Op
    error: str = ""

    @property
    def ok(self) -> bool:
        """Return True when the op was applied."""
        return not self.error


class Dataplane(Protocol):
    """A programmable forwarding engine. Errors are reported per op and never raised."""

    name: str

    async def dump(self) -> IpvsTable:
        """Return the table as the dataplane has it now, with counters."""
        ...

    async def apply(self, ops: Sequence[Op]) -> list[OpResult]:
        """Apply `ops` in order and report each one."""
        ...

    async def close(self) -> None:
        """Stop forwarding new connections and release resources; established ones may finish."""
        ...
