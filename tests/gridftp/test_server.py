"""Our GridFTP server command by command: replies, data channels (stream, MODE E, SPAS/SPOR, EPSV/EPRT),
REST/ERET/ESTO/APPE, listings, file management, CKSM, connection limits and maintenance mode."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import zlib
from pathlib import Path

import pytest

from gridlb.gridftp import datachannel as dc
from gridlb.gridftp import modee
from gridlb.gridftp.client import ClientError, GridftpClient
from gridlb.gridftp.protocol import HostPort, format_hostport, parse_pasv_reply, parse_spas_reply
from tests.gridftp.helpers import ThreadedServer

DATA = bytes(range(256)) * 4099  # 1,049,344 bytes, not a multiple of any block size


@pytest.fixture
def root(ours: ThreadedServer) -> Path:
    r = Path(ours.config.root)
    (r / "f.bin").write_bytes(DATA)
    return r


async def login(srv: ThreadedServer) -> GridftpClient:
    return await GridftpClient.connect("127.0.0.1", srv.port, timeout_s=10)


async def recv_stream_via_pasv(c: GridftpClient, cmd: str) -> bytes:
    hp = await c.pasv()
    sock = await dc.connect(hp)
    await c.expect(cmd, 150)
    chunks = []
    loop = asyncio.get_running_loop()
    while chunk := await loop.sock_recv(sock, 1 << 16):
        chunks.append(chunk)
    sock.close()
    assert (await c.read_reply()).code == 226
    return b"".join(chunks)


async def recv_modee_via_port(
    c: GridftpClient, cmd: str, *, listener: socket.socket | None = None
) -> dict[int, bytes]:
    """Send PORT (unless reusing) and `cmd`; return {offset: payload} of what arrived."""
    own = listener is None
    if listener is None:
        listener = dc.open_listener("127.0.0.1")
        await c.port(HostPort("127.0.0.1", listener.getsockname()[1]))
    got: dict[int, bytes] = {}

    def write(data: memoryview, off: int) -> None:
        got[off] = bytes(data)

    async def more() -> socket.socket:
        assert listener is not None
        return await dc.accept(listener, timeout_s=10)

    await c.expect(cmd, 150)
    res = await dc.recv_modee([], write, accept_more=more, idle_timeout_s=10)
    assert (await c.read_reply()).code == 226
    dc.close_all(res.reusable)
    if own:
        listener.close()
    return got


def assemble(blocks: dict[int, bytes]) -> bytes:
    out = bytearray()
    for off in sorted(blocks):
        assert off == len(out), f"gap or overlap at {off}"
        out += blocks[off]
    return bytes(out)


async def test_banner_and_simple_commands(ours: ThreadedServer) -> None:
    c = await GridftpClient.connect("127.0.0.1", ours.port, login=False)
    assert c.banner is not None and c.banner.code == 220 and "GridFTP Server" in c.banner.text
    feats = await c.feat()
    for f in ("PARALLEL", "SIZE", "MDTM", "REST STREAM", "ERET", "ESTO", "SPAS", "SPOR", "DCAU"):
        assert f in feats
    assert any(f.startswith("MLST ") for f in feats)
    assert any(f.startswith("CKSM ") and "ADLER32" in f and "MD5" in f for f in feats)
    await c.login()
    for line, code in (
        ("SITE HELP", 214),
        ('SITE CLIENTINFO scheme=ftp;appname="test";', 250),
        ("SYST", 215),
        ("NOOP", 200),
        ("TYPE I", 200),
        ("MODE E", 200),
        ("MODE S", 200),
        ("MODE B", 504),
        ("OPTS RETR Parallelism=4,4,4;", 200),
        ("OPTS RETR Parallelism=x;", 501),
        ("ALLO 123", 200),
        ("SBUF 1048576", 200),
        ("SITE RETRBUFSIZE 1048576", 200),
        ("DCAU N", 200),
        ("DCAU A", 504),
        ("PROT P", 536),
        ("REST 10", 350),
        ("REST 0-10,20-30", 350),
        ("REST x-1", 501),
        ("EPSV", 229),
        ("BOGUS", 500),
    ):
        reply = await c.command(line)
        assert reply.code == code, (line, reply)
    assert (await c.command("QUIT")).code == 221


async def test_pasv_advertises_data_address_not_dialled(tmp_path: Path) -> None:
    srv = ThreadedServer(tmp_path, host="0.0.0.0", data_address="127.0.0.7").start()
    try:
        (tmp_path / "x").write_bytes(b"hello")
        c = await GridftpClient.connect("127.0.0.1", srv.port)
        reply = await c.expect("PASV", 227)
        assert parse_pasv_reply(reply).host == "127.0.0.7"
        spas = await c.expect("SPAS", 229)
        assert [hp.host for hp in parse_spas_reply(spas)] == ["127.0.0.7"]
        assert await recv_stream_via_pasv(c, "RETR /x") == b"hello"
        # EPSV names the data address too (Globus' -epsv-ip), by default to Globus clients (CLIENTINFO)
        await c.expect('SITE CLIENTINFO scheme=ftp;appname="globus-url-copy";', 250)
        epsv = await c.expect("EPSV", 229)
        assert epsv.text.startswith("Entering Extended Passive Mode (|1|127.0.0.7|")
        hp = await c.epsv()
        assert hp.host == "127.0.0.7"
        sock = await dc.connect(hp)
        await c.expect("RETR /x", 150)
        assert await asyncio.get_running_loop().sock_recv(sock, 100) == b"hello"
        sock.close()
        assert (await c.read_reply()).code == 226
        await c.quit()
    finally:
        srv.stop()


@pytest.mark.parametrize(
    ("options", "plain", "globus"),
    [
        ({}, "(|||", "(|||"),  # no data address: the RFC 2428 form
        # the default with a data address: Globus-library clients (SITE CLIENTINFO) get the address,
        # others (curl refuses anything but the RFC form) do not
        ({"data_address": "127.0.0.1"}, "(|||", "(|1|127.0.0.1|"),
        ({"data_address": "127.0.0.1", "epsv_ip": False}, "(|||", "(|||"),
        ({"epsv_ip": True}, "(|1|127.0.0.1|", "(|1|127.0.0.1|"),  # as Globus' -epsv-ip: everyone
    ],
)
async def test_epsv_ip_option(tmp_path: Path, options: dict[str, object], plain: str, globus: str) -> None:
    srv = ThreadedServer(tmp_path, **options).start()
    try:
        c = await GridftpClient.connect("127.0.0.1", srv.port)
        reply = await c.expect("EPSV", 229)
        assert plain in reply.text, reply
        await c.expect('SITE CLIENTINFO scheme=ftp;appname="globus-url-copy";appver="10.12";', 250)
        reply = await c.expect("EPSV", 229)
        assert globus in reply.text, reply
        await c.quit()
    finally:
        srv.stop()


async def test_commands_before_login_get_530(ours: ThreadedServer) -> None:
    c = await GridftpClient.connect("127.0.0.1", ours.port, login=False)
    for line in (
        "PASV",
        "PORT 127,0,0,1,4,1",
        "RETR /f.bin",
        "STOR /x",
        "LIST",
        "CWD /",
        "MKD /d",
        "DELE /x",
        "SIZE /x",
        "CKSM MD5 0 -1 /x",
        "SPAS",
        "MODE E",
        "TYPE I",
        "SITE CLIENTINFO x",
    ):
        assert (await c.command(line)).code == 530, line
    assert (await c.command("USER bob")).code == 530
    assert (await c.command("PASS x")).code == 503
    assert (await c.command("USER anonymous")).code == 331
    assert (await c.command("PASS me@")).code == 230
    assert (await c.command("NOOP")).code == 200
    await c.quit()


async def test_connection_limit_421_and_maintenance_422(tmp_path: Path) -> None:
    flag = tmp_path / "disabled"
    srv = ThreadedServer(tmp_path, max_connections=2, disable_file=str(flag)).start()
    try:
        a = await GridftpClient.connect("127.0.0.1", srv.port)
        b = await GridftpClient.connect("127.0.0.1", srv.port)
        assert srv.server.connections == 2
        with pytest.raises(ClientError) as ei:
            await GridftpClient.connect("127.0.0.1", srv.port)
        assert ei.value.reply is not None and ei.value.reply.code == 421
        await a.quit()
        for _ in range(100):
            if srv.server.connections < 2:
                break
            await asyncio.sleep(0.02)
        flag.write_text("")
        with pytest.raises(ClientError) as ei:
            await GridftpClient.connect("127.0.0.1", srv.port)
        assert ei.value.reply is not None and ei.value.reply.code == 422
        assert (await b.noop()).code == 200  # running sessions continue
        flag.unlink()
        c = await GridftpClient.connect("127.0.0.1", srv.port)
        await c.quit()
        await b.quit()
    finally:
        srv.stop()


async def test_stream_retr_with_rest_and_stor_variants(ours: ThreadedServer, root: Path) -> None:
    c = await login(ours)
    await c.expect("TYPE I", 200)
    assert await recv_stream_via_pasv(c, "RETR /f.bin") == DATA
    await c.expect("REST 1000", 350)
    assert await recv_stream_via_pasv(c, "RETR f.bin") == DATA[1000:]
    # STOR, then APPE, then REST + STOR (overwrite in the middle, no truncation), then ESTO A.
    await c.put(str(root / "f.bin"), "/up.bin")
    assert (root / "up.bin").read_bytes() == DATA
    for cmd, expect in (
        ("APPE /up.bin", DATA + b"tail"),
        ("REST 4", DATA[:4] + b"tail" + DATA[8:] + b"tail"),
        ("ESTO A 2 /up.bin", DATA[:2] + b"tail" + b"il" + DATA[8:] + b"tail"),
    ):
        hp = await c.pasv()
        if cmd.startswith("REST"):
            await c.expect(cmd, 350)
            cmd = "STOR /up.bin"
        sock = await dc.connect(hp)
        await c.expect(cmd, 150)
        await asyncio.get_running_loop().sock_sendall(sock, b"tail")
        sock.close()
        assert (await c.read_reply()).code == 226
        assert (root / "up.bin").read_bytes() == expect, cmd
    await c.quit()


async def test_modee_retr_rest_ranges_and_eret(ours: ThreadedServer, root: Path) -> None:
    c = await login(ours)
    await c.expect("TYPE I", 200)
    await c.expect("MODE E", 200)
    await c.expect("OPTS RETR Parallelism=3,3,3;", 200)
    assert assemble(await recv_modee_via_port(c, "RETR /f.bin")) == DATA
    # Restart ranges: only the missing parts are sent, at their file offsets.
    await c.expect("REST 0-1000,5000-2000000", 350)
    got = await recv_modee_via_port(c, "RETR /f.bin")
    assert assemble({k - 1000: v for k, v in got.items()}) == DATA[1000:5000]
    # ERET P: offsets relative to the start of the requested part.
    got = await recv_modee_via_port(c, "ERET P 300 700000 /f.bin")
    assert assemble(got) == DATA[300:700300]
    await c.quit()


async def test_modee_sender_reuses_cached_connections(ours: ThreadedServer, root: Path) -> None:
    c = await login(ours)
    await c.setup(parallel=2)
    await c.expect("OPTS RETR Parallelism=2,2,2;", 200)
    listener = dc.open_listener("127.0.0.1")
    await c.port(HostPort("127.0.0.1", listener.getsockname()[1]))
    got: dict[int, bytes] = {}

    def write(data: memoryview, off: int) -> None:
        got[off] = bytes(data)

    accepted: list[socket.socket] = []

    async def more() -> socket.socket:
        s = await dc.accept(listener, timeout_s=10)
        accepted.append(s)
        return s

    await c.expect("RETR /f.bin", 150)
    res = await dc.recv_modee([], write, accept_more=more, idle_timeout_s=10)
    assert (await c.read_reply()).code == 226
    assert len(accepted) == 2 and len(res.reusable) == 2
    got.clear()
    # Second transfer on the same session without PORT: the server sends on the cached connections.
    await c.expect("RETR /f.bin", 150)
    res2 = await dc.recv_modee(res.reusable, write, accept_more=more, idle_timeout_s=10)
    assert (await c.read_reply()).code == 226
    assert len(accepted) == 2, "no new data connection expected"
    assert assemble(got) == DATA
    dc.close_all(res2.reusable)
    listener.close()
    await c.quit()


async def test_spas_store_and_spor_retrieve(ours: ThreadedServer, root: Path) -> None:
    c = await login(ours)
    await c.setup(parallel=2)
    hps = parse_spas_reply(await c.expect("SPAS", 229))
    socks = [await dc.connect(hps[0]) for _ in range(2)]
    await c.expect("STOR /spas.bin", 150)
    src = dc.Source.of_bytes(DATA)
    await dc.send_modee(socks, src, block_size=100_000)
    assert (await c.read_reply()).code == 226
    dc.close_all(socks)
    assert (root / "spas.bin").read_bytes() == DATA
    listener = dc.open_listener("127.0.0.1")
    await c.expect(f"SPOR {format_hostport(HostPort('127.0.0.1', listener.getsockname()[1]))}", 200)
    assert assemble(await recv_modee_via_port(c, "RETR /spas.bin", listener=listener)) == DATA
    listener.close()
    await c.quit()


async def test_epsv_and_eprt(ours: ThreadedServer, root: Path) -> None:
    c = await login(ours)
    hp = await c.epsv()
    assert hp.host == "127.0.0.1"
    sock = await dc.connect(hp)
    await c.expect("RETR /f.bin", 150)
    loop = asyncio.get_running_loop()
    buf = bytearray()
    while chunk := await loop.sock_recv(sock, 1 << 16):
        buf += chunk
    sock.close()
    assert (await c.read_reply()).code == 226 and bytes(buf) == DATA
    listener = dc.open_listener("127.0.0.1")
    await c.expect(f"EPRT |1|127.0.0.1|{listener.getsockname()[1]}|", 200)
    await c.expect("NLST /", 150)
    s = await dc.accept(listener, timeout_s=5)
    names = b""
    while chunk := await loop.sock_recv(s, 1 << 16):
        names += chunk
    s.close()
    listener.close()
    assert (await c.read_reply()).code == 226
    assert b"f.bin\r\n" in names
    assert (await c.command("EPRT |1|::1|5|")).code == 501
    await c.quit()


async def test_listings_and_facts(ours: ThreadedServer, root: Path) -> None:
    (root / "sub").mkdir()
    c = await login(ours)
    assert await c.size("/f.bin") == len(DATA)
    assert (await c.command("SIZE /sub")).code == 550
    mdtm = await c.expect("MDTM /f.bin", 213)
    assert len(mdtm.lines[-1]) == 14 and mdtm.lines[-1].isdigit()
    mlst = await c.expect("MLST /f.bin", 250)
    assert any(f"Size={len(DATA)};" in ln and "Type=file;" in ln for ln in mlst.lines)
    mlsd = await recv_stream_via_pasv(c, "MLSD /")
    assert b"Type=dir;" in mlsd and b" sub\r\n" in mlsd and b" f.bin\r\n" in mlsd
    listing = await recv_stream_via_pasv(c, "LIST -la")
    assert b"f.bin" in listing and listing.startswith((b"-", b"d"))
    await c.quit()


async def test_directory_and_file_management(ours: ThreadedServer, root: Path) -> None:
    c = await login(ours)
    assert (await c.command("PWD")).lines[-1].startswith('"/"')
    await c.expect("MKD /d1", 257)
    await c.expect("CWD d1", 250)
    assert (await c.command("PWD")).lines[-1].startswith('"/d1"')
    await c.expect("MKD inner", 257)
    assert (root / "d1" / "inner").is_dir()
    await c.expect("CDUP", 250)
    await c.expect("RNFR /f.bin", 350)
    await c.expect("RNTO /d1/g.bin", 250)
    assert (root / "d1" / "g.bin").read_bytes() == DATA and not (root / "f.bin").exists()
    assert (await c.command("RNTO /x")).code == 503
    await c.expect("DELE /d1/g.bin", 250)
    assert (await c.command("DELE /d1/inner")).code == 550
    await c.expect("RMD /d1/inner", 250)
    await c.expect("RMD d1", 250)
    assert not (root / "d1").exists()
    assert (await c.command("CWD /nope")).code == 550
    assert (await c.command("RETR /nope")).code == 550
    assert (await c.command("RMD /")).code == 550
    await c.quit()


async def test_missing_paths_answer_550_as_globus_does(ours: ThreadedServer, root: Path) -> None:
    c = await login(ours)
    for line in ("MLST /nope", "SIZE /nope", "MDTM /nope", "STAT /nope"):
        assert (await c.command(line)).code == 550, line
    for line in ("MLSD /nope", "LIST /nope", "NLST /nope", "MLSD /nope/deeper", "LIST -la /nope"):
        await c.expect("PASV", 227)
        reply = await c.command(line)
        assert reply.code == 550 and "No such file or directory" in reply.text, (line, reply)
    await c.expect("PASV", 227)
    assert (await c.command("MLSD /f.bin")).code == 501  # a file is not a directory: 501 (RFC 3659)
    # the session goes on: a listing of what exists still works
    assert b"f.bin" in await recv_stream_via_pasv(c, "NLST /")
    await c.quit()


async def test_site_chmod_and_mfmt(ours: ThreadedServer, root: Path) -> None:
    (root / "d").mkdir()
    c = await login(ours)
    assert "MFMT" in await c.feat()
    await c.expect("SITE CHMOD 600 /f.bin", 200)
    assert (root / "f.bin").stat().st_mode & 0o7777 == 0o600
    await c.expect("SITE CHMOD 0751 d", 200)
    assert (root / "d").stat().st_mode & 0o7777 == 0o751
    for line, code in (
        ("SITE CHMOD 4755 /f.bin", 501),  # setuid: refused
        ("SITE CHMOD 2755 /f.bin", 501),
        ("SITE CHMOD 1777 /d", 501),
        ("SITE CHMOD 9 /f.bin", 501),
        ("SITE CHMOD 644", 501),
        ("SITE CHMOD 644 /nope", 550),
        ("SITE CHMOD 000 /", 550),
        ("MFMT 2020 /f.bin", 501),
        ("MFMT 20201399000000 /f.bin", 501),
        ("MFMT 20200101000000", 501),
        ("MFMT 20200101000000 /nope", 550),
    ):
        assert (await c.command(line)).code == code, line
    assert (root / "f.bin").stat().st_mode & 0o7777 == 0o600
    reply = await c.expect("MFMT 20200102030405 /f.bin", 213)
    assert reply.text == "Modify=20200102030405; /f.bin"
    assert (root / "f.bin").stat().st_mtime == 1577934245.0
    assert (await c.expect("MDTM /f.bin", 213)).text == "20200102030405"
    await c.expect("MFMT 19991231235959.5 d", 213)
    assert (root / "d").stat().st_mtime == 946684799.5
    await c.quit()


@pytest.mark.parametrize("mechanism", ["GSSAPI", "TLS", "SSL", ""])
async def test_auth_is_refused_with_534_saying_gsi_is_not_supported(
    ours: ThreadedServer, mechanism: str
) -> None:
    c = await GridftpClient.connect("127.0.0.1", ours.port, login=False)
    reply = await c.command(f"AUTH {mechanism}".strip())
    assert reply.code == 534, reply
    assert "GSI" in reply.text and "not supported" in reply.text and "ftp://" in reply.text
    await c.login()  # and an anonymous login still works afterwards
    await c.quit()


async def test_cksm(ours: ThreadedServer, root: Path) -> None:
    c = await login(ours)
    assert await c.cksm("/f.bin", "ADLER32") == f"{zlib.adler32(DATA):08x}"
    assert await c.cksm("/f.bin", "MD5") == hashlib.md5(DATA).hexdigest()
    assert await c.cksm("/f.bin", "MD5", 10, 1000) == hashlib.md5(DATA[10:1010]).hexdigest()
    assert await c.cksm("/f.bin", "SHA256") == hashlib.sha256(DATA).hexdigest()
    assert (await c.command("CKSM NOPE 0 -1 /f.bin")).code == 501
    assert (await c.command("CKSM MD5 0 -1 /missing")).code == 550
    await c.quit()


async def test_stream_transfer_with_no_data_connection_fails_cleanly(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    srv = ThreadedServer(tmp_path, data_timeout_s=0.3).start()
    try:
        c = await login(srv)
        assert (await c.command("RETR /f")).code == 425  # no PASV/PORT
        await c.expect("PASV", 227)
        await c.expect("RETR /f", 150)
        assert (await c.read_reply()).code == 425  # nobody connected
        free = socket.socket()
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
        free.close()
        await c.expect(f"PORT {format_hostport(HostPort('127.0.0.1', port))}", 200)
        await c.expect("RETR /f", 150)
        assert (await c.read_reply()).code == 425  # connection refused
        await c.expect("MODE E", 200)
        assert (await c.command("STOR /g")).code == 425  # MODE E receiver needs PASV
        assert (await c.noop()).code == 200
        await c.quit()
    finally:
        srv.stop()


async def test_modee_receive_rejects_broken_stream(ours: ThreadedServer, root: Path) -> None:
    c = await login(ours)
    await c.setup(parallel=2)
    hp = await c.pasv()
    sock = await dc.connect(hp)
    await c.expect("STOR /broken.bin", 150)
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, modee.encode_header(0, 100, 0) + b"x" * 10)
    sock.close()  # closed mid-block
    reply = await c.read_reply()
    assert reply.code == 426
    assert (await c.noop()).code == 200
    await c.quit()
    assert os.path.exists(root / "broken.bin")
