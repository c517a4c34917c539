"""Tests of the dashboard's HTTP listener against a running director (control socket, recording dataplane).

Requests go over real TCP on loopback with a raw client, so that what a browser would see (status
lines, headers, the event stream) is what is checked.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gridlb.director.daemon import DaemonOptions, DirectorDaemon
from gridlb.director.director import DirectorConfig
from gridlb.errors import ConfigError
from gridlb.status import status_from_json
from gridlb.table import ServiceKey
from tests.director.fakes import FakeDataplane

SITE = """\
virtual_servers:
  gridftp:
    ip_address: 127.45.0.1
    port: 2811
    lb_algo: wlc
    lb_kind: NAT
    real_servers:
      - ip_address: 127.45.0.2
      - ip_address: 127.45.0.3
        weight: 2
"""
SVC = ServiceKey.tcp("127.45.0.1", 2811)
TOKEN = "s3cret-token-for-tests-0123456789"


async def http(port: int, raw: bytes) -> tuple[str, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return lines[0], headers, body


async def get(port: int, path: str) -> tuple[str, dict[str, str], bytes]:
    return await http(port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())


async def post(port: int, path: str, token: str | None = None) -> tuple[str, Any]:
    auth = f"Authorization: Bearer {token}\r\n" if token is not None else ""
    line, _, body = await http(
        port, f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\n\r\n".encode()
    )
    return line, json.loads(body)


async def make(directory: Path, token_file: str | None = None) -> tuple[DirectorDaemon, FakeDataplane]:
    site = directory / "site.yaml"
    extra = f"gridlb:\n  dashboard_token_file: {token_file}\n" if token_file else ""
    site.write_text(SITE + extra)
    dp = FakeDataplane()
    daemon = DirectorDaemon(
        DirectorConfig.load([str(site)]),
        DaemonOptions(
            socket_path=str(directory / "control.sock"),
            metrics_listen="",
            dashboard_listen="127.0.0.1:0",
            install_signals=False,
        ),
        dataplane=dp,
    )
    await daemon.start()
    return daemon, dp


@pytest.fixture
def directory() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="glbW-dash-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


async def test_page_and_files_ship_in_the_package_and_name_nothing_outside(directory: Path) -> None:
    daemon, _ = await make(directory)
    try:
        assert daemon.dashboard_address is not None
        port = daemon.dashboard_address[1]
        line, headers, body = await get(port, "/")
        assert line.endswith("200 OK") and headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in headers["content-security-policy"]
        page = body.decode()
        refs = re.findall(r'(?:src|href)="([^"]+)"', page)
        assert sorted(refs) == ["/static/dashboard.css", "/static/dashboard.js"]
        for ref in refs:
            line, headers, body = await get(port, ref)
            assert line.endswith("200 OK") and body
        js = (await get(port, "/static/dashboard.js"))[2].decode()
        outside = set(re.findall(r"https?://[^\s\"']+", js)) - {
            "http://www.w3.org/2000/svg"
        }  # a namespace name
        assert outside == set()
        assert (await get(port, "/static/../server.py"))[0].endswith("404 Not Found")
        assert (await http(port, b"DELETE / HTTP/1.1\r\n\r\n"))[0].endswith("405 Method Not Allowed")
        assert (await http(port, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n"))[0].endswith(
            "414 URI Too Long"
        )
        many = b"".join(b"X-A: " + b"b" * 4000 + b"\r\n" for _ in range(12))
        assert (await http(port, b"GET / HTTP/1.1\r\n" + many + b"\r\n"))[0].endswith(
            "431 Request Header Fields Too Large"
        )
    finally:
        await daemon.stop()


async def test_status_document_is_the_typed_status(directory: Path) -> None:
    daemon, _ = await make(directory)
    try:
        assert daemon.dashboard_address is not None
        line, headers, body = await get(daemon.dashboard_address[1], "/api/status")
        assert line.endswith("200 OK") and headers["content-type"] == "application/json"
        doc = json.loads(body)
        got = status_from_json(doc["status"])
        want = await daemon.status()
        assert got.services == want.services and got.version == want.version
        assert doc["actions"] is False and doc["transitions"] == []
        assert {r["real"] for r in doc["history"]["reals"]} == {"127.45.0.2:2811", "127.45.0.3:2811"}
    finally:
        await daemon.stop()


async def test_event_stream_shows_a_drain_made_over_the_control_socket(directory: Path) -> None:
    daemon, _ = await make(directory)
    try:
        assert daemon.dashboard_address is not None and daemon.director is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", daemon.dashboard_address[1])
        writer.write(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b"200 OK" in head and b"text/event-stream" in head

        async def next_doc() -> dict[str, Any]:
            while True:
                line = await asyncio.wait_for(reader.readline(), 5)
                if line.startswith(b"data: "):
                    doc: dict[str, Any] = json.loads(line[6:])
                    return doc

        def drained(doc: dict[str, Any]) -> bool:
            return any(
                r["real"] == "127.45.0.3:2811" and r["drained"] for r in doc["status"]["services"][0]["reals"]
            )

        assert not drained(await next_doc())
        from gridlb.api.messages import DrainRequest

        await daemon.director.call(DrainRequest(real="127.45.0.3"))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while not drained(await next_doc()):
            pass
        assert loop.time() - t0 < 2.0
        writer.close()
    finally:
        await daemon.stop()


async def test_actions_are_refused_without_a_token_file(directory: Path) -> None:
    daemon, dp = await make(directory)
    try:
        assert daemon.dashboard_address is not None
        port = daemon.dashboard_address[1]
        line, body = await post(port, "/api/drain?real=127.45.0.3", TOKEN)
        assert line.endswith("403 Forbidden") and "dashboard_token_file" in body["error"]
        assert dp.weights(SVC)["127.45.0.3:2811"] == 2
    finally:
        await daemon.stop()


async def test_actions_with_the_token_go_through_the_director(directory: Path) -> None:
    token_file = directory / "token"
    token_file.write_text(TOKEN + "\n")
    daemon, dp = await make(directory, str(token_file))
    try:
        assert daemon.dashboard_address is not None
        port = daemon.dashboard_address[1]
        doc = json.loads((await get(port, "/api/status"))[2])
        assert doc["actions"] is True
        for wrong in (None, "nope", TOKEN + "x"):
            line, _ = await post(port, "/api/drain?real=127.45.0.3", wrong)
            assert line.endswith("403 Forbidden")
        assert dp.weights(SVC)["127.45.0.3:2811"] == 2
        line, body = await post(port, "/api/drain?real=127.45.0.3", TOKEN)
        assert line.endswith("200 OK") and body["drained"] == ["127.45.0.3:2811"]
        assert dp.weights(SVC)["127.45.0.3:2811"] == 0
        line, body = await post(port, "/api/enable?real=127.45.0.3:2811", TOKEN)
        assert line.endswith("200 OK") and dp.weights(SVC)["127.45.0.3:2811"] == 2
        line, body = await post(port, "/api/drain?real=127.45.0.99", TOKEN)
        assert not line.endswith("200 OK") and body["error"]
    finally:
        await daemon.stop()


async def test_an_unreadable_or_short_token_file_stops_start_up(directory: Path) -> None:
    (directory / "short").write_text("abc\n")
    for path in (str(directory / "missing"), str(directory / "short")):
        (directory / "site.yaml").write_text(SITE + f"gridlb:\n  dashboard_token_file: {path}\n")
        with pytest.raises(ConfigError, match="dashboard_token_file"):
            DirectorDaemon(
                DirectorConfig.load([str(directory / "site.yaml")]),
                DaemonOptions(socket_path=str(directory / "c.sock"), dashboard_listen="127.0.0.1:0"),
                dataplane=FakeDataplane(),
            )


def test_the_listen_address_is_validated_like_metrics_listen(directory: Path) -> None:
    import subprocess
    import sys

    from gridlb.config.schema import GridlbSettings

    assert GridlbSettings.model_validate({"dashboard_listen": "[::1]:8080"}).dashboard_listen == "[::1]:8080"
    for bad in ("8080", "127.0.0.1:0", "127.0.0.1:70000"):
        with pytest.raises(ValueError, match="ADDR:PORT"):
            GridlbSettings.model_validate({"dashboard_listen": bad})
    site = directory / "site.yaml"
    site.write_text(SITE + "gridlb:\n  dashboard_listen: localhost\n")
    gridlb = str(Path(sys.executable).with_name("gridlb"))
    r = subprocess.run([gridlb, "lint", str(site)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "dashboard_listen" in r.stdout + r.stderr
    site.write_text(SITE)
    r = subprocess.run(
        [gridlb, "director", "run", str(site), "--dashboard", "nope", "--socket", str(directory / "c.sock")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "gridlb: error: --dashboard: 'nope': expected ADDR:PORT, e.g. 127.0.0.1:9100 or [::1]:9100"
    ]
    r = subprocess.run(
        [gridlb, "demo", "--dashboard", "nope", "--duration", "1"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2 and "dashboard_listen" in r.stderr and "Traceback" not in r.stderr


def test_a_token_without_a_dashboard_is_a_lint_warning() -> None:
    from gridlb.config.lint import Severity, lint_site
    from gridlb.config.load import Site, parse_text

    text = SITE + "gridlb:\n  dashboard_token_file: /etc/gridlb/dashboard.token\n"
    (finding,) = [
        f
        for f in lint_site(Site.from_files([parse_text(text, "d.yaml")]))
        if f.code == "dashboard-token-unused"
    ]
    assert finding.severity is Severity.WARNING and finding.location.line == 12
    assert str(finding).startswith("d.yaml:12: warning: gridlb.dashboard_token_file: a token for dashboard")
    on = SITE + "gridlb:\n  dashboard_listen: 127.0.0.1:8080\n  dashboard_token_file: /etc/t\n"
    assert not [
        f for f in lint_site(Site.from_files([parse_text(on, "d.yaml")])) if f.code.startswith("dash")
    ]
