"""Error types that say who is at fault: the operator's config, a peer on the wire, or the dataplane."""

from __future__ import annotations

from dataclasses import dataclass

#: Exit codes shared by every command (lint uses 1 for "findings").
EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2


@dataclass(frozen=True, slots=True)
class Location:
    """Where a value came from: a file and a 1-based line (0 when unknown)."""

    file: str
    line: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


class GridlbError(Exception):
    """Base class of every error gridlb reports to a user instead of a traceback."""


class ConfigError(GridlbError):
    """The operator's input is unusable; formats as `file:line: error: key: message`."""

    def __init__(self, message: str, *, location: Location | None = None, key: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.location = location
        self.key = key

    def __str__(self) -> str:
        parts = []
        if self.location is not None:
            parts.append(str(self.location))
        parts.append("error")
        if self.key:
            parts.append(self.key)
        parts.append(self.message)
        return ": ".join(parts)


class PeerProtocolError(GridlbError):
    """A peer sent something malformed on the wire (counted and dropped, never fatal)."""

    def __init__(self, peer: str, field: str, message: str) -> None:
        super().__init__(f"{peer}: {field}: {message}")
        self.peer = peer
        self.field = field
