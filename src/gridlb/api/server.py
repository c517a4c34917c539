"""The control API server: newline-delimited JSON on a Unix socket, writers decided by SO_PEERCRED.

The socket is created with mode 0660 (configurable) and, optionally, a group. Anyone who can connect
may read (`status`, `table`, `ping`); a request that changes state is served only when the peer is
root, the daemon's own user, or a member of the socket's group (primary or supplementary, read from
/proc/PID/status). Malformed input gets an error reply and the connection stays usable; a line over
the size limit gets an error reply and the connection is closed. Nothing a client sends stops the
server.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import pwd
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gridlb.api.messages import (
    MAX_LINE_BYTES,
    ApiError,
    Envelope,
    ErrorCode,
    Request,
    decode_line,
    encode,
    error_reply,
    is_write,
    ok_reply,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PeerCred:
    """Who is on the other end of a connection (SO_PEERCRED)."""

    pid: int
    uid: int
    gid: int

    def groups(self) -> frozenset[int]:
        """Return the peer's primary and supplementary group ids (best effort)."""
        gids = {self.gid}
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("Groups:"):
                    gids.update(int(g) for g in line.split()[1:])
                    break
        except (OSError, ValueError):
            try:
                name = pwd.getpwuid(self.uid).pw_name
                gids.update(g.gr_gid for g in grp.getgrall() if name in g.gr_mem)
            except KeyError:
                pass
        return frozenset(gids)

    def describe(self) -> str:
        """Return ``user (uid N)`` for messages."""
        try:
            name = pwd.getpwuid(self.uid).pw_name
        except KeyError:
            name = "?"
        return f"{name} (uid {self.uid})"


def peer_cred(sock: socket.socket) -> PeerCred:
    """Return the credentials of the process connected to the Unix socket `sock`."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return PeerCred(pid, uid, gid)


def group_id(group: str | int) -> int:
    """Return the gid of `group` (a name or a number); ApiError-free KeyError if unknown."""
    if isinstance(group, int) or group.isdigit():
        return int(group)
    return grp.getgrnam(group).gr_gid


Handler = Callable[[Request, PeerCred], Awaitable[Any]]


class ApiServer:
    """Serves control requests on a Unix socket; `handler` does the work, this class guards it."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        handler: Handler,
        *,
        mode: int = 0o660,
        group: str | int | None = None,
    ) -> None:
        self.path = Path(path)
        self.handler = handler
        self.mode = mode
        self.gid: int | None = None if group is None or group == "" else group_id(group)
        self.owner_uid = os.geteuid()
        self.malformed = 0  # requests answered with bad-json / bad-request / too-long
        self.refused = 0  # write requests refused by SO_PEERCRED
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    @property
    def socket_gid(self) -> int:
        """Return the group that owns the socket (the configured one, or the daemon's)."""
        return self.gid if self.gid is not None else os.getegid()

    def may_write(self, peer: PeerCred) -> bool:
        """Return True when `peer` may change state: root, the daemon's user, or the socket's group."""
        if peer.uid in (0, self.owner_uid):
            return True
        return self.socket_gid in peer.groups()

    async def start(self) -> None:
        """Bind the socket (replacing a stale one), set its mode and group, and start serving."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            if not stat.S_ISSOCK(self.path.lstat().st_mode):
                raise OSError(f"{self.path}: exists and is not a socket")
            if await _socket_alive(self.path):
                raise OSError(f"{self.path}: another director is already serving on it")
            self.path.unlink()
        old_umask = os.umask(0o777 & ~self.mode)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve_client, path=str(self.path), limit=MAX_LINE_BYTES
            )
        finally:
            os.umask(old_umask)
        if self.gid is not None:
            os.chown(self.path, -1, self.gid)
        os.chmod(self.path, self.mode)

    async def close(self) -> None:
        """Stop accepting, finish with connected clients, and remove the socket file."""
        if self._server is not None:
            self._server.close()
            for task in list(self._clients):
                task.cancel()
            await asyncio.gather(*self._clients, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
        try:
            sock = writer.get_extra_info("socket")
            peer = peer_cred(sock)
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError as exc:
                    if not exc.partial.strip():
                        break
                    line = exc.partial  # last request without a newline: still answer it
                except asyncio.LimitOverrunError:
                    self.malformed += 1
                    err = ApiError(ErrorCode.TOO_LONG, f"request longer than {MAX_LINE_BYTES} bytes")
                    writer.write(encode(error_reply(None, err)))
                    await writer.drain()
                    break
                if not line.strip():
                    continue
                reply = await self._answer(line, peer)
                writer.write(encode(reply))
                await writer.drain()
                if line[-1:] != b"\n":
                    break
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:  # never let one client take the server down
            log.exception("control API: client handler failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if task is not None:
                self._clients.discard(task)

    async def _answer(self, line: bytes, peer: PeerCred) -> dict[str, Any]:
        try:
            envelope: Envelope = decode_line(line)
        except ApiError as exc:
            self.malformed += 1
            log.info("control API: %s from %s: %s", exc.code.value, peer.describe(), exc.message)
            return error_reply(None, exc)
        request = envelope.request
        if is_write(request) and not self.may_write(peer):
            self.refused += 1
            try:
                group = grp.getgrgid(self.socket_gid).gr_name
            except KeyError:
                group = str(self.socket_gid)
            err = ApiError(
                ErrorCode.FORBIDDEN,
                f"permission denied: {request.op!r} changes the director and needs root or "
                f"membership in group {group!r}; {peer.describe()} may only read (status, table)",
            )
            return error_reply(envelope.id, err)
        try:
            result = await self.handler(request, peer)
        except ApiError as exc:
            return error_reply(envelope.id, exc)
        except Exception as exc:
            log.exception("control API: %s failed", request.op)
            return error_reply(
                envelope.id, ApiError(ErrorCode.INTERNAL, f"{request.op}: internal error: {exc}")
            )
        return ok_reply(envelope.id, result)


async def _socket_alive(path: Path) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return True
