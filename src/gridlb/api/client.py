"""A small blocking client of the control API, used by the `gridlb` commands and the tests."""

from __future__ import annotations

import itertools
import json
import os
import socket
from types import TracebackType
from typing import Any

from gridlb.api.messages import (
    MAX_LINE_BYTES,
    AddRequest,
    ApiError,
    DirectorDrainRequest,
    DirectorUndrainRequest,
    DrainRequest,
    EnableRequest,
    ErrorCode,
    Ping,
    ReloadRequest,
    RemoveRequest,
    Request,
    StatusRequest,
    TableRequest,
    encode,
    request_to_json,
    result_from_reply,
    table_from_json,
)
from gridlb.errors import GridlbError
from gridlb.status import DirectorStatus, status_from_json
from gridlb.table import IpvsTable

#: Where `gridlb director run` listens unless the site file or --socket says otherwise.
DEFAULT_SOCKET = "/run/gridlb/control.sock"


class ControlConnectError(GridlbError):
    """The director's control socket cannot be reached (printed as one line by the CLI)."""


def default_socket() -> str:
    """Return the socket path from $GRIDLB_SOCKET, or the default."""
    return os.environ.get("GRIDLB_SOCKET") or DEFAULT_SOCKET


class ControlClient:
    """One connection to a director's control socket; requests are answered in order."""

    def __init__(self, path: str | None = None, *, timeout_s: float = 30.0) -> None:
        self.path = path or default_socket()
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._buf = b""
        self._ids = itertools.count(1)

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _connect(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout_s)
            try:
                sock.connect(self.path)
            except FileNotFoundError:
                sock.close()
                raise ControlConnectError(
                    f"{self.path}: no director is listening (is `gridlb director run` running? --socket PATH)"
                ) from None
            except PermissionError:
                sock.close()
                raise ControlConnectError(
                    f"{self.path}: permission denied (the socket is for root and its group)"
                ) from None
            except OSError as exc:
                sock.close()
                raise ControlConnectError(f"{self.path}: cannot connect: {exc.strerror or exc}") from None
            self._sock = sock
        return self._sock

    def send_raw(self, data: bytes) -> Any:
        """Send `data` as is and return the decoded reply object (for tests of malformed input)."""
        sock = self._connect()
        sock.sendall(data)
        return self._read_reply()

    def _read_reply(self) -> Any:
        sock = self._connect()
        while b"\n" not in self._buf:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise ControlConnectError(f"{self.path}: no reply within {self.timeout_s:g} s") from None
            if not chunk:
                raise ControlConnectError(f"{self.path}: the director closed the connection")
            self._buf += chunk
            if len(self._buf) > 64 * MAX_LINE_BYTES * 16:
                raise ApiError(ErrorCode.TOO_LONG, "reply too long")
        line, _, self._buf = self._buf.partition(b"\n")
        return json.loads(line)

    def call(self, request: Request) -> Any:
        """Send `request` and return its result; ApiError carries a refused request's reason."""
        rid = next(self._ids)
        reply = self.send_raw(encode(request_to_json(request, rid)))
        return result_from_reply(reply)

    # --- conveniences -----------------------------------------------------------------------------

    def ping(self) -> dict[str, Any]:
        """Return the director's version and uptime."""
        result: dict[str, Any] = self.call(Ping())
        return result

    def status(self) -> dict[str, Any]:
        """Return the director's status as it travels (JSON: `gridlb status --json`)."""
        result: dict[str, Any] = self.call(StatusRequest())
        return result

    def snapshot(self) -> DirectorStatus:
        """Return the director's status as the typed model."""
        try:
            return status_from_json(self.status())
        except ValueError as exc:
            raise ApiError(ErrorCode.BAD_REQUEST, f"malformed status from the director: {exc}") from None

    def table(self, connections: bool = False) -> IpvsTable:
        """Return the running dataplane's table with counters."""
        return table_from_json(self.call(TableRequest(connections)))

    def drain(self, real: str) -> dict[str, Any]:
        """Drain `real` (weight 0); returns once the dataplane has applied it."""
        result: dict[str, Any] = self.call(DrainRequest(real))
        return result

    def enable(self, real: str) -> dict[str, Any]:
        """Lift the drain of `real`."""
        result: dict[str, Any] = self.call(EnableRequest(real))
        return result

    def add(self, real: str, service: str, weight: int = 1) -> dict[str, Any]:
        """Add `real` to `service` with `weight`."""
        result: dict[str, Any] = self.call(AddRequest(real, service, weight))
        return result

    def remove(
        self, real: str, service: str = "", drain: bool = False, timeout_s: float = 0.0
    ) -> dict[str, Any]:
        """Remove `real` (from `service`, or from all); with `drain`, once idle."""
        result: dict[str, Any] = self.call(RemoveRequest(real, service, drain, timeout_s))
        return result

    def director_drain(self) -> dict[str, Any]:
        """Scale-out: withdraw this director's VIPs; returns once the speaker has withdrawn them."""
        result: dict[str, Any] = self.call(DirectorDrainRequest())
        return result

    def director_undrain(self) -> dict[str, Any]:
        """Scale-out: announce this director's VIPs again while it can serve them."""
        result: dict[str, Any] = self.call(DirectorUndrainRequest())
        return result

    def reload(self) -> dict[str, Any]:
        """Make the director re-read and switch to its site files."""
        result: dict[str, Any] = self.call(ReloadRequest())
        return result


class DirectorTableSource:
    """`gridlb ipvsadm --socket PATH`: the running director's table (read-only) as an ipvsadm table source."""

    def __init__(self, path: str) -> None:
        self.path = path

    def load(self) -> IpvsTable:
        """Return the dataplane's table with counters, rates and connections."""
        with ControlClient(self.path) as client:
            return client.table(connections=True)

    def save(self, table: IpvsTable) -> None:
        """Refuse: a running director is changed with gridlb add/remove/drain/enable/reload."""
        del table
        raise GridlbError(
            "a running director's table is not edited with ipvsadm commands; use gridlb add, remove, "
            "drain, enable or edit the site file and gridlb reload"
        )
