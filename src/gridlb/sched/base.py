"""The scheduler interface and the registry that finds an algorithm by its ipvsadm name."""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, NamedTuple, Protocol, TypeVar

from gridlb.table import IPAddress, RealKey


@dataclass(frozen=True, slots=True)
class DestView:
    """What a scheduler may read of one destination, in kernel list order (newest first)."""

    key: RealKey
    weight: int
    active: int = 0
    inactive: int = 0
    overloaded: bool = False  # IP_VS_DEST_F_OVERLOAD (upper threshold reached)
    last_weight: int = -1  # latest non-zero weight (mh); -1 = same as weight
    available: bool = True  # IP_VS_DEST_F_AVAILABLE (false once deleted but still referenced)


class Candidate(Protocol):
    """The fields of a destination that the counter-only schedulers (`Scheduler.picks_live`) read."""

    @property
    def key(self) -> RealKey: ...
    @property
    def weight(self) -> int: ...
    @property
    def active(self) -> int: ...
    @property
    def inactive(self) -> int: ...
    @property
    def overloaded(self) -> bool: ...


CandidateT = TypeVar("CandidateT", bound=Candidate)


class Flow(NamedTuple):
    """The packet being scheduled: client address/port and virtual address/port.

    A named tuple, not a frozen dataclass: the proxy makes one per accepted connection, and a tuple
    is made in a fifth of the time (`tuple.__new__(Flow, (...))` on the relay's path).
    """

    client: IPAddress
    client_port: int
    vaddr: IPAddress
    vport: int


class Scheduler(ABC):
    """One service's scheduler: `update` on every change of the destination list, `pick` per new flow.

    Implementations mirror net/netfilter/ipvs/ip_vs_<name>.c: same candidates, same order,
    same tie-breaking, weight 0 = quiesced, overloaded destinations skipped.
    """

    name: ClassVar[str]
    #: True when `pick_live` is implemented: the pick reads only the `Candidate` fields of each
    #: destination and keeps no state, so the proxy may pass its live destinations, counters and
    #: all, instead of building a `DestView` per changed destination for every pick.
    picks_live: ClassVar[bool] = False

    def __init__(self, flags: frozenset[str] = frozenset()) -> None:
        self.flags = flags

    def update(self, dests: Sequence[DestView]) -> None:  # noqa: B027 - optional hook
        """React to a destination being added, removed or edited (kernel add/del/upd_dest hooks)."""

    @abstractmethod
    def pick(self, dests: Sequence[DestView], flow: Flow, now: float) -> RealKey | None:
        """Return the destination for a new flow, or None when no destination may take it.

        `now` is a monotonic clock in seconds; only the schedulers that keep state over time
        (lblc, lblcr) read it.
        """

    def pick_live(self, dests: Sequence[CandidateT], flow: Flow, now: float) -> CandidateT | None:
        """Return the object of `dests` that `pick` would name, or None (only when `picks_live`)."""
        raise NotImplementedError(f"scheduler {self.name} reads more than a destination's counters")


_REGISTRY: dict[str, type[Scheduler]] = {}
_PACKAGE = __name__.rpartition(".")[0]
S = TypeVar("S", bound=type[Scheduler])


def register_scheduler(cls: S) -> S:
    """Class decorator: make `cls` available under `cls.name`."""
    _REGISTRY[cls.name] = cls
    return cls


def _load_all() -> None:
    """Import every scheduler module of the package (each registers itself); `_private` ones are helpers."""
    path = importlib.import_module(_PACKAGE).__path__
    for mod in pkgutil.iter_modules(path):
        if not mod.name.startswith("_") and mod.name != "base":
            importlib.import_module(f"{_PACKAGE}.{mod.name}")


def scheduler_names() -> list[str]:
    """Return the ipvsadm names of the package's schedulers: the one list of scheduler names that
    config validation and the ipvsadm front end use (ones registered from elsewhere, such as a
    test's, can be created but are not listed)."""
    _load_all()
    return sorted(n for n, cls in _REGISTRY.items() if cls.__module__.startswith(f"{_PACKAGE}."))


def create_scheduler(name: str, flags: frozenset[str] = frozenset()) -> Scheduler:
    """Return a new scheduler for the ipvsadm name `name`; KeyError names the valid ones."""
    _load_all()
    try:
        factory: Callable[[frozenset[str]], Scheduler] = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown scheduler {name!r} (known: {', '.join(sorted(_REGISTRY))})") from None
    return factory(flags)
