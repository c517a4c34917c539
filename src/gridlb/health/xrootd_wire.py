"""The XRootD wire format a health check needs: requests built and replies parsed with `struct`, no I/O.

Layouts and numbers follow XRootD's `XProtocol.hh` (all integers big-endian):

- client handshake: five int32 `0, 0, 0, 4, 2012` (20 bytes); the server answers with a response
  header (stream id 0, status 0, dlen 8) and `protover` int32 + `msgval` int32
  (`kXR_DataServer` 1, `kXR_LBalServer` 0);
- every request: `streamid[2] requestid:u16 body[16] dlen:i32` (24 bytes), then `dlen` bytes of data;
- every response: `streamid[2] status:u16 dlen:i32` (8 bytes), then `dlen` bytes of body;
- `kXR_protocol` (3006) body `clientpv:i32 flags:u8 expect:u8 reserved[10]`; its reply
  `pval:i32 flags:i32` (`kXR_isServer` 1, `kXR_isManager` 2, `kXR_attrMeta` 0x100,
  `kXR_attrProxy` 0x200, `kXR_attrSuper` 0x400), possibly followed by security requirements;
- `kXR_login` (3007) body `pid:i32 username[8] ability2:u8 ability:u8 capver:u8 reserved:u8`; its
  reply `sessid[16]` and, when the server wants authentication, `&P=protocol,...` text;
- `kXR_ping` (3011): no body; `kXR_stat` (3017): `options:u8 reserved[11] fhandle[4]`, data = path;
  its reply text `id size flags modtime`;
- reply bodies by status: `kXR_error` (4003) `errnum:i32 message\\0`, `kXR_redirect` (4004)
  `port:i32 host[?opaque]` (a negative port: host is a URL), `kXR_wait` (4005) `seconds:i32 info`,
  `kXR_waitresp` (4006) `seconds:i32`, `kXR_attn` (4001) `actnum:i32 parms`.

`ReplyReader` frames replies out of a byte stream; anything malformed raises `XrootdWireError` and
nothing else (the reply parser is fuzzed to hold to that).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from urllib.parse import urlsplit

# requests (XRequestTypes)
KXR_PROTOCOL = 3006
KXR_LOGIN = 3007
KXR_PING = 3011
KXR_STAT = 3017

# protocol version this client speaks (5.1.1 as three base-10 digits in hex nibbles, XRootD 5.5's)
CLIENT_PROTOCOL_VERSION = 0x00000511

# kXR_protocol reply flags
KXR_IS_SERVER = 0x00000001
KXR_IS_MANAGER = 0x00000002
KXR_ATTR_META = 0x00000100
KXR_ATTR_PROXY = 0x00000200
KXR_ATTR_SUPER = 0x00000400

# handshake msgval
KXR_DATA_SERVER = 1
KXR_LBAL_SERVER = 0

#: The longest reply body a health check accepts (real replies to its requests are far smaller).
MAX_BODY = 64 * 1024

HANDSHAKE_REPLY_LEN = 16
_HDR = struct.Struct(">2sHi")  # ServerResponseHeader
_REQ = struct.Struct(">2sH16si")  # ClientRequestHdr
_I32 = struct.Struct(">i")
_PROTO_BODY = struct.Struct(">iBB10s")
_LOGIN_BODY = struct.Struct(">i8sBBBB")
_STAT_BODY = struct.Struct(">B11s4s")


class XrootdWireError(Exception):
    """A reply from the server is not valid XRootD (the peer is at fault)."""


class Status(enum.IntEnum):
    """Response status codes (XResponseType)."""

    OK = 0
    OKSOFAR = 4000
    ATTN = 4001
    AUTHMORE = 4002
    ERROR = 4003
    REDIRECT = 4004
    WAIT = 4005
    WAITRESP = 4006
    STATUS = 4007


#: Error numbers of kXR_error (XErrorCode) with XRootD's own names.
ERROR_NAMES: dict[int, str] = {
    3000: "kXR_ArgInvalid",
    3001: "kXR_ArgMissing",
    3002: "kXR_ArgTooLong",
    3003: "kXR_FileLocked",
    3004: "kXR_FileNotOpen",
    3005: "kXR_FSError",
    3006: "kXR_InvalidRequest",
    3007: "kXR_IOError",
    3008: "kXR_NoMemory",
    3009: "kXR_NoSpace",
    3010: "kXR_NotAuthorized",
    3011: "kXR_NotFound",
    3012: "kXR_ServerError",
    3013: "kXR_Unsupported",
    3014: "kXR_noserver",
    3015: "kXR_NotFile",
    3016: "kXR_isDirectory",
    3017: "kXR_Cancelled",
    3018: "kXR_ItExists",
    3019: "kXR_ChkSumErr",
    3020: "kXR_inProgress",
    3021: "kXR_overQuota",
    3022: "kXR_SigVerErr",
    3023: "kXR_DecryptErr",
    3024: "kXR_Overloaded",
    3025: "kXR_fsReadOnly",
    3026: "kXR_BadPayload",
    3027: "kXR_AttrNotFound",
    3028: "kXR_TLSRequired",
    3029: "kXR_noReplicas",
    3030: "kXR_AuthFailed",
    3031: "kXR_Impossible",
    3032: "kXR_Conflict",
    3033: "kXR_TooManyErrs",
    3034: "kXR_ReqTimedOut",
}
KXR_NOT_FOUND = 3011
KXR_OVERLOADED = 3024


# ----------------------------------------------------------------------------------- requests


def handshake() -> bytes:
    """Return the 20-byte client handshake."""
    return struct.pack(">5i", 0, 0, 0, 4, 2012)


def _request(streamid: bytes, requestid: int, body: bytes, data: bytes = b"") -> bytes:
    if len(streamid) != 2:
        raise ValueError("a stream id is 2 bytes")
    return _REQ.pack(streamid, requestid, body, len(data)) + data


def protocol_request(streamid: bytes, *, clientpv: int = CLIENT_PROTOCOL_VERSION) -> bytes:
    """Return a kXR_protocol request (no security or TLS asked for)."""
    return _request(streamid, KXR_PROTOCOL, _PROTO_BODY.pack(clientpv, 0, 0, b""))


def login_request(streamid: bytes, *, user: str, pid: int, capver: int = 5) -> bytes:
    """Return a kXR_login request for `user` (at most 8 bytes) with no token."""
    name = user.encode()
    if not 0 < len(name) <= 8:
        raise ValueError(f"user {user!r}: 1 to 8 bytes")
    return _request(streamid, KXR_LOGIN, _LOGIN_BODY.pack(pid & 0x7FFFFFFF, name, 0, 0, capver, 0))


def ping_request(streamid: bytes) -> bytes:
    """Return a kXR_ping request."""
    return _request(streamid, KXR_PING, bytes(16))


def stat_request(streamid: bytes, path: str) -> bytes:
    """Return a kXR_stat request for `path`."""
    data = path.encode()
    if not data:
        raise ValueError("kXR_stat needs a path")
    return _request(streamid, KXR_STAT, _STAT_BODY.pack(0, b"", b""), data)


# ------------------------------------------------------------------------------------ replies


@dataclass(frozen=True, slots=True)
class HandshakeReply:
    """The server's answer to the handshake: protocol version and server type."""

    protover: int
    msgval: int

    @property
    def data_server(self) -> bool:
        """True when the handshake says data server (kXR_DataServer), False for a load balancer."""
        return self.msgval == KXR_DATA_SERVER


@dataclass(frozen=True, slots=True)
class Reply:
    """One framed response: stream id, status code (as sent) and body."""

    streamid: bytes
    status: int
    body: bytes


@dataclass(frozen=True, slots=True)
class ProtocolInfo:
    """The kXR_protocol reply: the server's protocol version and role flags."""

    pval: int
    flags: int

    @property
    def version(self) -> str:
        """The protocol version as x.y.z (three base-10 digits in hex nibbles, e.g. 0x511 = 5.1.1)."""
        major, rest = divmod(self.pval, 0x100)
        return f"{major:x}.{(rest >> 4) & 0xF:x}.{rest & 0xF:x}"

    @property
    def redirector(self) -> bool:
        """True for a manager (redirector) that is not also a data server."""
        return bool(self.flags & KXR_IS_MANAGER) and not self.flags & KXR_IS_SERVER

    @property
    def role(self) -> str:
        """A short human name of the role: data server, redirector, supervisor, proxy, ..."""
        if self.flags & KXR_ATTR_PROXY:
            base = "proxy"
        elif self.flags & KXR_ATTR_SUPER:
            base = "supervisor"
        elif self.redirector:
            base = "meta-manager" if self.flags & KXR_ATTR_META else "redirector"
        elif self.flags & KXR_IS_SERVER:
            base = "data server"
        else:
            base = "server of unknown role"
        return base


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """A kXR_error body."""

    errnum: int
    message: str

    def __str__(self) -> str:
        name = ERROR_NAMES.get(self.errnum, "unknown error")
        return f"{name} ({self.errnum})" + (f": {self.message}" if self.message else "")


@dataclass(frozen=True, slots=True)
class RedirectInfo:
    """A kXR_redirect body: where the client is sent (host without opaque data)."""

    host: str
    port: int
    opaque: str = ""

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class WaitInfo:
    """A kXR_wait or kXR_waitresp body."""

    seconds: int
    message: str = ""


@dataclass(frozen=True, slots=True)
class StatInfo:
    """A kXR_stat reply: `id size flags modtime`."""

    id: str
    size: int
    flags: int
    modtime: int


def _text(data: bytes) -> str:
    """Decode a NUL-terminated (or not) server string into printable text."""
    text = data.split(b"\0", 1)[0].decode("utf-8", "replace")
    return "".join(ch if ch.isprintable() else "?" for ch in text).strip()


def _i32(body: bytes, what: str) -> int:
    if len(body) < 4:
        raise XrootdWireError(f"{what} body of {len(body)} bytes is shorter than 4")
    value: int = _I32.unpack_from(body)[0]
    return value


def parse_handshake(data: bytes) -> HandshakeReply:
    """Parse the 16-byte handshake reply; XrootdWireError if it is not one."""
    if len(data) != HANDSHAKE_REPLY_LEN:
        raise XrootdWireError(f"handshake reply of {len(data)} bytes, expected {HANDSHAKE_REPLY_LEN}")
    parse_header_prefix(data, handshake=True)
    protover, msgval = struct.unpack_from(">ii", data, 8)
    if msgval not in (KXR_DATA_SERVER, KXR_LBAL_SERVER):
        raise XrootdWireError(f"handshake reply with server type {msgval}, expected 0 or 1")
    return HandshakeReply(protover, msgval)


def parse_protocol(body: bytes) -> ProtocolInfo:
    """Parse a kXR_protocol reply body (security requirements after the first 8 bytes are ignored)."""
    if len(body) < 8:
        raise XrootdWireError(f"kXR_protocol reply of {len(body)} bytes is shorter than 8")
    pval, flags = struct.unpack_from(">iI", body)
    return ProtocolInfo(pval, flags)


def parse_error(body: bytes) -> ErrorInfo:
    """Parse a kXR_error body."""
    return ErrorInfo(_i32(body, "kXR_error"), _text(body[4:]))


def parse_redirect(body: bytes) -> RedirectInfo:
    """Parse a kXR_redirect body; a negative port means the host field is a URL."""
    port = _i32(body, "kXR_redirect")
    raw = _text(body[4:])
    if port < 0:
        try:
            url = urlsplit(raw)
            host, url_port = url.hostname, url.port
        except ValueError as exc:
            raise XrootdWireError(f"kXR_redirect URL {raw!r}: {exc}") from None
        if not host:
            raise XrootdWireError(f"kXR_redirect URL {raw!r} names no host")
        return RedirectInfo(host, url_port if url_port is not None else 1094, url.query)
    host, _, opaque = raw.partition("?")
    if not host:
        raise XrootdWireError("kXR_redirect names no host")
    if port > 65535:
        raise XrootdWireError(f"kXR_redirect port {port} out of range")
    return RedirectInfo(host, port, opaque)


def parse_wait(body: bytes) -> WaitInfo:
    """Parse a kXR_wait / kXR_waitresp body."""
    return WaitInfo(_i32(body, "kXR_wait"), _text(body[4:]))


def parse_stat(body: bytes) -> StatInfo:
    """Parse a kXR_stat reply body: `id size flags modtime` (NUL-terminated text)."""
    words = body.split(b"\0", 1)[0].split()
    if len(words) < 4:
        raise XrootdWireError(f"kXR_stat reply {_text(body)!r} is not 'id size flags modtime'")
    try:
        size, flags, modtime = (int(w) for w in words[1:4])
    except ValueError:
        raise XrootdWireError(f"kXR_stat reply {_text(body)!r} has a non-number field") from None
    return StatInfo(_text(words[0]), size, flags, modtime)


def login_wants_auth(body: bytes) -> str | None:
    """Return the security protocols a kXR_login reply asks for (`&P=...`), or None."""
    if len(body) < 16:
        raise XrootdWireError(f"kXR_login reply of {len(body)} bytes is shorter than the 16-byte sessid")
    sec = _text(body[16:])
    if not sec:
        return None
    protocols = [p.split(",", 1)[0] for p in sec.split("&P=")[1:]]
    return ",".join(p for p in protocols if p) or sec


class ReplyReader:
    """Frames replies out of bytes fed in any pieces (sans-IO): `feed(data)`, then `next_reply()`.

    `handshake=True` expects the 16-byte handshake reply first (`next_handshake()`).
    """

    def __init__(self, *, handshake: bool = True, max_body: int = MAX_BODY) -> None:
        self._buf = bytearray()
        self._want_handshake = handshake
        self._max_body = max_body

    def feed(self, data: bytes) -> None:
        """Add bytes received from the server."""
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received but not framed yet."""
        return len(self._buf)

    def next_handshake(self) -> HandshakeReply | None:
        """Return the handshake reply once 16 bytes are in, else None."""
        if not self._want_handshake:
            raise XrootdWireError("the handshake reply was already read")
        if len(self._buf) >= 8:  # a server that is not XRootD often sends a text banner: show it
            parse_header_prefix(bytes(self._buf), handshake=True)
        if len(self._buf) < HANDSHAKE_REPLY_LEN:
            return None
        data = bytes(self._buf[:HANDSHAKE_REPLY_LEN])
        del self._buf[:HANDSHAKE_REPLY_LEN]
        self._want_handshake = False
        return parse_handshake(data)

    def next_reply(self) -> Reply | None:
        """Return the next complete reply, or None until more bytes are fed."""
        if self._want_handshake:
            raise XrootdWireError("the handshake reply must be read first")
        if len(self._buf) < _HDR.size:
            return None
        streamid, status, dlen = _HDR.unpack_from(self._buf)
        if dlen < 0:
            raise XrootdWireError(f"reply with negative length {dlen}")
        if dlen > self._max_body:
            raise XrootdWireError(f"reply of {dlen} bytes exceeds the {self._max_body}-byte limit")
        if len(self._buf) < _HDR.size + dlen:
            return None
        body = bytes(self._buf[_HDR.size : _HDR.size + dlen])
        del self._buf[: _HDR.size + dlen]
        return Reply(bytes(streamid), status, body)


def parse_header_prefix(data: bytes, *, handshake: bool) -> None:
    """Raise XrootdWireError when the first 8 bytes of `data` cannot start a handshake reply."""
    streamid, status, dlen = _HDR.unpack_from(data)
    if handshake and (streamid != b"\0\0" or status != 0 or dlen != 8):
        preview = _text(data[:80])
        shown = f"the server sent {preview!r}" if preview.isprintable() and len(preview) >= 4 else ""
        raise XrootdWireError(
            "not an XRootD handshake reply"
            + f" ({shown or f'stream id {streamid.hex()}, status {status}, dlen {dlen}'})"
        )


def parse_frames(data: bytes) -> list[HandshakeReply | Reply]:
    """Frame a whole byte string: the handshake reply, then every complete reply (fuzzing entry)."""
    reader = ReplyReader()
    reader.feed(data)
    out: list[HandshakeReply | Reply] = []
    hs = reader.next_handshake()
    if hs is None:
        return out
    out.append(hs)
    while (reply := reader.next_reply()) is not None:
        out.append(reply)
    return out
