"""Asyncio GridFTP client: login, commands, SIZE/CKSM, get/put in stream mode or MODE E, third-party copy.

MODE E follows GFD.20's "sender connects" rule: a parallel get sends PORT and accepts the server's
connections; a parallel put sends PASV and opens N connections to it; a third-party copy gives the
destination's PASV address to the source with PORT.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from gridlb.gridftp import datachannel as dc
from gridlb.gridftp import modee
from gridlb.gridftp.protocol import (
    HostPort,
    Reply,
    ReplyParser,
    Scheme,
    Url,
    format_eprt,
    format_hostport,
    parse_epsv_reply,
    parse_pasv_reply,
    parse_url,
)

DEFAULT_PORT = 2811
_T = TypeVar("_T")


class ClientError(Exception):
    """A GridFTP operation failed; the message names the server, the command and its reply.

    `detail` is the message without the server's name (for callers that name it themselves).
    """

    def __init__(self, message: str, reply: Reply | None = None, *, detail: str = "") -> None:
        super().__init__(message)
        self.reply = reply
        self.detail = detail or message


@dataclass(frozen=True, slots=True)
class TransferResult:
    """What one transfer moved."""

    bytes: int
    streams: int


class GridftpClient:
    """One control connection to a GridFTP server; create it with `await GridftpClient.connect(...)`."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        host: str,
        port: int,
        *,
        timeout_s: float,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.host = host
        self.server_port = port
        self.timeout_s = timeout_s
        self.banner: Reply | None = None
        self._parser = ReplyParser()
        self._pending: collections.deque[Reply] = collections.deque()
        self._mode = ""
        self._type_set = False

    @property
    def name(self) -> str:
        """Return ``host:port`` for messages."""
        return f"[{self.host}]:{self.server_port}" if ":" in self.host else f"{self.host}:{self.server_port}"

    @property
    def local_address(self) -> str:
        """Return the local address of the control connection (where a PORT listener binds)."""
        return str(self.writer.get_extra_info("sockname")[0])

    @property
    def peer_address(self) -> str:
        """Return the server address this control connection reached."""
        return str(self.writer.get_extra_info("peername")[0])

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int = DEFAULT_PORT,
        *,
        timeout_s: float = 30.0,
        login: bool = True,
        user: str = "anonymous",
        password: str = "gridlb@",
    ) -> GridftpClient:
        """Connect, read the banner (ClientError unless 220) and, unless `login` is False, log in."""
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
        except (OSError, TimeoutError) as exc:
            raise ClientError(f"{host}:{port}: cannot connect: {exc or 'timeout'}") from None
        client = cls(reader, writer, host, port, timeout_s=timeout_s)
        try:
            client.banner = await client.read_reply()
            if client.banner.code != 220:
                raise ClientError(f"{client.name}: refused: {client.banner}", client.banner)
            if login:
                await client.login(user, password)
        except BaseException:
            client.abort()
            raise
        return client

    async def __aenter__(self) -> GridftpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ control channel

    def _failed(self, detail: str) -> ClientError:
        return ClientError(f"{self.name}: {detail}", detail=detail)

    async def read_reply(self, timeout_s: float | None = -1.0) -> Reply:
        """Read one complete reply (ClientError on EOF, timeout, or a malformed or over-long reply).

        `timeout_s` None waits without a limit (the caller has its own); the default is the client's.
        """
        t = self.timeout_s if timeout_s == -1.0 else timeout_s
        while not self._pending:
            try:
                data = await asyncio.wait_for(self.reader.read(65536), t)
            except TimeoutError:
                raise self._failed(f"no reply within {t} s") from None
            except OSError as exc:
                raise self._failed(f"control connection failed: {exc}") from None
            if not data:
                raise self._failed("control connection closed by the server")
            try:
                self._pending.extend(self._parser.feed(data))
            except ValueError as exc:
                raise self._failed(f"malformed reply: {exc}") from None
        return self._pending.popleft()

    async def send(self, line: str) -> None:
        """Send one command line."""
        if "\r" in line or "\n" in line:
            raise ClientError(f"refusing to send a command with CR/LF: {line[:40]!r}")
        try:
            self.writer.write(line.encode("utf-8", "surrogateescape") + b"\r\n")
            await self.writer.drain()
        except (OSError, ConnectionError) as exc:
            raise ClientError(f"{self.name}: control connection failed: {exc}") from None

    async def command(self, line: str) -> Reply:
        """Send `line` and return the first reply to it."""
        await self.send(line)
        return await self.read_reply()

    async def expect(self, line: str, *codes: int) -> Reply:
        """Send `line`; return its reply if its code is in `codes` (2xx if none given), else ClientError."""
        reply = await self.command(line)
        ok = reply.code in codes if codes else reply.kind == 2
        if not ok:
            shown = line if not line.upper().startswith("PASS ") else "PASS ****"
            raise ClientError(f"{self.name}: {shown}: {reply}", reply)
        return reply

    async def login(self, user: str = "anonymous", password: str = "gridlb@") -> None:
        """Log in (anonymous by default)."""
        reply = await self.expect(f"USER {user}", 230, 331)
        if reply.code == 331:
            await self.expect(f"PASS {password}", 230, 202)

    async def quit(self) -> None:
        """Send QUIT and close (errors ignored)."""
        with contextlib.suppress(ClientError):
            await self.send("QUIT")
            await self.read_reply(timeout_s=min(self.timeout_s, 5.0))
        await self.close()

    async def close(self) -> None:
        """Close the control connection."""
        self.abort()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()

    def abort(self) -> None:
        """Close the control connection without waiting."""
        with contextlib.suppress(Exception):
            self.writer.close()

    # ------------------------------------------------------------------ simple commands

    async def noop(self) -> Reply:
        """Send NOOP."""
        return await self.expect("NOOP", 200)

    async def feat(self) -> list[str]:
        """Return the FEAT lines (stripped)."""
        reply = await self.expect("FEAT", 211)
        return [ln.strip() for ln in reply.lines[1:-1] if ln.strip()]

    async def size(self, path: str) -> int:
        """Return the size of `path`."""
        reply = await self.expect(f"SIZE {path}", 213)
        try:
            return int(reply.lines[-1].strip())
        except ValueError:
            raise ClientError(f"{self.name}: SIZE {path}: not a number: {reply}", reply) from None

    async def cksm(self, path: str, algorithm: str = "ADLER32", offset: int = 0, length: int = -1) -> str:
        """Return the server-side checksum of `path` (lower-case hex)."""
        reply = await self.expect(f"CKSM {algorithm} {offset} {length} {path}", 213)
        return reply.lines[-1].strip().lower()

    async def pasv(self) -> HostPort:
        """Send PASV and return the advertised endpoint."""
        reply = await self.expect("PASV", 227)
        try:
            return parse_pasv_reply(reply)
        except ValueError as exc:
            raise ClientError(f"{self.name}: PASV: {exc}", reply) from None

    async def epsv(self) -> HostPort:
        """Send EPSV and return the endpoint (the control peer's address, the port from the reply)."""
        reply = await self.expect("EPSV", 229)
        try:
            return parse_epsv_reply(reply, self.peer_address)
        except ValueError as exc:
            raise ClientError(f"{self.name}: EPSV: {exc}", reply) from None

    async def passive(self) -> HostPort:
        """PASV for IPv4 control connections, EPSV for IPv6 ones."""
        return await (self.epsv() if ":" in self.peer_address else self.pasv())

    async def port(self, hp: HostPort) -> None:
        """Tell the server to connect to `hp` (PORT, or EPRT for IPv6)."""
        if ":" in hp.host:
            await self.expect(f"EPRT {format_eprt(hp)}", 200)
        else:
            await self.expect(f"PORT {format_hostport(hp)}", 200)

    async def setup(self, parallel: int) -> None:
        """Set TYPE I and the mode a transfer with `parallel` streams needs (MODE E when > 1)."""
        if not self._type_set:
            await self.expect("TYPE I", 200)
            self._type_set = True
        mode = "E" if parallel > 1 else "S"
        if mode != self._mode:
            await self.expect(f"MODE {mode}", 200)
            self._mode = mode

    async def _final(self, what: str, timeout_s: float | None) -> Reply:
        """Read replies to a transfer command until the final one; ClientError unless 2xx."""
        while True:
            reply = await self.read_reply(timeout_s=timeout_s)
            if reply.kind == 1:
                continue
            if reply.kind != 2:
                raise ClientError(f"{self.name}: {what}: {reply}", reply)
            return reply

    # ------------------------------------------------------------------ transfers

    async def get(
        self,
        remote: str,
        local: str,
        *,
        parallel: int = 1,
        idle_timeout_s: float = 60.0,
    ) -> TransferResult:
        """Download `remote` into the local file `local` with `parallel` streams (MODE E when > 1)."""
        await self.setup(parallel)
        fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            if parallel == 1:
                hp = await self.passive()
                sock = await dc.connect(hp, timeout_s=self.timeout_s)
                try:
                    await self.send(f"RETR {remote}")
                    data = asyncio.ensure_future(dc.recv_stream(sock, fd, 0, idle_timeout_s=idle_timeout_s))
                    n = await self._with_replies(f"RETR {remote}", data)
                finally:
                    sock.close()
                return TransferResult(n, 1)
            await self.expect(f"OPTS RETR Parallelism={parallel},{parallel},{parallel};", 200)
            listener = dc.open_listener(self.local_address)
            try:
                await self.port(HostPort(self.local_address, listener.getsockname()[1]))
                await self.send(f"RETR {remote}")

                async def accept_more() -> socket.socket:
                    return await dc.accept(listener, timeout_s=3600.0)

                def write(data: memoryview, off: int) -> None:
                    dc._pwrite_all(fd, data, off)

                rx = asyncio.ensure_future(
                    dc.recv_modee([], write, accept_more=accept_more, idle_timeout_s=idle_timeout_s)
                )
                res = await self._with_replies(f"RETR {remote}", rx)
                dc.close_all(res.reusable)
                return TransferResult(res.bytes, parallel)
            finally:
                listener.close()
        finally:
            os.close(fd)

    async def put(
        self,
        local: str,
        remote: str,
        *,
        parallel: int = 1,
        block_size: int = modee.DEFAULT_BLOCK_SIZE,
    ) -> TransferResult:
        """Upload the local file `local` to `remote` with `parallel` streams (MODE E when > 1)."""
        f = open(local, "rb", buffering=0)  # noqa: SIM115 - closed in finally
        try:
            size = os.fstat(f.fileno()).st_size
            await self.setup(parallel)
            hp = await self.passive()
            src = dc.Source(f, ranges=[(0, size)])
            if parallel == 1:
                sock = await dc.connect(hp, timeout_s=self.timeout_s)
                try:
                    await self.send(f"STOR {remote}")

                    async def send_and_close() -> int:
                        try:
                            return await dc.send_stream(sock, src)
                        finally:
                            sock.close()

                    n = await self._with_replies(f"STOR {remote}", asyncio.ensure_future(send_and_close()))
                finally:
                    sock.close()
                return TransferResult(n, 1)
            await self.expect(f"ALLO {size}", 200, 202)
            await self.send(f"STOR {remote}")
            socks: list[socket.socket] = []
            try:
                for _ in range(parallel):
                    socks.append(await dc.connect(hp, timeout_s=self.timeout_s))
                tx = asyncio.ensure_future(dc.send_modee(socks, src, block_size=block_size))
                n = await self._with_replies(f"STOR {remote}", tx)
            finally:
                dc.close_all(socks)
            return TransferResult(n, parallel)
        finally:
            f.close()

    async def _with_replies(self, what: str, data: asyncio.Future[_T]) -> _T:
        """Wait for the data task and the final reply together; an error on either cancels the other.

        The data side has its own idle timeouts; once it is done the final reply must follow within
        the client's timeout.
        """
        final = asyncio.ensure_future(self._final(what, None))
        try:
            while not data.done():
                both: set[asyncio.Future[object]] = {data, final}  # type: ignore[arg-type]
                await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
                if final.done():
                    final.result()  # raises the server's error reply
                    await asyncio.wait({data})
            exc = data.exception()
            if isinstance(exc, dc.DataChannelError):
                raise ClientError(f"{self.name}: {what}: data channel: {exc.text}")
            result = data.result()
            await asyncio.wait_for(final, self.timeout_s)
            return result
        finally:
            await _cancel(data, final)


async def _cancel(*tasks: asyncio.Future[Any]) -> None:
    """Cancel what is still running of `tasks` and wait for all of them to end."""
    for t in tasks:
        if not t.done():
            t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def third_party_copy(
    src: GridftpClient,
    src_path: str,
    dst: GridftpClient,
    dst_path: str,
    *,
    parallel: int = 1,
    timeout_s: float | None = None,
) -> None:
    """Copy `src_path` on `src` to `dst_path` on `dst`: the data flows directly between the servers."""
    await src.setup(parallel)
    await dst.setup(parallel)
    hp = await dst.passive()
    if parallel > 1:
        await src.expect(f"OPTS RETR Parallelism={parallel},{parallel},{parallel};", 200)
    await src.port(hp)
    await dst.send(f"STOR {dst_path}")
    await src.send(f"RETR {src_path}")
    a = asyncio.ensure_future(dst._final(f"STOR {dst_path}", timeout_s))
    b = asyncio.ensure_future(src._final(f"RETR {src_path}", timeout_s))
    try:
        done, _ = await asyncio.wait({a, b}, return_when=asyncio.FIRST_EXCEPTION)
        for t in (b, a):
            if t in done and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
        await a
        await b
    finally:
        await _cancel(a, b)


async def transfer(
    source: str,
    dest: str,
    *,
    parallel: int = 1,
    timeout_s: float = 30.0,
    transfer_timeout_s: float = 3600.0,
    on_total: Callable[[int | None], None] | None = None,
) -> TransferResult | None:
    """Copy between URLs: ftp→file (get), file→ftp (put) or ftp→ftp (third party); ValueError for bad URLs.

    `on_total` (a progress display's hook) learns the size to move before the data flows: the
    server's SIZE for a get, the local file's for a put (None when unknown).
    """
    s, d = parse_url(source), parse_url(dest)
    if s.scheme is Scheme.FTP and d.scheme is Scheme.FILE:
        async with await _open(s, timeout_s) as c:
            if on_total is not None:
                try:
                    on_total(await c.size(s.path))
                except ClientError:  # no SIZE for it: the transfer says what is wrong, if anything
                    on_total(None)
            res = await c.get(s.path, d.path, parallel=parallel)
            await c.quit()
            return res
    if s.scheme is Scheme.FILE and d.scheme is Scheme.FTP:
        if on_total is not None:
            on_total(os.path.getsize(s.path))
        async with await _open(d, timeout_s) as c:
            res = await c.put(s.path, d.path, parallel=parallel)
            await c.quit()
            return res
    if s.scheme is Scheme.FTP and d.scheme is Scheme.FTP:
        async with await _open(s, timeout_s) as a, await _open(d, timeout_s) as b:
            await third_party_copy(a, s.path, b, d.path, parallel=parallel, timeout_s=transfer_timeout_s)
            await a.quit()
            await b.quit()
            return None
    raise ValueError("one of the URLs must be ftp:// (file:// to file:// is not a GridFTP transfer)")


async def _open(url: Url, timeout_s: float) -> GridftpClient:
    return await GridftpClient.connect(
        url.host, url.port, timeout_s=timeout_s, user=url.user, password=url.password
    )
