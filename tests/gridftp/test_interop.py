"""Interop with Debian's real Globus tools: globus-url-copy against our server, third-party copies with
globus-gridftp-server in both directions, checksums for 0 B, 1 B, 1 MiB + 1 B and 64 MiB."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.gridftp.helpers import SIZES, GlobusServer, ThreadedServer, guc, md5
from tests.support import need_tool

STREAMS = (1, 4)


def _guc(src: str, dst: str, streams: int) -> None:
    args = ["-p", str(streams)] if streams > 1 else []
    proc = guc(*args, src, dst)
    assert proc.returncode == 0, f"globus-url-copy {src} {dst} rc={proc.returncode}: {proc.stderr[-2000:]}"


@pytest.mark.parametrize("streams", STREAMS)
@pytest.mark.parametrize("name", tuple(SIZES))
def test_guc_download_from_ours(
    ours: ThreadedServer, files: dict[str, Path], tmp_path: Path, name: str, streams: int
) -> None:
    need_tool("globus-url-copy")
    src = Path(ours.config.root) / f"{name}.bin"
    src.write_bytes(files[name].read_bytes())
    out = tmp_path / "out.bin"
    _guc(f"{ours.url}/{name}.bin", f"file://{out}", streams)
    assert out.stat().st_size == SIZES[name]
    assert md5(out) == md5(files[name])


@pytest.mark.parametrize("streams", STREAMS)
@pytest.mark.parametrize("name", tuple(SIZES))
def test_guc_upload_to_ours(ours: ThreadedServer, files: dict[str, Path], name: str, streams: int) -> None:
    need_tool("globus-url-copy")
    _guc(f"file://{files[name]}", f"{ours.url}/{name}.bin", streams)
    got = Path(ours.config.root) / f"{name}.bin"
    assert got.stat().st_size == SIZES[name]
    assert md5(got) == md5(files[name])


@pytest.mark.parametrize("streams", STREAMS)
@pytest.mark.parametrize("name", tuple(SIZES))
def test_third_party_ours_to_globus(
    relay: ThreadedServer, globus: GlobusServer, files: dict[str, Path], name: str, streams: int
) -> None:
    """Ours sends to Globus' data address (127.0.0.9, not the client's): allowed by allow_third_party."""
    (Path(relay.config.root) / f"{name}.bin").write_bytes(files[name].read_bytes())
    dst = globus.home / f"from-ours-{name}-{streams}.bin"
    _guc(f"{relay.url}/{name}.bin", f"{globus.url}{dst}", streams)
    assert md5(dst) == md5(files[name])


@pytest.mark.parametrize("streams", STREAMS)
def test_third_party_from_ours_is_refused_by_default(
    ours: ThreadedServer, globus: GlobusServer, files: dict[str, Path], streams: int
) -> None:
    """Without allow_third_party, ours refuses to send to Globus' data address (no FTP bounce)."""
    (Path(ours.config.root) / "one.bin").write_bytes(files["one"].read_bytes())
    dst = globus.home / f"refused-{streams}.bin"
    args = ["-p", str(streams)] if streams > 1 else []
    proc = guc(*args, f"{ours.url}/one.bin", f"{globus.url}{dst}")
    assert proc.returncode != 0
    assert "504" in proc.stderr and "third-party" in proc.stderr, proc.stderr[-2000:]
    assert ours.server.refused_targets >= 1
    assert not dst.exists() or dst.stat().st_size == 0


@pytest.mark.parametrize("streams", STREAMS)
@pytest.mark.parametrize("name", tuple(SIZES))
def test_third_party_globus_to_ours(
    ours: ThreadedServer, globus: GlobusServer, files: dict[str, Path], name: str, streams: int
) -> None:
    _guc(f"{globus.url}{files[name]}", f"{ours.url}/from-globus.bin", streams)
    got = Path(ours.config.root) / "from-globus.bin"
    assert got.stat().st_size == SIZES[name]
    assert md5(got) == md5(files[name])


def test_guc_verify_checksum_and_listing(
    ours: ThreadedServer, files: dict[str, Path], tmp_path: Path
) -> None:
    """globus-url-copy's checksum verification (CKSM) and a directory listing (MLSD) work against ours."""
    need_tool("globus-url-copy")
    root = Path(ours.config.root)
    (root / "dir").mkdir()
    (root / "dir" / "a.bin").write_bytes(files["mib1"].read_bytes())
    (root / "dir" / "b.bin").write_bytes(b"b")
    out = tmp_path / "v.bin"
    proc = guc("-verify-checksum", f"{ours.url}/dir/a.bin", f"file://{out}")
    assert proc.returncode == 0, proc.stderr
    assert md5(out) == md5(files["mib1"])
    proc = guc("-list", f"{ours.url}/dir/")
    assert proc.returncode == 0, proc.stderr
    assert "a.bin" in proc.stdout and "b.bin" in proc.stdout
    # A recursive directory download uses MLSD and one data channel per file.
    dest = tmp_path / "copy"
    proc = guc("-r", "-cd", "-p", "2", f"{ours.url}/dir/", f"file://{dest}/")
    assert proc.returncode == 0, proc.stderr
    assert md5(dest / "a.bin") == md5(files["mib1"])
    assert (dest / "b.bin").read_bytes() == b"b"


def test_guc_reuses_modee_data_connections_across_files(ours: ThreadedServer, tmp_path: Path) -> None:
    """globus-url-copy -fast -p 2 moves 4 files per direction over the same 2 cached data connections."""
    need_tool("globus-url-copy")
    src = tmp_path / "src"
    src.mkdir()
    blobs = {f"f{i}.bin": bytes([i]) * (300_000 + i) for i in range(4)}
    for name, data in blobs.items():
        (src / name).write_bytes(data)
    ours.server.data_connections = 0
    proc = guc("-fast", "-p", "2", "-r", "-cd", f"file://{src}/", f"{ours.url}/up/")
    assert proc.returncode == 0, proc.stderr
    assert ours.server.data_connections == 2
    for name, data in blobs.items():
        assert (Path(ours.config.root) / "up" / name).read_bytes() == data
    ours.server.data_connections = 0
    out = tmp_path / "out"
    proc = guc("-fast", "-p", "2", "-r", "-cd", f"{ours.url}/up/", f"file://{out}/")
    assert proc.returncode == 0, proc.stderr
    assert ours.server.data_connections == 2
    for name, data in blobs.items():
        assert (out / name).read_bytes() == data


@pytest.mark.parametrize("streams", STREAMS)
def test_guc_ipv6_epsv_eprt(files: dict[str, Path], tmp_path: Path, streams: int) -> None:
    """globus-url-copy -ipv6 against ours on ::1 (EPSV for uploads, EPRT for MODE E downloads)."""
    need_tool("globus-url-copy")
    root = tmp_path / "root"
    root.mkdir()
    srv = ThreadedServer(root, host="::1", data_address="::1").start()
    try:
        url = f"ftp://[::1]:{srv.port}"
        p = ["-p", str(streams)] if streams > 1 else []
        proc = guc("-ipv6", *p, f"file://{files['mib1']}", f"{url}/up.bin")
        assert proc.returncode == 0, proc.stderr
        assert md5(root / "up.bin") == md5(files["mib1"])
        out = tmp_path / "down.bin"
        proc = guc("-ipv6", *p, f"{url}/up.bin", f"file://{out}")
        assert proc.returncode == 0, proc.stderr
        assert md5(out) == md5(files["mib1"])
    finally:
        srv.stop()


@pytest.mark.parametrize("streams", STREAMS)
def test_guc_partial_download_uses_eret(
    ours: ThreadedServer, files: dict[str, Path], tmp_path: Path, streams: int
) -> None:
    """globus-url-copy -off/-len sends ERET P; the part lands at its offset in the local file."""
    need_tool("globus-url-copy")
    data = files["mib1"].read_bytes()
    (Path(ours.config.root) / "p.bin").write_bytes(data)
    out = tmp_path / "part.bin"
    proc = guc("-p", str(streams), "-off", "1000", "-len", "300000", f"{ours.url}/p.bin", f"file://{out}")
    assert proc.returncode == 0, proc.stderr
    got = out.read_bytes()
    assert len(got) == 301000 and got[1000:] == data[1000:301000]


def test_guc_listing_a_missing_directory_reports_550(ours: ThreadedServer) -> None:
    """globus-url-copy -list of a missing directory fails with the server's 550, as against Globus."""
    need_tool("globus-url-copy")
    proc = guc("-list", f"{ours.url}/nope/")
    assert proc.returncode != 0
    assert "550 No such file or directory." in proc.stderr, proc.stderr


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_curl_and_guc_both_download_with_the_default_epsv(
    files: dict[str, Path], tmp_path: Path, host: str
) -> None:
    """With --data-address, globus-url-copy (CLIENTINFO) gets the address in EPSV and curl the RFC 2428
    form it insists on: both download the same file (curl uses EPSV by default, IPv4 and IPv6)."""
    need_tool("globus-url-copy", "curl")
    root = tmp_path / "root"
    root.mkdir()
    (root / "f.bin").write_bytes(files["mib1"].read_bytes())
    srv = ThreadedServer(root, host=host, data_address=host).start()
    try:
        url = f"ftp://[{host}]:{srv.port}" if ":" in host else f"ftp://{host}:{srv.port}"
        out = tmp_path / "curl.bin"
        proc = subprocess.run(
            ["timeout", "-k", "5", "30", "curl", "-sS", "-v", "-o", str(out), f"{url}/f.bin"],
            capture_output=True,
            text=True,
            timeout=45,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "229 Entering Extended Passive Mode (|||" in proc.stderr
        assert md5(out) == md5(files["mib1"])
        out2 = tmp_path / "guc.bin"
        proc = guc("-dbg", *(["-ipv6"] if ":" in host else []), f"{url}/f.bin", f"file://{out2}")
        assert proc.returncode == 0, proc.stderr[-2000:]
        if ":" in host:  # globus-url-copy -ipv6 sends EPSV, after SITE CLIENTINFO
            assert f"(|2|{host}|" in proc.stderr
        assert md5(out2) == md5(files["mib1"])
    finally:
        srv.stop()


def test_guc_epsv_and_parallel_through_a_proxy_vip() -> None:
    """Behind the proxy dataplane's VIP, globus-url-copy -ipv6 (EPSV) reaches the real server itself:
    its EPSV reply names the server's data address (the default with --data-address); -p 4 (the server
    connects back to the client) works too. Before --epsv-ip the EPSV client dialled the VIP and failed."""
    need_tool("globus-url-copy")
    from tests.director.loopback import Loopback

    lb = Loopback(240)
    try:
        lb.start_server(2)
        lb.start_server(3)
        lb.write_site([(2, 1), (3, 1)])
        lb.start_director()
        url = f"ftp://{lb.vip}:2811/file.bin"
        want = md5(lb.root / "file.bin")
        for args in (["-ipv6"], ["-ipv6", "-p", "4"], ["-p", "4"], []):
            out = lb.dir / "out.bin"
            out.unlink(missing_ok=True)
            proc = guc("-dbg", *args, url, f"file://{out}")
            assert proc.returncode == 0, (args, proc.stderr[-2000:])
            assert md5(out) == want, args
            if "-ipv6" in args and "-p" not in args:  # stream mode: EPSV, answered with a real server
                assert "229 Entering Extended Passive Mode (|1|127.44.240." in proc.stderr
                assert f"|1|{lb.vip}|" not in proc.stderr
    finally:
        lb.close()
