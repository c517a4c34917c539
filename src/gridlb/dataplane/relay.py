"""The proxy's fast path: one thread running a select.epoll loop that accepts, connects and relays bytes.

Design (see docs/proxy.md): no asyncio and no coroutine per connection. Edge-triggered epoll with
interest set once per socket; a connection is two directions, each moving bytes with `os.splice`
through a pooled pipe (zero copy) or, where splice is unavailable, `recv_into`/`send` through a
pooled buffer. In splice mode a direction starts with `recv_into`/`send`: it takes a pipe only once
a read fills `SMALL_READ` bytes, so short connections never use one. EOF on one side is passed on
with `shutdown(SHUT_WR)`; a connection closes once both directions have ended. The control side
talks to the engine through `call()`: a command queue drained by the engine thread after an eventfd
wake-up, so every socket, pipe and buffer below is only ever touched by the engine thread.
Scheduling and counters are the pure `ProxyState`; several engines (workers.py) may share one, so
every use of it here holds `lock` (one lock per engine by default). Starting an engine raises the
interpreter's generation-0 collection threshold (`raise_gc_threshold`, process-wide).
"""

from __future__ import annotations

import _socket
import contextlib
import enum
import errno
import fcntl
import gc
import logging
import os
import select
import socket
import termios
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import replace
from ipaddress import ip_address
from pathlib import Path
from typing import Any, Final, TypeVar

from gridlb.dataplane.proxy_state import DestState, ProxyState, ServiceState
from gridlb.sched.base import Flow
from gridlb.table import ConnEntry, IPAddress, Proto, RealKey, ServiceKey, Timeouts

T = TypeVar("T")
log = logging.getLogger(__name__)

EPOLLIN: Final = select.EPOLLIN
EPOLLOUT: Final = select.EPOLLOUT
EPOLLRDHUP: Final = select.EPOLLRDHUP
EPOLLERR: Final = select.EPOLLERR
EPOLLHUP: Final = select.EPOLLHUP
EPOLLET: Final = select.EPOLLET
# Edge-triggered interest, set once per socket: no epoll_ctl(MOD) on the connection path. A socket is
# read until EAGAIN, EOF or a short recv (which empties the queue); OUT is added only after a partial write.
CLIENT_MASK: Final = EPOLLIN | EPOLLRDHUP | EPOLLET
BACKEND_MASK: Final = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET

ACCEPT_BATCH: Final = 64  # connections accepted per listener event (fairness between listeners)
POLL_BATCH: Final = 512
DEFAULT_PIPE_SIZE: Final = 1 << 20
DEFAULT_COPY_SIZE: Final = 1 << 18
#: Splice mode: a direction reads with recv/send through one engine-wide buffer of this size until a
#: read fills it; only then does it take a pipe. A short connection (a banner, a command, a reply)
#: thus never touches a pipe: no splice pair per payload, no FIONREAD check when the pipe goes back.
SMALL_READ: Final = 1 << 14
#: TCP_NOTSENT_LOWAT of relayed sockets: at most this much waits unsent in a socket's send queue
#: before EPOLLOUT stops. Without a cap the relay, far faster than a bulk receiver, fills the queue
#: (up to tcp_wmem[2], 4 MiB) and the kernel sends it as the receiver's ACKs open the window, i.e.
#: inside the receiver's ACK processing, on the receiver's CPU; with it the relay thread sends as the
#: window opens. Set on listening sockets (accepted client sockets inherit it, no per-connection
#: cost) and on a real server's socket when an upload to it first blocks. 0 = the kernel's default.
#: Half a pipe: with 1 MiB, 8 bulk streams left up to 8 MiB unsent that the receiver's ACKs sent on its
#: own CPU (docs/proxy.md, "Short send queues"); lower costs the relay more wake-ups.
DEFAULT_NOTSENT_LOWAT: Final = 1 << 19
ACCEPT_PAUSE_S: Final = 0.1  # back-off after EMFILE/ENFILE/ENOBUFS on accept
#: The interpreter's generation-0 collection threshold while a relay engine runs (CPython's default
#: is 700 container objects allocated and not yet freed). Each connection leaves a few such objects
#: alive for a while (its connection-table entry, kept for the FIN timeout), so at 700 a busy relay
#: runs a young collection every ~100 connections and, through the older generations, now and then a
#: full collection of the whole process. At 10,000 they are 14 times rarer; the relay's CPU per short
#: connection falls by 1.5-2.5 µs (4-6 %) with 64 clients (docs/proxy.md, Architecture), while a young
#: collection stays short (it visits only objects still alive: the connection objects are freed by
#: reference counting as each connection closes).
GC_GEN0_THRESHOLD: Final = 10_000

_SPLICE_FLAGS: Final = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_F_SETPIPE_SZ: Final = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ: Final = getattr(fcntl, "F_GETPIPE_SZ", 1032)
_INET: Final = int(socket.AF_INET)
_INET6: Final = int(socket.AF_INET6)
_STREAM_NB: Final = int(socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
_STREAM_NOWAIT: Final = int(socket.SOCK_STREAM | socket.SOCK_NONBLOCK)  # a socket object that never waits
_SHUT_WR: Final = int(socket.SHUT_WR)
_DONTWAIT: Final = int(socket.MSG_DONTWAIT)
_IPPROTO_TCP: Final = int(socket.IPPROTO_TCP)
_TCP_NOTSENT_LOWAT: Final = getattr(socket, "TCP_NOTSENT_LOWAT", 25)
_TCP_CONGESTION: Final = getattr(socket, "TCP_CONGESTION", 13)


class RelayMode(enum.Enum):
    """How bytes are moved: zero-copy splice, a userspace copy loop, or splice when the kernel allows."""

    AUTO = "auto"
    SPLICE = "splice"
    COPY = "copy"


class ConnState(enum.IntEnum):
    """Life of one proxied connection inside the engine."""

    CONNECTING = 0  # client accepted, connect to the real server in flight (no byte relayed yet)
    OPEN = 1  # relaying
    CLOSED = 2  # sockets closed, counted inactive in ProxyState


_CONNECTING: Final = ConnState.CONNECTING
_OPEN: Final = ConnState.OPEN
_CLOSED: Final = ConnState.CLOSED

FailureCallback = Callable[[ServiceKey, RealKey, str], None]
_close_socket: Final = _socket.socket.close  # also closes `socket.socket` (a subclass)


def splice_available() -> bool:
    """Return True when os.splice can move bytes from a TCP-like socket into a pipe here."""
    splice = getattr(os, "splice", None)
    if splice is None:
        return False
    a, b = socket.socketpair()
    r, w = os.pipe()
    try:
        a.send(b"x")
        return bool(splice(b.fileno(), w, 1, flags=_SPLICE_FLAGS) == 1)
    except OSError:
        return False
    finally:
        for fd in (r, w):
            os.close(fd)
        a.close()
        b.close()


class PipePool:
    """Idle pipes kept for reuse so that no connection pays pipe2 + fcntl on its path.

    A pipe is taken back only when it is empty (checked with FIONREAD, not trusted from the caller's
    accounting): a byte left in a pooled pipe would be sent on the next connection that takes it.
    """

    def __init__(self, size: int, keep: int = 256) -> None:
        self.size = size
        self.keep = keep
        self.idle: list[tuple[int, int, int]] = []
        self.created = 0
        self.discarded = 0  # pipes closed on return because they still held bytes
        self._nread = bytearray(4)  # FIONREAD result, reused

    def get(self) -> tuple[int, int, int]:
        """Return (read fd, write fd, capacity) of an empty pipe."""
        if self.idle:
            return self.idle.pop()
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # Above /proc/sys/fs/pipe-max-size or the user's pipe quota: keep the default size.
        with contextlib.suppress(OSError):
            fcntl.fcntl(w, _F_SETPIPE_SZ, self.size)
        cap = fcntl.fcntl(w, _F_GETPIPE_SZ)
        self.created += 1
        return r, w, cap

    def put(self, r: int, w: int, cap: int) -> None:
        """Take back a pipe: kept for reuse when it is empty and the pool has room, else closed."""
        nread = self._nread
        if len(self.idle) < self.keep:
            try:
                fcntl.ioctl(r, termios.FIONREAD, nread)
            except OSError:
                nread[:] = b"\xff\xff\xff\xff"
            if not any(nread):
                self.idle.append((r, w, cap))
                return
            self.discarded += 1
        os.close(r)
        os.close(w)

    def close(self) -> None:
        """Close every idle pipe."""
        for r, w, _ in self.idle:
            os.close(r)
            os.close(w)
        self.idle.clear()


class _Dir:
    """One direction of a relay: bytes read from `src` are written to `dst`."""

    __slots__ = (
        "buf",
        "cap",
        "dfd",
        "dst",
        "eof",
        "inbound",
        "lowat",
        "mv",
        "off",
        "pend",
        "pr",
        "pw",
        "sfd",
        "shut",
        "src",
    )

    def __init__(self, src: _socket.socket, dst: _socket.socket, inbound: bool, sfd: int, dfd: int) -> None:
        self.src = src
        self.dst = dst
        self.sfd = sfd  # the descriptors of src and dst, known to the caller (no fileno() calls)
        self.dfd = dfd
        self.inbound = inbound  # client -> real server
        self.pr = -1  # pipe read end (splice mode), -1 while none is held
        self.pw = -1
        self.cap = 0
        self.buf: bytearray | None = None  # copy mode
        self.mv: memoryview | None = None
        self.off = 0
        self.pend = 0  # bytes read from src not yet written to dst
        self.eof = False  # src reached EOF
        self.shut = False  # EOF passed on to dst
        self.lowat = False  # TCP_NOTSENT_LOWAT set on dst


class _Conn:
    """One client connection and the real-server connection it is relayed to."""

    __slots__ = (
        "attempt",
        "b",
        "bfd",
        "bmask",
        "c",
        "caddr",
        "cfd",
        "cmask",
        "cnb",
        "dest",
        "down",
        "flow",
        "port",
        "state",
        "svc",
        "tried",
        "up",
    )

    def __init__(
        self, c: _socket.socket, cfd: int, caddr: tuple[Any, ...], svc: ServiceState, flow: Flow, port: int
    ) -> None:
        self.c = c
        self.cfd = cfd
        self.caddr = caddr
        self.svc = svc
        self.flow = flow
        self.b: _socket.socket | None = None
        self.bfd = -1
        self.dest: DestState | None = None
        self.state = _CONNECTING
        self.attempt = 0
        self.tried = 0
        self.cmask = 0
        self.bmask = 0
        self.up: _Dir | None = None
        self.down: _Dir | None = None
        self.port = port  # a GridFTP data connection: this port on the control connection's server
        self.cnb = False  # the client's descriptor is O_NONBLOCK (set when a direction takes a pipe)


class _Listener:
    """The listening socket of one virtual service."""

    __slots__ = ("data_port", "fd", "paused", "sock", "svc")

    def __init__(self, sock: socket.socket, svc: ServiceState, data_port: int = 0) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.svc = svc
        self.paused = False
        self.data_port = data_port  # 0: the service's own port; else one of its GridFTP data ports


class _Waker:
    """The eventfd the control side writes to when it queued a command."""

    __slots__ = ("fd",)

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


def raise_gc_threshold(gen0: int = GC_GEN0_THRESHOLD) -> None:
    """Raise the interpreter's generation-0 GC threshold to `gen0` unless it is higher or 0 (disabled).

    Process-wide, like every `gc` setting: the director's process when the engine runs in it.
    """
    t0, t1, t2 = gc.get_threshold()
    if 0 < t0 < gen0:
        gc.set_threshold(gen0, t1, t2)


def congestion_option(name: str | None) -> bytes:
    """Return `name` as the TCP_CONGESTION value (b"" for None: the system's default).

    Raises ValueError, naming what this host offers, when a TCP socket here cannot take it.
    """
    if not name:
        return b""
    value = name.encode()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.setsockopt(_IPPROTO_TCP, _TCP_CONGESTION, value)
        except OSError as exc:
            try:
                offered = Path("/proc/sys/net/ipv4/tcp_available_congestion_control").read_text().split()
            except OSError:
                offered = []
            raise ValueError(
                f"congestion control {name!r} cannot be set here ({exc.strerror}); "
                f"this host offers: {', '.join(offered) or 'unknown'}"
            ) from None
    return value


def listen_socket(
    key: ServiceKey,
    backlog: int,
    notsent_lowat: int = 0,
    *,
    reuseport: bool = False,
    congestion: bytes = b"",
) -> socket.socket:
    """Return a non-blocking listening socket for `key` (IP_FREEBIND, SO_REUSEADDR, IPV6_V6ONLY).

    A non-zero `notsent_lowat` is set as TCP_NOTSENT_LOWAT and a non-empty `congestion` as
    TCP_CONGESTION, both inherited by accepted sockets; `reuseport` sets SO_REUSEPORT (one socket
    per worker, the kernel spreads connections over them).
    """
    assert key.addr is not None
    family = socket.AF_INET6 if key.addr.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        # Bind an address this host does not hold (yet): a backup director listens on the VIP.
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, getattr(socket, "IPV6_FREEBIND", 78), 1)
        sock.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_FREEBIND", 15), 1)
        if notsent_lowat:
            sock.setsockopt(_IPPROTO_TCP, _TCP_NOTSENT_LOWAT, notsent_lowat)
        if congestion:
            sock.setsockopt(_IPPROTO_TCP, _TCP_CONGESTION, congestion)
        sock.bind((str(key.addr), key.port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


class RelayEngine:
    """The relay thread: owns the epoll set, every socket and pipe; uses `state` under `lock`.

    Alone (the default) it makes its own `ProxyState`; a `WorkerPool` hands every engine the same
    state and lock, and `reuseport=True` so that each engine has its own listening socket per service.
    """

    def __init__(
        self,
        *,
        timeouts: Timeouts | None = None,
        mode: RelayMode = RelayMode.AUTO,
        connect_timeout_s: float = 3.0,
        pipe_size: int = DEFAULT_PIPE_SIZE,
        copy_size: int = DEFAULT_COPY_SIZE,
        notsent_lowat: int = DEFAULT_NOTSENT_LOWAT,
        congestion_control: str | None = None,
        backlog: int = 4096,
        on_failure: FailureCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
        cpu: int | None = None,
        name: str = "gridlb-relay",
        state: ProxyState | None = None,
        lock: threading.Lock | None = None,
        live: LiveConns | None = None,
        reuseport: bool = False,
        replies: Mapping[ServiceKey, bytes] | None = None,
        data_ports: Mapping[ServiceKey, tuple[int, int]] | None = None,
    ) -> None:
        if mode is RelayMode.AUTO:
            mode = RelayMode.SPLICE if splice_available() else RelayMode.COPY
        elif mode is RelayMode.SPLICE and not splice_available():
            raise OSError(errno.ENOSYS, "os.splice is not available on this system")
        self.mode = mode
        self._splice = mode is RelayMode.SPLICE  # read per event: a bool, not an enum attribute lookup
        self.state = state if state is not None else ProxyState(timeouts)
        self.lock = lock if lock is not None else threading.Lock()  # guards `state` and `live`
        self.live: LiveConns = live if live is not None else {}  # bound connections -> destination
        self.reuseport = reuseport
        self.connect_timeout_s = connect_timeout_s
        self.backlog = backlog
        self.copy_size = copy_size
        self.notsent_lowat = notsent_lowat
        #: TCP_CONGESTION of every relayed socket (b"": the system's default)
        self.congestion = congestion_option(congestion_control)
        self.on_failure = on_failure
        self.clock = clock
        self.cpu = cpu
        self.pipes = PipePool(pipe_size)
        self.buffers: list[bytearray] = []
        self._small = bytearray(SMALL_READ)  # splice mode: the first payloads of every direction
        self._small_mv = memoryview(self._small)
        self.errors: dict[str, int] = {}  # reason -> count (accept/connect/relay errors)
        self.relayed = 0  # connections that reached OPEN
        self.pauses = 0  # times a direction waited for a full receiver (reads from its sender paused)
        self.listeners: dict[ServiceKey, _Listener] = {}
        #: GridFTP: the line a client reads when no real server can take it; the data ports the VIP serves.
        self.replies: dict[ServiceKey, bytes] = dict(replies or {})
        self.data_ports: dict[ServiceKey, tuple[int, int]] = dict(data_ports or {})
        self.data_listeners: dict[ServiceKey, list[_Listener]] = {}
        self._ep = select.epoll()
        self._fdmap: dict[int, _Conn | _Listener | _Waker] = {}
        self._waker = _Waker()
        self._ep.register(self._waker.fd, EPOLLIN)
        self._fdmap[self._waker.fd] = self._waker
        self._commands: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self._lock = threading.Lock()
        self._connecting: deque[tuple[float, _Conn, int]] = deque()  # (deadline, conn, attempt)
        self._paused: deque[tuple[float, _Listener]] = deque()
        self._next_expiry = 0.0
        self._due = 0.0  # earliest moment `_timers` has work; events that bring it closer lower it
        self._stop_at: float | None = None
        self._stopped = False
        self._ipcache: dict[str, IPAddress] = {}
        # Sockets to close once the current batch of epoll events is handled. A descriptor closed in
        # the middle of a batch could be handed out again (accept, socket) before the batch's later
        # events for its old file are handled, and those would then act on the new connection: a
        # reset of one client taken for a refused connect of another, a server marked down for it.
        self._closing: list[socket.socket | _socket.socket] = []
        raise_gc_threshold()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    # --- control side (any thread) ----------------------------------------------------------------

    def call(self, fn: Callable[[], T]) -> Future[T]:
        """Run `fn` in the engine thread; the returned future carries its result or exception."""
        fut: Future[T] = Future()
        with self._lock:
            if self._stopped:
                fut.set_exception(RuntimeError("the relay engine is stopped"))
                return fut
            self._commands.append((fn, fut))
        os.eventfd_write(self._waker.fd, 1)
        return fut

    def join(self, timeout_s: float | None = None) -> None:
        """Wait for the engine thread to end (after `stop`)."""
        self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        """Return True while the engine thread runs."""
        return self._thread.is_alive()

    # --- engine-thread operations (run through `call`) ---------------------------------------------

    def open_listener(self, svc: ServiceState) -> None:
        """Start accepting for `svc` (raises OSError, e.g. EADDRINUSE)."""
        sock = listen_socket(
            svc.key, self.backlog, self.notsent_lowat, reuseport=self.reuseport, congestion=self.congestion
        )
        lst = _Listener(sock, svc)
        self.listeners[svc.key] = lst
        self._fdmap[lst.fd] = lst
        self._ep.register(lst.fd, EPOLLIN)
        ports = self.data_ports.get(svc.key)
        if ports is not None:
            self._open_data_listeners(svc, ports)

    def _open_data_listeners(self, svc: ServiceState, ports: tuple[int, int]) -> None:
        """Serve the GridFTP data ports on the VIP too (clients that ignore the PASV address)."""
        opened: list[_Listener] = []
        self.data_listeners[svc.key] = opened
        svc.tracks_owner = True
        port = ports[0]
        try:
            for port in range(ports[0], ports[1] + 1):
                sock = listen_socket(
                    replace(svc.key, port=port),
                    self.backlog,
                    reuseport=self.reuseport,
                    congestion=self.congestion,
                )
                lst = _Listener(sock, svc, port)
                opened.append(lst)
                self._fdmap[lst.fd] = lst
                self._ep.register(lst.fd, EPOLLIN)
        except OSError as exc:
            self.close_listener(svc.key)
            raise OSError(exc.errno, f"{exc.strerror or exc} (data port {port})") from None

    def close_listener(self, key: ServiceKey) -> None:
        """Stop accepting for `key`; connections already accepted go on."""
        lst = self.listeners.pop(key, None)
        if lst is not None:
            self._fdmap.pop(lst.fd, None)
            # Refuse new connections now (a listening socket shut down leaves the port at once, its
            # queue reset); the descriptor itself is closed after the batch, like every socket.
            with contextlib.suppress(OSError):
                lst.sock.shutdown(socket.SHUT_RDWR)
            self._closing.append(lst.sock)  # closing removes it from the epoll set
        for data in self.data_listeners.pop(key, ()):
            self._fdmap.pop(data.fd, None)
            with contextlib.suppress(OSError):
                data.sock.shutdown(socket.SHUT_RDWR)
            self._closing.append(data.sock)

    def rebind_listener(self, svc: ServiceState) -> None:
        """Point the listener of `svc.key` at a (new) ServiceState object."""
        lst = self.listeners.get(svc.key)
        if lst is not None:
            lst.svc = svc

    def stop(self, grace_s: float) -> None:
        """Close every listener now; let open relays finish for up to `grace_s`, then close them."""
        for key in list(self.listeners):
            self.close_listener(key)
        self._stop_at = self.clock() + grace_s
        self._due = 0.0

    def connections(self) -> list[ConnEntry]:
        """Return the connection table (`ipvsadm -Lc`): open relays and inactive ones."""
        with self.lock:
            now = self.clock()
            self.state.expire(now)
            return [
                *live_entries(self.live, self.state.timeouts),
                *self.state.closed_entries(now),
                *self.state.template_entries(now),
            ]

    def open_count(self) -> int:
        """Return the number of client connections currently held (connecting or relaying)."""
        return len({id(h) for h in self._fdmap.values() if isinstance(h, _Conn)})

    # --- the loop ---------------------------------------------------------------------------------

    def _main(self) -> None:
        if self.cpu is not None:
            os.sched_setaffinity(0, {self.cpu})  # 0 = this thread
        try:
            self._loop()
        finally:
            self._shutdown()

    def _loop(self) -> None:
        ep = self._ep
        fdmap = self._fdmap
        clock = self.clock
        conn_event = self._conn_event
        while True:
            now = clock()
            # the timer work runs only when something is due (connect deadline, FIN expiry, rates, ...)
            timeout = self._timers(now) if now >= self._due else self._due - now
            if self._stop_at is not None and (now >= self._stop_at or not self.open_count()):
                return
            if self._closing:
                self._close_deferred()
            try:
                events = ep.poll(timeout, POLL_BATCH)
            except InterruptedError:  # pragma: no cover - PEP 475 retries poll itself
                continue
            for fd, ev in events:
                h = fdmap.get(fd)
                if h is None:
                    continue
                try:
                    if type(h) is _Conn:
                        conn_event(h, fd, ev)
                    elif type(h) is _Listener:
                        self._accept(h)
                    else:
                        self._run_commands()
                except Exception:  # a bug must cost one connection, not every relay of the process
                    log.exception("proxy relay: internal error on fd %d", fd)
                    self._count("internal error")
                    if type(h) is _Conn:
                        with contextlib.suppress(Exception):
                            self._close(h, aborted=True)

    def _timers(self, now: float) -> float:
        """Handle connect timeouts, FIN-timeout expiry, paused listeners; return the poll timeout."""
        wait = 1.0
        pending = self._connecting
        while pending:
            deadline, conn, attempt = pending[0]
            if conn.state is not _CONNECTING or conn.attempt != attempt:
                pending.popleft()
                continue
            if deadline > now:
                wait = min(wait, deadline - now)
                break
            pending.popleft()
            try:
                self._connect_failed(conn, "timeout")
            except Exception:  # same guard as the event loop: lose this connection only
                log.exception("proxy relay: internal error after a connect timeout")
                self._count("internal error")
                with contextlib.suppress(Exception):
                    self._close(conn, aborted=True)
        if now >= self._next_expiry:
            with self.lock:
                nxt = self.state.expire(now)
            self._next_expiry = nxt if nxt is not None else now + 1.0
        wait = min(wait, max(0.0, self._next_expiry - now))
        while self._paused and self._paused[0][0] <= now:
            _, lst = self._paused.popleft()
            if lst.paused and self._fdmap.get(lst.fd) is lst:
                lst.paused = False
                self._ep.modify(lst.fd, EPOLLIN)
        if self._paused:
            wait = min(wait, max(0.0, self._paused[0][0] - now))
        if self._stop_at is not None:
            wait = min(wait, max(0.0, self._stop_at - now))
        self._due = now + wait
        return wait

    def _close_deferred(self) -> None:
        """Close the sockets of the batch just handled (between batches no stale event can exist)."""
        closing = self._closing
        deque(map(_close_socket, closing), 0)  # the loop in C: two sockets per connection
        closing.clear()

    def _run_commands(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._waker.fd)
        while True:
            with self._lock:
                if not self._commands:
                    return
                fn, fut = self._commands.popleft()
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                self._next_expiry = self._due = 0.0  # commands may read counters: expire first
                with self.lock:
                    self.state.expire(self.clock())
                fut.set_result(fn())  # a command that touches `state` where others share it takes `lock`
            except BaseException as exc:  # reported to the caller, never kills the engine
                fut.set_exception(exc)

    def _count(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1

    def _shutdown(self) -> None:
        with self._lock:
            self._stopped = True
            commands = list(self._commands)
            self._commands.clear()
        for _, fut in commands:
            if fut.set_running_or_notify_cancel():
                fut.set_exception(RuntimeError("the relay engine is stopped"))
        for key in list(self.listeners):
            self.close_listener(key)
        conns = {id(h): h for h in self._fdmap.values() if isinstance(h, _Conn)}
        for conn in conns.values():
            self._close(conn, aborted=True)
        self._close_deferred()
        self._fdmap.clear()
        self.pipes.close()
        self._ep.close()
        os.close(self._waker.fd)

    # --- accept and connect -----------------------------------------------------------------------

    def _accept(self, lst: _Listener) -> None:
        # the C-level accept: (fd, address) without building a Python socket object and its enums
        accept: Callable[[], tuple[int, Any]] = lst.sock._accept  # type: ignore[attr-defined]
        svc = lst.svc
        vaddr = svc.key.addr
        data_port = lst.data_port
        vport = data_port or svc.key.port
        assert vaddr is not None
        family = lst.sock.family
        ipcache = self._ipcache
        new_socket = _socket.socket
        new_flow = tuple.__new__  # Flow(...) without its Python-level __new__
        connect = self._connect
        now = self.clock()  # one reading per batch: a batch takes far less than any timeout's resolution
        for _ in range(ACCEPT_BATCH):
            try:
                fd, caddr = accept()
            except BlockingIOError:
                return
            except OSError as exc:
                self._count(f"accept: {errno.errorcode.get(exc.errno or 0, exc)}")
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    lst.paused = True
                    self._ep.modify(lst.fd, 0)
                    self._paused.append((self.clock() + ACCEPT_PAUSE_S, lst))
                    self._due = 0.0
                return
            # SOCK_NONBLOCK here only tells the object not to wait; CPython's accept4 does not set
            # O_NONBLOCK, and an ioctl per connection to set it costs a syscall that a short
            # connection does not need: every recv/send on a client socket passes MSG_DONTWAIT, and
            # the descriptor is made non-blocking when one of its directions takes a pipe (splice).
            c = new_socket(family, _STREAM_NOWAIT, 0, fd)
            host = caddr[0]
            ip = ipcache.get(host)
            if ip is None:
                if len(ipcache) > 4096:
                    ipcache.clear()
                ip = ipcache[host] = ip_address(host)
            connect(_Conn(c, fd, caddr, svc, new_flow(Flow, (ip, caddr[1], vaddr, vport)), data_port), now)

    def _connect(self, conn: _Conn, now: float) -> None:
        """Schedule `conn` and start a non-blocking connect; retried on the next server if it fails."""
        svc = conn.svc
        state = self.state
        port = conn.port
        limit = 1 if port else len(svc.dests) + 1
        lock = self.lock
        live = self.live
        while True:
            if conn.tried >= limit:
                d = None
            else:
                with lock:
                    d = state.pick_owner(svc, conn.flow) if port else state.pick(svc, conn.flow, now)
                    if d is not None:
                        live[conn] = d
            if d is None:
                self._no_destination(conn)
                return
            conn.tried += 1
            conn.attempt += 1
            conn.dest = d
            try:
                b = _socket.socket(_INET if d.version == 4 else _INET6, _STREAM_NB, 0)
            except OSError as exc:  # out of descriptors or memory: this director's problem, not d's
                self._count(f"socket: {errno.errorcode.get(exc.errno or 0, 'error')}")
                with lock:
                    del live[conn]
                    state.connect_failed(d, mark_down=False, flow=conn.flow)
                conn.dest = None
                conn.state = _CLOSED
                conn.c.close()
                return
            if self.congestion:
                b.setsockopt(_IPPROTO_TCP, _TCP_CONGESTION, self.congestion)  # checked at start
            err = b.connect_ex((d.sockaddr[0], port) if port else d.sockaddr)
            if err == errno.EINPROGRESS or err == 0:
                conn.b = b
                conn.bfd = bfd = b.fileno()
                self._fdmap[bfd] = conn
                self._ep.register(bfd, BACKEND_MASK)
                conn.bmask = BACKEND_MASK
                deadline = now + self.connect_timeout_s
                self._connecting.append((deadline, conn, conn.attempt))
                if deadline < self._due:
                    self._due = deadline
                return
            b.close()
            if err in _LOCAL_CONNECT_ERRORS:
                # out of local ports toward d (TIME_WAIT) or of memory: this director's problem, not d's
                self._failed_attempt(conn, d, f"{_reason(err)} (this director)", local=True)
            else:
                self._failed_attempt(conn, d, _reason(err))

    def _no_destination(self, conn: _Conn) -> None:
        """Nobody can take `conn`: a GridFTP service answers its 421 line, anything else just closes."""
        conn.state = _CLOSED
        reply = None if conn.port else self.replies.get(conn.svc.key)
        if conn.port:
            if not conn.tried:  # (a failed connect to the owner was counted as such)
                self._count("data connection: no control connection from this client")
        elif reply:
            with contextlib.suppress(OSError):  # a fresh socket's send buffer takes one line
                conn.c.send(reply, _DONTWAIT)
            self._count("no destination: answered 421")
        else:
            self._count("no destination")
        conn.c.close()

    def _failed_attempt(self, conn: _Conn, d: DestState, reason: str, local: bool = False) -> None:
        self._count(f"connect: {reason}")
        # a data port refused by the control connection's server says nothing about its health, nor
        # does a failure of this host's own (no local port left toward d, no memory)
        mark_down = not conn.port and not local
        with self.lock:  # True for one engine only: a failure is reported once
            del self.live[conn]
            newly_down = self.state.connect_failed(d, mark_down=mark_down, flow=conn.flow)
        if newly_down and self.on_failure is not None:
            try:
                self.on_failure(conn.svc.key, d.key, reason)
            except Exception:  # a faulty callback must not take the relay down
                self._count("failure callback raised")
        conn.dest = None

    def _connect_failed(self, conn: _Conn, reason: str) -> None:
        b = conn.b
        assert b is not None and conn.dest is not None
        self._fdmap.pop(conn.bfd, None)
        self._closing.append(b)
        conn.b = None
        conn.bfd = -1
        self._failed_attempt(conn, conn.dest, reason)
        self._connect(conn, self.clock())

    def _established(self, conn: _Conn, ev: int) -> None:
        b = conn.b
        c = conn.c
        assert b is not None
        if ev & (EPOLLERR | EPOLLHUP):
            err = b.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            self._connect_failed(conn, _reason(err or errno.ECONNREFUSED))
            return
        conn.state = _OPEN
        self.relayed += 1
        cfd, bfd = conn.cfd, conn.bfd
        conn.up = _Dir(c, b, True, cfd, bfd)
        conn.down = down = _Dir(b, c, False, bfd, cfd)
        self._fdmap[conn.cfd] = conn
        self._ep.register(conn.cfd, CLIENT_MASK)  # reports at once if the client already sent
        conn.cmask = CLIENT_MASK
        if ev & (EPOLLIN | EPOLLRDHUP):  # the server spoke first (FTP banner): relay it now
            try:
                if not self._splice:
                    self._pump_copy(conn, down, ev)
                elif self._pump_small(conn, down, ev) is None:
                    self._splice_pipe(conn, down)
            except OSError as exc:
                self._count(f"relay: {errno.errorcode.get(exc.errno or 0, 'error')}")
                self._close(conn, aborted=True)

    # --- relay ------------------------------------------------------------------------------------

    def _conn_event(self, conn: _Conn, fd: int, ev: int) -> None:
        state = conn.state
        if state is not _OPEN:
            if state is _CONNECTING and fd == conn.bfd:
                self._established(conn, ev)
            return
        up = conn.up
        down = conn.down
        assert up is not None and down is not None
        if fd == conn.cfd:
            out_d, in_d = up, down
        else:
            out_d, in_d = down, up
        try:
            if ev & EPOLLERR:
                raise ConnectionResetError(errno.ECONNRESET, "socket error")
            if ev & EPOLLOUT and in_d.pend:
                # bytes wait in the pipe once the direction has one, else in its buffer
                if in_d.pr >= 0:
                    self._flush_splice(conn, in_d)
                else:
                    self._flush_copy(conn, in_d)
                # the other side's reads were paused while this one was full: resume them
                # (0: this event says nothing of that side's FIN)
                pump = self._pump_splice if self._splice else self._pump_copy
                if not in_d.pend and not in_d.eof and pump(conn, in_d, 0):
                    self._resume_reading(conn, in_d)
            if not out_d.eof and not out_d.pend and ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP):
                if not self._splice:
                    self._pump_copy(conn, out_d, ev)
                elif out_d.pr >= 0 or self._pump_small(conn, out_d, ev) is None:
                    # (no pipe yet: recv/send first, a pipe only once a read fills the small buffer)
                    self._splice_pipe(conn, out_d)
        except OSError as exc:
            self._count(f"relay: {errno.errorcode.get(exc.errno or 0, 'error')}")
            self._close(conn, aborted=True)
            return
        if up.shut and down.shut:
            self._close(conn, aborted=False)

    def _blocked(self, conn: _Conn, d: _Dir) -> None:
        """`d.dst` took only part of a write: wait for its EPOLLOUT, stop waking up for `d.src`.

        Without the second half every segment arriving on a fast sender would wake the loop
        (edge-triggered) while nothing can be done with it.
        """
        self.pauses += 1
        if d.inbound and not d.lowat and self.notsent_lowat:
            # A real server that cannot keep up with an upload gets the cap client sockets inherit
            # from the listener (set here, not per connection: short connections never block).
            d.lowat = True
            with contextlib.suppress(OSError):
                d.dst.setsockopt(_IPPROTO_TCP, _TCP_NOTSENT_LOWAT, self.notsent_lowat)
        if d.inbound:  # client -> real server
            cm, bm = conn.cmask & ~EPOLLIN, conn.bmask | EPOLLOUT
        else:
            cm, bm = conn.cmask | EPOLLOUT, conn.bmask & ~EPOLLIN
        if cm != conn.cmask:
            conn.cmask = cm
            self._ep.modify(conn.cfd, cm)
        if bm != conn.bmask:
            conn.bmask = bm
            self._ep.modify(conn.bfd, bm)

    def _resume_reading(self, conn: _Conn, d: _Dir) -> None:
        """`d.src` was drained after a pause: want its EPOLLIN edges again (MOD reports data queued since)."""
        if d.inbound:
            if not conn.cmask & EPOLLIN:
                conn.cmask |= EPOLLIN
                self._ep.modify(conn.cfd, conn.cmask)
        elif not conn.bmask & EPOLLIN:
            conn.bmask |= EPOLLIN
            self._ep.modify(conn.bfd, conn.bmask)

    def _pass_eof(self, conn: _Conn, d: _Dir) -> None:
        d.shut = True
        other = conn.down if d.inbound else conn.up
        if other is not None and other.shut:
            # The other direction has ended too, so the caller closes both sockets right now, and
            # close() sends this FIN itself (both receive queues are empty: each side read EOF).
            return
        try:
            d.dst.shutdown(_SHUT_WR)
        except OSError as exc:
            if exc.errno != errno.ENOTCONN:  # the peer is already gone: nothing left to tell it
                raise

    def _pump_small(self, conn: _Conn, d: _Dir, ev: int) -> bool | None:
        """Relay one read of at most SMALL_READ bytes by recv/send; None when it filled the buffer.

        Otherwise as a pump: True if src is drained, False if dst is full or src ended. A short read
        empties the socket's receive queue (tcp_recvmsg stops only at an empty queue or a full
        buffer), so no second read is needed to meet EAGAIN: data arriving later raises a new edge.
        When the event `ev` that woke us already said the peer had sent its FIN (EPOLLRDHUP), every
        byte before that FIN was queued and a short read has taken the last of them: that is EOF.
        """
        small = self._small
        try:
            n = d.src.recv_into(small, 0, _DONTWAIT)
        except BlockingIOError:
            return True
        if not n:
            d.eof = True
            other = conn.down if d.inbound else conn.up
            if other is not None and other.shut:  # `_pass_eof`'s first case, inlined: the caller closes
                d.shut = True
            else:
                self._pass_eof(conn, d)
            return False
        dest = conn.dest
        assert dest is not None
        with self.lock:  # `_account`, inlined: this runs once or twice per short connection
            if d.inbound:
                dest.traffic.inbytes += n
                conn.svc.traffic.inbytes += n
            else:
                dest.traffic.outbytes += n
                conn.svc.traffic.outbytes += n
        mv = self._small_mv
        try:
            m = d.dst.send(mv[:n], _DONTWAIT)
        except BlockingIOError:
            m = 0
        if m < n:  # keep the rest in a buffer of this direction until dst takes it
            if d.buf is None:
                d.buf = self.buffers.pop() if self.buffers else bytearray(self.copy_size)
                d.mv = memoryview(d.buf)
            assert d.mv is not None
            d.mv[: n - m] = mv[m:n]
            d.off = 0
            d.pend = n - m
            self._blocked(conn, d)
            return False
        if n == SMALL_READ:
            return None
        if ev & EPOLLRDHUP:
            d.eof = True
            self._pass_eof(conn, d)
            return False
        return True

    def _pump_splice(self, conn: _Conn, d: _Dir, ev: int) -> bool:
        """Move src -> pipe -> dst until src is drained, dst is full or src ends; True if drained.

        A direction without a pipe yet relays through `_pump_small` and takes one at its first full read.
        """
        if d.pr < 0:
            small = self._pump_small(conn, d, ev)
            if small is not None:
                return small
        return self._splice_pipe(conn, d)

    def _splice_pipe(self, conn: _Conn, d: _Dir) -> bool:
        """The splice loop of `_pump_splice`; takes a pipe first when the direction holds none."""
        if d.pr < 0:
            if not conn.cnb:  # splice takes no MSG_DONTWAIT: the client's descriptor must be O_NONBLOCK
                conn.c.setblocking(False)
                conn.cnb = True
            d.pr, d.pw, d.cap = self.pipes.get()
        splice = os.splice
        sfd, dfd, pr, pw, cap = d.sfd, d.dfd, d.pr, d.pw, d.cap
        moved = 0
        try:
            while True:
                n = splice(sfd, pw, cap, None, None, _SPLICE_FLAGS)
                if not n:
                    d.eof = True
                    break
                moved += n
                # `pend` counts what the pipe holds from here on: if the write below fails (EPIPE,
                # ECONNRESET), `_close` must see these bytes and not pool the pipe with them.
                d.pend = n
                try:
                    m = splice(pr, dfd, n, None, None, _SPLICE_FLAGS)
                except BlockingIOError:
                    m = 0
                d.pend = n - m
                if m < n:
                    self._blocked(conn, d)
                    return False  # dst full: its EPOLLOUT edge resumes us
                # Edge-triggered: go on until EAGAIN. A short read does not prove src drained
                # (a pipe also fills by slots), and no new edge would come for data already queued.
        except BlockingIOError:
            return True
        finally:
            if moved:
                self._account(conn, d.inbound, moved)
        self._pass_eof(conn, d)
        return False

    def _account(self, conn: _Conn, inbound: bool, n: int) -> None:
        """Count `n` payload bytes read in one pump call (one lock per call, not per read)."""
        dest = conn.dest
        assert dest is not None
        dtr = dest.traffic
        str_ = conn.svc.traffic
        with self.lock:
            if inbound:
                dtr.inbytes += n
                str_.inbytes += n
            else:
                dtr.outbytes += n
                str_.outbytes += n

    def _flush_splice(self, conn: _Conn, d: _Dir) -> None:
        try:
            m = os.splice(d.pr, d.dfd, d.pend, None, None, _SPLICE_FLAGS)
        except BlockingIOError:
            return
        d.pend -= m
        if not d.pend and d.eof and not d.shut:
            self._pass_eof(conn, d)

    def _pump_copy(self, conn: _Conn, d: _Dir, ev: int) -> bool:
        """Copy src -> buffer -> dst until src is drained, dst is full or src ends; True if drained.

        A short read drains the socket and, after an EPOLLRDHUP event, is its EOF (see `_pump_small`).
        """
        if d.buf is None:
            d.buf = self.buffers.pop() if self.buffers else bytearray(self.copy_size)
            d.mv = memoryview(d.buf)
        buf, mv = d.buf, d.mv
        assert mv is not None
        src, dst = d.src, d.dst
        moved = 0
        try:
            while True:
                n = src.recv_into(buf, 0, _DONTWAIT)
                if not n:
                    d.eof = True
                    break
                moved += n
                try:
                    m = dst.send(mv[:n], _DONTWAIT)
                except BlockingIOError:
                    m = 0
                if m < n:
                    d.off = m
                    d.pend = n - m
                    self._blocked(conn, d)
                    return False
                if n < len(buf):
                    if ev & EPOLLRDHUP:
                        d.eof = True
                        break
                    return True
        except BlockingIOError:
            return True
        finally:
            if moved:
                self._account(conn, d.inbound, moved)
        self._pass_eof(conn, d)
        return False

    def _flush_copy(self, conn: _Conn, d: _Dir) -> None:
        assert d.mv is not None
        try:
            m = d.dst.send(d.mv[d.off : d.off + d.pend], _DONTWAIT)
        except BlockingIOError:
            return
        d.off += m
        d.pend -= m
        if not d.pend and d.eof and not d.shut:
            self._pass_eof(conn, d)

    def _close(self, conn: _Conn, *, aborted: bool) -> None:
        """Close both sockets, give pipes/buffers back and count the connection inactive."""
        if conn.state is _CLOSED:
            return
        was_open = conn.state is _OPEN
        conn.state = _CLOSED
        fdmap = self._fdmap
        fdmap.pop(conn.cfd, None)
        if conn.b is not None:
            fdmap.pop(conn.bfd, None)
            self._closing.append(conn.b)
        self._closing.append(conn.c)
        up, down = conn.up, conn.down
        if (
            up is not None
            and down is not None
            and (up.pr >= 0 or down.pr >= 0 or up.buf is not None or down.buf is not None)
        ):
            self._give_back(up, down)
        dest = conn.dest
        if dest is not None:
            if was_open:
                now = self.clock()
                with self.lock:
                    del self.live[conn]
                    self.state.closed_conn(dest, now, conn.caddr[0], conn.caddr[1])
                    expires = now + self.state.timeouts.tcpfin
                if expires < self._next_expiry:
                    self._next_expiry = self._due = expires
            else:  # aborted while connecting (engine stop): never established
                with self.lock:
                    del self.live[conn]
                    self.state.connect_failed(dest, mark_down=False, flow=conn.flow)
            conn.dest = None

    def _give_back(self, *dirs: _Dir) -> None:
        """Return the pipes and buffers of a closed connection's directions to their pools."""
        for d in dirs:
            if d.pr >= 0:
                if d.pend:  # bytes of this connection are still in it: never reused
                    os.close(d.pr)
                    os.close(d.pw)
                else:
                    self.pipes.put(d.pr, d.pw, d.cap)  # checks it is empty once more
                d.pr = d.pw = -1
            if d.buf is not None:
                if len(self.buffers) < 64:
                    self.buffers.append(d.buf)
                d.buf = None
                d.mv = None


#: Every bound connection (connecting or relaying) -> its destination, kept under the state lock so
#: that a listing sees each connection once: open here, or closed in `ProxyState.closed`.
LiveConns = dict[_Conn, DestState]


def live_entries(live: LiveConns, timeouts: Timeouts) -> list[ConnEntry]:
    """Return the bound connections as `ipvsadm -Lc` lines (call with the state lock held)."""
    out = []
    for conn, dest in live.items():
        svc_key = conn.svc.key
        assert svc_key.addr is not None
        opened = conn.state is _OPEN
        dkey = dest.key
        port = conn.port  # a GridFTP data connection: this port on both sides
        out.append(
            ConnEntry(
                Proto.TCP,
                timeouts.tcp if opened else 0,
                "ESTABLISHED" if opened else "SYN_SENT",
                RealKey(ip_address(conn.caddr[0]), conn.caddr[1]),
                RealKey(svc_key.addr, port or svc_key.port),
                RealKey(dkey.addr, port) if port else dkey,
            )
        )
    return out


#: connect() errors that come from this host, never from the real server: no local port left toward
#: it (EADDRNOTAVAIL: every ephemeral port in TIME_WAIT or in use), no buffer or memory.
_LOCAL_CONNECT_ERRORS = frozenset({errno.EADDRNOTAVAIL, errno.EADDRINUSE, errno.ENOBUFS, errno.ENOMEM})


def _reason(err: int) -> str:
    if err == errno.ECONNREFUSED:
        return "refused"
    if err == errno.ETIMEDOUT:
        return "timeout"
    if err in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "unreachable"
    return errno.errorcode.get(err, str(err)).lower()


__all__ = [
    "ConnState",
    "FailureCallback",
    "LiveConns",
    "PipePool",
    "RelayEngine",
    "RelayMode",
    "listen_socket",
    "live_entries",
    "raise_gc_threshold",
    "splice_available",
]
