"""The control API's versioned JSON messages: typed requests and replies, and their wire encoding.

One message per line (newline-delimited JSON, UTF-8). A request is
``{"v": 1, "id": ID, "op": OP, "args": {...}}``; the reply echoes ``v`` and ``id`` and carries either
``{"ok": true, "result": {...}}`` or ``{"ok": false, "error": {"code": CODE, "message": TEXT}}``.
Read operations (`status`, `table`, `ping`) are open to anyone who can connect; the others change
state and need root or membership in the socket's group. Tables travel as plain JSON objects
(`table_to_json` / `table_from_json`) so that `gridlb ipvsadm` can print a running director's table.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any

from gridlb.ipvsadm import tablefile
from gridlb.table import (
    Proto,
    RealKey,
    ServiceKey,
    parse_address,
)
from gridlb.userfiles import check_json_depth

PROTOCOL_VERSION = 1
MAX_LINE_BYTES = 1 << 16
#: Deepest JSON nesting a request may have (requests nest 2 deep); refused before decoding.
MAX_JSON_DEPTH = 16


class ErrorCode(enum.Enum):
    """Why a request failed; stable strings that clients may test."""

    BAD_JSON = "bad-json"
    BAD_REQUEST = "bad-request"
    UNSUPPORTED_VERSION = "unsupported-version"
    UNKNOWN_OP = "unknown-op"
    FORBIDDEN = "forbidden"
    INVALID_ARGUMENT = "invalid-argument"
    NOT_FOUND = "not-found"
    CONFIG = "config-error"
    DATAPLANE = "dataplane-error"
    TOO_LONG = "too-long"
    INTERNAL = "internal"


class ApiError(Exception):
    """A request failed: carries the error code and a message meant for the operator."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


# --- requests -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    """Liveness probe; replies with the daemon's version."""

    op = "ping"


@dataclass(frozen=True, slots=True)
class StatusRequest:
    """Snapshot of services, real servers, health and drain states."""

    op = "status"


@dataclass(frozen=True, slots=True)
class TableRequest:
    """The dataplane's table with counters (and connections when `connections`), for `gridlb ipvsadm`."""

    op = "table"
    connections: bool = False


@dataclass(frozen=True, slots=True)
class DrainRequest:
    """Set `real` (``ADDR`` or ``ADDR:PORT``) to weight 0 in every service that has it."""

    op = "drain"
    real: str


@dataclass(frozen=True, slots=True)
class EnableRequest:
    """Lift the drain of `real`."""

    op = "enable"
    real: str


@dataclass(frozen=True, slots=True)
class AddRequest:
    """Add `real` to `service` (``VIP:PORT``) with `weight`."""

    op = "add"
    real: str
    service: str
    weight: int = 1


@dataclass(frozen=True, slots=True)
class RemoveRequest:
    """Remove `real` from `service` (or from every service); with `drain`, only once it is idle."""

    op = "remove"
    real: str
    service: str = ""
    drain: bool = False
    timeout_s: float = 0.0  # 0 = the director's default drain deadline


@dataclass(frozen=True, slots=True)
class ReloadRequest:
    """Re-read the site files, validate them, and switch to them."""

    op = "reload"


@dataclass(frozen=True, slots=True)
class FailoverRequest:
    """Hand VRRP mastership to the peer (priority-0 advert); `instance` "" = every MASTER instance."""

    op = "failover"
    instance: str = ""
    timeout_s: float = 5.0  # how long to wait for the peer's first advert as master


@dataclass(frozen=True, slots=True)
class EventsRequest:
    """VRRP events after sequence number `since`; waits up to `wait_s` for one when there is none."""

    op = "events"
    since: int = 0
    wait_s: float = 0.0


@dataclass(frozen=True, slots=True)
class DirectorDrainRequest:
    """Scale-out: withdraw this director's VIPs from the router (`gridlb director drain`)."""

    op = "director-drain"


@dataclass(frozen=True, slots=True)
class DirectorUndrainRequest:
    """Scale-out: announce this director's VIPs again while it can serve them."""

    op = "director-undrain"


Request = (
    Ping
    | StatusRequest
    | TableRequest
    | DrainRequest
    | EnableRequest
    | AddRequest
    | RemoveRequest
    | ReloadRequest
    | FailoverRequest
    | EventsRequest
    | DirectorDrainRequest
    | DirectorUndrainRequest
)

_REQUESTS: dict[str, type[Any]] = {
    cls.op: cls
    for cls in (
        Ping,
        StatusRequest,
        TableRequest,
        DrainRequest,
        EnableRequest,
        AddRequest,
        RemoveRequest,
        ReloadRequest,
        FailoverRequest,
        EventsRequest,
        DirectorDrainRequest,
        DirectorUndrainRequest,
    )
}
READ_OPS = frozenset({"ping", "status", "table", "events"})
WRITE_OPS = frozenset(_REQUESTS) - READ_OPS


def is_write(request: Request) -> bool:
    """Return True when `request` changes the director's state."""
    return request.op in WRITE_OPS


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded request line: the request and the id to echo."""

    request: Request
    id: int | str | None = None


def _check_type(op: str, name: str, value: Any, want: type) -> Any:
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise ApiError(ErrorCode.INVALID_ARGUMENT, f"{op}: {name}: expected {want.__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ApiError(ErrorCode.INVALID_ARGUMENT, f"{op}: {name}: expected a finite number")
    return value


def request_from_json(obj: Any) -> Envelope:
    """Return the request in the decoded JSON `obj`; ApiError says what is wrong with it."""
    if not isinstance(obj, dict):
        raise ApiError(ErrorCode.BAD_REQUEST, "a request is a JSON object")
    rid = obj.get("id")
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, int | str)):
        raise ApiError(ErrorCode.BAD_REQUEST, "id: expected an integer or a string")
    version = obj.get("v")
    if version != PROTOCOL_VERSION:
        raise ApiError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {version!r} is not supported (this director speaks {PROTOCOL_VERSION})",
        )
    op = obj.get("op")
    if not isinstance(op, str):
        raise ApiError(ErrorCode.BAD_REQUEST, "op: expected a string")
    cls = _REQUESTS.get(op)
    if cls is None:
        raise ApiError(ErrorCode.UNKNOWN_OP, f"unknown op {op!r} (known: {', '.join(sorted(_REQUESTS))})")
    args = obj.get("args", {})
    if not isinstance(args, dict):
        raise ApiError(ErrorCode.BAD_REQUEST, "args: expected an object")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(args) - set(known))
    if unknown:
        raise ApiError(ErrorCode.INVALID_ARGUMENT, f"{op}: unknown argument {unknown[0]!r}")
    kwargs: dict[str, Any] = {}
    for name, f in known.items():
        if name not in args:
            if f.default is MISSING:
                raise ApiError(ErrorCode.INVALID_ARGUMENT, f"{op}: {name}: required")
            continue
        want = {"str": str, "int": int, "float": float, "bool": bool}[str(f.type)]
        kwargs[name] = _check_type(op, name, args[name], want)
    return Envelope(cls(**kwargs), rid)


def request_to_json(request: Request, rid: int | str | None = None) -> dict[str, Any]:
    """Return the JSON object for `request`."""
    args = {f.name: getattr(request, f.name) for f in fields(request)}
    return {"v": PROTOCOL_VERSION, "id": rid, "op": request.op, "args": args}


def decode_line(line: bytes) -> Envelope:
    """Decode one request line; ApiError (bad-json, bad-request, ...) says what is wrong."""
    try:
        check_json_depth(line, MAX_JSON_DEPTH)
        obj = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(ErrorCode.BAD_JSON, f"malformed JSON: {exc}") from None
    return request_from_json(obj)


def encode(obj: Mapping[str, Any]) -> bytes:
    """Return `obj` as one newline-terminated JSON line."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=False).encode() + b"\n"


def ok_reply(rid: int | str | None, result: Any) -> dict[str, Any]:
    """Return a success reply."""
    return {"v": PROTOCOL_VERSION, "id": rid, "ok": True, "result": result}


def error_reply(rid: int | str | None, error: ApiError) -> dict[str, Any]:
    """Return an error reply."""
    return {
        "v": PROTOCOL_VERSION,
        "id": rid,
        "ok": False,
        "error": {"code": error.code.value, "message": error.message},
    }


def result_from_reply(obj: Any) -> Any:
    """Return the result of a decoded reply, or raise its ApiError."""
    if not isinstance(obj, dict) or "ok" not in obj:
        raise ApiError(ErrorCode.BAD_REQUEST, "malformed reply from the director")
    if obj["ok"]:
        return obj.get("result")
    err = obj.get("error") or {}
    try:
        code = ErrorCode(err.get("code"))
    except ValueError:
        code = ErrorCode.INTERNAL
    raise ApiError(code, str(err.get("message", "unknown error")))


# --- argument parsing shared by the director and the CLI -----------------------------------------


def parse_real(text: str, default_port: int | None = None) -> tuple[str, int | None]:
    """Return (address, port or None) of ``ADDR``, ``ADDR:PORT`` or ``[V6]:PORT``; ApiError if bad."""
    try:
        if default_port is None and not _has_port(text):
            return (str(parse_address(text)), None)
        key = RealKey.parse(text, default_port)
    except ValueError as exc:
        raise ApiError(ErrorCode.INVALID_ARGUMENT, f"{text!r} is not ADDR[:PORT] ({exc})") from None
    if not 0 < key.port < 65536:
        raise ApiError(ErrorCode.INVALID_ARGUMENT, f"{text!r}: port out of range")
    return (str(key.addr), key.port)


def _has_port(text: str) -> bool:
    text = text.strip()
    if text.startswith("["):
        return "]:" in text
    return text.count(":") == 1


def parse_service(text: str) -> ServiceKey:
    """Return the service written ``[tcp|udp|sctp] VIP:PORT`` (also ``TCP:VIP:PORT``); ApiError if bad."""
    proto = Proto.TCP
    body = text.strip()
    head, sep, rest = (
        body.replace(":", " ", 1).partition(" ")
        if body[:4].upper() in ("TCP:", "UDP:")
        else (body.partition(" "))
    )
    if sep and head.upper() in ("TCP", "UDP", "SCTP"):
        proto, body = Proto(head.upper()), rest.strip()
    try:
        if not _has_port(body):
            raise ValueError("a port is required")
        rk = RealKey.parse(body)
    except ValueError as exc:
        raise ApiError(ErrorCode.INVALID_ARGUMENT, f"{text!r} is not VIP:PORT ({exc})") from None
    if not 0 < rk.port < 65536:
        raise ApiError(ErrorCode.INVALID_ARGUMENT, f"{text!r}: port out of range")
    return ServiceKey(proto, rk.addr, rk.port)


# --- tables as JSON -------------------------------------------------------------------------------

#: Tables travel in the same lossless JSON form as `gridlb ipvsadm --table` files.
table_to_json = tablefile.to_json
table_from_json = tablefile.from_json
