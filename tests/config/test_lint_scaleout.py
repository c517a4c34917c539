"""Tests of the scale-out lint findings and the `gridlb.scaleout` schema."""

from __future__ import annotations

from ipaddress import ip_address

import pytest
from pydantic import ValidationError

from gridlb.config.lint import Finding, lint_site
from gridlb.config.load import Site, parse_text
from gridlb.config.schema import ScaleoutSettings


def lint(*texts: str) -> list[Finding]:
    return lint_site(Site.from_files([parse_text(t, f"d{i + 1}.yaml") for i, t in enumerate(texts)]))


def found(findings: list[Finding]) -> list[tuple[str, str, int]]:
    return [(f.code, f.location.file, f.location.line) for f in findings]


def site(
    *,
    algo: str = "mh",
    flags: str = "    mh_fallback: true\n    inhibit_on_failure: true\n",
    announce: str = "",
    extra_gridlb: str = "",
    name: str = "dir1",
    router_id: str = "10.0.0.2",
    vrrp: str = "",
) -> str:
    return (
        vrrp + "keepalived::virtual_servers:\n"
        "  gftp:\n"
        "    ip_address: 10.0.9.1\n"
        "    port: 2811\n"
        f"    lb_algo: {algo}\n"
        "    lb_kind: DR\n" + flags + "    real_servers:\n"
        "      - {ip_address: 10.0.0.11}\n"
        "      - {ip_address: 10.0.0.12}\n"
        "gridlb:\n"
        f"  director_name: {name}\n" + extra_gridlb + "  scaleout:\n"
        "    directors: [dir1, dir2]\n"
        "    local_asn: 65001\n"
        f"    router_id: {router_id}\n"
        "    peers: [{address: 10.0.0.1, asn: 65000}]\n" + announce
    )


def test_clean_scaleout_site_has_no_findings() -> None:
    assert lint(site()) == []


def test_scheduler_other_than_mh_warns_at_lb_algo() -> None:
    assert found(lint(site(algo="wlc", flags=""))) == [("scaleout-scheduler", "d1.yaml", 5)]


def test_mh_without_fallback_and_inhibit_warns() -> None:
    assert [f.code for f in lint(site(flags=""))] == ["scaleout-mh-order"]
    assert [f.code for f in lint(site(flags="    mh_fallback: true\n"))] == ["scaleout-mh-order"]


def test_announced_vip_held_by_vrrp_and_without_service_are_errors() -> None:
    vrrp = (
        "keepalived::vrrp_instances:\n"
        "  VI_1: {interface: eth0, virtual_router_id: 1, virtual_ipaddress: 10.0.9.1}\n"
    )
    text = site(vrrp=vrrp, announce="    announce: [10.0.9.1, 10.0.9.2]\n")
    got = found(lint(text))
    assert ("scaleout-vrrp-vip", "d1.yaml", 21) in got
    assert ("scaleout-no-service", "d1.yaml", 21) in got
    assert "vip-not-held" not in [c for c, _, _ in got]  # the announced address needs no VRRP


def test_announced_vip_of_a_family_no_peer_has_is_an_error() -> None:
    text = site(announce="    announce: [fd00::1]\n").replace("ip_address: 10.0.9.1", "ip_address: fd00::1")
    text = text.replace("10.0.0.11", "fd00::11").replace("10.0.0.12", "fd00::12")
    assert ("scaleout-family", "d1.yaml", 19) in found(lint(text))


def test_proxy_dataplane_named_warns_that_moved_flows_are_reset() -> None:
    assert "scaleout-dataplane" in [f.code for f in lint(site(extra_gridlb="  dataplane: proxy\n"))]


def test_router_id_shared_across_director_files_and_unknown_director() -> None:
    got = found(lint(site(), site(name="dir2"), site(name="dir9", router_id="10.0.0.9")))
    assert ("scaleout-router-id", "d2.yaml", 17) in got
    assert ("scaleout-unknown-director", "d3.yaml", 15) in got


def test_schema_defaults_and_refusals() -> None:
    so = ScaleoutSettings.model_validate({"local_asn": 65001, "peers": {"address": "10.0.0.1", "asn": 65000}})
    assert (so.speaker, so.hold_time_s, so.check_interval_s) == ("bird", 9, 1.0)
    assert so.announced([ip_address("10.0.9.1"), ip_address("10.0.9.1")]) == (ip_address("10.0.9.1"),)
    bad = [
        {"local_asn": 0, "peers": [{"address": "10.0.0.1", "asn": 1}]},
        {"local_asn": 1, "peers": []},
        {"local_asn": 1, "peers": [{"address": "10.0.0.1", "asn": 1}], "hold_time_s": 2},
        {"local_asn": 1, "peers": [{"address": "10.0.0.1", "asn": 1}] * 2},
        {"local_asn": 1, "peers": [{"address": "10.0.0.1", "asn": 1, "local_address": "::1"}]},
        {"local_asn": 1, "peers": [{"address": "10.0.0.1", "asn": 1}], "router_id": "::1"},
        {"local_asn": 1, "peers": [{"address": "10.0.0.1", "asn": 1}], "speaker": "exabgp"},
    ]
    for data in bad:
        with pytest.raises(ValidationError):
            ScaleoutSettings.model_validate(data)
