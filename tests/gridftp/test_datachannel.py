"""Data-channel I/O: listeners in a port range, connect failures, stream and MODE E transfers over
socket pairs, reuse of cached connections, and broken streams."""

from __future__ import annotations

import asyncio
import mmap
import os
import socket
import struct
from pathlib import Path

import pytest

from gridlb.gridftp import datachannel as dc
from gridlb.gridftp import modee
from gridlb.gridftp.protocol import HostPort
from tests.gridftp.helpers import free_port


def test_listener_port_range() -> None:
    lo = free_port()
    a = dc.open_listener("127.0.0.1", (lo, lo))
    assert a.getsockname()[1] == lo
    with pytest.raises(dc.DataChannelError) as ei:
        dc.open_listener("127.0.0.1", (lo, lo))  # the only port is taken
    assert ei.value.code == 425
    a.close()


async def test_connect_refused_is_425() -> None:
    with pytest.raises(dc.DataChannelError) as ei:
        await dc.connect(HostPort("127.0.0.1", free_port()), timeout_s=2)
    assert ei.value.code == 425


def pairs(n: int) -> tuple[list[socket.socket], list[socket.socket]]:
    a, b = [], []
    for _ in range(n):
        x, y = socket.socketpair()
        dc.tune(x)
        dc.tune(y)
        a.append(x)
        b.append(y)
    return a, b


async def test_modee_round_trip_from_a_file_and_reuse(tmp_path: Path) -> None:
    data = os.urandom(3_000_001)
    src_path = tmp_path / "src"
    src_path.write_bytes(data)
    senders, receivers = pairs(3)
    out = bytearray(len(data))

    def write(view: memoryview, off: int) -> None:
        out[off : off + len(view)] = view

    for _ in range(2):  # the second transfer reuses the same connections
        with open(src_path, "rb", buffering=0) as f:
            src = dc.Source(f, ranges=[(0, len(data))])
            tx = asyncio.ensure_future(dc.send_modee(senders, src, block_size=65536))
            res = await dc.recv_modee(receivers, write, accept_more=None, idle_timeout_s=10)
            assert await tx == len(data)
        assert res.bytes == len(data) and bytes(out) == data
        assert len(res.reusable) == 3
    dc.close_all(senders + receivers)


async def test_modee_idle_cached_connection_closed_by_peer_is_not_an_error() -> None:
    senders, receivers = pairs(2)
    senders[1].close()  # the peer dropped one cached connection
    got = bytearray()

    def write(view: memoryview, off: int) -> None:
        got.extend(view)

    tx = asyncio.ensure_future(dc.send_modee(senders[:1], dc.Source.of_bytes(b"abc")))
    res = await dc.recv_modee(receivers, write, accept_more=None, idle_timeout_s=10)
    await tx
    assert bytes(got) == b"abc" and res.reusable == [receivers[0]]
    dc.close_all(senders + receivers)


async def test_modee_broken_and_idle_streams_fail_with_426() -> None:
    senders, receivers = pairs(1)
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(senders[0], modee.encode_header(0, 10, 0) + b"abc")
    senders[0].close()
    with pytest.raises(dc.DataChannelError) as ei:
        await dc.recv_modee(receivers, lambda v, o: None, accept_more=None, idle_timeout_s=5)
    assert ei.value.code == 426
    senders, receivers = pairs(1)
    with pytest.raises(dc.DataChannelError, match="idle"):
        await dc.recv_modee(receivers, lambda v, o: None, accept_more=None, idle_timeout_s=0.1)
    dc.close_all(senders)


async def test_stream_round_trip_with_offset(tmp_path: Path) -> None:
    (a,), (b,) = pairs(1)
    src = dc.Source.of_bytes(b"0123456789")
    src.ranges = [(3, 10)]
    target = tmp_path / "t"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT)
    try:

        async def send() -> int:
            try:
                return await dc.send_stream(a, src)
            finally:
                a.close()

        tx = asyncio.ensure_future(send())
        n = await dc.recv_stream(b, fd, 100, idle_timeout_s=5)
        assert await tx == 7 and n == 7
    finally:
        os.close(fd)
        b.close()
    assert target.read_bytes() == bytes(100) + b"3456789"


async def test_send_to_a_receiver_that_stopped_reading_fails_with_426() -> None:
    (a,), (b,) = pairs(1)
    src = dc.Source.of_bytes(bytes(20 << 20))
    with pytest.raises(dc.DataChannelError, match="stalled") as ei:
        await dc.send_stream(a, src, idle_timeout_s=0.3)
    assert ei.value.code == 426
    with pytest.raises(dc.DataChannelError, match="stalled"):
        await dc.send_modee([a], src, idle_timeout_s=0.3)
    dc.close_all([a, b])


async def tcp_pair(host: str) -> tuple[socket.socket, socket.socket]:
    listener = dc.open_listener(host)
    client = await dc.connect(HostPort(host, listener.getsockname()[1]), timeout_s=5)
    server = await dc.accept(listener, timeout_s=5)
    listener.close()
    return client, server


async def test_file_payloads_to_a_loopback_peer_are_sent_from_a_mapping(tmp_path: Path) -> None:
    """sendfile only moves the copy to a loopback receiver: payloads to loopback go send(mapping)."""
    a, b = socket.socketpair()
    assert not dc.loopback_peer(a)  # not an IP peer: sendfile
    a.close()
    b.close()
    tx, rx = await tcp_pair("127.0.0.1")
    assert dc.loopback_peer(tx)
    # more than one mapping window, starting and ending off a page boundary
    data = os.urandom(dc.MAP_WINDOW_BYTES * 2 + 12345)
    (tmp_path / "f").write_bytes(data)
    loop = asyncio.get_running_loop()
    with open(tmp_path / "f", "rb", buffering=0) as f:
        sending = asyncio.ensure_future(dc.send_stream(tx, dc.Source(f, ranges=[(100, len(data) - 7)])))
        got = bytearray()
        while len(got) < len(data) - 107:
            got += await loop.sock_recv(rx, 1 << 20)
        assert await sending == len(data) - 107
    assert bytes(got) == data[100:-7]
    # a file that shrinks under the sender ends the transfer with 426 after the bytes it still has,
    # never zeros from the mapping's last page, a hang or a SIGBUS
    (tmp_path / "g").write_bytes(b"x" * 1000)
    with open(tmp_path / "g", "rb", buffering=0) as f, pytest.raises(dc.DataChannelError) as ei:
        await dc.send_stream(tx, dc.Source(f, ranges=[(0, 5000)]))
    assert ei.value.code == 426 and "short read at 1000 of 5000" in ei.value.text
    got = bytearray()
    while len(got) < 1000:
        got += await loop.sock_recv(rx, 4096)
    assert bytes(got) == b"x" * 1000
    tx.close()
    rx.close()


async def test_modee_to_a_loopback_peer_from_a_mapping(tmp_path: Path) -> None:
    """MODE E blocks to a loopback peer, ERET-style shifted offsets, decoded back into a file."""
    data = os.urandom(3 * 65536 + 4321)
    (tmp_path / "f").write_bytes(data)
    conns = [await tcp_pair("127.0.0.1") for _ in range(3)]
    senders, receivers = [c[0] for c in conns], [c[1] for c in conns]
    assert all(dc.loopback_peer(s) for s in senders)
    out = bytearray(len(data) - 5000)

    def write(view: memoryview, off: int) -> None:
        out[off : off + len(view)] = view

    with open(tmp_path / "f", "rb", buffering=0) as f:
        src = dc.Source(f, ranges=[(5000, len(data))])
        tx = asyncio.ensure_future(dc.send_modee(senders, src, block_size=65536, offset_shift=5000))
        res = await dc.recv_modee(receivers, write, accept_more=None, idle_timeout_s=10)
        assert await tx == len(data) - 5000
    assert res.bytes == len(data) - 5000 and bytes(out) == data[5000:]
    dc.close_all(senders + receivers)


async def test_stream_receive_over_tcp_is_spliced_into_the_file(tmp_path: Path) -> None:
    """Stream-mode receive: socket -> pipe -> file (splice), at an offset, several pipe-fulls."""
    tx, rx = await tcp_pair("127.0.0.1")
    data = os.urandom(dc.SPLICE_PIPE_BYTES * 3 + 777)
    target = tmp_path / "t"
    target.write_bytes(b"k" * 50)
    fd = os.open(target, os.O_WRONLY)
    loop = asyncio.get_running_loop()

    async def send() -> None:
        try:
            await loop.sock_sendall(tx, data)
        finally:
            tx.close()

    try:
        sending = asyncio.ensure_future(send())
        n = await dc._recv_spliced(rx, fd, 20, idle_timeout_s=5)  # None: it fell back to recv_into
        await sending
    finally:
        os.close(fd)
        rx.close()
    assert n == len(data)
    assert target.read_bytes() == b"k" * 20 + data


async def test_stream_receive_idle_and_broken_fail_with_426(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "t", os.O_WRONLY | os.O_CREAT)
    try:
        tx, rx = await tcp_pair("127.0.0.1")
        with pytest.raises(dc.DataChannelError, match="idle") as ei:
            await dc.recv_stream(rx, fd, 0, idle_timeout_s=0.2)
        assert ei.value.code == 426
        tx.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        tx.send(b"abc")
        tx.close()  # RST
        with pytest.raises(dc.DataChannelError, match="broke") as ei:
            await dc.recv_stream(rx, fd, 0, idle_timeout_s=5)
        assert ei.value.code == 426
        rx.close()
    finally:
        os.close(fd)


async def test_loopback_senders_get_a_fixed_send_buffer_unless_sbuf_was_asked() -> None:
    wmem_max = int(Path("/proc/sys/net/core/wmem_max").read_text())  # setsockopt caps at it
    tx, rx = await tcp_pair("127.0.0.1")
    assert dc.prepare_sender(tx)
    want = 2 * min(dc.LOOPBACK_SEND_BUFFER_BYTES, wmem_max)
    assert tx.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == want
    dc.close_all([tx, rx])
    listener = dc.open_listener("127.0.0.1")
    sbuf = 100_000  # below every kernel's default wmem_max
    tx = await dc.connect(HostPort("127.0.0.1", listener.getsockname()[1]), timeout_s=5, buffer_bytes=sbuf)
    rx = await dc.accept(listener, timeout_s=5)
    listener.close()
    assert dc.prepare_sender(tx, sbuf)  # the client's SBUF is kept
    assert tx.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 2 * sbuf
    dc.close_all([tx, rx])
    a, b = socket.socketpair()
    before = a.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    assert not dc.prepare_sender(a)  # not an IP peer: untouched
    assert a.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == before
    dc.close_all([a, b])


async def test_a_file_that_cannot_be_mapped_is_copied_to_a_loopback_peer() -> None:
    """sysfs files are regular files mmap refuses (ENODEV): their bytes go pread + send instead."""
    path = "/sys/devices/system/cpu/online"
    content = Path(path).read_bytes()
    tx, rx = await tcp_pair("127.0.0.1")
    loop = asyncio.get_running_loop()
    with open(path, "rb", buffering=0) as f:
        with pytest.raises(OSError):
            mmap.mmap(f.fileno(), len(content), prot=mmap.PROT_READ)
        assert await dc.send_stream(tx, dc.Source(f, ranges=[(0, len(content))])) == len(content)
    got = bytearray()
    while len(got) < len(content):
        got += await loop.sock_recv(rx, 4096)
    assert bytes(got) == content
    dc.close_all([tx, rx])
