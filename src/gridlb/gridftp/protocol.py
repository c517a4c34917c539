"""GridFTP control-channel grammar shared by server and client: commands, replies, addresses, paths, URLs."""

from __future__ import annotations

import datetime
import enum
import hashlib
import ipaddress
import os
import posixpath
import re
import stat as statmod
import zlib
from dataclasses import dataclass

#: The longest command line the server accepts (bytes, without CRLF); longer lines are refused with 500.
MAX_LINE_BYTES = 4096

#: The most lines one reply may have: a longer one is a peer's protocol error, not a memory sink.
MAX_REPLY_LINES = 512

#: Encoding of command lines and paths: UTF-8, with undecodable bytes kept as surrogates (round-trip safe).
ENCODING = "utf-8"
ERRORS = "surrogateescape"


class CommandError(ValueError):
    """A command line is malformed; carries the reply code and text the server sends back."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text


@dataclass(frozen=True, slots=True)
class Command:
    """One parsed control command: the upper-case verb (``SITE X`` for site commands) and its argument."""

    verb: str
    arg: str = ""


_VERB_RE = re.compile(r"^[A-Za-z]{3,4}$")
_SITE_SUBVERB_RE = re.compile(r"^[A-Za-z_]{1,32}$")


def parse_command(line: bytes) -> Command:
    """Parse one control line (CRLF or LF may still be attached); raise CommandError when it is unusable."""
    if line.endswith(b"\n"):
        line = line[:-1]
    if line.endswith(b"\r"):
        line = line[:-1]
    if len(line) > MAX_LINE_BYTES:
        raise CommandError(500, "Command line too long.")
    if b"\x00" in line:
        raise CommandError(501, "NUL byte in command refused.")
    if b"\r" in line or b"\n" in line:
        raise CommandError(501, "Bare CR or LF in command refused.")
    text = line.decode(ENCODING, ERRORS)
    # Telnet IAC sequences (ABOR urgent data) are not supported: drop leading non-letters.
    text = text.lstrip("\xff\xf2\xf4 ")
    if not text:
        raise CommandError(500, "Empty command.")
    verb, _, arg = text.partition(" ")
    if not _VERB_RE.match(verb):
        raise CommandError(500, f"'{sanitize(verb[:16])}': command not understood.")
    verb = verb.upper()
    if verb == "SITE":
        sub, _, rest = arg.strip().partition(" ")
        if not _SITE_SUBVERB_RE.match(sub):
            raise CommandError(501, "SITE needs a subcommand.")
        return Command(f"SITE {sub.upper()}", rest)
    return Command(verb, arg)


def sanitize(text: str) -> str:
    """Return `text` safe to put in a reply line: control characters and surrogates become '?'."""
    out = []
    for ch in text:
        o = ord(ch)
        out.append("?" if o < 0x20 or o == 0x7F or 0xD800 <= o <= 0xDFFF else ch)
    return "".join(out)


def format_reply(code: int, *lines: str) -> bytes:
    """Format a reply: one line ``ddd text`` or a multi-line ``ddd-first`` … ``ddd last`` block.

    Lines that start with a space are continuation lines (FEAT entries, MLST facts, SPAS addresses) and
    are sent as they are; every other inner line gets the ``ddd-`` prefix.
    """
    if not 100 <= code <= 699:
        raise ValueError(f"reply code out of range: {code}")
    texts = [sanitize(t) for t in lines] or [""]
    if len(texts) == 1:
        return f"{code} {texts[0]}\r\n".encode(ENCODING, ERRORS)
    out = [f"{code}-{texts[0]}"]
    for t in texts[1:-1]:
        out.append(t if t.startswith(" ") else f"{code}-{t}")
    out.append(f"{code} {texts[-1]}")
    return ("\r\n".join(out) + "\r\n").encode(ENCODING, ERRORS)


@dataclass(frozen=True, slots=True)
class Reply:
    """A complete server reply: the code and its text lines (prefixes removed, continuation lines kept)."""

    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        """Return the text of the reply as one string, lines joined by newlines."""
        return "\n".join(self.lines)

    @property
    def kind(self) -> int:
        """Return the first digit (1 preliminary, 2 done, 3 more needed, 4 transient, 5 permanent)."""
        return self.code // 100

    def __str__(self) -> str:
        """Return ``ddd first line``, printable and cut to 160 characters (for messages and reasons)."""
        text = f"{self.code} {sanitize(self.lines[0] if self.lines else '').strip()}".strip()
        return text if len(text) <= 160 else text[:157] + "..."


class ReplyParser:
    """Incremental reply reader: feed it bytes (`feed`) or lines (`feed_line`), get complete Replies.

    A reply ends on a line that matches ``^ddd `` with the code of its first line (RFC 959 §4.2).
    ValueError for a line that does not start a reply, a line longer than MAX_LINE_BYTES or a reply
    of more than MAX_REPLY_LINES lines.
    """

    def __init__(self) -> None:
        self._code: int | None = None
        self._lines: list[str] = []
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Reply]:
        """Consume bytes from the control connection; return the replies they complete."""
        self._buf += data
        replies: list[Reply] = []
        while (nl := self._buf.find(b"\n")) >= 0:
            line = bytes(self._buf[: nl + 1])
            del self._buf[: nl + 1]
            if len(line) > MAX_LINE_BYTES + 2:
                raise ValueError(f"reply line longer than {MAX_LINE_BYTES} bytes")
            reply = self.feed_line(line)
            if reply is not None:
                replies.append(reply)
        if len(self._buf) > MAX_LINE_BYTES + 2:
            raise ValueError(f"reply line longer than {MAX_LINE_BYTES} bytes")
        return replies

    def feed_line(self, raw: bytes) -> Reply | None:
        """Consume one line (with or without CRLF); return the finished Reply or None."""
        line = raw.rstrip(b"\r\n").decode(ENCODING, "replace")
        if self._code is None:
            head, sep = line[:3], line[3:4]
            if len(head) < 3 or not (head.isascii() and head.isdigit()) or sep not in ("", " ", "-"):
                raise ValueError(f"not an FTP reply: {sanitize(line[:60])!r}")
            code = int(line[:3])
            if len(line) == 3 or line[3] == " ":
                return Reply(code, (line[4:],))
            self._code = code
            self._lines = [line[4:]]
            return None
        prefix = f"{self._code:03d}"
        if line.startswith(prefix + " ") or line == prefix:
            self._lines.append(line[4:])
            reply = Reply(self._code, tuple(self._lines))
            self._code = None
            self._lines = []
            return reply
        if line.startswith(prefix + "-"):
            line = line[4:]
        self._lines.append(line)
        if len(self._lines) > MAX_REPLY_LINES:
            raise ValueError(f"more than {MAX_REPLY_LINES} lines in one reply")
        return None


# --------------------------------------------------------------------------------------------------
# Host-port formats: PORT/PASV (RFC 959), EPRT/EPSV (RFC 2428), SPAS/SPOR (GFD.20)


@dataclass(frozen=True, slots=True)
class HostPort:
    """A data-channel endpoint."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def format_hostport(hp: HostPort) -> str:
    """Return ``h1,h2,h3,h4,p1,p2`` for an IPv4 endpoint (ValueError for IPv6)."""
    addr = ipaddress.ip_address(hp.host)
    if addr.version != 4:
        raise ValueError(f"{hp.host} is not an IPv4 address")
    return ",".join([*hp.host.split("."), str(hp.port >> 8), str(hp.port & 0xFF)])


def parse_hostport(text: str) -> HostPort:
    """Parse ``h1,h2,h3,h4,p1,p2`` (surrounding parentheses and spaces allowed); ValueError if malformed."""
    text = text.strip().strip("()").strip()
    parts = text.split(",")
    if len(parts) != 6 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"bad host-port {text[:64]!r}")
    nums = [int(p) for p in parts]
    if any(n > 255 for n in nums):
        raise ValueError(f"bad host-port {text[:64]!r}")
    port = nums[4] * 256 + nums[5]
    if port == 0:
        raise ValueError("port 0 is not a valid data port")
    return HostPort(".".join(str(n) for n in nums[:4]), port)


_PASV_RE = re.compile(r"(\d{1,3}\s*,\s*\d{1,3}\s*,\s*\d{1,3}\s*,\s*\d{1,3}\s*,\s*\d{1,3}\s*,\s*\d{1,3})")


def parse_pasv_reply(reply: Reply) -> HostPort:
    """Return the endpoint of a ``227`` reply; ValueError when there is none."""
    if reply.code != 227:
        raise ValueError(f"PASV answered {reply}")
    m = _PASV_RE.search(reply.text)
    if m is None:
        raise ValueError(f"no h1,h2,h3,h4,p1,p2 in {reply}")
    return parse_hostport(m.group(1).replace(" ", ""))


def parse_spas_reply(reply: Reply) -> list[HostPort]:
    """Return the endpoints of a ``229`` SPAS reply (one per stripe)."""
    if reply.code != 229:
        raise ValueError(f"SPAS answered {reply}")
    found = [parse_hostport(m.replace(" ", "")) for m in _PASV_RE.findall(reply.text)]
    if not found:
        raise ValueError(f"no h1,h2,h3,h4,p1,p2 in {reply}")
    return found


def format_eprt(hp: HostPort) -> str:
    """Return the EPRT argument ``|af|addr|port|``."""
    af = 2 if ":" in hp.host else 1
    return f"|{af}|{hp.host}|{hp.port}|"


def parse_eprt(text: str) -> HostPort:
    """Parse an EPRT argument ``|af|addr|port|`` (any delimiter in 33-126); ValueError if malformed."""
    text = text.strip()
    if len(text) < 7 or not 33 <= ord(text[0]) <= 126:
        raise ValueError("bad EPRT argument")
    d = text[0]
    parts = text.split(d)
    if len(parts) != 5 or parts[0] or parts[4]:
        raise ValueError("bad EPRT argument")
    af, host, port_s = parts[1], parts[2], parts[3]
    if af not in ("1", "2") or not port_s.isdigit():
        raise ValueError("bad EPRT argument")
    addr = ipaddress.ip_address(host)
    if addr.version != (4 if af == "1" else 6):
        raise ValueError("EPRT address family does not match the address")
    port = int(port_s)
    if not 0 < port < 65536:
        raise ValueError("bad EPRT port")
    return HostPort(str(addr), port)


#: A network a server may send data to besides the control peer (third-party transfers).
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _plain(addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Return `addr` as an address, an IPv4-mapped IPv6 address as its IPv4 form."""
    a = ipaddress.ip_address(addr.split("%", 1)[0])
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        return a.ipv4_mapped
    return a


def data_target_refusal(target: HostPort, peer: str, allowed: tuple[IPNetwork, ...] = ()) -> str:
    """Return why a server must not connect to `target` for a client at `peer` (PORT/EPRT/SPOR), or "".

    The FTP bounce rule (RFC 2577): a privileged port (below 1024) is never a data port, and the server
    connects only to the control connection's peer unless the target lies in one of the `allowed`
    networks (third-party transfers, an explicit server option).
    """
    if target.port < 1024:
        return f"port {target.port} is privileged (below 1024): refused as a data port"
    try:
        addr = _plain(target.host)
        client = _plain(peer)
    except ValueError:
        return f"{sanitize(target.host[:64])} is not an IP address"
    if addr == client or any(addr in net for net in allowed):
        return ""
    return (
        f"{addr} is not the client's address {client}: third-party transfers to other hosts "
        "are not enabled on this server"
    )


def parse_epsv_reply(reply: Reply, control_host: str = "") -> HostPort:
    """Return the endpoint of a ``229`` EPSV reply; ValueError when there is none.

    RFC 2428's reply ``(|||port|)`` has no address: the client uses the control connection's peer,
    `control_host` (``""`` when not given). Globus' ``-epsv-ip`` form ``(|af|addr|port|)`` names one.
    """
    if reply.code != 229:
        raise ValueError(f"EPSV answered {reply}")
    m = re.search(r"\((.)(\d?)\1([^()]*?)\1(\d{1,5})\1\)", reply.text)
    if m is None:
        raise ValueError(f"no (|||port|) in {reply}")
    port = int(m.group(4))
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range in {reply}")
    if not m.group(3):
        return HostPort(control_host, port)
    try:
        return HostPort(str(ipaddress.ip_address(m.group(3))), port)
    except ValueError:
        raise ValueError(f"bad address in {reply}") from None


# --------------------------------------------------------------------------------------------------
# Arguments of GridFTP commands


def parse_opts_retr(arg: str) -> dict[str, str]:
    """Parse ``RETR Parallelism=4,4,4;StripeLayout=Blocked;`` (after OPTS) into lower-cased keys."""
    verb, _, rest = arg.strip().partition(" ")
    if verb.upper() != "RETR":
        raise ValueError("only OPTS RETR is handled here")
    out: dict[str, str] = {}
    for item in rest.split(";"):
        item = item.strip()
        if not item:
            continue
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"bad option {item[:40]!r}")
        out[key.strip().lower()] = value.strip()
    return out


def parse_parallelism(value: str, *, limit: int = 64) -> int:
    """Return the starting stream count of ``start,min,max`` (clamped to 1..limit); ValueError if bad."""
    first = value.split(",")[0].strip()
    if not first.isdigit():
        raise ValueError(f"bad Parallelism {value[:40]!r}")
    return max(1, min(int(first), limit))


def parse_rest(arg: str) -> int | tuple[tuple[int, int], ...]:
    """Parse REST: a stream offset ``n`` or MODE E ranges ``a-b,c-d`` (end exclusive, as Globus does)."""
    arg = arg.strip()
    if arg.isdigit():
        return int(arg)
    ranges: list[tuple[int, int]] = []
    for part in arg.split(","):
        a, dash, b = part.strip().partition("-")
        if not dash or not a.isdigit() or not b.isdigit() or int(b) < int(a):
            raise ValueError(f"bad REST argument {arg[:40]!r}")
        ranges.append((int(a), int(b)))
    if not ranges:
        raise ValueError("empty REST argument")
    return tuple(ranges)


def missing_ranges(size: int, done: tuple[tuple[int, int], ...]) -> list[tuple[int, int]]:
    """Return the [start, end) ranges of ``[0, size)`` not covered by `done` (restart markers)."""
    out: list[tuple[int, int]] = []
    pos = 0
    for a, b in sorted(done):
        if a > pos:
            out.append((pos, min(a, size)))
        pos = max(pos, b)
        if pos >= size:
            break
    if pos < size:
        out.append((pos, size))
    return [(a, b) for a, b in out if b > a]


@dataclass(frozen=True, slots=True)
class CksmRequest:
    """A parsed ``CKSM alg offset length path`` (length -1 = to the end)."""

    algorithm: str
    offset: int
    length: int
    path: str


CHECKSUM_ALGORITHMS = ("ADLER32", "MD5", "SHA1", "SHA256", "SHA512", "CRC32")


class Checksum:
    """A running CKSM value: `update(data)`, then `hexdigest()` as GridFTP prints it.

    ADLER32 and CRC32 print 8 hex digits; MD5 and the SHAs their hexdigest (lower case, as Globus).
    """

    def __init__(self, algorithm: str) -> None:
        alg = algorithm.upper()
        if alg not in CHECKSUM_ALGORITHMS:
            known = ", ".join(CHECKSUM_ALGORITHMS)
            raise ValueError(f"unsupported checksum algorithm {sanitize(alg[:16])} (one of {known})")
        self.algorithm = alg
        self._value = 1 if alg == "ADLER32" else 0
        self._hash = None if alg in ("ADLER32", "CRC32") else hashlib.new(alg.lower())

    def update(self, data: bytes | memoryview) -> None:
        """Add `data`."""
        if self._hash is not None:
            self._hash.update(data)
        elif self.algorithm == "ADLER32":
            self._value = zlib.adler32(data, self._value)
        else:
            self._value = zlib.crc32(data, self._value)

    def hexdigest(self) -> str:
        """Return the value so far."""
        return self._hash.hexdigest() if self._hash is not None else f"{self._value & 0xFFFFFFFF:08x}"


def checksum(algorithm: str, data: bytes) -> str:
    """Return the CKSM value of `data` (ValueError for an unknown algorithm)."""
    ck = Checksum(algorithm)
    ck.update(data)
    return ck.hexdigest()


def parse_cksm(arg: str) -> CksmRequest:
    """Parse the CKSM argument; ValueError names what is wrong."""
    parts = arg.split(" ", 3)
    if len(parts) != 4:
        raise ValueError("usage: CKSM algorithm offset length path")
    alg, off_s, len_s, path = parts
    alg = alg.upper()
    if alg not in CHECKSUM_ALGORITHMS:
        raise ValueError(f"unsupported checksum algorithm {sanitize(alg[:16])}")
    if not off_s.isdigit() or not (len_s.isdigit() or len_s == "-1"):
        raise ValueError("offset and length must be numbers")
    return CksmRequest(alg, int(off_s), int(len_s), path)


def parse_eret(arg: str) -> tuple[int, int, str]:
    """Parse ``P <offset> <length> <path>`` (the partial-retrieve module); return (offset, length, path)."""
    parts = arg.split(" ", 3)
    if len(parts) != 4 or parts[0].upper() != "P" or not parts[1].isdigit() or not parts[2].isdigit():
        raise ValueError("usage: ERET P offset length path")
    return int(parts[1]), int(parts[2]), parts[3]


def parse_esto(arg: str) -> tuple[int, str]:
    """Parse ``A <offset> <path>`` (the adjusted-store module); return (offset, path)."""
    parts = arg.split(" ", 2)
    if len(parts) != 3 or parts[0].upper() != "A" or not parts[1].isdigit():
        raise ValueError("usage: ESTO A offset path")
    return int(parts[1]), parts[2]


# --------------------------------------------------------------------------------------------------
# Paths: virtual paths under --root ("/" is the root; nothing resolves outside it)


class PathEscape(ValueError):
    """A path would leave the root (``..`` above it, or a symlink pointing outside)."""


def virtual_join(cwd: str, arg: str) -> str:
    """Return the normalised virtual path of `arg` seen from `cwd`; PathEscape when ``..`` climbs above /.

    Absolute arguments are taken relative to the virtual root, never to the host's ``/``.
    """
    if "\x00" in arg:
        raise PathEscape("NUL byte in path")
    path = arg if arg.startswith("/") else posixpath.join(cwd, arg)
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise PathEscape(f"{sanitize(arg)}: climbs above the root")
            parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


def real_path(root: str, vpath: str) -> str:
    """Return the host path of virtual path `vpath` under `root` (a realpath); PathEscape if it leaves root.

    Symlinks are resolved (also a dangling last component), and the result must lie inside `root`.
    """
    root_real = os.path.realpath(root)
    candidate = os.path.join(root_real, vpath.lstrip("/"))
    resolved = os.path.realpath(candidate)
    if resolved != root_real and not resolved.startswith(root_real.rstrip("/") + "/"):
        raise PathEscape(f"{sanitize(vpath)}: resolves outside the root")
    return resolved


def is_inside(root: str, path: str) -> bool:
    """Return True when host path `path` (already resolved) lies in `root` (resolved)."""
    root_real = os.path.realpath(root)
    return path == root_real or path.startswith(root_real.rstrip("/") + "/")


def to_virtual(root: str, host_path: str) -> str:
    """Return the virtual path of a host path inside `root`."""
    rel = os.path.relpath(host_path, os.path.realpath(root))
    return "/" if rel == "." else "/" + rel


# --------------------------------------------------------------------------------------------------
# Listings and facts


def mdtm(mtime: float) -> str:
    """Return the RFC 3659 time-val ``YYYYMMDDHHMMSS`` (UTC) of `mtime`."""
    return datetime.datetime.fromtimestamp(int(mtime), tz=datetime.UTC).strftime("%Y%m%d%H%M%S")


_TIME_VAL = re.compile(r"^(\d{14})(?:\.(\d{1,3}))?$")


def parse_mfmt(arg: str) -> tuple[float, str]:
    """Parse ``MFMT YYYYMMDDHHMMSS[.sss] path`` (UTC, draft-somers-ftp-mfxx); return (mtime, path)."""
    when, _, path = arg.strip().partition(" ")
    m = _TIME_VAL.match(when)
    if m is None or not path:
        raise ValueError("usage: MFMT YYYYMMDDHHMMSS path")
    try:
        t = datetime.datetime.strptime(m.group(1), "%Y%m%d%H%M%S").replace(tzinfo=datetime.UTC)
    except ValueError:
        raise ValueError(f"bad time {m.group(1)}") from None
    return t.timestamp() + int((m.group(2) or "0").ljust(3, "0")) / 1000, path


def parse_chmod(arg: str) -> tuple[int, str]:
    """Parse ``SITE CHMOD <octal mode> path``; only permission bits (0..777: no setuid, setgid, sticky)."""
    mode_s, _, path = arg.strip().partition(" ")
    if not path or not mode_s or any(c not in "01234567" for c in mode_s) or len(mode_s) > 4:
        raise ValueError("usage: SITE CHMOD <octal mode> path")
    mode = int(mode_s, 8)
    if mode > 0o777:
        raise ValueError("only permission bits (0 to 777) can be set: no setuid, setgid or sticky")
    return mode, path


def mlst_facts(st: os.stat_result, name: str) -> str:
    """Return one MLST/MLSD entry: ``Type=…;Size=…;Modify=…;Perm=…;UNIX.mode=…; name``."""
    if statmod.S_ISDIR(st.st_mode):
        kind, perm = "dir", "el"
        if st.st_mode & 0o200:
            perm += "cmfp"
    else:
        kind, perm = "file", "r"
        if st.st_mode & 0o200:
            perm += "wadf"
    return (
        f"Type={kind};Size={st.st_size};Modify={mdtm(st.st_mtime)};Perm={perm};"
        f"UNIX.mode=0{statmod.S_IMODE(st.st_mode):o};UNIX.uid={st.st_uid};UNIX.gid={st.st_gid};"
        f"Unique={st.st_dev:x}-{st.st_ino:x}; {name}"
    )


def list_line(st: os.stat_result, name: str, *, now_year: int) -> str:
    """Return one ``ls -l`` style LIST line."""
    mode = statmod.filemode(st.st_mode)
    t = datetime.datetime.fromtimestamp(int(st.st_mtime), tz=datetime.UTC)
    when = t.strftime("%b %d %H:%M") if t.year == now_year else t.strftime("%b %d  %Y")
    return f"{mode} {st.st_nlink:>3} {st.st_uid:<8} {st.st_gid:<8} {st.st_size:>12} {when} {name}"


# --------------------------------------------------------------------------------------------------
# URLs


class Scheme(enum.Enum):
    """URL schemes the client understands."""

    FTP = "ftp"
    FILE = "file"


@dataclass(frozen=True, slots=True)
class Url:
    """A parsed ``ftp://[user[:pw]@]host[:port]/path`` or ``file:///path`` URL."""

    scheme: Scheme
    host: str
    port: int
    path: str
    user: str = "anonymous"
    password: str = "gridlb@"


def parse_url(text: str) -> Url:
    """Parse an ftp:// or file:// URL; ValueError with a clear reason (gsiftp:// is out of scope)."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise ValueError(f"{text!r}: not a URL (expected ftp://host[:port]/path or file:///path)")
    scheme = scheme.lower()
    if scheme == "file":
        if not rest.startswith("/"):
            raise ValueError(f"{text!r}: file URLs need an absolute path (file:///path)")
        return Url(Scheme.FILE, "", 0, rest)
    if scheme in ("gsiftp", "sshftp"):
        raise ValueError(f"{text!r}: {scheme}:// needs GSI/SSH, which gridlb does not implement (use ftp://)")
    if scheme != "ftp":
        raise ValueError(f"{text!r}: unsupported scheme {scheme!r} (use ftp:// or file://)")
    hostpart, slash, path = rest.partition("/")
    path = "/" + path if slash else "/"
    user, password = "anonymous", "gridlb@"
    if "@" in hostpart:
        cred, _, hostpart = hostpart.rpartition("@")
        user, _, pw = cred.partition(":")
        password = pw or password
    port = 2811
    if hostpart.startswith("["):
        host, _, tail = hostpart[1:].partition("]")
        if tail.startswith(":"):
            port_s = tail[1:]
            if not port_s.isdigit():
                raise ValueError(f"{text!r}: bad port")
            port = int(port_s)
    else:
        host, colon, port_s = hostpart.partition(":")
        if colon:
            if not port_s.isdigit():
                raise ValueError(f"{text!r}: bad port")
            port = int(port_s)
    if not host:
        raise ValueError(f"{text!r}: no host")
    if not 0 < port < 65536:
        raise ValueError(f"{text!r}: port out of range")
    return Url(Scheme.FTP, host, port, path, user, password)
