"""`gridlb check`: one line of output and exit 0 (up) / 1 (down or refusing), or misc_dynamic statuses."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from gridlb.cli.check import exit_status
from gridlb.cli.main import main
from gridlb.health.base import CheckResult, Verdict
from tests.health.xrootd_server import XrootdServer
from tests.support import need_root


@pytest.mark.parametrize(
    ("result", "weight", "status"),
    [
        (CheckResult(Verdict.UP), None, 0),
        (CheckResult(Verdict.REFUSING), None, 1),
        (CheckResult(Verdict.DOWN), None, 1),
        (CheckResult(Verdict.UP), 5, 7),  # misc_dynamic: weight 5
        (CheckResult(Verdict.UP, weight=3), 5, 5),  # a script's own weight wins
        (CheckResult(Verdict.REFUSING), 5, 2),  # weight 0: drain
        (CheckResult(Verdict.DOWN), 5, 1),
    ],
)
def test_exit_status(result: CheckResult, weight: int | None, status: int) -> None:
    assert exit_status(result, weight) == status


@pytest.fixture
def fake_gridftp() -> Iterator[tuple[str, list[bytes]]]:
    """A GridFTP-looking server on 127.0.0.71 in a thread; the banner is set by the test."""
    banner: list[bytes] = [b"220 ready.\r\n"]
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, asyncio.Server] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(banner[0])
        await writer.drain()
        await reader.readline()
        writer.write(b"221 Goodbye.\r\n")
        writer.close()

    async def start() -> None:
        holder["server"] = await asyncio.start_server(handle, "127.0.0.71", 0)
        started.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()))
    thread.start()
    assert started.wait(10)
    port = holder["server"].sockets[0].getsockname()[1]
    yield f"127.0.0.71:{port}", banner
    loop.call_soon_threadsafe(holder["server"].close)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_gridftp_command(fake_gridftp: tuple[str, list[bytes]], capsys: pytest.CaptureFixture[str]) -> None:
    target, banner = fake_gridftp
    assert main(["check", "gridftp", target]) == 0
    assert capsys.readouterr().out.startswith(f"up {target}: banner 220 ready. (")
    banner[0] = b"421 Service busy.\r\n"
    assert main(["check", "gridftp", target]) == 1
    assert capsys.readouterr().out.startswith(f"refusing {target}: refusing: 421 Service busy.")
    assert main(["check", "gridftp", "--misc-dynamic-weight", "10", target]) == 2
    capsys.readouterr()
    banner[0] = b"220 ready.\r\n"
    assert main(["check", "gridftp", "-q", "--misc-dynamic-weight", "10", target]) == 12
    assert capsys.readouterr().out == ""


def test_tcp_and_script_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "tcp", "--timeout", "1", "127.0.0.72:1"]) == 1
    assert capsys.readouterr().out.startswith(
        "down 127.0.0.72:1: TCP connect to 127.0.0.72:1: connection refused"
    )
    assert (
        main(["check", "script", "--dynamic", "127.0.0.72", "--", "sh", "-c", "echo $GRIDLB_REAL; exit 9"])
        == 0
    )
    assert capsys.readouterr().out.startswith("up 127.0.0.72:2811 weight=7: sh: exit 9: weight 7")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["check", "gridftp", "no-such-host"], "error: TARGET: 'no-such-host' is not ADDR[:PORT]"),
        (["check", "gridftp", "--timeout", "0", "127.0.0.1"], "error: --timeout: 0.0 must be > 0"),
        (["check", "tcp", "--timeout", "nan", "127.0.0.1"], "error: --timeout: nan must be > 0"),
        (["check", "tcp", "127.0.0.1:99999"], "error: TARGET: '127.0.0.1:99999' is not ADDR[:PORT]"),
        (["check", "tcp", "[::1"], "error: TARGET: '[::1' is not ADDR[:PORT]"),
        (
            ["check", "gridftp", "--level", "canary", "127.0.0.1"],
            "error: gridftp: level canary needs canary_path",
        ),
        (["check", "script", "127.0.0.1"], "error: COMMAND: no command given"),
        (
            ["check", "script", "--user", "glbH-nobody", "127.0.0.1", "true"],
            "error: script: user 'glbH-nobody' does not exist on this host",
        ),
        (["check", "tcp", "--misc-dynamic-weight", "300", "127.0.0.1"], "error: --misc-dynamic-weight"),
    ],
)
def test_user_errors_are_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("gridlb: ") and message in err and err.count("\n") == 1, err


def test_the_rendered_keepalived_command_runs(
    fake_gridftp: tuple[str, list[bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    """The command line `gridlb render keepalived` puts in a MISC_CHECK is one this command accepts."""
    import shlex

    from gridlb.config.load import Site, parse_text
    from gridlb.render.keepalived import gridftp_command

    target, banner = fake_gridftp
    addr, port = target.split(":")
    site = Site.from_files(
        [
            parse_text(
                f"""
keepalived::virtual_servers:
    gridftp:
        ip_address: '127.0.0.70'
        port: 2811
        lb_kind: DR
        real_servers:
            - ip_address: '{addr}'
              port: {port}
              weight: 7
              gridftp_check: {{connect_timeout: 2}}
""",
                "site.yaml",
            )
        ]
    )
    vs = site.virtual_servers["gridftp"]
    rs = vs.real_servers[0]
    assert rs.gridftp_check is not None
    argv = shlex.split(gridftp_command(vs, rs, rs.gridftp_check, site.gridlb, "gridlb"))
    assert argv[:3] == ["gridlb", "check", "gridftp"] and "--vip" in argv
    assert main(argv[1:]) == 9  # up: weight 7
    banner[0] = b"421 Service busy.\r\n"
    assert main(argv[1:]) == 2  # refusing: weight 0
    capsys.readouterr()


def test_xrootd_command_against_real_xrootd(capsys: pytest.CaptureFixture[str]) -> None:
    """`gridlb check xrootd` as keepalived's MISC_CHECK runs it: exit 0 up, 1 down, W+2 with misc_dynamic."""
    server = XrootdServer()
    try:
        server.start()
        target = server.target
        assert main(["check", "xrootd", "--level", "canary", "--canary", "/canary.txt", target]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"up {target}: xrootd {target}: protocol ") and "kXR_stat /canary.txt" in out
        assert main(["check", "xrootd", "--level", "login", "-q", "--misc-dynamic-weight", "5", target]) == 7
        assert capsys.readouterr().out == ""
        assert main(["check", "xrootd", "--level", "canary", "--canary", "/glbH-none", target]) == 1
        assert "kXR_NotFound" in capsys.readouterr().out
        server.pause()
        assert main(["check", "xrootd", "--timeout", "0.5", target]) == 1
        assert capsys.readouterr().out.startswith(f"down {target}: xrootd {target}: no answer within 0.5 s")
        server.stop()
        assert main(["check", "xrootd", target]) == 1
        assert "connection refused" in capsys.readouterr().out
    finally:
        server.close()
    assert main(["check", "xrootd", "--user", "ninechars", "127.0.0.1"]) == 2
    assert capsys.readouterr().err.strip() == (
        "gridlb: error: xrootd: user 'ninechars': a kXR_login user name is 1 to 8 bytes"
    )
    # the default port is XRootD's
    assert main(["check", "xrootd", "--timeout", "1", "127.0.0.73"]) == 1
    assert "127.0.0.73:1094" in capsys.readouterr().out


def test_script_user(capsys: pytest.CaptureFixture[str]) -> None:
    need_root()
    assert (
        main(["check", "script", "--user", "nobody:daemon", "127.0.0.72", "--", "sh", "-c", "id -u; id -gn"])
        == 0
    )
    assert capsys.readouterr().out.startswith("up 127.0.0.72:2811: sh: exit 0: daemon")
    assert main(["check", "script", "--user", "nobody", "127.0.0.72", "--", "sh", "-c", "id -u"]) == 0
    assert capsys.readouterr().out.startswith("up 127.0.0.72:2811: sh: exit 0: 65534")
