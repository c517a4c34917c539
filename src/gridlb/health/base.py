"""The checker interface, its result type and the registry that finds a checker by kind."""

from __future__ import annotations

import enum
import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from gridlb.table import RealKey


class Verdict(enum.Enum):
    """What one check concluded about a real server."""

    UP = "up"
    REFUSING = "refusing"  # answering but refusing work (GridFTP 421/422): keep, weight 0
    DOWN = "down"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one check: the verdict, why, how long it took, and an optional dynamic weight."""

    verdict: Verdict
    reason: str = ""
    latency_s: float = 0.0
    weight: int | None = None  # MISC_CHECK misc_dynamic weight, when the check sets one
    cert_days_left: float | None = None  # HTTPS: days until the server's certificate expires

    @property
    def ok(self) -> bool:
        """Return True unless the server is down."""
        return self.verdict is not Verdict.DOWN


class Checker(ABC):
    """One kind of health check; it reports a result and knows nothing of retries (see tracker)."""

    kind: ClassVar[str]

    def __init__(self, **options: Any) -> None:
        self.options = options

    @abstractmethod
    async def check(self, target: RealKey, *, timeout_s: float) -> CheckResult:
        """Check `target` once within `timeout_s` and return the result (never raise)."""


_REGISTRY: dict[str, type[Checker]] = {}
_MODULES = ("tcp", "gridftp", "script", "http")
C = TypeVar("C", bound=type[Checker])


def register_checker(cls: C) -> C:
    """Class decorator: make `cls` available under `cls.kind`."""
    _REGISTRY[cls.kind] = cls
    return cls


def create_checker(kind: str, **options: Any) -> Checker:
    """Return a new checker of `kind` configured with `options`; KeyError names the known kinds."""
    for mod in _MODULES:
        try:
            importlib.import_module(f"gridlb.health.{mod}")
        except ModuleNotFoundError as exc:  # pragma: no cover - only while a module is missing
            if exc.name != f"gridlb.health.{mod}":
                raise
    try:
        return _REGISTRY[kind](**options)
    except KeyError:
        raise KeyError(f"unknown checker {kind!r} (known: {', '.join(sorted(_REGISTRY))})") from None
