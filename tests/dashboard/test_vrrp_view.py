"""The dashboard of a director running VRRP: role, peer and recent transitions, in the JSON and the page.

The director runs in a fresh network namespace (loopback plus a veth pair for its VRRP instance,
whose peer never answers, so it becomes MASTER); Chromium loads the page inside the namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dashboard.cdp import Browser
from tests.support import need_root, need_tool

pytestmark = pytest.mark.privileged
GRIDLB = str(Path(sys.executable).with_name("gridlb"))

SITE = """\
vrrp_instances:
  VI_D:
    interface: da
    state: BACKUP
    virtual_router_id: 63
    priority: 120
    version: 3
    advert_int: 0.2
    virtual_ipaddress: ['10.214.0.100/24']
    unicast_source_ip: 10.214.0.2
    unicast_peers: [10.214.0.3]
virtual_servers:
  gridftp:
    ip_address: 10.214.0.100
    port: 2811
    lb_algo: wlc
    lb_kind: NAT
    real_servers:
      - ip_address: 127.0.0.2
        port: 2811
gridlb:
  dataplane: proxy
  control_socket: {sock}
  dashboard_listen: 127.0.0.1:8080
"""
FETCH = (
    "import urllib.request; "
    "print(urllib.request.urlopen('http://127.0.0.1:8080/api/status', timeout=5).read().decode())"
)


@pytest.fixture
def netns() -> Iterator[str]:
    need_root()
    need_tool("ip", "chromium")
    name = f"glbV-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for argv in (
            ["link", "set", "lo", "up"],
            ["link", "add", "name", "da", "type", "veth", "peer", "name", "db"],
            ["addr", "add", "10.214.0.2/24", "dev", "da"],
            ["addr", "add", "10.214.0.3/24", "dev", "db"],
            ["link", "set", "da", "up"],
            ["link", "set", "db", "up"],
        ):
            subprocess.run(["ip", "-n", name, *argv], check=True)
        yield name
    finally:
        for pid in subprocess.run(
            ["ip", "netns", "pids", name], capture_output=True, text=True
        ).stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), 9)
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_vrrp_role_peer_and_transitions(netns: str, tmp_path: Path) -> None:
    site = tmp_path / "director.yaml"
    site.write_text(SITE.format(sock=tmp_path / "control.sock"))
    ns = ["ip", "netns", "exec", netns]
    with (tmp_path / "director.log").open("w") as log:
        director = subprocess.Popen([*ns, GRIDLB, "director", "run", str(site)], stdout=log, stderr=log)
    browser: Browser | None = None
    try:
        doc: dict[str, object] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            got = subprocess.run(
                [*ns, sys.executable, "-c", FETCH], capture_output=True, text=True, timeout=20
            )
            if got.returncode == 0:
                doc = json.loads(got.stdout)
                if doc["status"]["role"] == "MASTER":  # type: ignore[index]
                    break
            time.sleep(0.3)
        else:
            pytest.fail("not MASTER in 30 s: " + (tmp_path / "director.log").read_text()[-2000:])
        (inst,) = doc["status"]["vrrp"]["instances"]  # type: ignore[index]
        assert inst["name"] == "VI_D" and inst["peers"] == ["10.214.0.3"]
        transitions = doc["transitions"]
        assert [(t["from"], t["to"]) for t in transitions][-1:] == [("BACKUP", "MASTER")]  # type: ignore[union-attr]

        profile = tmp_path / "profile"
        profile.mkdir()
        browser = Browser(ns, str(profile))
        browser.navigate("http://127.0.0.1:8080/")
        text = browser.wait_for(
            "(v => v && !v.hidden && document.body.dataset.rendered && v.innerText)"
            "(document.getElementById('vrrp'))",
            15,
        )
        assert "VI_D: MASTER, priority 120, VIPs 10.214.0.100/24, peer 10.214.0.3" in text
        assert "VI_D: BACKUP → MASTER" in text
        assert "VRRP MASTER" in browser.eval("document.getElementById('summary').textContent")
        (tmp_path / "dashboard-vrrp.png").write_bytes(browser.screenshot())
    finally:
        if browser is not None:
            browser.close()
        director.terminate()
        try:
            director.wait(timeout=15)
        except subprocess.TimeoutExpired:
            director.kill()
            director.wait()
