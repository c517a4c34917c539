"""Operator intents (drain, enable, add, remove) as one immutable record that the reconciler reads.

Every method returns a new `Overrides`; nothing here knows about time except the deadlines it is
given. Semantics, as documented in docs/director.md:

- `drain RS` sets RS to weight 0 in every service that has it (new connections stop, established
  ones continue); `enable RS` undoes it. Drains are kept across reloads (they are maintenance intent).
- `add RS --service S` adds a real server at run time; `remove RS` takes one out at once, and
  `remove RS --drain` first holds it at weight 0 until it has no active connection (or its deadline
  passes), then takes it out. Runtime adds and removes last until the next reload, which makes the
  site file the truth for membership again.
- A real server that leaves the table for any other reason the director chooses (a reload dropped
  it) retires the same way as `remove --drain`, so no established connection is ever cut.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from gridlb.table import RealKey, ServiceKey

Pair = tuple[ServiceKey, RealKey]


@dataclass(frozen=True, slots=True)
class AddedReal:
    """A real server added at run time with `gridlb add`."""

    service: ServiceKey
    key: RealKey
    weight: int = 1


@dataclass(frozen=True, slots=True)
class Retiring:
    """A real server on its way out: weight 0 until no active connection or `deadline` (monotonic s)."""

    service: ServiceKey
    key: RealKey
    deadline: float = math.inf
    reason: str = "remove --drain"

    @property
    def pair(self) -> Pair:
        """Return (service, real)."""
        return (self.service, self.key)


@dataclass(frozen=True, slots=True)
class Overrides:
    """Everything operators changed at run time, on top of the site file."""

    drained: frozenset[RealKey] = frozenset()
    added: tuple[AddedReal, ...] = ()
    removed: frozenset[Pair] = frozenset()
    retiring: tuple[Retiring, ...] = ()

    # --- queries ----------------------------------------------------------------------------------

    def is_drained(self, key: RealKey) -> bool:
        """Return True when `key` was drained by an operator."""
        return key in self.drained

    def retiring_entry(self, service: ServiceKey, key: RealKey) -> Retiring | None:
        """Return the retirement of (service, key), or None."""
        for r in self.retiring:
            if r.service == service and r.key == key:
                return r
        return None

    def added_to(self, service: ServiceKey) -> tuple[AddedReal, ...]:
        """Return the real servers added at run time to `service`, oldest first."""
        return tuple(a for a in self.added if a.service == service)

    # --- intents ----------------------------------------------------------------------------------

    def drain(self, key: RealKey) -> Overrides:
        """Return overrides with `key` drained (weight 0 everywhere)."""
        return replace(self, drained=self.drained | {key})

    def enable(self, key: RealKey) -> Overrides:
        """Return overrides with the drain of `key` lifted."""
        return replace(self, drained=self.drained - {key})

    def add(self, service: ServiceKey, key: RealKey, weight: int) -> Overrides:
        """Return overrides with (service, key) added at `weight`; a pending removal of it is cancelled."""
        pair = (service, key)
        added = tuple(a for a in self.added if (a.service, a.key) != pair)
        return replace(
            self,
            added=(*added, AddedReal(service, key, weight)),
            removed=self.removed - {pair},
            retiring=tuple(r for r in self.retiring if r.pair != pair),
        )

    def remove(self, service: ServiceKey, key: RealKey) -> Overrides:
        """Return overrides with (service, key) out of the table at once."""
        pair = (service, key)
        return replace(
            self,
            added=tuple(a for a in self.added if (a.service, a.key) != pair),
            removed=self.removed | {pair},
            retiring=tuple(r for r in self.retiring if r.pair != pair),
        )

    def retire(
        self, service: ServiceKey, key: RealKey, *, deadline: float, reason: str = "remove --drain"
    ) -> Overrides:
        """Return overrides with (service, key) held at weight 0 until drained, then removed."""
        pair = (service, key)
        if self.retiring_entry(service, key) is not None:
            return self
        return replace(
            self,
            retiring=(*self.retiring, Retiring(service, key, deadline, reason)),
            removed=self.removed - {pair},
        )

    def retired(self, service: ServiceKey, key: RealKey) -> Overrides:
        """Return overrides where the retirement of (service, key) is complete (it is removed)."""
        return self.remove(service, key)

    def after_reload(self, configured: frozenset[Pair]) -> Overrides:
        """Return the overrides that survive a reload whose site file configures the pairs `configured`.

        Drains survive; runtime adds and removes end (the file is the truth again); retirements in
        progress go on unless the new file configures the pair again.
        """
        return Overrides(
            drained=self.drained,
            retiring=tuple(r for r in self.retiring if r.pair not in configured),
        )
