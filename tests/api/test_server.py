"""Tests of the control API server: socket mode and group, SO_PEERCRED roles, malformed input."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from gridlb.api.client import ControlClient, ControlConnectError
from gridlb.api.messages import MAX_LINE_BYTES, ApiError, ErrorCode, Request
from gridlb.api.server import ApiServer, PeerCred
from tests.support import ROOT, need_root, reachable_by_others

GROUP = 4242  # a group number no account is in: only root and explicit members may write
SRC = str(ROOT / "src")


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A directory other users can traverse (pytest's tmp_path is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="glbD-api-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, request: Request, peer: PeerCred) -> Any:
        self.calls.append((request.op, peer.uid))
        if request.op == "enable":
            raise ApiError(ErrorCode.NOT_FOUND, "no real server x")
        if request.op == "reload":
            raise RuntimeError("boom")
        return {"op": request.op, "uid": peer.uid}


@pytest.fixture
async def served(sockdir: Path) -> AsyncIterator[tuple[ApiServer, Recorder]]:
    rec = Recorder()
    server = ApiServer(sockdir / "control.sock", rec, mode=0o666, group=GROUP)
    await server.start()
    yield server, rec
    await server.close()


def client_call(path: Path, line: bytes) -> Any:
    with ControlClient(str(path), timeout_s=5) as c:
        return c.send_raw(line)


async def test_socket_mode_and_group(served: tuple[ApiServer, Recorder]) -> None:
    server, _ = served
    st = server.path.stat()
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o666
    assert st.st_gid == GROUP


async def test_default_mode_is_0660(sockdir: Path) -> None:
    server = ApiServer(sockdir / "c.sock", Recorder())
    await server.start()
    try:
        assert stat.S_IMODE(server.path.stat().st_mode) == 0o660
    finally:
        await server.close()
    assert not server.path.exists()


async def test_read_and_write_as_owner(served: tuple[ApiServer, Recorder]) -> None:
    server, rec = served

    def work() -> list[Any]:
        with ControlClient(str(server.path), timeout_s=5) as c:
            return [c.status(), c.drain("127.0.0.2")]

    status, drained = await asyncio.to_thread(work)
    assert status == {"op": "status", "uid": os.geteuid()}
    assert drained["op"] == "drain"
    assert rec.calls == [("status", os.geteuid()), ("drain", os.geteuid())]


async def test_malformed_input_gets_error_replies_and_the_server_keeps_serving(
    served: tuple[ApiServer, Recorder],
) -> None:
    server, _ = served

    def work() -> list[Any]:
        with ControlClient(str(server.path), timeout_s=5) as c:
            replies = [
                c.send_raw(b"{this is not json\n"),
                c.send_raw(b"\xff\xfe\xfd\n"),
                c.send_raw(b'{"v": 1, "op": "drain", "args": {"real": 7}}\n'),
                c.send_raw(b'{"v": 1, "op": "enable", "args": {"real": "x"}, "id": "e"}\n'),
                c.send_raw(b'{"v": 1, "op": "reload", "id": 9}\n'),
            ]
            replies.append(c.status())  # same connection still answers
        return replies

    bad_json, bad_utf8, bad_arg, not_found, internal, status = await asyncio.to_thread(work)
    assert bad_json["ok"] is False and bad_json["error"]["code"] == "bad-json"
    assert bad_utf8["error"]["code"] == "bad-json"
    assert bad_arg["error"]["code"] == "invalid-argument"
    assert not_found == {
        "v": 1,
        "id": "e",
        "ok": False,
        "error": {"code": "not-found", "message": "no real server x"},
    }
    assert internal["id"] == 9 and internal["error"]["code"] == "internal"
    assert status["op"] == "status"
    assert server.malformed == 3

    # an over-long line gets an error and the connection is closed; the server goes on
    def too_long() -> Any:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(str(server.path))
        s.sendall(b"x" * (MAX_LINE_BYTES + 10) + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        return json.loads(data)

    reply = await asyncio.to_thread(too_long)
    assert reply["error"]["code"] == "too-long"
    # a client that hangs up mid-line does not disturb others
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(server.path))
    s.sendall(b'{"v": 1, "op"')
    s.close()
    assert (await asyncio.to_thread(client_call, server.path, b'{"v":1,"op":"ping"}\n'))["ok"]


async def _run_as_nobody(path: Path, op: str, *, groups: str = "") -> dict[str, Any]:
    script = (
        "import json, sys\n"
        f"sys.path.insert(0, {SRC!r})\n"
        "from gridlb.api.client import ControlClient\n"
        "c = ControlClient(sys.argv[1], timeout_s=5)\n"
        "line = json.dumps({'v': 1, 'op': sys.argv[2], 'args': ({'real': '127.0.0.2'} "
        "if sys.argv[2] == 'drain' else {})}).encode() + b'\\n'\n"
        "print(json.dumps(c.send_raw(line)))\n"
    )
    groups_arg = [f"--groups={groups}"] if groups else ["--clear-groups"]
    with reachable_by_others():  # a checkout in a private directory: nobody must reach src/
        proc = await asyncio.create_subprocess_exec(
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            *groups_arg,
            sys.executable,
            "-c",
            script,
            str(path),
            op,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out)
    return result


async def test_outsider_reads_but_may_not_write(served: tuple[ApiServer, Recorder]) -> None:
    need_root()
    server, rec = served
    status = await _run_as_nobody(server.path, "status")
    assert status["ok"] and status["result"]["uid"] == 65534
    refused = await _run_as_nobody(server.path, "drain")
    assert refused["ok"] is False and refused["error"]["code"] == "forbidden"
    msg = refused["error"]["message"]
    assert "permission denied" in msg and "'drain'" in msg and "4242" in msg and "nobody" in msg
    assert ("drain", 65534) not in rec.calls
    assert server.refused == 1


async def test_group_member_may_write(served: tuple[ApiServer, Recorder]) -> None:
    need_root()
    server, rec = served
    reply = await _run_as_nobody(server.path, "drain", groups=str(GROUP))
    assert reply["ok"], reply
    assert ("drain", 65534) in rec.calls


async def test_0660_socket_refuses_outsiders_at_connect(sockdir: Path) -> None:
    need_root()
    server = ApiServer(sockdir / "c.sock", Recorder(), group=GROUP)
    await server.start()
    try:
        with reachable_by_others():
            proc = await asyncio.create_subprocess_exec(
                "setpriv",
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                sys.executable,
                "-c",
                f"import sys; sys.path.insert(0, {SRC!r})\n"
                "from gridlb.api.client import ControlClient\n"
                f"ControlClient({str(server.path)!r}).status()\n",
                stderr=asyncio.subprocess.PIPE,
            )
            _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 1
        assert b"permission denied" in err
    finally:
        await server.close()


async def test_second_server_on_a_live_socket_is_refused(served: tuple[ApiServer, Recorder]) -> None:
    server, _ = served
    other = ApiServer(server.path, Recorder())
    with pytest.raises(OSError, match="already serving"):
        await other.start()


async def test_stale_socket_is_replaced(sockdir: Path) -> None:
    path = sockdir / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()  # leaves a socket file nobody listens on
    server = ApiServer(path, Recorder())
    await server.start()
    try:
        reply = await asyncio.to_thread(client_call, path, b'{"v":1,"op":"ping"}\n')
        assert reply["ok"]
    finally:
        await server.close()


def test_client_reports_missing_socket(sockdir: Path) -> None:
    with pytest.raises(ControlConnectError, match="no director is listening"):
        ControlClient(str(sockdir / "none.sock")).status()


@pytest.mark.parametrize("depth", [17, 2_000, 30_000])
async def test_deeply_nested_json_gets_an_error_reply_and_the_connection_stays_usable(
    served: tuple[ApiServer, Recorder], caplog: pytest.LogCaptureFixture, depth: int
) -> None:
    server, rec = served
    nested = b"[" * depth + b"]" * depth
    lines = [
        nested + b"\n",
        b'{"v": 1, "op": "drain", "args": {"real": ' + nested + b"}}\n",
        b'{"v": 1, "op": "ping", "id": ' + nested + b"}\n",
    ]
    assert all(len(line) < MAX_LINE_BYTES for line in lines)

    def work() -> list[Any]:
        with ControlClient(str(server.path), timeout_s=5) as c:
            return [c.send_raw(line) for line in lines] + [c.status()]

    with caplog.at_level("DEBUG", logger="gridlb.api.server"):
        *bad, status = await asyncio.to_thread(work)
    for reply in bad:
        assert reply["ok"] is False and reply["id"] is None
        assert reply["error"] == {
            "code": "bad-json",
            "message": "malformed JSON: nested deeper than 16 levels",
        }
    assert status["op"] == "status" and rec.calls == [("status", os.geteuid())]
    assert server.malformed == 3
    records = [r for r in caplog.records if r.name == "gridlb.api.server"]
    assert len(records) == 3 and all(r.exc_info is None and "\n" not in r.getMessage() for r in records)
