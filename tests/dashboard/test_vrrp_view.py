"""The dashboard of a director running VRRP: role, peer and recent transitions, in the JSON and the page.

The director runs in the lab's dir1 (its VRRP peer dir2 never answers, so it becomes MASTER);
Chromium loads the page inside dir1's namespace.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gridlb.lab.netns import Lab
from tests.dashboard.cdp import Browser
from tests.support import lab, need_tool

pytestmark = pytest.mark.privileged
GRIDLB = str(Path(sys.executable).with_name("gridlb"))

SITE = """\
vrrp_instances:
  VI_D:
    interface: eth0
    state: BACKUP
    virtual_router_id: 63
    priority: 120
    version: 3
    advert_int: 0.2
    virtual_ipaddress: ['{vip}/24']
    unicast_source_ip: {me}
    unicast_peers: [{peer}]
virtual_servers:
  gridftp:
    ip_address: {vip}
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
def netns() -> Iterator[Lab]:
    """The lab's dir1 runs the director; dir2 is its VRRP peer, which never answers (so dir1 is MASTER)."""
    need_tool("ip", "chromium")
    with lab("dv", realservers=0, directors=2, start="none", net_a=214, net_b=0) as built:
        yield built


def site_text(lab: Lab, sock: Path) -> str:
    me, peer = lab.node("dir1").ipv4, lab.node("dir2").ipv4
    return SITE.format(sock=sock, vip=lab.vip4, me=me, peer=peer)


def test_vrrp_role_peer_and_transitions(netns: Lab, tmp_path: Path) -> None:
    site = tmp_path / "director.yaml"
    site.write_text(site_text(netns, tmp_path / "control.sock"))
    ns = ["ip", "netns", "exec", netns.node("dir1").ns]
    with (tmp_path / "director.log").open("w") as log:
        director = subprocess.Popen([*ns, GRIDLB, "director", "run", str(site)], stdout=log, stderr=log)
    browser: Browser | None = None
    try:
        doc: dict[str, Any] = {}  # the dashboard's JSON document
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            got = subprocess.run(
                [*ns, sys.executable, "-c", FETCH], capture_output=True, text=True, timeout=20
            )
            if got.returncode == 0:
                doc = json.loads(got.stdout)
                if doc["status"]["role"] == "MASTER":
                    break
            time.sleep(0.3)
        else:
            pytest.fail("not MASTER in 30 s: " + (tmp_path / "director.log").read_text()[-2000:])
        (inst,) = doc["status"]["vrrp"]["instances"]
        peer, vip = str(netns.node("dir2").ipv4), str(netns.vip4)
        assert inst["name"] == "VI_D" and inst["peers"] == [peer]
        transitions = doc["transitions"]
        assert [(t["from"], t["to"]) for t in transitions][-1:] == [("BACKUP", "MASTER")]

        profile = tmp_path / "profile"
        profile.mkdir()
        browser = Browser(ns, str(profile))
        browser.navigate("http://127.0.0.1:8080/")
        text = browser.wait_for(
            "(v => v && !v.hidden && document.body.dataset.rendered && v.innerText)"
            "(document.getElementById('vrrp'))",
            15,
        )
        assert f"VI_D: MASTER, priority 120, VIPs {vip}/24, peer {peer}" in text
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
