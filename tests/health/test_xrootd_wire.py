"""The XRootD wire module: request bytes as XProtocol.hh lays them out, reply parsing, and a fuzzed parser."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridlb.health import xrootd_wire as W


def reply(status: int, body: bytes, sid: bytes = b"\0\1") -> bytes:
    return struct.pack(">2sHi", sid, status, len(body)) + body


HANDSHAKE_REPLY = struct.pack(">2sHiii", b"\0\0", 0, 8, 0x511, 1)


def test_request_bytes() -> None:
    assert W.handshake() == bytes.fromhex("00000000 00000000 00000000 00000004 000007dc")
    assert W.protocol_request(b"\0\1") == bytes.fromhex(
        "0001 0bbe 00000511 00 00 00000000000000000000 00000000"
    )
    login = W.login_request(b"\0\2", user="gridlb", pid=4242)
    assert login == bytes.fromhex("0002 0bbf 00001092") + b"gridlb\0\0" + bytes.fromhex(
        "00 00 05 00 00000000"
    )
    assert W.ping_request(b"\0\3") == bytes.fromhex("0003 0bc3") + bytes(16) + bytes(4)
    stat = W.stat_request(b"\0\4", "/store/canary")
    assert stat[:4] == bytes.fromhex("0004 0bc9") and stat[4:20] == bytes(16)
    assert stat[20:24] == struct.pack(">i", 13) and stat[24:] == b"/store/canary"
    assert all(len(r) == 24 for r in (W.protocol_request(b"ab"), login, W.ping_request(b"ab")))
    with pytest.raises(ValueError):
        W.login_request(b"\0\1", user="ninechars", pid=1)
    with pytest.raises(ValueError):
        W.stat_request(b"\0\1", "")


def test_handshake_and_replies_framed_from_pieces() -> None:
    stream = HANDSHAKE_REPLY + reply(0, struct.pack(">ii", 0x511, W.KXR_IS_SERVER))
    stream += reply(W.Status.ERROR, struct.pack(">i", 3011) + b"no such file\0")
    reader = W.ReplyReader()
    got: list[object] = []
    for i in range(len(stream)):  # one byte at a time
        reader.feed(stream[i : i + 1])
        if not got:
            hs = reader.next_handshake()
            if hs is not None:
                got.append(hs)
            continue
        r = reader.next_reply()
        if r is not None:
            got.append(r)
    first = got[0]
    assert isinstance(first, W.HandshakeReply) and first == W.HandshakeReply(0x511, 1) and first.data_server
    proto = got[1]
    assert isinstance(proto, W.Reply) and proto.status == 0
    info = W.parse_protocol(proto.body)
    assert (info.version, info.role, info.redirector) == ("5.1.1", "data server", False)
    err = got[2]
    assert isinstance(err, W.Reply) and str(W.parse_error(err.body)) == "kXR_NotFound (3011): no such file"
    assert reader.buffered == 0


@pytest.mark.parametrize(
    ("flags", "role", "redirector"),
    [
        (W.KXR_IS_SERVER, "data server", False),
        (W.KXR_IS_MANAGER, "redirector", True),
        (W.KXR_IS_MANAGER | W.KXR_ATTR_META, "meta-manager", True),
        (W.KXR_IS_MANAGER | W.KXR_ATTR_SUPER, "supervisor", True),
        (W.KXR_IS_SERVER | W.KXR_ATTR_PROXY, "proxy", False),
        (0, "server of unknown role", False),
    ],
)
def test_roles(flags: int, role: str, redirector: bool) -> None:
    info = W.parse_protocol(struct.pack(">iI", 0x500, flags) + b"extra security requirements")
    assert (info.role, info.redirector, info.version) == (role, redirector, "5.0.0")


def test_redirect_wait_stat_login() -> None:
    assert W.parse_redirect(struct.pack(">i", 1095) + b"ds1.example.org?tried=x\0") == W.RedirectInfo(
        "ds1.example.org", 1095, "tried=x"
    )
    url = W.parse_redirect(struct.pack(">i", -1) + b"root://[::1]:2094//path?x=1")
    assert (url.host, url.port, str(url)) == ("::1", 2094, "[::1]:2094")
    with pytest.raises(W.XrootdWireError, match="names no host"):
        W.parse_redirect(struct.pack(">i", 1094) + b"?opaque")
    with pytest.raises(W.XrootdWireError, match="out of range"):
        W.parse_redirect(struct.pack(">i", 70000) + b"host")
    assert W.parse_wait(struct.pack(">i", 30) + b"server busy\0") == W.WaitInfo(30, "server busy")
    assert W.parse_stat(b"9233827499146752 6 48 1796422519\0") == W.StatInfo(
        "9233827499146752", 6, 48, 1796422519
    )
    with pytest.raises(W.XrootdWireError, match="not 'id size flags modtime'"):
        W.parse_stat(b"1 2\0")
    assert W.login_wants_auth(bytes(16)) is None
    assert W.login_wants_auth(bytes(16) + b"&P=gsi,v:10400,c:ssl&P=unix\0") == "gsi,unix"
    with pytest.raises(W.XrootdWireError, match="16-byte sessid"):
        W.login_wants_auth(b"short")


def test_malformed_replies() -> None:
    reader = W.ReplyReader()
    reader.feed(b"220 ftp.example.org ready\r\n")
    with pytest.raises(W.XrootdWireError, match=r"not an XRootD handshake reply .*220 ftp"):
        reader.next_handshake()
    with pytest.raises(W.XrootdWireError, match="server type 7"):
        W.parse_handshake(struct.pack(">2sHiii", b"\0\0", 0, 8, 0x511, 7))
    reader = W.ReplyReader(handshake=False)
    reader.feed(struct.pack(">2sHi", b"\0\1", 0, -5))
    with pytest.raises(W.XrootdWireError, match="negative length"):
        reader.next_reply()
    reader = W.ReplyReader(handshake=False)
    reader.feed(struct.pack(">2sHi", b"\0\1", 0, W.MAX_BODY + 1))
    with pytest.raises(W.XrootdWireError, match="exceeds"):
        reader.next_reply()
    with pytest.raises(W.XrootdWireError, match="shorter than 8"):
        W.parse_protocol(b"\0\0\5")


def _bodies() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=64),
        st.builds(
            lambda n, rest: struct.pack(">i", n) + rest,
            st.integers(-(2**31), 2**31 - 1),
            st.binary(max_size=40),
        ),
        st.builds(
            lambda words: " ".join(words).encode() + b"\0",
            st.lists(st.one_of(st.integers().map(str), st.text(max_size=6)), max_size=5),
        ),
        st.builds(
            lambda port, url: struct.pack(">i", port) + url.encode(),
            st.integers(-3, 70000),
            st.text(max_size=30),
        ),
    )


def _streams() -> st.SearchStrategy[bytes]:
    frame = st.builds(
        lambda sid, status, body, cut: struct.pack(">2sHi", sid, status, len(body) + cut) + body,
        st.binary(min_size=2, max_size=2),
        st.one_of(st.sampled_from([int(s) for s in W.Status]), st.integers(0, 65535)),
        _bodies(),
        st.sampled_from([0, 0, 0, -1, 1, -(2**20)]),
    )
    handshake = st.one_of(
        st.just(HANDSHAKE_REPLY),
        st.builds(
            lambda a, b, c, d, e: struct.pack(">2sHiii", a, b, c, d, e),
            st.binary(min_size=2, max_size=2),
            st.integers(0, 65535),
            st.integers(-(2**31), 2**31 - 1),
            st.integers(-(2**31), 2**31 - 1),
            st.integers(-(2**31), 2**31 - 1),
        ),
    )
    return st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda h, fs, tail: h + b"".join(fs) + tail,
            handshake,
            st.lists(frame, max_size=4),
            st.binary(max_size=8),
        ),
    )


@settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(_streams(), _bodies())
def test_fuzz_reply_parser_raises_only_its_own_error(stream: bytes, body: bytes) -> None:
    """Any bytes: framing and every body parser either return a value or raise XrootdWireError."""
    try:
        frames = W.parse_frames(stream)
    except W.XrootdWireError:
        frames = []
    for frame in frames:
        if isinstance(frame, W.Reply):
            assert len(frame.streamid) == 2 and 0 <= len(frame.body) <= W.MAX_BODY
    for parse in (
        W.parse_protocol,
        W.parse_error,
        W.parse_redirect,
        W.parse_wait,
        W.parse_stat,
        W.login_wants_auth,
        W.parse_handshake,
    ):
        try:
            value = parse(body)
            str(value)
        except W.XrootdWireError:
            pass
