"""Logging to the systemd journal over its native protocol, with fields operators filter on.

Under systemd (JOURNAL_STREAM names our stderr) each log record goes to the journal's socket as one
datagram of ``KEY=value`` fields: MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, CODE_*, and the gridlb fields a
record carries (`fields(...)` passed as ``extra``): GRIDLB_SERVICE, GRIDLB_REAL_SERVER,
GRIDLB_INSTANCE, GRIDLB_TRANSITION, GRIDLB_REASON — so ``journalctl -u gridlb-director
GRIDLB_REAL_SERVER=10.0.1.1:2811`` shows one server's story. Elsewhere records go to stderr as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import sys
from collections.abc import Mapping
from typing import Any

#: The journal's native socket.
JOURNAL_SOCKET = "/run/systemd/journal/socket"
#: The `extra` key that carries gridlb's fields on a log record.
EXTRA_KEY = "journal_fields"
#: Largest datagram sent; a longer message is cut (the journal takes ~200 KiB datagrams).
MAX_DATAGRAM = 128 * 1024

_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


def fields(
    *,
    service: object = None,
    real: object = None,
    instance: str | None = None,
    transition: str | None = None,
    reason: str | None = None,
) -> dict[str, dict[str, str]]:
    """Return the `extra` of a log call that carries these journal fields (None ones are left out)."""
    values = {
        "GRIDLB_SERVICE": service,
        "GRIDLB_REAL_SERVER": real,
        "GRIDLB_INSTANCE": instance,
        "GRIDLB_TRANSITION": transition,
        "GRIDLB_REASON": reason,
    }
    return {EXTRA_KEY: {k: str(v) for k, v in values.items() if v is not None and v != ""}}


def keepalived_address(text: object, proto: str = "tcp") -> str:
    """Return ``ADDR:PORT`` (or ``TCP ADDR:PORT``) as keepalived writes it: ``[ADDR]:tcp:PORT``."""
    s = str(text)
    if " " in s:
        proto, s = s.split(" ", 1)
    addr, _, port = s.rpartition(":")
    return f"[{addr.strip('[]')}]:{proto.lower()}:{port}"


def encode(record_fields: Mapping[str, str]) -> bytes:
    """Return the native-protocol datagram for `record_fields` (binary-safe form for multi-line values)."""
    out = bytearray()
    for key, value in record_fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


def under_journal(environ: Mapping[str, str] | None = None, fd: int | None = None) -> bool:
    """Return True when stderr is the journal stream systemd connected (JOURNAL_STREAM is ``DEV:INODE``)."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(sys.stderr.fileno() if fd is None else fd)
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


class JournalHandler(logging.Handler):
    """Sends each record to the journal's native socket; counts what it could not send."""

    def __init__(self, path: str = JOURNAL_SOCKET, identifier: str = "gridlb") -> None:
        super().__init__()
        self.path = path
        self.identifier = identifier
        self.dropped = 0
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def record_fields(self, record: logging.LogRecord) -> dict[str, str]:
        """Return the journal fields of one record."""
        out = {
            "MESSAGE": self.format(record),
            "PRIORITY": str(_PRIORITY.get(record.levelno, 6)),
            "SYSLOG_IDENTIFIER": self.identifier,
            "LOGGER": record.name,
            "CODE_FILE": record.pathname,
            "CODE_LINE": str(record.lineno),
            "CODE_FUNC": record.funcName,
        }
        extra: Any = getattr(record, EXTRA_KEY, None)
        if isinstance(extra, Mapping):
            out.update({str(k): str(v) for k, v in extra.items()})
        return out

    def emit(self, record: logging.LogRecord) -> None:
        """Send one record (a failure is counted, never raised into the director)."""
        try:
            values = self.record_fields(record)
            data = encode(values)
            if len(data) > MAX_DATAGRAM:  # shorten the message, keep the fields
                values["MESSAGE"] = values["MESSAGE"][: MAX_DATAGRAM // 8] + " [cut]"
                data = encode(values)
            self._sock.sendto(data, self.path)
        except Exception:
            self.dropped += 1

    def close(self) -> None:
        """Close the socket."""
        with contextlib.suppress(OSError):
            self._sock.close()
        super().close()


def setup_logging(level: int, stderr_format: str = "%(asctime)s %(levelname)s %(name)s: %(message)s") -> None:
    """Log to the journal when systemd runs us with a journal stream, else to stderr in `stderr_format`."""
    if under_journal() and os.path.exists(JOURNAL_SOCKET):
        handler: logging.Handler = JournalHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logging.basicConfig(level=level, handlers=[handler])
    else:
        logging.basicConfig(level=level, format=stderr_format)
