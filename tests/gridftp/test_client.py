"""Our client against a real globus-gridftp-server (1 and 4 streams, every acceptance size) and ours."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridlb.gridftp.client import ClientError, GridftpClient, third_party_copy, transfer
from tests.gridftp.helpers import SIZES, GlobusServer, ThreadedServer, md5

STREAMS = (1, 4)


@pytest.mark.parametrize("streams", STREAMS)
@pytest.mark.parametrize("name", tuple(SIZES))
async def test_get_from_globus(
    globus: GlobusServer, files: dict[str, Path], tmp_path: Path, name: str, streams: int
) -> None:
    out = tmp_path / "out.bin"
    res = await transfer(f"{globus.url}{files[name]}", f"file://{out}", parallel=streams, timeout_s=20)
    assert res is not None and res.bytes == SIZES[name]
    assert md5(out) == md5(files[name])


@pytest.mark.parametrize("streams", STREAMS)
@pytest.mark.parametrize("name", tuple(SIZES))
async def test_put_to_globus(globus: GlobusServer, files: dict[str, Path], name: str, streams: int) -> None:
    dst = globus.home / f"put-{name}-{streams}.bin"
    res = await transfer(f"file://{files[name]}", f"{globus.url}{dst}", parallel=streams, timeout_s=20)
    assert res is not None and res.bytes == SIZES[name]
    assert md5(dst) == md5(files[name])


async def test_size_and_checksums_agree_with_globus(globus: GlobusServer, files: dict[str, Path]) -> None:
    import hashlib
    import zlib

    data = files["mib1"].read_bytes()
    async with await GridftpClient.connect("127.0.0.1", globus.port, timeout_s=10) as c:
        assert await c.size(str(files["mib1"])) == len(data)
        assert await c.cksm(str(files["mib1"]), "ADLER32") == f"{zlib.adler32(data):08x}"
        assert await c.cksm(str(files["mib1"]), "MD5") == hashlib.md5(data).hexdigest()
        with pytest.raises(ClientError, match="550"):
            await c.size(str(globus.home / "missing"))


async def test_client_third_party_both_ways(
    relay: ThreadedServer, globus: GlobusServer, files: dict[str, Path]
) -> None:
    ours = relay
    root = Path(ours.config.root)
    (root / "src.bin").write_bytes(files["mib1"].read_bytes())
    dst = globus.home / "tp-from-ours.bin"
    await transfer(f"{ours.url}/src.bin", f"{globus.url}{dst}", parallel=4, timeout_s=20)
    assert md5(dst) == md5(files["mib1"])
    await transfer(f"{globus.url}{files['mib64']}", f"{ours.url}/tp.bin", parallel=2, timeout_s=20)
    assert md5(root / "tp.bin") == md5(files["mib64"])


async def test_modee_session_reuses_data_connections(ours: ThreadedServer, files: dict[str, Path]) -> None:
    """Several MODE E uploads and third-party copies on one pair of sessions (connections cached by ours)."""
    root = Path(ours.config.root)
    (root / "a.bin").write_bytes(files["mib1"].read_bytes())
    async with (
        await GridftpClient.connect("127.0.0.1", ours.port) as a,
        await GridftpClient.connect("127.0.0.1", ours.port) as b,
    ):
        for i in range(3):
            await third_party_copy(a, "/a.bin", b, f"/copy{i}.bin", parallel=3)
            await b.put(str(files["one"]), f"/one{i}.bin", parallel=2)
    for i in range(3):
        assert md5(root / f"copy{i}.bin") == md5(files["mib1"])
        assert (root / f"one{i}.bin").read_bytes() == files["one"].read_bytes()


async def test_refusals_raise_client_error(ours: ThreadedServer) -> None:
    ours.server.disabled = True
    with pytest.raises(ClientError, match="422") as ei:
        await GridftpClient.connect("127.0.0.1", ours.port, timeout_s=5)
    assert ei.value.reply is not None and ei.value.reply.code == 422
    ours.server.disabled = False
    async with await GridftpClient.connect("127.0.0.1", ours.port, timeout_s=5, login=False) as c:
        assert c.banner is not None and c.banner.code == 220
        with pytest.raises(ClientError, match="530"):
            await c.size("/x")
