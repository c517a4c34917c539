"""FTP bounce attempts against our server: PORT, EPRT and SPOR naming another host or a privileged port
are refused with 504 and the server connects nowhere; `allow_third_party` opens named networks only."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from gridlb.gridftp import datachannel as dc
from gridlb.gridftp.client import GridftpClient
from gridlb.gridftp.protocol import HostPort, format_hostport
from tests.gridftp.helpers import ThreadedServer

DATA = b"secret payload " * 1000


def _listener(host: str) -> socket.socket:
    sock = dc.open_listener(host)
    sock.setblocking(False)
    return sock


def _nothing_arrived(listener: socket.socket) -> bool:
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


def _attempts(target: HostPort) -> list[str]:
    """Every way to name `target` as a data destination."""
    hp = format_hostport(target)
    return [f"PORT {hp}", f"EPRT |1|{target.host}|{target.port}|", f"SPOR {hp}"]


@pytest.fixture
def served(tmp_path: Path) -> Path:
    (tmp_path / "f.bin").write_bytes(DATA)
    return tmp_path


async def test_port_eprt_spor_to_another_host_are_refused(served: Path) -> None:
    srv = ThreadedServer(served).start()
    victim = _listener("127.0.0.2")  # a host other than the client (the client is 127.0.0.1)
    try:
        c = await GridftpClient.connect("127.0.0.1", srv.port, timeout_s=10)
        target = HostPort("127.0.0.2", victim.getsockname()[1])
        for mode in ("S", "E"):
            await c.expect(f"MODE {mode}", 200)
            for line in _attempts(target):
                reply = await c.command(line)
                assert reply.code == 504, (line, reply)
                assert "not the client's address 127.0.0.1" in reply.text
                # The refused target is not remembered: a transfer has no data route at all.
                assert (await c.command("RETR /f.bin")).code == 425
        # SPOR with one good and one bad target is refused whole.
        own = _listener("127.0.0.1")
        good = format_hostport(HostPort("127.0.0.1", own.getsockname()[1]))
        assert (await c.command(f"SPOR {good} {format_hostport(target)}")).code == 504
        assert (await c.command("RETR /f.bin")).code == 425
        await asyncio.sleep(0.2)
        assert _nothing_arrived(victim) and _nothing_arrived(own)
        own.close()
        assert srv.server.refused_targets == 7
        await c.quit()
    finally:
        victim.close()
        srv.stop()


@pytest.mark.parametrize("port", [21, 25, 80, 1023])
async def test_privileged_ports_are_refused_even_for_the_client_and_allowed_networks(
    served: Path, port: int
) -> None:
    srv = ThreadedServer(served, allow_third_party=("0.0.0.0/0", "::/0")).start()
    try:
        c = await GridftpClient.connect("127.0.0.1", srv.port, timeout_s=10)
        for host in ("127.0.0.1", "127.0.0.2"):
            for line in _attempts(HostPort(host, port)):
                reply = await c.command(line)
                assert reply.code == 504 and "privileged" in reply.text, (line, reply)
        reply = await c.command(f"EPRT |2|::1|{port}|")
        assert reply.code == 504 and "privileged" in reply.text
        await c.quit()
    finally:
        srv.stop()


async def test_the_client_itself_is_a_valid_target(served: Path) -> None:
    srv = ThreadedServer(served).start()
    try:
        c = await GridftpClient.connect("127.0.0.1", srv.port, timeout_s=10)
        got = Path(served) / "back.bin"
        res = await c.get("/f.bin", str(got), parallel=3)  # PORT to the client's own address
        assert res.bytes == len(DATA) and got.read_bytes() == DATA
        await c.quit()
    finally:
        srv.stop()


async def test_allow_third_party_opens_the_named_network_only(served: Path) -> None:
    srv = ThreadedServer(served, allow_third_party=("127.0.0.2/32",)).start()
    elsewhere = _listener("127.0.0.3")
    try:
        c = await GridftpClient.connect("127.0.0.1", srv.port, timeout_s=10)
        await c.setup(1)
        third = dc.open_listener("127.0.0.2")
        await c.expect(f"PORT {format_hostport(HostPort('127.0.0.2', third.getsockname()[1]))}", 200)
        await c.expect("RETR /f.bin", 150)
        sock = await dc.accept(third, timeout_s=10)
        loop = asyncio.get_running_loop()
        buf = bytearray()
        while chunk := await loop.sock_recv(sock, 1 << 16):
            buf += chunk
        sock.close()
        third.close()
        assert (await c.read_reply()).code == 226 and bytes(buf) == DATA
        for line in _attempts(HostPort("127.0.0.3", elsewhere.getsockname()[1])):
            assert (await c.command(line)).code == 504, line
        await asyncio.sleep(0.2)
        assert _nothing_arrived(elsewhere)
        await c.quit()
    finally:
        elsewhere.close()
        srv.stop()


def test_a_bad_allowed_network_is_refused_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="allow_third_party: 'nowhere'"):
        ThreadedServer(tmp_path, allow_third_party=("nowhere",))
