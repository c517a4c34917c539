"""An embeddable asyncio GridFTP server for anonymous ftp://: control sessions, passive/active data, MODE E.

Paths are virtual: ``/`` is the server's root directory and nothing resolves outside it (``..`` above
the root, absolute host paths and symlinks pointing out are refused with 550). PASV/SPAS/EPSV listen on,
and advertise, the configured data address, never the address the client dialled. PORT/EPRT/SPOR name
the control connection's peer (or an allowed third-party network) and an unprivileged port, never
anything else (no FTP bounce).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import logging
import os
import socket
import stat as statmod
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, TypeVar

from gridlb import __version__
from gridlb.gridftp import datachannel as dc
from gridlb.gridftp import modee
from gridlb.gridftp.protocol import (
    MAX_LINE_BYTES,
    Checksum,
    CommandError,
    HostPort,
    IPNetwork,
    PathEscape,
    data_target_refusal,
    format_eprt,
    format_hostport,
    format_reply,
    list_line,
    mdtm,
    missing_ranges,
    mlst_facts,
    parse_chmod,
    parse_cksm,
    parse_command,
    parse_eprt,
    parse_eret,
    parse_esto,
    parse_hostport,
    parse_mfmt,
    parse_opts_retr,
    parse_parallelism,
    parse_rest,
    real_path,
    sanitize,
    virtual_join,
)

log = logging.getLogger(__name__)
_T = TypeVar("_T")

ANONYMOUS_USERS = ("anonymous", "ftp")
MSG_BUSY = "Service busy: Connection limit exceeded. Please try again later. Closing control connection."
MSG_OFFLINE = "Service temporarily offline. Closing control connection."

FEATURES = (
    "CKSM ADLER32:10;MD5:10;SHA1:10;SHA256:11;SHA512:12;CRC32:10;",
    "UTF8",
    "DCAU",
    "PARALLEL",
    "SIZE",
    "MLST Type*;Size*;Modify*;Perm*;UNIX.mode*;UNIX.uid*;UNIX.gid*;Unique*;",
    "ERET",
    "ESTO",
    "SPAS",
    "SPOR",
    "REST STREAM",
    "MDTM",
    "MFMT",
    "SBUF",
)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Settings of one GridFTP server instance (see `gridlb gridftp-server --help`)."""

    root: str
    host: str = "127.0.0.1"
    port: int = 2811
    data_address: str | None = None  # advertised in PASV/SPAS; default: `host` when it is not a wildcard
    port_range: tuple[int, int] | None = None
    max_connections: int = 100
    disable_file: str | None = None
    banner_name: str = "gridlb"
    data_timeout_s: float = 30.0  # waiting for a data connection (accept / connect)
    data_idle_timeout_s: float = 60.0  # no data moving during a transfer
    control_idle_timeout_s: float = 900.0
    block_size: int = modee.DEFAULT_BLOCK_SIZE
    max_parallelism: int = 64
    # PORT/EPRT/SPOR may name the control connection's peer, or an address in these networks (CIDR
    # strings; "0.0.0.0/0" and "::/0" allow any host). Privileged ports are always refused.
    allow_third_party: tuple[str, ...] = ()
    # EPSV replies carry the data address (|af|addr|port|), as Globus' -epsv-ip does: behind a VIP an
    # address-less reply sends the client to the VIP. True: to every client. False: to none (RFC 2428).
    # None (default): with a `data_address`, to the clients that announced themselves with SITE
    # CLIENTINFO (Globus' client library, which reads the address); the RFC form to the others (curl
    # refuses any other form).
    epsv_ip: bool | None = None

    def epsv_names_address(self, *, globus_client: bool) -> bool:
        """Return True when an EPSV reply names the data address (`globus_client`: CLIENTINFO was sent)."""
        if self.epsv_ip is None:
            return bool(self.data_address) and globus_client
        return self.epsv_ip

    @property
    def epsv_mode(self) -> str:
        """Return how EPSV replies are formed, in words (for the start-up line)."""
        if self.epsv_ip is None:
            return "address for SITE CLIENTINFO clients" if self.data_address else "port only (RFC 2428)"
        return "address always (-epsv-ip)" if self.epsv_ip else "port only (RFC 2428)"

    @property
    def advertised(self) -> str:
        """Return the data address PASV/SPAS advertise and data listeners bind."""
        if self.data_address:
            return self.data_address
        if self.host in ("", "0.0.0.0", "::"):
            raise ValueError("a wildcard listen address needs an explicit data address")
        return self.host


class GridftpServer:
    """One GridFTP server: `await start()`, then `port`, `connections`, `disabled`; `await stop()`."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._advertised = config.advertised
        self._root = os.path.realpath(config.root)
        self.third_party = third_party_networks(config.allow_third_party)
        if not os.path.isdir(self._root):
            raise ValueError(f"root {config.root!r} is not a directory")
        self._server: asyncio.base_events.Server | None = None
        self._sessions: set[Session] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._disabled_flag = False
        self.refused_busy = 0
        self.refused_disabled = 0
        self.bad_commands = 0
        self.crashes = 0  # sessions that ended with an unexpected exception (a bug)
        self.data_connections = 0  # data connections opened (accepted or connected), reuse keeps it low
        self.refused_targets = 0  # PORT/EPRT/SPOR refused by the bounce rule

    @property
    def root(self) -> str:
        """Return the resolved root directory."""
        return self._root

    @property
    def data_address(self) -> str:
        """Return the address advertised for data connections."""
        return self._advertised

    @property
    def connections(self) -> int:
        """Return the number of control connections being served."""
        return len(self._sessions)

    @property
    def disabled(self) -> bool:
        """Return True while new connections get 422 (flag set, or the disable file exists)."""
        if self._disabled_flag:
            return True
        return bool(self.config.disable_file) and os.path.exists(self.config.disable_file or "")

    @disabled.setter
    def disabled(self, value: bool) -> None:
        self._disabled_flag = value

    @property
    def port(self) -> int:
        """Return the control port actually bound (useful with port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("server not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind the control listener and start accepting."""
        host = self.config.host or None
        self._server = await asyncio.start_server(
            self._on_connect, host, self.config.port, reuse_address=True, limit=MAX_LINE_BYTES * 4
        )
        log.info("GridFTP server on %s:%d, data address %s", self.config.host, self.port, self._advertised)

    async def stop(self) -> None:
        """Stop accepting, close every session and wait for them to end."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        for s in list(self._sessions):
            s.abort()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._server = None

    async def __aenter__(self) -> GridftpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self.disabled:
                self.refused_disabled += 1
                await _refuse(writer, 422, MSG_OFFLINE)
                return
            if len(self._sessions) >= self.config.max_connections:
                self.refused_busy += 1
                await _refuse(writer, 421, MSG_BUSY)
                return
            session = Session(self, reader, writer)
            self._sessions.add(session)
            try:
                await session.run()
            finally:
                self._sessions.discard(session)
                session.cleanup()
        except asyncio.CancelledError:
            pass  # server shutdown; ending quietly keeps asyncio's stream callback from logging it
        except Exception:  # a session must never take the server down
            self.crashes += 1
            log.exception("session crashed")
        finally:
            with contextlib.suppress(Exception):
                writer.close()
            self._tasks.discard(task)


def third_party_networks(texts: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    """Return the networks of `allow_third_party` (ValueError naming a bad one)."""
    out = []
    for text in texts:
        try:
            out.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"allow_third_party: {text!r} is not an address or network (CIDR)") from None
    return tuple(out)


async def _refuse(writer: asyncio.StreamWriter, code: int, text: str) -> None:
    with contextlib.suppress(OSError, ConnectionError):
        writer.write(format_reply(code, text))
        await writer.drain()


class Reject(Exception):
    """Ends a command with an error reply."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


Handler = Callable[["Session", str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _Spec:
    handler: Handler
    login: bool = True  # needs a logged-in user


class Session:
    """One control connection: reads commands, keeps the transfer state, answers each command."""

    def __init__(
        self, server: GridftpServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.cfg = server.config
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.peer_host = str(peer[0]) if peer else ""
        self.user: str | None = None
        self.logged_in = False
        self.cwd = "/"
        self.mode = "S"
        self.rest: int | tuple[tuple[int, int], ...] | None = None
        self.parallelism = 1
        self.buffer_bytes: int | None = None
        self.listener: socket.socket | None = None
        self.active: list[HostPort] = []
        self.cache: list[socket.socket] = []
        self.cache_role = ""  # "send" (we connected) or "recv" (we accepted)
        self.rnfr: str | None = None
        self.clientinfo = False  # SITE CLIENTINFO seen: a Globus-library client (reads EPSV addresses)
        self._buf = bytearray()
        self._quit = False

    # ---------------------------------------------------------------- plumbing

    def abort(self) -> None:
        """Close the control connection (server shutdown)."""
        self._quit = True
        with contextlib.suppress(Exception):
            self.writer.close()

    def cleanup(self) -> None:
        """Release data sockets and listeners."""
        self._drop_listener()
        self._drop_cache()

    def _drop_listener(self) -> None:
        if self.listener is not None:
            with contextlib.suppress(OSError):
                self.listener.close()
            self.listener = None

    def _drop_cache(self) -> None:
        dc.close_all(self.cache)
        self.cache = []
        self.cache_role = ""

    async def reply(self, code: int, *lines: str) -> None:
        """Send one reply."""
        self.writer.write(format_reply(code, *lines))
        await self.writer.drain()

    async def _read_line(self) -> bytes | None:
        """Return the next line (without LF), b"" … or None at EOF; raise CommandError for over-long lines."""
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                return line
            if len(self._buf) > MAX_LINE_BYTES + 2:
                # Discard up to the end of this line, then refuse it.
                self._buf = bytearray()
                while True:
                    chunk = await self.reader.read(65536)
                    if not chunk:
                        return None
                    nl = chunk.find(b"\n")
                    if nl >= 0:
                        self._buf = bytearray(chunk[nl + 1 :])
                        raise CommandError(500, "Command line too long.")
            chunk = await asyncio.wait_for(self.reader.read(65536), self.cfg.control_idle_timeout_s)
            if not chunk:
                return None
            self._buf += chunk

    async def run(self) -> None:
        """Serve the connection until QUIT, EOF or an idle timeout."""
        await self.reply(
            220, f"{self.server.data_address} {self.cfg.banner_name} GridFTP Server {__version__} ready."
        )
        while not self._quit:
            try:
                line = await self._read_line()
            except CommandError as exc:
                self.server.bad_commands += 1
                await self.reply(exc.code, exc.text)
                continue
            except (TimeoutError, ConnectionError, OSError):
                return
            if line is None:
                return
            try:
                await self._dispatch(line)
            except (ConnectionError, OSError):
                return

    async def _dispatch(self, line: bytes) -> None:
        try:
            cmd = parse_command(line)
        except CommandError as exc:
            self.server.bad_commands += 1
            await self.reply(exc.code, exc.text)
            return
        log.debug("%s: %s %s", self.peer, cmd.verb, cmd.arg if cmd.verb != "PASS" else "****")
        spec = COMMANDS.get(cmd.verb)
        if spec is None:
            self.server.bad_commands += 1
            await self.reply(500, f"'{cmd.verb}': command not understood.")
            return
        if spec.login and not self.logged_in:
            await self.reply(530, "Please login with USER and PASS.")
            return
        if cmd.verb != "RNTO":
            self.rnfr = None
        try:
            await spec.handler(self, cmd.arg)
        except Reject as exc:
            await self.reply(exc.code, exc.text)
        except PathEscape as exc:
            await self.reply(550, f"Permission denied: {exc}")
        except dc.DataChannelError as exc:
            await self.reply(exc.code, exc.text)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except OSError as exc:
            await self.reply(550, f"{exc.strerror or exc}.")

    # ---------------------------------------------------------------- paths

    def vpath(self, arg: str) -> str:
        """Return the virtual path of `arg` (PathEscape when it climbs above the root)."""
        return virtual_join(self.cwd, arg.strip() if arg.strip() else ".")

    def hpath(self, arg: str) -> str:
        """Return the host path of `arg`, inside the root (PathEscape otherwise)."""
        return real_path(self.server.root, self.vpath(arg))

    def open_checked(self, path: str, flags: int, mode: int = 0o644) -> int:
        """Open host path `path` refusing a last-moment symlink, and check the result is inside the root."""
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        try:
            actual = os.path.realpath(f"/proc/self/fd/{fd}")
            if os.path.exists(f"/proc/self/fd/{fd}") and not _inside(self.server.root, actual):
                raise PathEscape(f"{path}: resolves outside the root")
        except BaseException:
            os.close(fd)
            raise
        return fd

    # ---------------------------------------------------------------- data connections

    async def _sender_socks(self, n: int) -> list[socket.socket]:
        """Return `n` MODE E connections we send on: cached ones to the same target, then new connects."""
        if not self.active:
            if self.cache_role == "send" and self.cache:
                return list(self.cache)
            raise Reject(425, "MODE E sender connects: send PORT or SPOR first.")
        socks: list[socket.socket] = []
        if self.cache_role == "send":
            socks = list(self.cache)
        else:
            self._drop_cache()
        self.cache = []
        targets = [self.active[i % len(self.active)] for i in range(max(n, len(self.active)))]
        try:
            for t in targets[len(socks) :]:
                self.server.data_connections += 1
                socks.append(
                    await dc.connect(
                        t,
                        source_host=self.server.data_address,
                        timeout_s=self.cfg.data_timeout_s,
                        buffer_bytes=self.buffer_bytes,
                    )
                )
        except dc.DataChannelError:
            dc.close_all(socks)
            raise
        return socks

    def require_receive_route(self) -> None:
        """Refuse (425) a store before its file is opened when no data connection can carry it."""
        if self.mode == "E":
            if self.listener is None and not (self.cache_role == "recv" and self.cache):
                raise Reject(425, "MODE E receiver listens: send PASV or SPAS first.")
        else:
            self._require_stream_route()

    def _require_stream_route(self) -> None:
        if self.listener is None and not self.active:
            raise Reject(425, "No data connection: send PASV or PORT first.")

    async def _stream_sock(self) -> socket.socket:
        self.server.data_connections += 1
        if self.listener is not None:
            return await dc.accept(
                self.listener, timeout_s=self.cfg.data_timeout_s, buffer_bytes=self.buffer_bytes
            )
        if self.active:
            return await dc.connect(
                self.active[0],
                source_host=self.server.data_address,
                timeout_s=self.cfg.data_timeout_s,
                buffer_bytes=self.buffer_bytes,
            )
        raise Reject(425, "No data connection: send PASV or PORT first.")

    async def send_source(self, src: dc.Source, *, offset_shift: int = 0) -> None:
        """Send `src` to the client (stream or MODE E) with the 150/226 replies."""
        try:
            if self.mode == "E":
                socks = await self._sender_socks(self.parallelism)
                await self.reply(150, "Beginning transfer.")
                try:
                    await dc.send_modee(
                        socks,
                        src,
                        block_size=self.cfg.block_size,
                        offset_shift=offset_shift,
                        idle_timeout_s=self.cfg.data_idle_timeout_s,
                        buffer_bytes=self.buffer_bytes,
                    )
                except BaseException:
                    dc.close_all(socks)
                    raise
                self.cache, self.cache_role = socks, "send"
            else:
                self._require_stream_route()
                await self.reply(150, "Beginning transfer.")
                sock = await self._stream_sock()
                try:
                    await dc.send_stream(
                        sock,
                        src,
                        idle_timeout_s=self.cfg.data_idle_timeout_s,
                        buffer_bytes=self.buffer_bytes,
                    )
                finally:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_WR)
                    sock.close()
        finally:
            if src.file is not None:
                src.file.close()
        await self.reply(226, "Transfer Complete.")

    async def receive_into(self, fd: int, offset: int) -> None:
        """Receive a transfer from the client into `fd` (adding `offset`), with the 150/226 replies."""
        try:
            if self.mode == "E":
                socks: list[socket.socket] = []
                if self.cache_role == "recv":
                    socks = list(self.cache)
                elif self.cache:
                    self._drop_cache()
                self.cache = []
                listener = self.listener
                if listener is None and not socks:
                    raise Reject(425, "MODE E receiver listens: send PASV or SPAS first.")

                async def accept_more() -> socket.socket:
                    assert listener is not None
                    sock = await dc.accept(listener, timeout_s=3600.0, buffer_bytes=self.buffer_bytes)
                    self.server.data_connections += 1
                    return sock

                def write(data: memoryview, off: int) -> None:
                    dc._pwrite_all(fd, data, off + offset)

                await self.reply(150, "Beginning transfer.")
                res = await dc.recv_modee(
                    socks,
                    write,
                    accept_more=accept_more if listener is not None else None,
                    idle_timeout_s=self.cfg.data_idle_timeout_s,
                )
                self.cache, self.cache_role = res.reusable, "recv"
            else:
                self._require_stream_route()
                await self.reply(150, "Beginning transfer.")
                sock = await self._stream_sock()
                try:
                    await dc.recv_stream(sock, fd, offset, idle_timeout_s=self.cfg.data_idle_timeout_s)
                finally:
                    sock.close()
        finally:
            os.close(fd)
        await self.reply(226, "Transfer Complete.")

    def _take_rest(self) -> int | tuple[tuple[int, int], ...] | None:
        rest, self.rest = self.rest, None
        return rest


def _args(parse: Callable[[str], _T], arg: str) -> _T:
    """Return `parse(arg)`; a ValueError becomes 501 with its text."""
    try:
        return parse(arg)
    except ValueError as exc:
        raise Reject(501, str(exc)) from None


def _inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


# -------------------------------------------------------------------- command handlers


async def cmd_user(s: Session, arg: str) -> None:
    name = arg.strip()
    if name.lower() not in ANONYMOUS_USERS:
        s.user = None
        s.logged_in = False
        raise Reject(530, "Login incorrect. Only anonymous access is available (GSI is not supported).")
    s.user = name
    s.logged_in = False
    await s.reply(331, f"Password required for {name}.")


async def cmd_pass(s: Session, arg: str) -> None:
    if s.user is None:
        raise Reject(503, "Login with USER first.")
    s.logged_in = True
    await s.reply(230, f"User {s.user} logged in.")


async def cmd_quit(s: Session, arg: str) -> None:
    await s.reply(221, "Goodbye.")
    s._quit = True


async def cmd_noop(s: Session, arg: str) -> None:
    await s.reply(200, "NOOP command successful.")


async def cmd_syst(s: Session, arg: str) -> None:
    await s.reply(215, "UNIX Type: L8")


async def cmd_feat(s: Session, arg: str) -> None:
    await s.reply(211, "Extensions supported", *(" " + f for f in FEATURES), "End.")


async def cmd_help(s: Session, arg: str) -> None:
    names = sorted(v for v in COMMANDS if " " not in v)
    rows = [" " + " ".join(names[i : i + 12]) for i in range(0, len(names), 12)]
    await s.reply(214, "The following commands are recognized:", *rows, "End")


async def cmd_site_help(s: Session, arg: str) -> None:
    await cmd_help(s, arg)


async def cmd_site_clientinfo(s: Session, arg: str) -> None:
    s.clientinfo = True
    await s.reply(250, "OK.")


async def cmd_site_bufsize(s: Session, arg: str) -> None:
    await cmd_sbuf(s, arg)


async def cmd_type(s: Session, arg: str) -> None:
    t = arg.strip().upper()
    if t in ("I", "A", "L 8", "A N"):
        await s.reply(200, f"Type set to {t[0]}.")
    else:
        raise Reject(504, "Type not implemented.")


async def cmd_stru(s: Session, arg: str) -> None:
    if arg.strip().upper() != "F":
        raise Reject(504, "Only STRU F is implemented.")
    await s.reply(200, "Structure set to F.")


async def cmd_mode(s: Session, arg: str) -> None:
    m = arg.strip().upper()
    if m not in ("S", "E"):
        raise Reject(504, "Only MODE S and MODE E are implemented.")
    if m != s.mode:
        s._drop_cache()
    s.mode = m
    await s.reply(200, f"Mode set to {m}.")


async def cmd_opts(s: Session, arg: str) -> None:
    head = arg.strip().split(" ", 1)[0].upper()
    if head == "RETR":
        try:
            opts = parse_opts_retr(arg)
            if "parallelism" in opts:
                s.parallelism = parse_parallelism(opts["parallelism"], limit=s.cfg.max_parallelism)
        except ValueError as exc:
            raise Reject(501, f"Bad OPTS RETR: {exc}") from None
        await s.reply(200, "OPTS Command Successful.")
    elif head == "UTF8":
        await s.reply(200, "UTF8 is always on.")
    else:
        raise Reject(501, "Unsupported option.")


async def cmd_allo(s: Session, arg: str) -> None:
    await s.reply(200, "ALLO command successful.")


async def cmd_rest(s: Session, arg: str) -> None:
    s.rest = _args(parse_rest, arg)
    await s.reply(350, "Restart Marker OK. Send STORE or RETRIEVE to initiate transfer.")


async def cmd_sbuf(s: Session, arg: str) -> None:
    v = arg.strip()
    if not v.isdigit() or int(v) > 1 << 30:
        raise Reject(501, "SBUF needs a buffer size in bytes.")
    s.buffer_bytes = int(v) or None
    await s.reply(200, "Buffer size set.")


async def cmd_dcau(s: Session, arg: str) -> None:
    if arg.strip().upper() != "N":
        raise Reject(504, "Only DCAU N: data channel authentication needs GSI, which is not supported.")
    await s.reply(200, "DCAU N.")


async def cmd_pbsz(s: Session, arg: str) -> None:
    await s.reply(200, "PBSZ=0")


async def cmd_prot(s: Session, arg: str) -> None:
    if arg.strip().upper() != "C":
        raise Reject(536, "Only PROT C (clear) is supported.")
    await s.reply(200, "Protection level set to C.")


def _listen(s: Session, *, ipv4_for: str = "") -> HostPort:
    """Open a new passive listener on the data address (replacing any earlier one or PORT target)."""
    addr = s.server.data_address
    if ipv4_for and ":" in addr:
        raise Reject(522, f"The data address is IPv6: {ipv4_for}")
    s._drop_listener()
    s.active = []
    s.listener = dc.open_listener(addr, s.cfg.port_range)
    return HostPort(addr, s.listener.getsockname()[1])


async def cmd_pasv(s: Session, arg: str) -> None:
    hp = _listen(s, ipv4_for="use EPSV.")
    await s.reply(227, f"Entering Passive Mode ({format_hostport(hp)})")


async def cmd_epsv(s: Session, arg: str) -> None:
    if arg.strip().upper() == "ALL":
        await s.reply(200, "EPSV ALL accepted.")
        return
    hp = _listen(s)
    where = format_eprt(hp) if s.cfg.epsv_names_address(globus_client=s.clientinfo) else f"|||{hp.port}|"
    await s.reply(229, f"Entering Extended Passive Mode ({where})")


async def cmd_spas(s: Session, arg: str) -> None:
    hp = _listen(s, ipv4_for="SPAS needs IPv4.")
    await s.reply(229, "Entering Striped Passive Mode.", " " + format_hostport(hp), "End")


def _set_active(s: Session, targets: list[HostPort]) -> None:
    for t in targets:
        why = data_target_refusal(t, s.peer_host, s.server.third_party)
        if why:
            s.server.refused_targets += 1
            log.warning("%s: refused data target %s: %s", s.peer, t, why)
            raise Reject(504, f"Refused: {why}.")
    s._drop_listener()
    if s.cache_role == "send" and s.active != targets:
        s._drop_cache()
    s.active = targets


def _spor_targets(arg: str) -> list[HostPort]:
    targets = [parse_hostport(p) for p in arg.split()]
    if not 1 <= len(targets) <= 64:
        raise ValueError("needs 1 to 64 host-ports")
    return targets


#: The active-mode commands and how each reads its targets.
_ACTIVE: dict[str, Callable[[str], list[HostPort]]] = {
    "PORT": lambda arg: [parse_hostport(arg)],
    "EPRT": lambda arg: [parse_eprt(arg)],
    "SPOR": _spor_targets,
}


def _active_command(verb: str) -> Handler:
    """Return the handler of PORT, EPRT or SPOR: parse (501), check the bounce rule (504), remember."""
    targets_of = _ACTIVE[verb]

    async def handler(s: Session, arg: str) -> None:
        try:
            targets = targets_of(arg)
        except ValueError as exc:
            raise Reject(501, f"Bad {verb}: {exc}") from None
        _set_active(s, targets)
        await s.reply(200, f"{verb} Command successful.")

    return handler


def _regular_file(s: Session, arg: str) -> tuple[str, os.stat_result]:
    path = s.hpath(arg)
    st = os.stat(path)
    if not statmod.S_ISREG(st.st_mode):
        raise Reject(550, "Not a regular file.")
    return path, st


async def _retr(s: Session, path: str, part: tuple[int, int] | None) -> None:
    rest = s._take_rest()
    fd = s.open_checked(path, os.O_RDONLY)
    f: BinaryIO = os.fdopen(fd, "rb", buffering=0)
    try:
        size = os.fstat(fd).st_size
        if part is not None:
            start = min(part[0], size)
            ranges = [(start, min(size, start + part[1]))]
        elif isinstance(rest, tuple):
            ranges = missing_ranges(size, rest)
        else:
            start = min(rest or 0, size)
            ranges = [(start, size)]
    except BaseException:
        f.close()
        raise
    await s.send_source(dc.Source(f, ranges=ranges), offset_shift=part[0] if part else 0)


async def cmd_retr(s: Session, arg: str) -> None:
    path, _ = _regular_file(s, arg)
    await _retr(s, path, None)


async def cmd_eret(s: Session, arg: str) -> None:
    off, length, p = _args(parse_eret, arg)
    path, _ = _regular_file(s, p)
    await _retr(s, path, (off, length))


def _writable_target(s: Session, arg: str) -> str:
    path = s.hpath(arg)
    if os.path.isdir(path):
        raise Reject(550, "Is a directory.")
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise Reject(550, "No such directory.")
    return path


async def cmd_stor(s: Session, arg: str) -> None:
    path = _writable_target(s, arg)
    s.require_receive_route()
    rest = s._take_rest()
    flags = os.O_WRONLY | os.O_CREAT
    if rest is None:
        flags |= os.O_TRUNC
    fd = s.open_checked(path, flags)
    offset = rest if isinstance(rest, int) and s.mode == "S" else 0
    await s.receive_into(fd, offset)


async def cmd_appe(s: Session, arg: str) -> None:
    path = _writable_target(s, arg)
    s.require_receive_route()
    s._take_rest()
    fd = s.open_checked(path, os.O_WRONLY | os.O_CREAT)
    offset = os.fstat(fd).st_size
    await s.receive_into(fd, offset)


async def cmd_esto(s: Session, arg: str) -> None:
    off, p = _args(parse_esto, arg)
    path = _writable_target(s, p)
    s.require_receive_route()
    s._take_rest()
    fd = s.open_checked(path, os.O_WRONLY | os.O_CREAT)
    await s.receive_into(fd, off)


async def cmd_size(s: Session, arg: str) -> None:
    path = s.hpath(arg)
    st = os.stat(path)
    if statmod.S_ISDIR(st.st_mode):
        raise Reject(550, "Is a directory.")
    await s.reply(213, str(st.st_size))


async def cmd_mdtm(s: Session, arg: str) -> None:
    st = os.stat(s.hpath(arg))
    await s.reply(213, mdtm(st.st_mtime))


async def cmd_mlst(s: Session, arg: str) -> None:
    vp = s.vpath(arg)
    st = os.stat(real_path(s.server.root, vp))
    await s.reply(250, f"status of {vp}", " " + mlst_facts(st, vp), "End.")


def _listing(s: Session, arg: str, fmt: str) -> bytes:
    a = arg.strip()
    while a.startswith("-"):  # ls-style flags (LIST -la) are accepted and ignored
        _, _, a = a.partition(" ")
        a = a.strip()
    path = s.hpath(a)
    st = os.stat(path)
    if statmod.S_ISDIR(st.st_mode):
        entries = sorted(os.listdir(path))
        items = []
        for name in entries:
            with contextlib.suppress(OSError):
                items.append((name, os.lstat(os.path.join(path, name))))
    else:
        items = [(os.path.basename(path), st)]
    year = datetime.datetime.now(tz=datetime.UTC).year
    lines = []
    for name, est in items:
        if fmt == "NLST":
            lines.append(name)
        elif fmt == "MLSD":
            lines.append(mlst_facts(est, name))
        else:
            lines.append(list_line(est, name, now_year=year))
    return "".join(line + "\r\n" for line in lines).encode("utf-8", "surrogateescape")


async def cmd_list(s: Session, arg: str) -> None:
    await s.send_source(dc.Source.of_bytes(_listing(s, arg, "LIST")))


async def cmd_nlst(s: Session, arg: str) -> None:
    await s.send_source(dc.Source.of_bytes(_listing(s, arg, "NLST")))


async def cmd_mlsd(s: Session, arg: str) -> None:
    path = s.hpath(arg)
    if not statmod.S_ISDIR(os.stat(path).st_mode):  # a missing path is 550 (as Globus), a file 501
        raise Reject(501, "Not a directory.")
    await s.send_source(dc.Source.of_bytes(_listing(s, arg, "MLSD")))


@contextlib.contextmanager
def _entry(s: Session, arg: str) -> Iterator[tuple[int, str]]:
    """Open file or directory `arg` (inside the root, no symlink) to change its metadata: (fd, vpath)."""
    vp = s.vpath(arg)
    fd = s.open_checked(real_path(s.server.root, vp), os.O_RDONLY | os.O_NONBLOCK)
    try:
        yield fd, vp
    finally:
        os.close(fd)


async def cmd_site_chmod(s: Session, arg: str) -> None:
    mode, p = _args(parse_chmod, arg)
    with _entry(s, p) as (fd, vp):
        if vp == "/":
            raise Reject(550, "Cannot change the mode of the root.")
        os.fchmod(fd, mode)
    await s.reply(200, "SITE CHMOD command successful.")


async def cmd_mfmt(s: Session, arg: str) -> None:
    mtime, p = _args(parse_mfmt, arg)
    with _entry(s, p) as (fd, vp):
        os.utime(fd, (os.fstat(fd).st_atime, mtime))
    await s.reply(213, f"Modify={mdtm(mtime)}; {vp}")


async def cmd_auth(s: Session, arg: str) -> None:
    mech = sanitize(arg.strip()[:20]) or "(none)"
    raise Reject(
        534,
        f"AUTH {mech} refused: GSI (gsiftp://, X.509) is not supported by this server; "
        "use ftp:// with an anonymous login.",
    )


async def cmd_pwd(s: Session, arg: str) -> None:
    quoted = s.cwd.replace('"', '""')
    await s.reply(257, f'"{quoted}" is current directory.')


async def cmd_cwd(s: Session, arg: str) -> None:
    vp = s.vpath(arg or "/")
    if not os.path.isdir(real_path(s.server.root, vp)):
        raise Reject(550, "No such directory.")
    s.cwd = vp
    await s.reply(250, "CWD command successful.")


async def cmd_cdup(s: Session, arg: str) -> None:
    await cmd_cwd(s, "..")


async def cmd_mkd(s: Session, arg: str) -> None:
    vp = s.vpath(arg)
    os.mkdir(real_path(s.server.root, vp))
    quoted = vp.replace('"', '""')
    await s.reply(257, f'"{quoted}" directory created.')


async def cmd_rmd(s: Session, arg: str) -> None:
    path = s.hpath(arg)
    if path == s.server.root:
        raise Reject(550, "Cannot remove the root.")
    os.rmdir(path)
    await s.reply(250, "RMD command successful.")


async def cmd_dele(s: Session, arg: str) -> None:
    vp = s.vpath(arg)
    # Delete the entry itself (a symlink is removed, never its target), after checking its directory.
    parent = real_path(s.server.root, os.path.dirname(vp))
    target = os.path.join(parent, os.path.basename(vp))
    if os.path.isdir(target) and not os.path.islink(target):
        raise Reject(550, "Is a directory: use RMD.")
    os.unlink(target)
    await s.reply(250, "DELE command successful.")


async def cmd_rnfr(s: Session, arg: str) -> None:
    path = s.hpath(arg)
    if not os.path.lexists(path):
        raise Reject(550, "No such file or directory.")
    s.rnfr = path
    await s.reply(350, "Ready for RNTO.")


async def cmd_rnto(s: Session, arg: str) -> None:
    src, s.rnfr = s.rnfr, None
    if src is None:
        raise Reject(503, "RNFR required first.")
    dst = s.hpath(arg)
    if src == s.server.root:
        raise Reject(550, "Cannot rename the root.")
    os.rename(src, dst)
    await s.reply(250, "RNTO command successful.")


def _checksum(path: str, alg: str, offset: int, length: int) -> str:
    ck = Checksum(alg)
    with open(path, "rb") as f:
        f.seek(offset)
        left = length if length >= 0 else -1
        while left != 0:
            chunk = f.read(1 << 20 if left < 0 else min(1 << 20, left))
            if not chunk:
                break
            ck.update(chunk)
            if left > 0:
                left -= len(chunk)
    return ck.hexdigest()


async def cmd_cksm(s: Session, arg: str) -> None:
    req = _args(parse_cksm, arg)
    path, st = _regular_file(s, req.path)
    if req.offset > st.st_size:
        raise Reject(501, "Offset beyond the end of the file.")
    value = await asyncio.to_thread(_checksum, path, req.algorithm, req.offset, req.length)
    await s.reply(213, value)


async def cmd_abor(s: Session, arg: str) -> None:
    await s.reply(226, "Abort successful.")


async def cmd_stat(s: Session, arg: str) -> None:
    if arg.strip():
        vp = s.vpath(arg)
        st = os.stat(real_path(s.server.root, vp))
        await s.reply(213, f"status of {vp}", " " + mlst_facts(st, vp), "End.")
        return
    await s.reply(211, f"{s.cfg.banner_name} GridFTP server status: user {s.user}, mode {s.mode}.")


COMMANDS: dict[str, _Spec] = {
    "USER": _Spec(cmd_user, login=False),
    "PASS": _Spec(cmd_pass, login=False),
    "QUIT": _Spec(cmd_quit, login=False),
    "NOOP": _Spec(cmd_noop, login=False),
    "SYST": _Spec(cmd_syst, login=False),
    "FEAT": _Spec(cmd_feat, login=False),
    "HELP": _Spec(cmd_help, login=False),
    "SITE HELP": _Spec(cmd_site_help, login=False),
    "SITE CLIENTINFO": _Spec(cmd_site_clientinfo),
    "SITE RETRBUFSIZE": _Spec(cmd_site_bufsize),
    "SITE STORBUFSIZE": _Spec(cmd_site_bufsize),
    "SITE BUFSIZE": _Spec(cmd_site_bufsize),
    "TYPE": _Spec(cmd_type),
    "STRU": _Spec(cmd_stru),
    "MODE": _Spec(cmd_mode),
    "OPTS": _Spec(cmd_opts),
    "ALLO": _Spec(cmd_allo),
    "REST": _Spec(cmd_rest),
    "SBUF": _Spec(cmd_sbuf),
    "DCAU": _Spec(cmd_dcau),
    "PBSZ": _Spec(cmd_pbsz),
    "PROT": _Spec(cmd_prot),
    "PASV": _Spec(cmd_pasv),
    "EPSV": _Spec(cmd_epsv),
    "SPAS": _Spec(cmd_spas),
    "PORT": _Spec(_active_command("PORT")),
    "EPRT": _Spec(_active_command("EPRT")),
    "SPOR": _Spec(_active_command("SPOR")),
    "RETR": _Spec(cmd_retr),
    "ERET": _Spec(cmd_eret),
    "STOR": _Spec(cmd_stor),
    "APPE": _Spec(cmd_appe),
    "ESTO": _Spec(cmd_esto),
    "SIZE": _Spec(cmd_size),
    "MDTM": _Spec(cmd_mdtm),
    "MFMT": _Spec(cmd_mfmt),
    "SITE CHMOD": _Spec(cmd_site_chmod),
    "AUTH": _Spec(cmd_auth, login=False),
    "MLST": _Spec(cmd_mlst),
    "MLSD": _Spec(cmd_mlsd),
    "LIST": _Spec(cmd_list),
    "NLST": _Spec(cmd_nlst),
    "PWD": _Spec(cmd_pwd),
    "CWD": _Spec(cmd_cwd),
    "CDUP": _Spec(cmd_cdup),
    "MKD": _Spec(cmd_mkd),
    "RMD": _Spec(cmd_rmd),
    "DELE": _Spec(cmd_dele),
    "RNFR": _Spec(cmd_rnfr),
    "RNTO": _Spec(cmd_rnto),
    "CKSM": _Spec(cmd_cksm),
    "ABOR": _Spec(cmd_abor),
    "STAT": _Spec(cmd_stat),
}
