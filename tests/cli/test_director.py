"""Tests of `gridlb director run`: SIGHUP reload (good and bad files), SIGTERM shutdown, bad config."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.director.loopback import PORT, Loopback
from tests.support import wait_for


@pytest.fixture
def lb() -> Iterator[Loopback]:
    harness = Loopback(250)
    try:
        yield harness
    finally:
        harness.close()


def test_sighup_reload_and_sigterm(lb: Loopback) -> None:
    for i in (2, 3):
        lb.start_server(i)
    lb.write_site([(2, 1)])
    lb.start_director()
    assert lb.director is not None
    lb.write_site([(2, 1), (3, 2)])
    lb.director.send_signal(signal.SIGHUP)
    want = [(f"{lb.addr(2)}:{PORT}", 1), (f"{lb.addr(3)}:{PORT}", 2)]

    def reloaded() -> bool:
        status = lb.status()
        got = [(r["real"], r["weight"]) for r in status["services"][0]["reals"]]
        return bool(status["generation"] == 2 and got == want)

    wait_for(reloaded, 20, "the reload")
    assert lb.site_path is not None
    lb.site_path.write_text("virtual_servers:\n  gridftp:\n    port: 2811\n")
    lb.director.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in lb.log(), 20, "the refusal")
    assert "site.yaml:2: error: virtual_servers.gridftp: a virtual server needs ip_address" in lb.log()
    assert lb.status()["generation"] == 2  # still running the previous config
    lb.director.send_signal(signal.SIGTERM)
    assert lb.director.wait(20) == 0
    assert not lb.socket.exists()
    assert lb.log().rstrip().endswith("director stopped")


def test_bad_site_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("virtual_servers:\n  gridftp:\n    ip_address: 10.0.0.1\n    port: 70000\n")
    proc = subprocess.run(
        [sys.executable, "-m", "gridlb", "director", "run", str(site), "--socket", str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"gridlb: {site}:4: error: virtual_servers.gridftp.port")


def test_fwmark_service_on_the_proxy_is_refused_with_one_line_exit_2(tmp_path: Path) -> None:
    from tests.cli.test_lint import FWMARK_ON_PROXY

    site = tmp_path / "site.yaml"
    site.write_text(FWMARK_ON_PROXY)
    proc = subprocess.run(
        [sys.executable, "-m", "gridlb", "director", "run", str(site), "--socket", str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "service FWM 7: the proxy dataplane: firewall-mark services are not supported" in lines[0]
    assert not (tmp_path / "s").exists()  # never "running" and serving nothing
