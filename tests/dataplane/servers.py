"""Real TCP peers for the proxy tests: a hashing backend, a closed port, free-port and `ss` helpers."""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field

CHUNK = 1 << 16


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port nobody listens on right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def payload(seed: int, size: int) -> bytes:
    """Return `size` reproducible pseudo-random bytes."""
    return random.Random(seed).randbytes(size)


@dataclass
class HashBackend:
    """A real server: greets with `HELLO <name>`, hashes what it receives until EOF, then answers.

    Default order (client speaks, server answers after the client's half-close):
      server -> `HELLO name\\n`; client -> data, SHUT_WR; server -> `<sha256 of data>\\n` + reply bytes.
    With `server_first=True` the server sends the reply bytes right after the greeting, shuts down
    its write side, and records the digest of what it then receives in `digests`.
    """

    name: str
    host: str = "127.0.0.1"
    reply_size: int = 0
    server_first: bool = False
    port: int = 0
    digests: list[str] = field(default_factory=list)
    accepted: int = 0
    open_now: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> HashBackend:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for t in list(self._tasks):
            t.cancel()

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self.accepted += 1
        self.open_now += 1
        try:
            w.write(f"HELLO {self.name}\n".encode())
            reply = payload(len(self.name), self.reply_size)
            if self.server_first:
                w.write(reply)
                await w.drain()
                w.write_eof()
            h = hashlib.sha256()
            while chunk := await r.read(CHUNK):
                h.update(chunk)
            self.digests.append(h.hexdigest())
            if not self.server_first:
                w.write(h.hexdigest().encode() + b"\n")
                for i in range(0, len(reply), CHUNK):
                    w.write(reply[i : i + CHUNK])
                    await w.drain()
                await w.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.open_now -= 1
            w.close()


async def exchange(
    host: str,
    port: int,
    data: bytes,
    *,
    after_hello: Callable[[str], object] | None = None,
    timeout_s: float = 30,
) -> tuple[str, str, bytes]:
    """Connect, read the greeting, send `data`, half-close, read the answer until EOF.

    Returns (backend name, digest line, reply bytes) for the default HashBackend order.
    """

    async def run() -> tuple[str, str, bytes]:
        r, w = await asyncio.open_connection(host, port)
        try:
            hello = (await r.readline()).decode().strip()
            name = hello.removeprefix("HELLO ")
            if after_hello is not None:
                res = after_hello(name)
                if asyncio.iscoroutine(res):
                    await res
            for i in range(0, len(data), CHUNK):
                w.write(data[i : i + CHUNK])
                await w.drain()
            w.write_eof()
            digest = (await r.readline()).decode().strip()
            reply = await r.read()
            return name, digest, reply
        finally:
            w.close()

    return await asyncio.wait_for(run(), timeout_s)


def tcp_info_of(port: int, side: str = "sport") -> list[str]:
    """Return `ss -ti` of every established socket with `side` (sport/dport) `port`: its line and info."""
    out = subprocess.run(
        ["ss", "-Htni", "state", "established", f"( {side} = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return [sock for sock in re.split(r"\n(?=\S)", out.strip()) if sock]


def notsent_of(port: int, side: str = "sport") -> list[int]:
    """Return `notsent` bytes of every established socket with `side` (sport/dport) `port` (0: none)."""
    sizes = []
    for sock in tcp_info_of(port, side):
        m = re.search(r"\bnotsent:(\d+)", sock)
        sizes.append(int(m.group(1)) if m else 0)
    return sizes


def congestion_of(port: int, side: str = "sport") -> list[str]:
    """Return the congestion control of every established socket with `side` (sport/dport) `port`."""
    return [
        m.group(1) for sock in tcp_info_of(port, side) if (m := re.search(r"^\s+(\w+) wscale:", sock, re.M))
    ]
