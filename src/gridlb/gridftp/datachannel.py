"""Data-channel I/O shared by server and client: listeners, connects, stream mode and MODE E transfers.

Sockets are plain non-blocking sockets driven with the event loop's ``sock_*`` calls: stream-mode and
MODE E payloads leave through ``sendfile`` (``send`` from a file mapping to a loopback peer). Stream
mode arrives by ``splice`` (socket -> pipe -> file); MODE E with ``recv_into`` into one large buffer per
connection, written with ``pwrite`` at the block's offset (no per-chunk copies or coroutines).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import ipaddress
import logging
import mmap
import os
import random
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from gridlb.gridftp import modee
from gridlb.gridftp.protocol import HostPort

log = logging.getLogger(__name__)

#: User-space receive buffer per data connection.
RECV_BUFFER_BYTES = 1 << 20


class DataChannelError(Exception):
    """A data connection could not be made or broke during a transfer (reply 425/426)."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


def tune(sock: socket.socket, buffer_bytes: int | None = None) -> None:
    """Make `sock` a non-blocking data socket: TCP_NODELAY, and SO_SNDBUF/SO_RCVBUF when asked (SBUF)."""
    sock.setblocking(False)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if buffer_bytes:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer_bytes)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_bytes)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET


def open_listener(
    host: str, port_range: tuple[int, int] | None = None, *, backlog: int = 64
) -> socket.socket:
    """Return a non-blocking listening socket on `host`, on a free port of `port_range` (any if None)."""
    fam = _family(host)
    if port_range is None:
        candidates: list[int] = [0]
    else:
        lo, hi = port_range
        candidates = list(range(lo, hi + 1))
        start = random.randrange(len(candidates))
        candidates = candidates[start:] + candidates[:start]
    last: OSError | None = None
    for port in candidates:
        sock = socket.socket(fam, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(backlog)
            sock.setblocking(False)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
            if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                break
    raise DataChannelError(425, f"Cannot open a passive data port on {host}: {last}")


async def connect(
    target: HostPort,
    *,
    source_host: str | None = None,
    timeout_s: float = 30.0,
    buffer_bytes: int | None = None,
) -> socket.socket:
    """Connect a data socket to `target` (from `source_host` when given and routable); 425 on failure."""
    loop = asyncio.get_running_loop()
    fam = _family(target.host)
    sock = socket.socket(fam, socket.SOCK_STREAM)
    try:
        tune(sock, buffer_bytes)
        if source_host and _family(source_host) == fam:
            src_lo = ipaddress.ip_address(source_host).is_loopback
            if src_lo == ipaddress.ip_address(target.host).is_loopback:
                sock.bind((source_host, 0))
        await asyncio.wait_for(loop.sock_connect(sock, (target.host, target.port)), timeout_s)
    except (OSError, TimeoutError) as exc:
        sock.close()
        raise DataChannelError(425, f"Cannot open data connection to {target}: {exc or 'timeout'}") from None
    return sock


async def accept(
    listener: socket.socket, *, timeout_s: float, buffer_bytes: int | None = None
) -> socket.socket:
    """Accept one data connection on `listener` within `timeout_s`; 425 on timeout."""
    loop = asyncio.get_running_loop()
    try:
        sock, _ = await asyncio.wait_for(loop.sock_accept(listener), timeout_s)
    except TimeoutError:
        raise DataChannelError(425, "Timed out waiting for the data connection.") from None
    except OSError as exc:
        raise DataChannelError(425, f"Cannot accept data connection: {exc}") from None
    tune(sock, buffer_bytes)
    return sock


def close_all(socks: list[socket.socket]) -> None:
    """Close every socket in `socks` (errors ignored)."""
    for s in socks:
        with contextlib.suppress(OSError):
            s.close()


@dataclass
class Source:
    """What a sender sends: byte ranges of an open file, or an in-memory payload (listings)."""

    file: BinaryIO | None = None
    data: bytes = b""
    ranges: list[tuple[int, int]] = field(default_factory=list)

    @classmethod
    def of_bytes(cls, data: bytes) -> Source:
        """Return a source sending `data` whole."""
        return cls(None, data, [(0, len(data))])

    @property
    def total(self) -> int:
        """Return the number of payload bytes to send."""
        return sum(b - a for a, b in self.ranges)


#: A send that makes no progress for this long fails (the receiver stopped reading).
SEND_IDLE_TIMEOUT_S = 60.0
#: Stream-mode payloads go out in sendfile calls of at most this many bytes (each under the idle timeout).
SEND_CHUNK_BYTES = 8 << 20


#: Bytes read per pread on the copying path (files that cannot be mapped; see `_send_mapped`).
COPY_CHUNK_BYTES = 1 << 20
#: Loopback payloads are sent from read-only file mappings of at most this many bytes.
MAP_WINDOW_BYTES = 8 << 20


def loopback_peer(sock: socket.socket) -> bool:
    """Return True when `sock` is an IP socket whose peer is on this host (loopback), else False.

    sendfile is zero-copy on a NIC. To a loopback peer nothing is saved: the receiver copies out of
    page-cache fragments instead, which cost globus-url-copy about 3x the system time of a plain send
    (measured on loopback, 192 MiB). Such peers get `send` from a file mapping instead (`_send_mapped`).
    """
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        peer = sock.getpeername()[0]
        return ipaddress.ip_address(peer.split("%", 1)[0]).is_loopback
    except (OSError, ValueError):
        return False


#: Send buffer of a data connection to a loopback peer when the peer asked for none (SBUF); the kernel
#: doubles it. See `prepare_sender`.
LOOPBACK_SEND_BUFFER_BYTES = 512 << 10


def prepare_sender(sock: socket.socket, buffer_bytes: int | None = None) -> bool:
    """Ready `sock` to send file payloads; return True when its peer is on this host (`loopback_peer`).

    A loopback peer without SBUF (`buffer_bytes`) gets a fixed send buffer. Autotuning otherwise grows
    the queues of a loopback connection to megabytes, and the receiver, on this host, copies data that
    has left the caches: globus-url-copy spent 1.3-1.8x the CPU per byte for it (downloads of
    384 MiB with 1 and 4 streams, loaded 2-core machine), and downloads ran slower.
    """
    loopback = loopback_peer(sock)
    if loopback and not buffer_bytes:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, LOOPBACK_SEND_BUFFER_BYTES)
    return loopback


def _short_read(pos: int, end: int) -> DataChannelError:
    return DataChannelError(426, f"short read at {pos} of {end} bytes (file changed?)")


async def _send_copied(sock: socket.socket, fd: int, offset: int, count: int, idle_timeout_s: float) -> None:
    """Send `count` bytes of `fd` from `offset` with pread + send through one buffer."""
    buf = memoryview(bytearray(min(COPY_CHUNK_BYTES, count)))
    end = offset + count
    pos = offset
    while pos < end:
        n = os.preadv(fd, [buf[: min(len(buf), end - pos)]], pos)
        if n <= 0:
            raise _short_read(pos, end)
        chunk = buf[:n]
        try:
            done = sock.send(chunk)
        except (BlockingIOError, InterruptedError):
            done = 0
        if done < n:
            await _sendall(sock, chunk[done:], idle_timeout_s)
        pos += n


async def _send_mapped(sock: socket.socket, fd: int, offset: int, count: int, idle_timeout_s: float) -> None:
    """Send `count` bytes of `fd` from `offset` by `send` from read-only mappings of the file.

    One copy (page cache to socket) where pread + send makes two: the mapping is populated up front
    (MAP_POPULATE) and only the kernel reads it, so a file cut short under the sender fails the send
    with EFAULT (426), never a SIGBUS. The size is checked before each window so that the tail of a
    truncated file's last page is not sent as zeros. A file that cannot be mapped is copied instead.
    """
    end = offset + count
    pos = offset
    while pos < end:
        size = os.fstat(fd).st_size
        if size <= pos:
            raise _short_read(pos, end)
        n = min(MAP_WINDOW_BYTES, end - pos, size - pos)
        base = pos - pos % mmap.ALLOCATIONGRANULARITY
        try:
            mapping = mmap.mmap(
                fd,
                pos + n - base,
                flags=mmap.MAP_SHARED | mmap.MAP_POPULATE,
                prot=mmap.PROT_READ,
                offset=base,
            )
        except (OSError, ValueError):  # not mappable (e.g. a special file): pread + send
            await _send_copied(sock, fd, pos, end - pos, idle_timeout_s)
            return
        view = memoryview(mapping)[pos - base : pos - base + n]
        try:
            try:
                done = sock.send(view)
            except (BlockingIOError, InterruptedError):
                done = 0
            if done < n:
                await _sendall(sock, view[done:], idle_timeout_s)
        except OSError as exc:
            if exc.errno == errno.EFAULT:
                raise _short_read(pos, end) from None
            raise
        finally:
            view.release()
            with contextlib.suppress(BufferError):  # a cancelled send still holds a view: GC unmaps
                mapping.close()
        pos += n


async def _send_payload(
    sock: socket.socket,
    src: Source,
    offset: int,
    count: int,
    idle_timeout_s: float = SEND_IDLE_TIMEOUT_S,
    loopback: bool = False,
) -> None:
    """Send `count` payload bytes of `src` from `offset`: sendfile, or from a mapping to `loopback`."""
    if loopback and src.file is not None:
        await _send_mapped(sock, src.file.fileno(), offset, count, idle_timeout_s)
        return
    loop = asyncio.get_running_loop()
    end = offset + count
    pos = offset
    while pos < end:
        n = min(SEND_CHUNK_BYTES, end - pos)
        try:
            if src.file is None:
                await asyncio.wait_for(
                    loop.sock_sendall(sock, memoryview(src.data)[pos : pos + n]), idle_timeout_s
                )
                sent = n
            else:
                sent = await asyncio.wait_for(
                    loop.sock_sendfile(sock, src.file, pos, n, fallback=True), idle_timeout_s
                )
        except TimeoutError:
            raise DataChannelError(426, "Data connection stalled: the receiver stopped reading.") from None
        if sent != n:
            raise DataChannelError(426, f"short send: {sent} of {n} bytes (file changed?)")
        pos += n


async def _sendall(sock: socket.socket, data: bytes | memoryview, idle_timeout_s: float) -> None:
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_sendall(sock, data), idle_timeout_s)
    except TimeoutError:
        raise DataChannelError(426, "Data connection stalled: the receiver stopped reading.") from None


async def _send_header(sock: socket.socket, header: bytes, idle_timeout_s: float) -> None:
    """Send a block header, corked with the payload that follows (MSG_MORE) when it goes out at once."""
    try:
        n = sock.send(header, socket.MSG_MORE)
    except (BlockingIOError, InterruptedError):
        n = 0
    if n < len(header):
        await _sendall(sock, header[n:], idle_timeout_s)


# --------------------------------------------------------------------------------------------------
# Stream mode


async def send_stream(
    sock: socket.socket,
    src: Source,
    *,
    idle_timeout_s: float = SEND_IDLE_TIMEOUT_S,
    buffer_bytes: int | None = None,
) -> int:
    """Send `src` over one stream-mode connection (the caller closes it to mark EOF); return bytes sent.

    `buffer_bytes` is the socket buffer size the peer asked for (SBUF), already set by `tune`.
    """
    total = 0
    loopback = prepare_sender(sock, buffer_bytes)
    try:
        for a, b in src.ranges:
            await _send_payload(sock, src, a, b - a, idle_timeout_s, loopback)
            total += b - a
    except OSError as exc:
        raise DataChannelError(426, f"Data connection broke: {exc}") from None
    return total


async def recv_stream(sock: socket.socket, fd: int, offset: int, *, idle_timeout_s: float) -> int:
    """Receive a stream-mode transfer until the peer closes; write it at `offset` on; return bytes.

    The bytes go socket -> pipe -> file with splice (one copy, into the page cache), or, where the
    kernel cannot splice this socket or file, recv_into one buffer + pwrite (two copies).
    """
    spliced = await _recv_spliced(sock, fd, offset, idle_timeout_s)
    if spliced is not None:
        return spliced
    return await _recv_copied(sock, fd, offset, idle_timeout_s)


async def _recv_copied(sock: socket.socket, fd: int, offset: int, idle_timeout_s: float) -> int:
    """Receive until the peer closes with recv_into one buffer + pwrite at `offset` on; return bytes."""
    loop = asyncio.get_running_loop()
    buf = bytearray(RECV_BUFFER_BYTES)
    view = memoryview(buf)
    total = 0
    while True:
        try:
            n = await asyncio.wait_for(loop.sock_recv_into(sock, view), idle_timeout_s)
        except TimeoutError:
            raise DataChannelError(426, "Data connection idle too long.") from None
        except OSError as exc:
            raise DataChannelError(426, f"Data connection broke: {exc}") from None
        if n == 0:
            return total
        _pwrite_all(fd, view[:n], offset + total)
        total += n


#: Pipe capacity asked for on the splice path (the kernel's default pipe-max-size).
SPLICE_PIPE_BYTES = 1 << 20


async def _wait_readable(sock: socket.socket, idle_timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await asyncio.wait_for(ready, idle_timeout_s)
    except TimeoutError:
        raise DataChannelError(426, "Data connection idle too long.") from None
    finally:
        loop.remove_reader(sock.fileno())


async def _recv_spliced(sock: socket.socket, fd: int, offset: int, idle_timeout_s: float) -> int | None:
    """Splice a stream-mode transfer from `sock` into `fd` at `offset`; None when splice does not apply."""
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError):
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, SPLICE_PIPE_BYTES)
        chunk = fcntl.fcntl(w, fcntl.F_GETPIPE_SZ)
        total = 0
        while True:
            try:
                n = os.splice(sock.fileno(), w, chunk, flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK)
            except (BlockingIOError, InterruptedError):
                await _wait_readable(sock, idle_timeout_s)
                continue
            except OSError as exc:
                if total == 0 and exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    return None
                raise DataChannelError(426, f"Data connection broke: {exc}") from None
            if n == 0:
                return total
            while n:  # the pipe holds exactly these n bytes: move them all to the file
                try:
                    m = os.splice(r, fd, n, offset_dst=offset + total, flags=os.SPLICE_F_MOVE)
                except OSError as exc:
                    if total == 0 and exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                        # the file takes no splice: the pipe's bytes, then the rest, go by pwrite
                        while n:
                            data = os.read(r, n)
                            _pwrite_all(fd, memoryview(data), offset + total)
                            n -= len(data)
                            total += len(data)
                        return total + await _recv_copied(sock, fd, offset + total, idle_timeout_s)
                    raise
                n -= m
                total += m
    finally:
        os.close(r)
        os.close(w)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        n = os.pwrite(fd, data, offset)
        data = data[n:]
        offset += n


# --------------------------------------------------------------------------------------------------
# MODE E


async def send_modee(
    socks: list[socket.socket],
    src: Source,
    *,
    block_size: int = modee.DEFAULT_BLOCK_SIZE,
    offset_shift: int = 0,
    idle_timeout_s: float = SEND_IDLE_TIMEOUT_S,
    buffer_bytes: int | None = None,
) -> int:
    """Send `src` in MODE E over every socket in `socks`; return payload bytes sent.

    Blocks are pulled from one shared plan by whichever connection is free, so a slow stream takes
    fewer. Each connection ends with EOD; the last one to finish sends EOF announcing ``len(socks)``.
    Header offsets are the file offsets minus `offset_shift` (ERET sends offsets relative to the part).
    """
    if not socks:
        raise DataChannelError(425, "No data connections.")
    plan: Iterator[tuple[int, int]] = modee.plan_blocks(src.ranges, block_size)
    remaining = len(socks)
    sent = 0

    async def worker(sock: socket.socket) -> None:
        nonlocal remaining, sent
        loopback = prepare_sender(sock, buffer_bytes)
        for off, n in plan:
            await _send_header(sock, modee.encode_header(0, n, off - offset_shift), idle_timeout_s)
            await _send_payload(sock, src, off, n, idle_timeout_s, loopback)
            sent += n
        remaining -= 1
        last = modee.eof_block(len(socks)) if remaining == 0 else modee.eod_block()
        await _sendall(sock, last, idle_timeout_s)

    tasks = [asyncio.ensure_future(worker(s)) for s in socks]
    try:
        await asyncio.gather(*tasks)
    except OSError as exc:
        raise DataChannelError(426, f"Data connection broke: {exc}") from None
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return sent


@dataclass
class ModeEResult:
    """The outcome of a MODE E receive: payload bytes written and the connections fit for reuse."""

    bytes: int
    reusable: list[socket.socket]


async def recv_modee(
    socks: list[socket.socket],
    write: Callable[[memoryview, int], None],
    *,
    accept_more: Callable[[], Awaitable[socket.socket]] | None,
    idle_timeout_s: float,
) -> ModeEResult:
    """Receive one MODE E transfer on `socks` plus any connection `accept_more` yields, until EOF + EODs.

    `write(data, offset)` stores each payload piece. Connections that ended with a clean EOD (no CLOSE)
    are returned for reuse; the rest are closed. DataChannelError(426) on a broken stream or idle timeout.
    """
    loop = asyncio.get_running_loop()
    tracker = modee.ReceiveTracker()
    finished = asyncio.Event()
    reusable: list[socket.socket] = []
    owned: list[socket.socket] = list(socks)
    progress = 0
    total = 0
    failure: list[DataChannelError] = []

    def fail(err: DataChannelError) -> None:
        if not failure:
            failure.append(err)
        finished.set()

    decoders: dict[socket.socket, modee.BlockDecoder] = {}

    async def reader(sock: socket.socket) -> None:
        nonlocal progress, total
        dec = modee.BlockDecoder()
        decoders[sock] = dec
        buf = bytearray(RECV_BUFFER_BYTES)
        view = memoryview(buf)
        while True:
            try:
                n = await loop.sock_recv_into(sock, view)
            except OSError as exc:
                fail(DataChannelError(426, f"Data connection broke: {exc}"))
                return
            if n == 0:
                if dec.blocks == 0 and not dec.mid_block:
                    owned.remove(sock)  # an idle cached connection the peer closed: not an error
                    sock.close()
                    return
                fail(DataChannelError(426, "Data connection closed before EOD."))
                return
            progress += 1
            try:
                events = dec.feed(view[:n])
            except modee.ModeEError as exc:
                fail(DataChannelError(426, f"Bad MODE E stream: {exc}"))
                return
            for ev in events:
                if ev.kind is modee.EventKind.DATA:
                    assert ev.data is not None
                    try:
                        write(ev.data, ev.offset)
                    except OSError as exc:
                        fail(DataChannelError(451, f"Write failed: {exc}"))
                        return
                    total += len(ev.data)
                elif ev.kind is modee.EventKind.EOF:
                    try:
                        tracker.on_eof(ev.count)
                    except modee.ModeEError as exc:
                        fail(DataChannelError(426, f"Bad MODE E stream: {exc}"))
                        return
                    if tracker.done:
                        finished.set()
                else:
                    tracker.on_eod()
                    if not ev.close:
                        reusable.append(sock)
                    if tracker.done:
                        finished.set()
                    return

    tasks: set[asyncio.Task[None]] = set()

    def start_reader(sock: socket.socket) -> None:
        t = asyncio.ensure_future(reader(sock))
        tasks.add(t)

    async def acceptor() -> None:
        assert accept_more is not None
        while True:
            try:
                sock = await accept_more()
            except DataChannelError:
                continue
            except OSError as exc:
                fail(DataChannelError(425, f"Cannot accept data connection: {exc}"))
                return
            owned.append(sock)
            start_reader(sock)

    async def watchdog() -> None:
        last = -1
        while True:
            await asyncio.sleep(idle_timeout_s)
            if progress == last:
                fail(DataChannelError(426, "Data connections idle too long."))
                return
            last = progress

    for s in socks:
        start_reader(s)
    helpers = [asyncio.ensure_future(watchdog())]
    if accept_more is not None:
        helpers.append(asyncio.ensure_future(acceptor()))
    try:
        await finished.wait()
    finally:
        for t in [*helpers, *tasks]:
            t.cancel()
        await asyncio.gather(*helpers, *tasks, return_exceptions=True)
    if failure:
        close_all(owned)
        raise failure[0]
    # Reusable: ended with a clean EOD, or a cached connection the sender did not use this time.
    keep = [
        s
        for s in owned
        if s in reusable or (s in decoders and decoders[s].blocks == 0 and not decoders[s].mid_block)
    ]
    close_all([s for s in owned if s not in keep])
    return ModeEResult(total, keep)
