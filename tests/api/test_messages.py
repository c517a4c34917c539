"""Tests of the control API's message encoding: requests, replies, errors and tables as JSON."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridlb.api.messages import (
    AddRequest,
    ApiError,
    DrainRequest,
    ErrorCode,
    RemoveRequest,
    Request,
    StatusRequest,
    TableRequest,
    decode_line,
    encode,
    error_reply,
    is_write,
    ok_reply,
    parse_real,
    parse_service,
    request_to_json,
    result_from_reply,
    table_from_json,
    table_to_json,
)
from gridlb.table import (
    ConnEntry,
    Dest,
    DestCounters,
    DestSpec,
    ForwardMethod,
    IpvsTable,
    Proto,
    RealKey,
    Service,
    ServiceKey,
    ServiceSpec,
    Stats,
    Timeouts,
)


@pytest.mark.parametrize(
    "request_",
    [
        StatusRequest(),
        TableRequest(connections=True),
        DrainRequest("127.0.0.2:2811"),
        AddRequest("127.0.0.5", "127.0.0.1:2811", 3),
        RemoveRequest("127.0.0.2", "", True, 12.5),
    ],
)
def test_request_round_trip(request_: Request) -> None:
    line = encode(request_to_json(request_, 7))
    env = decode_line(line)
    assert env.request == request_ and env.id == 7


def test_write_ops() -> None:
    assert is_write(DrainRequest("x")) and not is_write(StatusRequest())


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"{not json", ErrorCode.BAD_JSON),
        (b"\xff\xfe", ErrorCode.BAD_JSON),
        (b"[1, 2]", ErrorCode.BAD_REQUEST),
        (b'{"v": 2, "op": "status"}', ErrorCode.UNSUPPORTED_VERSION),
        (b'{"op": "status"}', ErrorCode.UNSUPPORTED_VERSION),
        (b'{"v": 1, "op": 5}', ErrorCode.BAD_REQUEST),
        (b'{"v": 1, "op": "explode"}', ErrorCode.UNKNOWN_OP),
        (b'{"v": 1, "op": "drain"}', ErrorCode.INVALID_ARGUMENT),
        (b'{"v": 1, "op": "drain", "args": {"real": 5}}', ErrorCode.INVALID_ARGUMENT),
        (b'{"v": 1, "op": "drain", "args": {"real": "a", "x": 1}}', ErrorCode.INVALID_ARGUMENT),
        (
            b'{"v": 1, "op": "add", "args": {"real": "a", "service": "b", "weight": true}}',
            ErrorCode.INVALID_ARGUMENT,
        ),
        (b'{"v": 1, "op": "remove", "args": {"real": "a", "timeout_s": "soon"}}', ErrorCode.INVALID_ARGUMENT),
        (b'{"v": 1, "op": "status", "args": []}', ErrorCode.BAD_REQUEST),
        (b'{"v": 1, "op": "status", "id": [1]}', ErrorCode.BAD_REQUEST),
    ],
)
def test_malformed_requests(line: bytes, code: ErrorCode) -> None:
    with pytest.raises(ApiError) as exc:
        decode_line(line)
    assert exc.value.code is code


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_decode_never_raises_anything_but_api_error(data: bytes) -> None:
    with contextlib.suppress(ApiError):
        decode_line(data)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["status", "table", "drain", "enable", "add", "remove", "reload", "x"]),
    st.dictionaries(
        st.sampled_from(["real", "service", "weight", "drain", "timeout_s", "connections"]), JSON
    ),
)
def test_decode_of_random_arguments(op: str, args: dict[str, object]) -> None:
    line = json.dumps({"v": 1, "op": op, "args": args}).encode()
    with contextlib.suppress(ApiError):
        decode_line(line)


def test_replies() -> None:
    assert result_from_reply(json.loads(encode(ok_reply(1, {"a": 1})))) == {"a": 1}
    with pytest.raises(ApiError) as exc:
        result_from_reply(error_reply(1, ApiError(ErrorCode.FORBIDDEN, "no")))
    assert exc.value.code is ErrorCode.FORBIDDEN and exc.value.message == "no"


def test_parse_real_and_service() -> None:
    assert parse_real("127.0.0.2") == ("127.0.0.2", None)
    assert parse_real("127.0.0.2:2811") == ("127.0.0.2", 2811)
    assert parse_real("[::1]:2811") == ("::1", 2811)
    assert parse_real("::1") == ("::1", None)
    assert parse_real("10.0.0.1", 2811) == ("10.0.0.1", 2811)
    assert parse_service("TCP 10.0.0.1:2811") == ServiceKey.tcp("10.0.0.1", 2811)
    assert parse_service("udp:10.0.0.1:53") == ServiceKey(Proto.UDP, RealKey.parse("10.0.0.1:53").addr, 53)
    for bad in ("nonsense", "10.0.0.1", "10.0.0.1:99999"):
        with pytest.raises(ApiError):
            parse_service(bad)
    with pytest.raises(ApiError):
        parse_real("host.example:1")


def test_table_round_trip() -> None:
    table = IpvsTable(
        services=(
            Service(
                ServiceKey.tcp("2001:db8::1", 2811),
                ServiceSpec("wlc", 360, "ffff:ffff::", frozenset({"sh-port"}), True, ""),
                (
                    Dest(
                        RealKey.parse("[2001:db8::2]:2811"),
                        DestSpec(3, ForwardMethod.ROUTE, 10, 5),
                        DestCounters(4, 7, 1, True, Stats(conns=11, inbytes=99, outbytes=1000)),
                    ),
                ),
                Stats(conns=11),
            ),
            Service(ServiceKey(Proto.TCP, None, 0, fwmark=7, af=4)),
        ),
        timeouts=Timeouts(1, 2, 3),
        connections=(
            ConnEntry(
                Proto.TCP,
                55,
                "ESTABLISHED",
                RealKey.parse("127.0.0.1:40000"),
                RealKey.parse("127.0.0.1:2811"),
                RealKey.parse("127.0.0.2:2811"),
            ),
        ),
    )
    assert table_from_json(json.loads(json.dumps(table_to_json(table)))) == table
