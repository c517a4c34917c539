"""The `gridftp` checker: classifies a GridFTP server by its banner, a login, a canary and its data address.

Levels (option `level`), cheapest first:

- `banner`: read the greeting within the timeout. `220` is UP; `421` (connection limit) and `422`
  (connections disabled) are REFUSING: alive but refusing work, so the director gives it weight 0 (drain);
  anything else, a malformed reply, a closed connection or a timeout is DOWN. Then `QUIT`.
- `login`: also anonymous `USER`/`PASS` (230) and `NOOP` (200); then the data-address check.
- `canary`: also `CKSM <alg> 0 -1 <canary_path>` (213) or, with `canary_method="retr"`, a small
  `RETR` over a PASV data connection, compared with `canary_checksum` when given.

Data-address check (login and canary, option `data_address_check`, on by default): `SITE CLIENTINFO`
(as Globus clients send it), `EPSV`, then `PASV` (IPv4 targets) after login. A server advertising one
of the `vips` sends its data connections to the director, and one advertising a loopback address to a
client that is not itself on loopback sends them nowhere: both are DOWN with a reason that names the fix
(`-data-interface` / `data_interface`). On loopback a loopback address is legitimate. An EPSV reply
without an address (`(|||port|)`, Globus without `-epsv-ip`) sends EPSV clients to the address they
dialled, the VIP: DOWN when a VIP or the target is IPv6 (every IPv6 client uses EPSV), a note in the
reason when the VIPs are IPv4 only (IPv4 clients use PASV).

A `421` reply at any step is REFUSING (RFC 959: service not available, closing control connection).
Replies, PASV/EPSV endpoints and checksums come from `gridlb.gridftp.protocol` (shared with the server
and the client); the classification rules here are pure functions; `GridftpChecker` is the asyncio adapter.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import ip_address

from gridlb import __version__
from gridlb.config import defaults as D
from gridlb.gridftp.client import ClientError, GridftpClient
from gridlb.gridftp.protocol import (
    MAX_LINE_BYTES,
    Checksum,
    HostPort,
    Reply,
    parse_epsv_reply,
    parse_pasv_reply,
)
from gridlb.health.base import (
    Checker,
    CheckResult,
    ConnectOptions,
    Verdict,
    connect_socket,
    describe_os_error,
    register_checker,
)
from gridlb.table import IPAddress, RealKey, parse_address

CLIENTINFO = f'SITE CLIENTINFO scheme=ftp;appname="gridlb-check";appver="{__version__}";'
_ANY_REPLY_BUT_421 = tuple(code for code in range(200, 600) if code != 421)
LEVELS = ("banner", "login", "canary")
CANARY_METHODS = ("cksm", "retr")
REFUSING_CODES = frozenset({421, 422})


# --------------------------------------------------------------------------- pure: classification


def classify_banner(reply: Reply) -> tuple[Verdict, str]:
    """Classify the greeting: 220 up, 421/422 refusing, anything else down."""
    if reply.code == 220:
        return Verdict.UP, f"banner {reply}"
    if reply.code in REFUSING_CODES:
        return Verdict.REFUSING, f"refusing: {reply}"
    return Verdict.DOWN, f"unexpected banner: {reply}"


def _endpoint(hp: HostPort) -> tuple[IPAddress | None, int]:
    """Return a PASV/EPSV endpoint as (address, or None when the reply named none, port)."""
    return (parse_address(hp.host) if hp.host else None), hp.port


def _is_loopback(addr: IPAddress) -> bool:
    mapped = getattr(addr, "ipv4_mapped", None)
    return bool((mapped or addr).is_loopback)


def data_address_fault(
    advertised: IPAddress, *, local: IPAddress, vips: Iterable[IPAddress] = (), verb: str = "PASV"
) -> str:
    """Return why advertising `advertised` (in the reply to `verb`) to a checker at `local` is wrong, or "".

    Wrong: a VIP (data connections would go to the director), the unspecified address, or a loopback
    address when the client is not on loopback (the client would connect to itself).
    """
    fix = "set -data-interface (data_interface) to the server's own address"
    if advertised in set(vips):
        return f"data-address fault: {verb} advertises {advertised}, a VIP address, to client {local}; {fix}"
    if advertised.is_unspecified:
        return f"data-address fault: {verb} advertises the unspecified address {advertised}; {fix}"
    if _is_loopback(advertised) and not _is_loopback(local):
        return (
            f"data-address fault: {verb} advertises {advertised}, a loopback address, "
            f"to a non-loopback client ({local}); {fix}"
        )
    return ""


EPSV_FIX = "start globus-gridftp-server with -epsv-ip and -data-interface (gridlb gridftp-server: --epsv-ip)"


def epsv_fault(
    epsv: tuple[IPAddress | None, int] | None,
    *,
    local: IPAddress,
    vips: Iterable[IPAddress] = (),
    epsv_clients: bool,
) -> str:
    """Return why the EPSV answer `epsv` (None: EPSV refused) is wrong behind `vips`, or "" when it is fine.

    An EPSV reply with no address sends the client to the address it dialled: behind a VIP, the
    director, where nothing listens for data. That breaks every client that uses EPSV, which all IPv6
    clients do (`epsv_clients`: the target or a VIP is IPv6; those clients also need EPSV at all).
    An address in the reply follows the PASV rules (`data_address_fault`).
    """
    vip_list = sorted(map(str, set(vips)))
    if epsv is None:
        return "data-address fault: EPSV refused, and IPv6 clients need it" if epsv_clients else ""
    addr, _ = epsv
    if addr is None:
        if epsv_clients and vip_list:
            return (
                "data-address fault: EPSV reply carries no address, so EPSV clients (every IPv6 client) "
                f"connect to the VIP {', '.join(vip_list)}, where nothing listens for data; {EPSV_FIX}"
            )
        return ""
    return data_address_fault(addr, local=local, vips=vips, verb="EPSV")


def _epsv_note(epsv: tuple[IPAddress | None, int] | None) -> str:
    if epsv is None:
        return "EPSV refused"
    addr, port = epsv
    if addr is None:
        return f"EPSV port {port} (no address)"
    return f"EPSV [{addr}]:{port}" if addr.version == 6 else f"EPSV {addr}:{port}"


# --------------------------------------------------------------------------- asyncio adapter


class _Outcome(Exception):
    """Ends the dialogue early with a verdict."""

    def __init__(self, verdict: Verdict, reason: str) -> None:
        super().__init__(reason)
        self.verdict = verdict
        self.reason = reason


@dataclass(slots=True)
class _Stage:
    """What the dialogue is waiting for, named in the reason when the timeout strikes."""

    waiting_for: str


class _Session:
    """One control connection (a `GridftpClient`): commands and replies, unexpected ones as outcomes.

    The caller's `asyncio.timeout` bounds the whole dialogue, so replies are read without a limit here.
    """

    def __init__(self, client: GridftpClient) -> None:
        self.client = client

    async def reply(self, what: str) -> Reply:
        try:
            return await self.client.read_reply(timeout_s=None)
        except ClientError as exc:
            raise _Outcome(Verdict.DOWN, f"{exc.detail} (waiting for {what})") from None

    async def send(self, line: str) -> None:
        try:
            await self.client.send(line)
        except ClientError as exc:
            raise _Outcome(Verdict.DOWN, f"{exc.detail} (sending {line.split(' ', 1)[0]})") from None

    async def command(self, line: str, *expected: int, what: str = "") -> Reply:
        await self.send(line)
        verb = what or line.split(" ", 1)[0]
        reply = await self.reply(f"the reply to {verb}")
        while 100 <= reply.code < 200 and all(code >= 200 for code in expected):
            reply = await self.reply(f"the reply to {verb}")  # skip preliminary replies we did not ask for
        if reply.code in expected:
            return reply
        if reply.code == 421:
            raise _Outcome(Verdict.REFUSING, f"refusing: {verb} answered {reply}")
        raise _Outcome(Verdict.DOWN, f"{verb} failed: {reply}")


@register_checker
class GridftpChecker(Checker):
    """GridFTP-aware check: banner, login, canary levels and the PASV/EPSV data-address check."""

    kind = "gridftp"

    def __init__(
        self,
        *,
        level: str = D.GRIDFTP_CHECK_LEVEL,
        user: str = D.GRIDFTP_CHECK_USER,
        password: str = D.GRIDFTP_CHECK_PASSWORD,
        vips: Iterable[str] | str = (),
        data_address_check: bool = D.GRIDFTP_CHECK_DATA_ADDRESS,
        canary_path: str | None = None,
        canary_method: str = "cksm",
        canary_algorithm: str = "ADLER32",
        canary_checksum: str | None = None,
        canary_max_bytes: int = 1 << 20,
        connect_ip: str | None = None,
        connect_port: int | None = None,
        bindto: str | None = None,
        bind_port: int = 0,
        bind_if: str | None = None,
    ) -> None:
        vip_list = [v for v in (vips.replace(",", " ").split() if isinstance(vips, str) else vips) if v]
        super().__init__(
            level=level,
            user=user,
            password=password,
            vips=tuple(vip_list),
            data_address_check=data_address_check,
            canary_path=canary_path,
            canary_method=canary_method,
            canary_algorithm=canary_algorithm,
            canary_checksum=canary_checksum,
            canary_max_bytes=canary_max_bytes,
            connect_ip=connect_ip,
            connect_port=connect_port,
            bindto=bindto,
            bind_port=bind_port,
            bind_if=bind_if,
        )
        if level not in LEVELS:
            raise ValueError(f"level {level!r} is not one of {', '.join(LEVELS)}")
        if canary_method not in CANARY_METHODS:
            raise ValueError(f"canary_method {canary_method!r} is not one of {', '.join(CANARY_METHODS)}")
        if level == "canary" and not canary_path:
            raise ValueError("level canary needs canary_path (a small file on every real server)")
        for text in ("\r", "\n"):
            if any(text in str(v) for v in (user, password, canary_path or "")):
                raise ValueError("user, password and canary_path must not contain line breaks")
        Checksum(canary_algorithm)  # validates the algorithm name
        self.level = level
        self.user = user
        self.password = password
        self.vips = frozenset(ip_address(v) for v in vip_list)
        self.data_address_check = bool(data_address_check)
        self.canary_path = canary_path
        self.canary_method = canary_method
        self.canary_algorithm = canary_algorithm.upper()
        self.canary_checksum = canary_checksum.lower() if canary_checksum else None
        self.canary_max_bytes = int(canary_max_bytes)
        self.conn = ConnectOptions(connect_ip, connect_port, bindto, bind_port, bind_if)

    async def check(self, target: RealKey, *, timeout_s: float) -> CheckResult:
        """Run the configured level against `target` within `timeout_s` (never raises)."""
        dest = self.conn.destination(target)
        start = time.monotonic()
        stage = _Stage("connection")
        sock: socket.socket | None = None
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(timeout_s):
                sock = await self.conn.connect(target, timeout_s)
                reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_LINE_BYTES * 4)
                verdict, reason = await self._dialogue(reader, writer, dest, stage)
        except TimeoutError:
            verdict, reason = Verdict.DOWN, f"no {stage.waiting_for} from {dest} within {timeout_s:g} s"
        except _Outcome as out:
            verdict, reason = out.verdict, out.reason
        except OSError as exc:
            when = "connect" if stage.waiting_for == "connection" else f"waiting for the {stage.waiting_for}"
            verdict, reason = Verdict.DOWN, f"{dest}: {when}: {describe_os_error(exc)}"
        finally:
            if writer is not None:
                writer.transport.abort()
            elif sock is not None:
                sock.close()
        return CheckResult(verdict, reason, time.monotonic() - start)

    async def _dialogue(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        dest: RealKey,
        stage: _Stage,
    ) -> tuple[Verdict, str]:
        session = _Session(GridftpClient(reader, writer, str(dest.addr), dest.port, timeout_s=3600.0))
        stage.waiting_for = "banner"
        verdict, reason = classify_banner(await session.reply("the banner"))
        if verdict is not Verdict.UP or self.level == "banner":
            await self._quit(session)
            return verdict, reason
        notes = ["banner 220"]
        stage.waiting_for = "login reply"
        reply = await session.command(f"USER {self.user}", 331, 230, what="USER")
        if reply.code == 331:
            await session.command(f"PASS {self.password}", 230, 202, what="PASS")
        stage.waiting_for = "NOOP reply"
        await session.command("NOOP", 200)
        notes.append(f"login {self.user} ok")
        pasv: tuple[IPAddress | None, int] | None = None
        retr = self.level == "canary" and self.canary_method == "retr"
        if retr:
            await session.command("TYPE I", 200, what="TYPE")  # before PASV: Globus fixes the type there
        if self.data_address_check or retr:
            local = ip_address(writer.get_extra_info("sockname")[0])
            v6 = dest.addr.version == 6
            epsv_clients = v6 or any(v.version == 6 for v in self.vips)
            # EPSV first: for an IPv4 target the PASV after it opens the listener a RETR canary uses.
            if self.data_address_check or v6:
                # Announce a Globus-style client: gridlb's server names its EPSV address to those only.
                stage.waiting_for = "SITE CLIENTINFO reply"
                await session.command(CLIENTINFO, *_ANY_REPLY_BUT_421, what="SITE CLIENTINFO")
                stage.waiting_for = "EPSV reply"
                epsv = await self._epsv(session, required=not self.data_address_check)
                if self.data_address_check:
                    fault = epsv_fault(epsv, local=local, vips=self.vips, epsv_clients=epsv_clients)
                    if fault:
                        await self._quit(session)
                        return Verdict.DOWN, fault
                    notes.append(_epsv_note(epsv))
                pasv = epsv
            if not v6:
                stage.waiting_for = "PASV reply"
                pasv = await self._pasv(session)
                assert pasv[0] is not None
                notes.append(f"PASV {pasv[0]}:{pasv[1]}")
                if self.data_address_check:
                    fault = data_address_fault(pasv[0], local=local, vips=self.vips)
                    if fault:
                        await self._quit(session)
                        return Verdict.DOWN, fault
        if self.level == "canary":
            assert self.canary_path is not None
            stage.waiting_for = "canary reply"
            if self.canary_method == "cksm":
                got = await self._cksm(session, self.canary_path)
            else:
                assert pasv is not None
                got = await self._retr(session, dest, pasv, self.canary_path, stage)
            if self.canary_checksum is not None and got != self.canary_checksum:
                await self._quit(session)
                expected = self.canary_checksum
                return (
                    Verdict.DOWN,
                    f"canary {self.canary_path}: {self.canary_algorithm} {got}, expected {expected}",
                )
            notes.append(f"canary {self.canary_algorithm} {got}")
        await self._quit(session)
        return Verdict.UP, ", ".join(notes)

    async def _pasv(self, session: _Session) -> tuple[IPAddress | None, int]:
        reply = await session.command("PASV", 227)
        try:
            return _endpoint(parse_pasv_reply(reply))
        except ValueError as exc:
            raise _Outcome(Verdict.DOWN, f"malformed {reply.code} reply: {exc}") from None

    async def _epsv(self, session: _Session, *, required: bool) -> tuple[IPAddress | None, int] | None:
        """Send EPSV; return its (address, port), or None when it is refused and not `required`."""
        if required:
            reply = await session.command("EPSV", 229)
        else:
            reply = await session.command("EPSV", 229, *range(500, 600))
            if reply.code != 229:
                return None
        try:
            return _endpoint(parse_epsv_reply(reply))
        except ValueError as exc:
            raise _Outcome(Verdict.DOWN, f"malformed {reply.code} reply: {exc}") from None

    async def _cksm(self, session: _Session, path: str) -> str:
        reply = await session.command(f"CKSM {self.canary_algorithm} 0 -1 {path}", 213, what="CKSM")
        value = reply.lines[-1].strip().lower()
        if not re.fullmatch(r"[0-9a-f]+", value):
            raise _Outcome(Verdict.DOWN, f"CKSM returned no checksum: {reply}")
        return value

    async def _retr(
        self,
        session: _Session,
        dest: RealKey,
        pasv: tuple[IPAddress | None, int],
        path: str,
        stage: _Stage,
    ) -> str:
        addr = pasv[0] if pasv[0] is not None else dest.addr
        stage.waiting_for = f"data connection to {addr}:{pasv[1]}"
        try:
            data_sock = await connect_socket(
                addr, pasv[1], timeout_s=3600.0, bindto=self.conn.bindto, bind_if=self.conn.bind_if
            )
        except OSError as exc:
            raise _Outcome(
                Verdict.DOWN, f"data connection to {addr}:{pasv[1]}: {describe_os_error(exc)}"
            ) from None
        d_reader, d_writer = await asyncio.open_connection(sock=data_sock)
        try:
            stage.waiting_for = "RETR reply"
            await session.command(f"RETR {path}", 150, 125, what="RETR")
            stage.waiting_for = "canary data"
            ck = Checksum(self.canary_algorithm)
            size = 0
            while chunk := await d_reader.read(65536):
                size += len(chunk)
                if size > self.canary_max_bytes:
                    raise _Outcome(
                        Verdict.DOWN, f"canary {path} is larger than {self.canary_max_bytes} bytes"
                    )
                ck.update(chunk)
        finally:
            d_writer.transport.abort()
        stage.waiting_for = "end of the canary transfer"
        done = await session.reply("the end of RETR")
        if done.code not in (226, 250):
            raise _Outcome(
                Verdict.REFUSING if done.code == 421 else Verdict.DOWN, f"RETR {path} failed: {done}"
            )
        return ck.hexdigest()

    @staticmethod
    async def _quit(session: _Session) -> None:
        try:
            async with asyncio.timeout(0.2):
                await session.send("QUIT")
                await session.reply("the reply to QUIT")
        except (TimeoutError, OSError, _Outcome):
            pass
