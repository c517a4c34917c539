"""Escapes from --root are refused: `..`, symlinks pointing outside, absolute host paths, NUL bytes,
over-long lines, and commands before login."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridlb.gridftp import datachannel as dc
from gridlb.gridftp.client import GridftpClient
from tests.gridftp.helpers import ThreadedServer

SECRET = b"outside secret\n"


@pytest.fixture
def jail(tmp_path: Path) -> Iterator[tuple[ThreadedServer, Path, Path]]:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    (root / "sub").mkdir()
    (root / "inside.txt").write_bytes(b"inside\n")
    (root / "link_out").symlink_to(outside)
    (root / "file_out").symlink_to(outside / "secret.txt")
    (root / "abs_link").symlink_to("/etc/passwd")
    (root / "dangling").symlink_to(outside / "created-through-link")
    (root / "sub" / "up_link").symlink_to("../../outside")
    (root / "link_in").symlink_to("inside.txt")  # a symlink that stays inside is fine
    srv = ThreadedServer(root, data_timeout_s=2.0).start()
    try:
        yield srv, root, outside
    finally:
        srv.stop()


def snapshot(d: Path) -> dict[str, tuple[int, int, bytes]]:
    out = {}
    for p in sorted(d.rglob("*")):
        st = p.lstat()
        out[str(p)] = (st.st_size, st.st_mtime_ns, p.read_bytes() if p.is_file() else b"")
    return out


async def test_escapes_are_refused(jail: tuple[ThreadedServer, Path, Path]) -> None:
    srv, root, outside = jail
    before = snapshot(outside)
    modes = [(p, p.lstat().st_mode) for p in outside.rglob("*")]
    c = await GridftpClient.connect("127.0.0.1", srv.port)
    refused = [
        # `..` above the root, from / and from a subdirectory
        "RETR ../outside/secret.txt",
        "SIZE /../outside/secret.txt",
        "CWD ..",
        "CWD /..",
        "MKD ../newdir",
        "STOR ../outside/new.bin",
        "RNFR ../outside/secret.txt",
        "DELE ../outside/secret.txt",
        "CKSM MD5 0 -1 ../outside/secret.txt",
        # symlinks pointing outside (directory, file, absolute, dangling, nested)
        "RETR link_out/secret.txt",
        "SIZE file_out",
        "MDTM file_out",
        "MLST file_out",
        "CKSM ADLER32 0 -1 file_out",
        "SIZE abs_link",
        "CWD link_out",
        "MLSD link_out",
        "LIST link_out",
        "MKD link_out/x",
        "RMD link_out",
        "STOR dangling",
        "STOR link_out/new.bin",
        "APPE file_out",
        "ESTO A 0 file_out",
        "SITE CHMOD 777 file_out",
        "SITE CHMOD 777 link_out",
        "SITE CHMOD 777 abs_link",
        "SITE CHMOD 777 ../outside",
        "MFMT 20000101000000 file_out",
        "MFMT 20000101000000 ../outside/secret.txt",
        "RNFR file_out",
        "RETR sub/up_link/secret.txt",
        # absolute host paths name paths under the root, never the host's
        "RETR /etc/passwd",
        "SIZE //etc/passwd",
        f"SIZE {outside}/secret.txt",
        "MLST /etc",
    ]
    for line in refused:
        if line.startswith(("RETR", "STOR", "APPE", "ESTO", "MLSD", "LIST")):
            await c.expect("PASV", 227)
        reply = await c.command(line)
        assert reply.code == 550, (line, reply)
    # rename into the outside is refused too
    await c.expect("RNFR inside.txt", 350)
    assert (await c.command("RNTO ../outside/moved.txt")).code == 550
    await c.expect("RNFR inside.txt", 350)
    assert (await c.command("RNTO link_out/moved.txt")).code == 550
    # NUL bytes end the command, whatever follows them
    for raw in (b"RETR inside.txt\x00../../outside/secret.txt", b"CWD \x00", b"SIZE file_out\x00"):
        c.writer.write(raw + b"\r\n")
        assert (await c.read_reply()).code == 501, raw
    # symlinks that stay inside are followed
    assert await c.size("link_in") == len(b"inside\n")
    assert (await c.command("PWD")).lines[-1].startswith('"/"')
    await c.quit()
    assert snapshot(outside) == before
    assert {(p, p.lstat().st_mode) for p in outside.rglob("*")} == {(p, m) for p, m in modes}
    assert not (outside / "created-through-link").exists()
    assert sorted(os.listdir(root.parent)) == ["outside", "root"]


async def test_overlong_lines_are_refused_and_the_session_survives(
    jail: tuple[ThreadedServer, Path, Path],
) -> None:
    srv, _, _ = jail
    c = await GridftpClient.connect("127.0.0.1", srv.port)
    for size in (4097, 70_000, 1_000_000):
        c.writer.write(b"SIZE /" + b"a" * size + b"\r\n")
        await c.writer.drain()
        assert (await c.read_reply()).code == 500
        assert (await c.noop()).code == 200
    await c.quit()
    assert srv.server.crashes == 0


async def test_commands_before_login_are_refused(jail: tuple[ThreadedServer, Path, Path]) -> None:
    srv, root, _ = jail
    c = await GridftpClient.connect("127.0.0.1", srv.port, login=False)
    for line in (
        "RETR inside.txt",
        "STOR x",
        "DELE inside.txt",
        "MKD d",
        "RNFR inside.txt",
        "PASV",
        "CWD sub",
    ):
        assert (await c.command(line)).code == 530, line
    assert (await c.command("USER root")).code == 530
    assert (await c.command("PASS x")).code == 503
    assert (await c.command("DELE inside.txt")).code == 530
    await c.quit()
    assert (root / "inside.txt").exists() and not (root / "x").exists() and not (root / "d").exists()


async def test_writes_through_an_inside_path_stay_inside(jail: tuple[ThreadedServer, Path, Path]) -> None:
    srv, root, outside = jail
    c = await GridftpClient.connect("127.0.0.1", srv.port)
    hp = await c.pasv()
    sock = await dc.connect(hp)
    await c.expect("STOR sub/../new.bin", 150)
    await asyncio.get_running_loop().sock_sendall(sock, b"data")
    sock.close()
    assert (await c.read_reply()).code == 226
    assert (root / "new.bin").read_bytes() == b"data"
    await c.expect("DELE file_out", 250)  # deletes the link itself, never its target
    assert (outside / "secret.txt").read_bytes() == SECRET
    await c.quit()
