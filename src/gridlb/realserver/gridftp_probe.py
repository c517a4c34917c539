"""Asks the local GridFTP server which data address it advertises when a client dials the VIP.

A DR real server receives control connections addressed to the VIP, and its PASV (IPv4) or EPSV
(IPv6) reply must name its own address: a server advertising the VIP sends data connections to the
director, one advertising a loopback address (Globus without `-data-interface`, when the hostname
resolves to 127.0.0.1) sends them nowhere, and an EPSV reply without an address (Globus without
`-epsv-ip`) makes RFC 2428 clients connect to the VIP. The probe logs in anonymously over the VIP,
which is local (on `lo`), so nothing leaves the host.
"""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass
from ipaddress import ip_address

from gridlb.gridftp.protocol import Reply, ReplyParser, parse_epsv_reply, parse_pasv_reply
from gridlb.health.gridftp import CLIENTINFO, data_address_fault
from gridlb.realserver.plan import IPAddress


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What the server advertised and, when it is wrong, why."""

    vip: IPAddress
    port: int
    advertised: IPAddress | None
    problem: str

    def __str__(self) -> str:
        where = f"GridFTP on {_hostport(self.vip, self.port)}"
        if self.problem:
            return f"wrong: {where}: {self.problem}"
        return f"ok: {where} advertises {self.advertised} for data connections"


def _hostport(addr: IPAddress, port: int) -> str:
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


class _Conversation:
    def __init__(self, sock: socket.socket, deadline: float, peer: str) -> None:
        self.sock = sock
        self.deadline = deadline
        self.reader = ReplyParser()
        self.pending: list[Reply] = []

    def reply(self) -> Reply:
        while not self.pending:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionError("the server closed the connection")
            self.pending += self.reader.feed(data)
        return self.pending.pop(0)

    def command(self, line: str) -> Reply:
        self.sock.sendall(line.encode() + b"\r\n")
        return self.reply()


def probe(vip: IPAddress, port: int, *, timeout_s: float = 5.0) -> ProbeResult:
    """Log in at VIP:port and ask for a passive data address; report what is wrong with it."""
    deadline = time.monotonic() + timeout_s
    fam = socket.AF_INET6 if vip.version == 6 else socket.AF_INET
    try:
        with socket.socket(fam, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect((str(vip), port))
            talk = _Conversation(sock, deadline, _hostport(vip, port))
            banner = talk.reply()
            if banner.code != 220:
                return ProbeResult(vip, port, None, f"banner {banner}")
            reply = talk.command("USER anonymous")
            if reply.code == 331:
                reply = talk.command("PASS gridlb@")
            if reply.code not in (230, 202):
                return ProbeResult(vip, port, None, f"anonymous login refused: {reply}")
            advertised: IPAddress | None
            if vip.version == 6:
                talk.command(CLIENTINFO)  # as Globus clients do: gridlb's server names its address to them
                reply = talk.command("EPSV")
                if reply.code != 229:
                    return ProbeResult(vip, port, None, f"EPSV refused: {reply}")
                host = parse_epsv_reply(reply).host
                advertised = ip_address(host) if host else None
                if advertised is None:
                    return ProbeResult(
                        vip,
                        port,
                        None,
                        "EPSV reply carries no address, so clients open data connections to the VIP; "
                        "run Globus with -epsv-ip and -data-interface set to this server's own address",
                    )
            else:
                reply = talk.command("PASV")
                if reply.code != 227:
                    return ProbeResult(vip, port, None, f"PASV refused: {reply}")
                advertised = ip_address(parse_pasv_reply(reply).host)
            with contextlib.suppress(OSError):
                sock.sendall(b"QUIT\r\n")
    except TimeoutError:
        return ProbeResult(vip, port, None, f"no answer within {timeout_s:g} s")
    except (OSError, ConnectionError) as exc:
        return ProbeResult(vip, port, None, f"cannot talk to it: {exc.strerror or exc}")
    except ValueError as exc:
        return ProbeResult(vip, port, None, f"malformed reply: {exc}")
    fault = data_address_fault(advertised, local=vip, vips=[vip])
    return ProbeResult(vip, port, advertised, fault)
