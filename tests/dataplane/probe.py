"""The hostile probe of the proxy relay: resets at every phase of a session, then clean ones byte for byte.

Used by `tests/dataplane/test_relay_stress.py` (small, in CI) and runnable at full size against a
director on loopback over real `gridlb gridftp-server` processes:

    .venv/bin/python -m tests.dataplane.probe --rounds 10 --poison 700 --clean 700 --guc 50

A reset is a close with SO_LINGER 0 (the kernel sends RST). The phases:

* `banner`: reset right after connect, before the server's banner can have been relayed;
* `command`: half a command line sent, then reset;
* `reply`: `USER anonymous`, `HELP`, `FEAT`, `HELP` sent at once and reset while the replies come;
* `bulk`: a small receive buffer, a few hundred HELPs pipelined, a few bytes read, reset while the
  relay's pipe towards this client is full (mid-transfer on the control connection);
* `data`: log in, PASV, RETR a file from the real server's data address, reset both connections
  in the middle of the data transfer;
* `server`: `QUIT` followed by a stream of bytes: the server closes with unread data and resets
  the relay's backend connection while client bytes are still on their way to it.

A clean session reads the banner, sends QUIT and reads to EOF; what it received must be exactly one
real server's banner and `221 Goodbye.`, nothing more and nothing less.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import random
import re
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gridlb import __version__

T = TypeVar("T")
LINGER_RST = struct.pack("ii", 1, 0)
SESSION_TIMEOUT_S = 20.0


class Phase(enum.Enum):
    """Where in a session the probe resets the connection."""

    BANNER = "banner"
    COMMAND = "command"
    REPLY = "reply"
    BULK = "bulk"
    DATA = "data"
    SERVER = "server"


def banner(addr: str) -> bytes:
    """Return the exact banner line of the `gridlb gridftp-server` advertising `addr`."""
    return f"220 {addr} gridlb GridFTP Server {__version__} ready.\r\n".encode()


def expected_clean(addrs: Iterable[str]) -> set[bytes]:
    """Return every byte string a clean session may receive (one per real server)."""
    return {banner(a) + b"221 Goodbye.\r\n" for a in addrs}


def foreign_bytes(got: bytes, addrs: Iterable[str]) -> bool:
    """Return True when `got` holds a byte that is not a prefix of what its session should receive.

    A session that ended early (EOF, a timeout, an error) received a prefix: wrong, not foreign.
    """
    body = got.split(b"<", 1)[0] if got.endswith(b">") else got
    return not any(want.startswith(body) for want in expected_clean(addrs))


def _socket(host: str) -> socket.socket:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    return s


def _reset(*socks: socket.socket | None) -> None:
    for s in socks:
        if s is None:
            continue
        with contextlib.suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
        s.close()


async def _read_until(s: socket.socket, buf: bytearray, marker: bytes, limit: int = 1 << 16) -> None:
    loop = asyncio.get_running_loop()
    while marker not in buf:
        chunk = await loop.sock_recv(s, 4096)
        if not chunk or len(buf) > limit:
            raise ConnectionError(f"no {marker!r} in {bytes(buf[:200])!r}")
        buf += chunk


async def _reply(s: socket.socket, buf: bytearray, code: bytes) -> bytes:
    """Read up to the final line of a reply with `code` (single or multi-line); return that line."""
    pat = re.compile(rb"(?m)^" + code + rb" [^\r\n]*\r\n")
    loop = asyncio.get_running_loop()
    while True:
        m = pat.search(buf)
        if m:
            line = bytes(m.group(0))
            del buf[: m.end()]
            return line
        chunk = await loop.sock_recv(s, 4096)
        if not chunk:
            raise ConnectionError(f"EOF waiting for {code!r}: {bytes(buf[:200])!r}")
        buf += chunk


async def poison(
    host: str, port: int, phase: Phase, rng: random.Random, file_name: str = "file.bin"
) -> Phase | None:
    """Run one session of `phase` and reset it; return `phase` if the reset came where it was meant to.

    Errors of the peer are expected and ignored (the session then returns None).
    """
    loop = asyncio.get_running_loop()
    s = _socket(host)
    data: socket.socket | None = None
    try:
        if phase is Phase.BULK:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await loop.sock_connect(s, (host, port))
        if phase is Phase.BANNER:
            return phase
        if phase is Phase.COMMAND:
            await loop.sock_sendall(s, b"USER anony")
            if rng.random() < 0.5:
                await asyncio.sleep(0)
        elif phase is Phase.REPLY:
            await loop.sock_sendall(s, b"USER anonymous\r\nHELP\r\nFEAT\r\nHELP\r\n")
            if rng.random() < 0.5:
                await loop.sock_recv(s, rng.randint(1, 200))
        elif phase is Phase.BULK:
            await loop.sock_sendall(s, b"HELP\r\n" * 400)
            if not await loop.sock_recv(s, rng.randint(1, 2000)):
                return None
            await asyncio.sleep(rng.random() * 0.01)
        elif phase is Phase.SERVER:
            await loop.sock_sendall(s, b"QUIT\r\n")
            junk = b"NOOP " + b"x" * 4000 + b"\r\n"
            for _ in range(rng.randint(1, 40)):
                await loop.sock_sendall(s, junk)
        elif phase is Phase.DATA:
            buf = bytearray()
            await _reply(s, buf, b"220")
            await loop.sock_sendall(s, b"USER anonymous\r\nPASS probe@\r\nTYPE I\r\nPASV\r\n")
            await _reply(s, buf, b"230")
            line = await _reply(s, buf, b"227")
            m = re.search(rb"(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)", line)
            assert m is not None, line
            nums = [int(x) for x in m.groups()]
            data = _socket(host)
            await loop.sock_connect(data, (".".join(map(str, nums[:4])), nums[4] * 256 + nums[5]))
            await loop.sock_sendall(s, f"RETR {file_name}\r\n".encode())
            if not await loop.sock_recv(data, rng.randint(1, 65536)):
                return None
            if rng.random() < 0.5:
                await loop.sock_recv(s, 100)
        return phase
    except (OSError, AssertionError):
        return None
    finally:
        _reset(s, data)


async def clean(host: str, port: int) -> bytes:
    """Run one clean session (read the banner, QUIT, read to EOF) and return every byte received."""
    loop = asyncio.get_running_loop()
    s = _socket(host)
    got = bytearray()
    try:
        await loop.sock_connect(s, (host, port))
        await _read_until(s, got, b"\r\n")
        await loop.sock_sendall(s, b"QUIT\r\n")
        while chunk := await loop.sock_recv(s, 4096):
            got += chunk
            if len(got) > 1 << 16:
                break
    except OSError as exc:
        got += f"<{type(exc).__name__}: {exc}>".encode()
    finally:
        s.close()
    return bytes(got)


async def bounded(coros: list[Coroutine[Any, Any, T]], concurrency: int) -> list[T | None]:
    """Run `coros` with at most `concurrency` at a time, each under SESSION_TIMEOUT_S (None: timed out)."""
    sem = asyncio.Semaphore(concurrency)

    async def one(c: Coroutine[Any, Any, T]) -> T | None:
        async with sem:
            try:
                return await asyncio.wait_for(c, SESSION_TIMEOUT_S)
            except TimeoutError:
                return None

    return await asyncio.gather(*(one(c) for c in coros))


@dataclass
class RoundResult:
    """What one round of poisoning and clean sessions found."""

    poisoned: int
    clean: int
    corrupted: list[bytes] = field(default_factory=list)
    reached: dict[Phase, int] = field(default_factory=dict)  # sessions reset where they were meant to


async def run_round(
    host: str,
    port: int,
    addrs: list[str],
    *,
    poison_n: int,
    clean_n: int,
    phases: list[Phase],
    seed: int,
    concurrency: int = 64,
) -> RoundResult:
    """Poison `poison_n` sessions (phases in turn), then run `clean_n` clean ones and check them."""
    rng = random.Random(seed)
    done = await bounded(
        [poison(host, port, phases[i % len(phases)], rng) for i in range(poison_n)], concurrency
    )
    reached = {p: 0 for p in phases}
    for p in done:
        if isinstance(p, Phase):
            reached[p] += 1
    ok = expected_clean(addrs)
    got = await bounded([clean(host, port) for _ in range(clean_n)], concurrency)
    corrupted = [b"<timeout>" if g is None else g for g in got if g not in ok]
    return RoundResult(poison_n, clean_n, corrupted, reached)


def close_wait(prefix: str) -> list[str]:
    """Return `ss` lines of TCP sockets in CLOSE-WAIT with an end on an address starting with `prefix`."""
    out = subprocess.run(
        ["ss", "-Htn", "state", "close-wait"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    return [line for line in out.splitlines() if prefix in line]


def wait_no_close_wait(prefix: str, timeout_s: float) -> list[str]:
    """Wait up to `timeout_s` for CLOSE-WAIT sockets on `prefix` to go; return those left."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = close_wait(prefix)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    """Full-size run: a director and three real servers on loopback, rounds of poisoning, globus-url-copy."""
    from tests.director.loopback import PORT, Loopback
    from tests.gridftp.helpers import guc
    from tests.support import wait_for

    ap = argparse.ArgumentParser(prog="python -m tests.dataplane.probe", description=main.__doc__)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--poison", type=int, default=700)
    ap.add_argument("--clean", type=int, default=700)
    ap.add_argument("--guc", type=int, default=50, help="globus-url-copy transfers after the rounds")
    ap.add_argument("--phases", default=",".join(p.value for p in Phase))
    ap.add_argument("--net", type=int, default=230, help="use 127.44.NET.x")
    args = ap.parse_args(argv)
    phases = [Phase(p) for p in args.phases.split(",")]
    lb = Loopback(args.net)
    try:
        for i in (2, 3, 4):
            lb.start_server(i)
        lb.write_site([(2, 1), (3, 1), (4, 1)])
        lb.start_director()
        addrs = [lb.addr(i) for i in (2, 3, 4)]
        total_clean = total_bad = 0
        t0 = time.monotonic()
        for r in range(args.rounds):
            res = asyncio.run(
                run_round(
                    lb.vip, PORT, addrs, poison_n=args.poison, clean_n=args.clean, phases=phases, seed=r
                )
            )
            total_clean += res.clean
            total_bad += len(res.corrupted)
            reached = ", ".join(f"{p.value} {n}" for p, n in res.reached.items())
            foreign = sum(1 for g in res.corrupted if foreign_bytes(g, addrs))
            print(
                f"round {r + 1}: {len(res.corrupted)} of {res.clean} clean sessions corrupted, {foreign} of"
                f" them with foreign bytes (resets where meant: {reached})",
                flush=True,
            )
            for g in res.corrupted[:3]:
                print(f"   e.g. {g[:160]!r}")
        print(f"total: {total_bad} of {total_clean} clean sessions corrupted ({time.monotonic() - t0:.0f} s)")
        with contextlib.suppress(AssertionError):
            wait_for(lambda: all(r["active"] == 0 for r in lb.status()["services"][0]["reals"]), 30, "")
        reals = lb.status()["services"][0]["reals"]
        print("ActiveConn per real server:", {r["real"]: r["active"] for r in reals})
        print(
            "passive failures (connects refused or timed out):",
            {r["real"]: r["passive_failures"] for r in reals},
        )
        left = wait_no_close_wait(f"127.44.{args.net}.", 10)
        print(f"CLOSE-WAIT sockets on 127.44.{args.net}.x: {len(left)}")
        for line in left[:5]:
            print("   ", line)
        guc_ok = 0
        expected = (lb.root / "file.bin").read_bytes()
        for i in range(args.guc):
            out = lb.dir / f"guc-{i}.bin"
            proc = guc(f"ftp://{lb.vip}:{PORT}/file.bin", f"file://{out}", timeout_s=30)
            if proc.returncode == 0 and out.read_bytes() == expected:
                guc_ok += 1
            elif i - guc_ok < 3:
                print(f"   globus-url-copy {i}: rc={proc.returncode} {proc.stderr.strip()[-300:]}")
            out.unlink(missing_ok=True)
        print(f"globus-url-copy: {guc_ok} of {args.guc} succeeded")
        bad = total_bad or any(r["active"] for r in reals) or left or guc_ok != args.guc
        if bad:
            marked = [line for line in lb.log().splitlines() if "marked down" in line]
            print(f"director log: {len(marked)} 'marked down' lines, e.g.:\n" + "\n".join(marked[:5]))
            print("director log (tail):\n" + "\n".join(lb.log().splitlines()[-8:]))
            for r in reals:
                print(f"  {r['real']}: health {r['health']}, passive failure {r['passive_failure']}")
        return 1 if bad else 0
    finally:
        lb.close()


if __name__ == "__main__":
    sys.exit(main())
