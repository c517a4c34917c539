"""Relay engine pieces: the splice probe, the pipe pool, the listening socket options and abort paths."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import gc
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gridlb.dataplane.relay import (
    GC_GEN0_THRESHOLD,
    PipePool,
    RelayEngine,
    RelayMode,
    listen_socket,
    splice_available,
)
from gridlb.table import AddDest, AddService, DestSpec, RealKey, ServiceKey, ServiceSpec
from tests.dataplane.servers import free_port, notsent_of
from tests.support import need_tool


def test_splice_probe_and_pipe_pool_grow_pipes() -> None:
    assert splice_available()  # Linux >= 2.6.17 with os.splice (Python 3.10+)
    pool = PipePool(1 << 20, keep=1)
    r, w, cap = pool.get()
    assert cap == fcntl.fcntl(w, fcntl.F_GETPIPE_SZ) and cap >= 65536
    r2, w2, cap2 = pool.get()
    pool.put(r, w, cap)
    pool.put(r2, w2, cap2)  # over `keep`: closed
    assert pool.idle == [(r, w, cap)] and pool.created == 2
    assert pool.get() == (r, w, cap)  # reused, not created
    pool.put(r, w, cap)
    pool.close()
    assert pool.idle == []


def test_an_engine_raises_the_young_gc_threshold_and_never_lowers_or_enables_it() -> None:
    saved = gc.get_threshold()
    try:
        high = GC_GEN0_THRESHOLD * 5
        for before, after in ((700, GC_GEN0_THRESHOLD), (high, high), (0, 0)):
            gc.set_threshold(before, 9, 8)
            engine = RelayEngine(mode=RelayMode.COPY)
            try:
                assert gc.get_threshold() == (after, 9, 8)  # the older generations' untouched
            finally:
                engine.call(functools.partial(engine.stop, 0)).result(5)
                engine.join(5)
    finally:
        gc.set_threshold(*saved)


def test_listen_socket_binds_addresses_not_held_and_is_v6only() -> None:
    # 192.0.2.1 (TEST-NET-1) is on no interface here: IP_FREEBIND lets a backup director listen anyway
    s = listen_socket(ServiceKey.tcp("192.0.2.1", free_port()), 16)
    try:
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
        assert s.getsockopt(socket.IPPROTO_IP, 15) == 1  # IP_FREEBIND
    finally:
        s.close()
    s6 = listen_socket(ServiceKey.tcp("::1", free_port("::1")), 16)
    try:
        assert s6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    finally:
        s6.close()


# --- an abort must not leave bytes in a pooled pipe ----------------------------------------------


@contextlib.contextmanager
def engine_over(backend: socket.socket) -> Iterator[tuple[RelayEngine, tuple[str, int]]]:
    """A splice RelayEngine with one rr service on 127.0.0.1 over `backend` (a listening socket)."""
    engine = RelayEngine(mode=RelayMode.SPLICE)
    key = ServiceKey.tcp("127.0.0.1", free_port())
    real = RealKey.parse(f"127.0.0.1:{backend.getsockname()[1]}")

    def setup() -> None:
        engine.state.apply(AddService(key, ServiceSpec(scheduler="rr")))
        engine.state.apply(AddDest(key, real, DestSpec(weight=1)))
        engine.open_listener(engine.state.services[key])

    engine.call(setup).result(5)
    try:
        yield engine, ("127.0.0.1", key.port)
    finally:
        engine.call(lambda: engine.stop(0)).result(5)
        engine.join(5)
        assert not engine.alive


def pair(vip: tuple[str, int], backend: socket.socket) -> tuple[socket.socket, socket.socket]:
    """Connect a client through the relay; return (client, backend side), relaying in both directions."""
    c = socket.create_connection(vip, timeout=5)
    b, _ = backend.accept()
    b.settimeout(5)
    b.sendall(b"hello\n")  # the server speaks first, as an FTP server does
    assert c.recv(100) == b"hello\n"
    c.sendall(b"hi\n")
    assert b.recv(100) == b"hi\n"
    return c, b


def reset(s: socket.socket) -> None:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def recv_exactly(s: socket.socket, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = s.recv(n - len(got))
        if not chunk:
            break
        got += chunk
    return got


@pytest.mark.parametrize("burst", [1000, 10000], ids=["small-buffer", "pipe"])
@pytest.mark.parametrize("direction", ["to_client", "to_server"])
def test_a_write_failing_with_bytes_in_the_pipe_does_not_pool_them(direction: str, burst: int) -> None:
    """The engine reads a burst into the pipe, and the write to the reset peer fails (ECONNRESET/EPIPE).

    6,000 bytes stay in the engine's small-read buffer; 60,000 fill it, so the direction takes a pipe.

    The engine thread is held in a command while the burst arrives and then the peer resets, so
    that epoll reports the readable side first: the splice out of the pipe is the one that fails.
    The next connection, which takes the pooled pipes, must carry only its own bytes.
    """
    with socket.create_server(("127.0.0.1", 0)) as backend, engine_over(backend) as (engine, vip):
        c, b = pair(vip, backend)
        entered, gate = threading.Event(), threading.Event()

        def hold() -> bool:  # runs in the engine thread: nothing is relayed until `gate` is set
            entered.set()
            return gate.wait(5)

        held = engine.call(hold)
        assert entered.wait(5)
        secret = b"SECRET" * burst
        if direction == "to_client":
            b.sendall(secret)
            time.sleep(0.05)
            reset(c)
            b_after = b
        else:
            c.sendall(secret)
            time.sleep(0.05)
            reset(b)
            b_after = c
        gate.set()
        held.result(5)
        # the relay aborted the connection: both of its sockets are closed, counters settled
        deadline = time.monotonic() + 5
        while engine.call(engine.open_count).result(5) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.call(engine.open_count).result(5) == 0
        b_after.settimeout(5)
        with contextlib.suppress(OSError):
            while b_after.recv(65536):  # EOF or reset: the relay closed its side
                pass
        b_after.close()
        errors = engine.call(lambda: dict(engine.errors)).result(5)
        assert {"relay: ECONNRESET", "relay: EPIPE"} & errors.keys(), errors

        c2 = socket.create_connection(vip, timeout=5)
        b2, _ = backend.accept()
        b2.settimeout(5)
        b2.sendall(b"hello-2\n")
        assert recv_exactly(c2, 8) == b"hello-2\n"
        c2.sendall(b"ping-2\n")
        assert recv_exactly(b2, 7) == b"ping-2\n"
        c2.shutdown(socket.SHUT_WR)
        assert b2.recv(100) == b""  # nothing more than what this client sent
        b2.shutdown(socket.SHUT_WR)
        assert c2.recv(100) == b""
        c2.close()
        b2.close()
        snap = engine.call(engine.state.snapshot).result(5)
        assert [d.counters.active for s in snap.services for d in s.dests] == [0]


def hold_engine(engine: RelayEngine) -> tuple[threading.Event, Any]:
    """Block the engine thread in a command until the returned event is set (nothing is relayed)."""
    entered, gate = threading.Event(), threading.Event()

    def hold() -> bool:
        entered.set()
        return gate.wait(5)

    held = engine.call(hold)
    assert entered.wait(5)
    return gate, held


def test_short_payloads_take_no_pipe_and_a_bulk_stream_takes_one() -> None:
    with socket.create_server(("127.0.0.1", 0)) as backend, engine_over(backend) as (engine, vip):
        for _ in range(3):
            c, b = pair(vip, backend)
            b.close()
            assert c.recv(100) == b""
            c.close()
        assert engine.call(lambda: engine.pipes.created).result(5) == 0
        c, b = pair(vip, backend)
        data = os.urandom(4 << 20)
        sender = threading.Thread(target=b.sendall, args=(data,))
        sender.start()
        assert recv_exactly(c, len(data)) == data
        sender.join(5)
        assert engine.call(lambda: engine.pipes.created).result(5) == 1  # to the client only
        c.sendall(b"bye\n")
        assert b.recv(100) == b"bye\n"
        c.close()
        b.close()


def test_a_fin_seen_with_the_last_bytes_ends_one_direction_only() -> None:
    """The server's reply and FIN arrive before the engine looks: the client gets both, may still talk."""
    with socket.create_server(("127.0.0.1", 0)) as backend, engine_over(backend) as (engine, vip):
        c, b = pair(vip, backend)
        gate, held = hold_engine(engine)
        b.sendall(b"221 Goodbye.\r\n")
        b.shutdown(socket.SHUT_WR)
        time.sleep(0.05)  # the FIN is queued at the relay's socket: its event carries EPOLLRDHUP
        gate.set()
        held.result(5)
        assert recv_exactly(c, 14) == b"221 Goodbye.\r\n"
        assert c.recv(100) == b""  # the FIN was passed on
        c.sendall(b"late\n")  # the other direction still relays
        assert recv_exactly(b, 5) == b"late\n"
        c.close()
        assert b.recv(100) == b""
        b.close()
        errors = engine.call(lambda: dict(engine.errors)).result(5)
        assert errors == {}


def test_small_writes_to_a_full_server_wait_in_a_buffer_and_the_idle_client_never_blocks_the_engine() -> None:
    """Short reads that the server cannot take stay in the direction's buffer, in order, with no pipe.

    The client sends 15,000-byte messages (each read whole, below the engine's 16 KiB) to a server
    that reads nothing, until the relay holds some. When the server reads, the engine flushes and
    reads the client again, which has nothing to send: that read must not wait (the client's
    descriptor is not O_NONBLOCK until it splices, so every recv passes MSG_DONTWAIT).
    """
    with socket.create_server(("127.0.0.1", 0)) as backend:
        backend.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # accepted sockets inherit it
        with engine_over(backend) as (engine, vip):
            c, b = pair(vip, backend)
            sent = bytearray()
            deadline = time.monotonic() + 10
            while not engine.pauses and time.monotonic() < deadline:
                msg = os.urandom(15000)
                c.sendall(msg)
                sent += msg
                time.sleep(0.003)  # one message per read
                engine.call(lambda: None).result(5)  # (the pause count is read after a full batch)
            assert engine.pauses, "the server's window never filled"
            got = recv_exactly(b, len(sent))
            assert got == bytes(sent)
            assert engine.call(lambda: engine.pipes.created).result(5) == 0
            # the engine flushed, read the idle client (EAGAIN) and still serves commands and bytes
            c.sendall(b"after\n")
            assert recv_exactly(b, 6) == b"after\n"
            b.sendall(b"ok\n")
            assert recv_exactly(c, 3) == b"ok\n"
            assert engine.call(lambda: dict(engine.errors)).result(5) == {}
            c.close()
            b.close()


def test_pipe_pool_closes_a_pipe_that_still_holds_bytes() -> None:
    pool = PipePool(1 << 16)
    r, w, cap = pool.get()
    os.write(w, b"left over")
    pool.put(r, w, cap)
    assert pool.idle == [] and pool.discarded == 1
    with pytest.raises(OSError):
        os.fstat(r)  # closed, not kept
    r2, w2, cap2 = pool.get()
    pool.put(r2, w2, cap2)
    assert pool.idle == [(r2, w2, cap2)] and pool.discarded == 1
    pool.close()


# --- a bulk receiver gets a short unsent queue ----------------------------------------------------


@pytest.mark.parametrize("lowat", [0, 1 << 17])
def test_a_full_receiver_keeps_at_most_notsent_lowat_unsent(lowat: int) -> None:
    """The client reads nothing: its window closes and the rest waits in the relay's send queue.

    With `notsent_lowat` the relay stops writing once that much waits unsent (the pipe holds the
    rest, then the real server's socket); without it the queue grows towards tcp_wmem[2].
    """
    need_tool("ss")
    engine = RelayEngine(mode=RelayMode.SPLICE, notsent_lowat=lowat)
    with socket.create_server(("127.0.0.1", 0)) as backend:
        key = ServiceKey.tcp("127.0.0.1", free_port())
        real = RealKey.parse(f"127.0.0.1:{backend.getsockname()[1]}")

        def setup() -> None:
            engine.state.apply(AddService(key, ServiceSpec(scheduler="rr")))
            engine.state.apply(AddDest(key, real, DestSpec(weight=1)))
            engine.open_listener(engine.state.services[key])

        engine.call(setup).result(5)
        c = socket.create_connection(("127.0.0.1", key.port), timeout=5)
        b, _ = backend.accept()
        b.settimeout(0.2)
        chunk = b"x" * (1 << 20)
        sent = 0
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and sent < 64 << 20:  # until the whole chain is full
                try:
                    sent += b.send(chunk)
                except TimeoutError:
                    break
            unsent = notsent_of(key.port)
            assert len(unsent) == 1, unsent
            if lowat:
                assert unsent[0] <= lowat + (1 << 16), unsent
            else:
                assert unsent[0] > 1 << 20, unsent
            # nothing is lost either way: the client reads everything that was sent
            b.shutdown(socket.SHUT_WR)
            got = 0
            while chunk_in := c.recv(1 << 20):
                got += len(chunk_in)
            assert got == sent
        finally:
            c.close()
            b.close()
            engine.call(lambda: engine.stop(0)).result(5)
            engine.join(5)


def test_a_reset_never_reaches_the_connection_that_reuses_its_descriptor() -> None:
    """Events of one epoll batch for a closed socket must not act on a new socket with the same number.

    One batch, in this order: client A's real server resets (A is aborted), client B arrives (its
    sockets are created), client A resets. Had A's descriptors been closed at once, B's would reuse
    them and A's reset would be taken for B's connect failing: the only real server marked down, B
    closed with no byte. Descriptors are allocated lowest-first, so this happens unless closes wait
    for the end of the batch.
    """
    with socket.create_server(("127.0.0.1", 0)) as backend, engine_over(backend) as (engine, vip):
        for _ in range(10):  # each round is one chance; lowest-first allocation makes most rounds hit
            client_b = socket.socket()
            client_b.settimeout(5)
            c, b = pair(vip, backend)
            entered, gate = threading.Event(), threading.Event()

            def hold() -> bool:
                entered.set()  # noqa: B023 - called at once, in this round
                return gate.wait(5)  # noqa: B023

            held = engine.call(hold)
            assert entered.wait(5)
            reset(b)  # 1: A's real server resets
            time.sleep(0.02)
            client_b.connect(vip)  # 2: B waits in the accept queue (the kernel completed the handshake)
            time.sleep(0.02)
            reset(c)  # 3: client A resets
            time.sleep(0.02)
            gate.set()
            held.result(5)
            b2, _ = backend.accept()
            b2.settimeout(5)
            b2.sendall(b"hello-b\n")
            assert recv_exactly(client_b, 8) == b"hello-b\n"
            client_b.close()
            b2.close()
        errors = engine.call(lambda: dict(engine.errors)).result(5)
        assert not [k for k in errors if k.startswith(("connect", "no destination"))], errors


def test_an_upload_to_a_full_real_server_gets_the_cap_from_its_first_block() -> None:
    """Uploads: the real server's socket gets TCP_NOTSENT_LOWAT when a write to it first blocks.

    The first fill happens before the cap (the queue holds up to tcp_wmem[2] then); once the server
    has read that, the queue refills only up to the cap. Bytes arrive complete either way.
    """
    need_tool("ss")
    lowat = 1 << 17
    engine = RelayEngine(mode=RelayMode.SPLICE, notsent_lowat=lowat)
    with socket.create_server(("127.0.0.1", 0)) as backend:
        bport = backend.getsockname()[1]
        key = ServiceKey.tcp("127.0.0.1", free_port())

        def setup() -> None:
            engine.state.apply(AddService(key, ServiceSpec(scheduler="rr")))
            engine.state.apply(AddDest(key, RealKey.parse(f"127.0.0.1:{bport}"), DestSpec(weight=1)))
            engine.open_listener(engine.state.services[key])

        engine.call(setup).result(5)
        c = socket.create_connection(("127.0.0.1", key.port), timeout=5)
        b, _ = backend.accept()
        total = 48 << 20
        sent = threading.Event()

        def upload() -> None:
            with contextlib.suppress(OSError):
                c.sendall(b"u" * total)
                c.shutdown(socket.SHUT_WR)
            sent.set()

        sender = threading.Thread(target=upload, daemon=True)
        sender.start()
        got = 0
        try:
            time.sleep(0.5)  # the whole chain fills: the relay's write to the server blocks
            b.settimeout(5)
            while got < 16 << 20:  # the server reads a part, then stops again
                got += len(b.recv(1 << 20))
            time.sleep(0.5)  # the relay refills the server's socket as far as it may
            unsent = notsent_of(bport, "dport")
            assert len(unsent) == 1 and unsent[0] <= lowat + (1 << 16), unsent
            while chunk := b.recv(1 << 20):
                got += len(chunk)
            assert got == total and sent.wait(5)
        finally:
            c.close()
            b.close()
            engine.call(lambda: engine.stop(0)).result(5)
            engine.join(5)
