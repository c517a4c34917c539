"""The GridFTP firewall-mark recipe for IPVS sites: lint, keepalived.conf, and the marking rules in nft."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gridlb.config.lint import Severity, lint_site
from gridlb.config.load import site_from_mapping
from gridlb.render.fwmark import fwmark_rules
from gridlb.render.keepalived import render_keepalived
from tests.render.conftest import KeepalivedTest
from tests.support import need_root, need_tool

RECIPE: dict[str, Any] = {
    "keepalived::virtual_servers": {
        "gridftp": {
            "fwmark": 2811,
            "lb_algo": "wlc",
            "lb_kind": "DR",
            "persistence_timeout": 300,
            "gridftp_check": {"connect_timeout": 3},
            "real_servers": [{"ip_address": f"10.0.0.{i}", "port": 2811} for i in (11, 12, 13)],
        }
    },
    "gridlb": {
        "director_name": "lvs1",
        "gridftp_services": {"10.0.0.100:2811": {"data_ports": "50000-51000", "fwmark": 2811}},
    },
}


def codes(mapping: dict[str, Any]) -> list[tuple[str, Severity, str]]:
    return [(f.code, f.severity, f.key) for f in lint_site(site_from_mapping(mapping, source="s.yaml"))]


def test_the_recipe_lints_clean_and_renders() -> None:
    assert codes(RECIPE) == []
    site = site_from_mapping(RECIPE, source="s.yaml")
    conf = render_keepalived(site, "lvs1")
    assert "virtual_server fwmark 2811 {" in conf and "persistence_timeout 300" in conf
    assert "# GridFTP control and data ports of 10.0.0.100:2811 carry mark 2811" in conf
    rules = fwmark_rules(site)
    assert "    ip daddr 10.0.0.100 tcp dport { 2811, 50000-51000 } meta mark set 2811\n" in rules
    assert (
        "#   iptables -t mangle -A PREROUTING -d 10.0.0.100 -p tcp -m multiport --dports 2811,50000:51000 "
        "-j MARK --set-mark 2811\n"
    ) in rules


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (
            lambda m: m["keepalived::virtual_servers"]["gridftp"].pop("persistence_timeout"),
            "fwmark-without-persistence",
        ),
        (
            lambda m: m["gridlb"]["gridftp_services"]["10.0.0.100:2811"].update(fwmark=7),
            "gridftp-service-unknown",
        ),
        (lambda m: m["keepalived::virtual_servers"]["gridftp"].update(lb_kind="NAT"), "fwmark-nat-port"),
        (
            lambda m: m["gridlb"]["gridftp_services"]["10.0.0.100:2811"].pop("fwmark"),
            "gridftp-service-unknown",
        ),
        (
            lambda m: m["gridlb"]["gridftp_services"]["10.0.0.100:2811"].pop("data_ports"),
            "fwmark-no-data-ports",
        ),
    ],
)
def test_an_incomplete_recipe_is_named(change: Any, code: str) -> None:
    site = copy.deepcopy(RECIPE)
    change(site)
    found = codes(site)
    assert [c for c, _, _ in found] == [code], found
    assert found[0][2].startswith("gridlb.gridftp_services.")


def test_keepalived_accepts_the_recipe(keepalived_netns: KeepalivedTest, tmp_path: Path) -> None:
    path = tmp_path / "lvs1.conf"
    path.write_text(render_keepalived(site_from_mapping(RECIPE, source="s.yaml"), "lvs1"))
    assert keepalived_netns.check(path) == (0, "")


@pytest.mark.privileged
def test_nft_loads_the_rules_and_marks_what_it_says(tmp_path: Path) -> None:
    need_root()
    need_tool("nft", "ip")
    path = tmp_path / "fwmark.nft"
    path.write_text(fwmark_rules(site_from_mapping(RECIPE, source="s.yaml")))
    ns = f"glbF-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    try:
        for _ in range(2):  # loading twice replaces the table (the script deletes it first)
            load = subprocess.run(
                ["ip", "netns", "exec", ns, "nft", "-f", str(path)],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert load.returncode == 0, load.stderr
        listed = subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "list", "table", "inet", "gridlb_fwmark"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        assert listed.count("meta mark set 0x00000afb") == 1, listed  # 2811
        assert "ip daddr 10.0.0.100 tcp dport { 2811, 50000-51000 }" in listed
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False, timeout=30)


def test_render_fwmark_cli(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(json.dumps(RECIPE))  # JSON is YAML
    gridlb = [sys.executable, "-m", "gridlb", "render", "fwmark"]
    out = subprocess.run([*gridlb, str(site)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "meta mark set 2811" in out.stdout, out.stderr
    plain = tmp_path / "plain.yaml"
    plain.write_text("virtual_servers:\n  v:\n    ip_address: 10.0.0.1\n    port: 2811\n")
    none = subprocess.run([*gridlb, str(plain)], capture_output=True, text=True, timeout=60)
    assert none.returncode == 2 and len(none.stderr.splitlines()) == 1, none.stderr
