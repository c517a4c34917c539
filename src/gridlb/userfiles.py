"""How every command reads an operator's file (size-limited, strict UTF-8, one `file:line` error) and writes
its output (a temporary file renamed into place, so a failure never harms an existing file).

Reading: `read_text(path)` / `read_bytes(path)` read at most `MAX_INPUT_BYTES` (`MAX_SITE_BYTES` for
site files; a larger input, or an endless one such as /dev/zero, is refused with the limit named),
`read_stream` does the same for standard input, and `decode_utf8` names the line of the first byte
that is not UTF-8. Every error is a `ConfigError` at `file:line` (line 1 when the file as a whole is
at fault); a missing file is the subclass `NoSuchFile` so that callers for which absence means
"empty" can say so.

Structured text: `check_json_depth(text, limit)` refuses JSON nested deeper than `limit` before any
parser recurses into it (Python's json raises RecursionError, which is no message for an operator).

Writing: `write_atomic(path, text)` encodes first, writes a temporary file next to `path`, flushes it
and renames it over `path`; the new file keeps the old one's permission bits (0644 when new).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO

from gridlb.errors import ConfigError, Location

#: Largest input a command reads unless it says otherwise (ipvsadm table files and -R input: a
#: table of 100,000 destinations fits).
MAX_INPUT_BYTES = 8 << 20

#: Largest site file, YAML or keepalived.conf. Real ones are a few kilobytes (the seed's is 2 KiB for
#: twelve real servers); 1 MiB already takes the YAML reader some 10 s and 150 MB.
MAX_SITE_BYTES = 1 << 20

#: Mode of a newly written output file (an existing file keeps its own).
NEW_FILE_MODE = 0o644


class NoSuchFile(ConfigError):
    """The named input does not exist."""


def _limit_text(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit % (1 << 20) == 0 else f"{limit} bytes"


def read_stream(stream: BinaryIO, name: str, *, limit: int = MAX_INPUT_BYTES) -> bytes:
    """Read `stream` to its end, refusing more than `limit` bytes (ConfigError at `name`:1)."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = stream.read(min(1 << 20, limit + 1 - size))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
    raise ConfigError(
        f"input is larger than the {_limit_text(limit)} limit (is it the right file?)",
        location=Location(name, 1),
    )


def read_bytes(path: str | os.PathLike[str], *, limit: int = MAX_INPUT_BYTES) -> bytes:
    """Return the contents of the file at `path`, at most `limit` bytes; ConfigError names the file."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as fh:
            return read_stream(fh, name, limit=limit)
    except FileNotFoundError:
        raise NoSuchFile("no such file", location=Location(name, 1)) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a file", location=Location(name, 1)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", location=Location(name, 1)) from None


def decode_utf8(raw: bytes, name: str) -> str:
    """Return `raw` as text; a byte that is not UTF-8 is a ConfigError at its line."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        bad = raw[exc.start : exc.start + 1].hex()
        raise ConfigError(
            f"not UTF-8 text (byte 0x{bad}: {exc.reason}); save the file as UTF-8",
            location=Location(name, line),
        ) from None


def read_text(path: str | os.PathLike[str], *, limit: int = MAX_INPUT_BYTES) -> str:
    """Return the UTF-8 text of the file at `path` (see `read_bytes` and `decode_utf8`)."""
    return decode_utf8(read_bytes(path, limit=limit), os.fspath(path))


def not_utf8(text: str) -> str | None:
    """Return the first character of `text` that cannot be written as UTF-8 (a lone surrogate), or None."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return text[exc.start]
    return None


_JSON_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def json_depth(data: bytes | str) -> int:
    """Return how deeply the JSON `data` nests arrays and objects (strings are skipped; 0 for a scalar)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    depth = deepest = 0
    for m in _JSON_TOKENS.finditer(raw):
        tok = m.group()
        if tok in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif tok in (b"]", b"}"):
            depth -= 1
    return deepest


def check_json_depth(data: bytes | str, limit: int) -> None:
    """Raise ValueError when the JSON `data` nests deeper than `limit` (cheap when it cannot)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return
    if json_depth(raw) > limit:
        raise ValueError(f"nested deeper than {limit} levels")


def write_atomic(path: str | os.PathLike[str], text: str | bytes, *, what: str = "") -> None:
    """Write `text` to `path` through a temporary file renamed over it; ConfigError (key `what`) on failure.

    The text is encoded before anything is opened, so an unwritable character never truncates the old
    file; a failed write or rename leaves the old file as it was and removes the temporary one.
    """
    p = Path(path)
    name = os.fspath(path)
    try:
        data = text.encode("utf-8") if isinstance(text, str) else text
    except UnicodeEncodeError as exc:
        raise ConfigError(
            f"cannot write {name}: the text holds {text[exc.start]!r}, which is not UTF-8", key=what
        ) from None
    try:
        mode = stat.S_IMODE(os.stat(name).st_mode)
    except OSError:
        mode = NEW_FILE_MODE
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=str(p.parent))
    except OSError as exc:
        raise ConfigError(f"cannot write {name}: {exc.strerror or exc}", key=what) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, name)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ConfigError(f"cannot write {name}: {exc.strerror or exc}", key=what) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
