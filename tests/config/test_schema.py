"""Tests of the site model: keepalived defaults, inheritance of checker settings, and the helpers."""

from __future__ import annotations

from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from gridlb.config import defaults as D
from gridlb.config.schema import (
    KEY_ALIASES,
    BfdCheck,
    BfdInstance,
    BgpPeer,
    CheckKind,
    DnsCheck,
    FileCheck,
    GlobalDefs,
    GridftpCheck,
    GridftpCheckSettings,
    GridftpService,
    GridlbSettings,
    HttpCheck,
    HttpUrl,
    InitialState,
    MiscCheck,
    ProxySettings,
    RealServer,
    ScaleoutSettings,
    SmtpCheck,
    SmtpHost,
    TcpCheck,
    TimeoutSettings,
    TrackFile,
    UdpCheck,
    Vip,
    VirtualServer,
    VrrpInstance,
    VrrpScript,
    VrrpSyncGroup,
    XrootdCheck,
    XrootdCheckSettings,
)
from gridlb.table import ForwardMethod, Proto, RealKey, ServiceKey


def vs(**kw: Any) -> VirtualServer:
    base: dict[str, Any] = {"ip_address": "192.0.2.1", "port": 2811}
    base.update(kw)
    return VirtualServer.model_validate(base)


def test_instance_defaults_are_keepalived_s() -> None:
    inst = VrrpInstance.model_validate({"interface": "eth0", "virtual_router_id": 1})
    assert inst.state is InitialState.BACKUP
    assert inst.priority == D.VRRP_PRIORITY == 100
    assert inst.advert_int == 1.0 and inst.garp_master_delay == 5.0 and inst.garp_master_repeat == 5
    assert inst.vrrp_version == 2 and inst.family == 4


def test_service_defaults_and_ipvs_views() -> None:
    v = vs()
    assert (v.protocol, v.scheduler, v.lb_kind, v.forward) == (Proto.TCP, "wlc", "NAT", ForwardMethod.MASQ)
    assert v.quorum == 1 and v.hysteresis == 0
    v = vs(lb_algo="WRR", lb_kind="dr", protocol="udp", persistence_timeout=True, sh_port="yes", ops=True)
    assert v.service_key() == ServiceKey(Proto.UDP, ip_address("192.0.2.1"), 2811)
    spec = v.service_spec()
    assert (spec.scheduler, spec.persistence_timeout_s, spec.flags, spec.one_packet) == (
        "wrr",
        D.VS_PERSISTENCE_TIMEOUT_S,
        frozenset({"sh-port"}),
        True,
    )
    assert v.forward is ForwardMethod.ROUTE


def test_fwmark_service_key_takes_its_family() -> None:
    v = VirtualServer.model_validate(
        {"fwmark": 5, "ip_family": "inet6", "real_servers": [{"ip_address": "::2", "port": 80}]}
    )
    key = v.service_key()
    assert (key.fwmark, key.af, key.addr) == (5, 6, None)
    with pytest.raises(ValidationError, match="not both"):
        VirtualServer.model_validate({"fwmark": 5, "ip_address": "192.0.2.1", "port": 1})
    with pytest.raises(ValidationError, match="port is required"):
        VirtualServer.model_validate({"ip_address": "192.0.2.1"})
    assert VirtualServer.model_validate({"ip_address": "192.0.2.1", "persistence_timeout": 60}).port is None


def test_real_server_port_and_forwarding_default_to_the_service() -> None:
    v = vs(
        lb_kind="DR",
        real_servers=[
            {"ip_address": "192.0.2.5"},
            {"ip_address": "192.0.2.6", "port": 2812, "lb_kind": "TUN", "weight": 0, "uthreshold": 9},
        ],
    )
    a, b = v.real_servers
    assert a.real_key(v) == RealKey(ip_address("192.0.2.5"), 2811)
    assert b.real_key(v) == RealKey(ip_address("192.0.2.6"), 2812)
    assert a.forward(v) is ForwardMethod.ROUTE and b.forward(v) is ForwardMethod.TUNNEL
    spec = b.dest_spec(v)
    assert (spec.weight, spec.forward, spec.u_threshold) == (0, ForwardMethod.TUNNEL, 9)
    assert a.dest_spec(v, weight=7).weight == 7


def test_check_inheritance_service_then_real_server_then_checker() -> None:
    v = vs(
        connect_timeout=9,
        delay_loop=20,
        retry=3,
        alpha=True,
        inhibit_on_failure=True,
        tcp_check={"connect_timeout": 3},
        real_servers=[
            {"ip_address": "192.0.2.5"},
            {"ip_address": "192.0.2.6", "delay_loop": 7, "tcp_check": {"connect_port": 2812, "retry": 0}},
            {"ip_address": "192.0.2.7", "misc_check": {"misc_path": "/bin/check", "misc_dynamic": True}},
            {"ip_address": "192.0.2.8", "gridftp_check": {"connect_timeout": 2}},
        ],
    )
    rs5, rs6, rs7, rs8 = v.real_servers
    c5 = v.check_for(rs5)  # the service-level tcp_check (Hiera style) applies to every real server
    assert (c5.kind, c5.connect_timeout_s, c5.delay_loop_s, c5.retry, c5.alpha, c5.inhibit_on_failure) == (
        CheckKind.TCP, 3.0, 20.0, 3, True, True,
    )  # fmt: skip
    assert c5.delay_before_retry_s == D.CHECK_DELAY_BEFORE_RETRY_S and c5.warmup_s is None
    c6 = v.check_for(rs6)
    assert (c6.target, c6.delay_loop_s, c6.retry, c6.connect_timeout_s) == (
        RealKey(ip_address("192.0.2.6"), 2812), 7.0, 0, 9.0,
    )  # fmt: skip
    c7 = v.check_for(rs7)
    assert (c7.kind, c7.script, c7.script_dynamic, c7.retry, c7.script_timeout_s) == (
        CheckKind.SCRIPT, "/bin/check", True, 3, 20.0,
    )  # fmt: skip
    settings = GridlbSettings.model_validate({"gridftp_check": {"level": "canary", "canary_path": "/canary"}})
    c8 = v.check_for(rs8, settings)
    assert (c8.kind, c8.gridftp_level, c8.gridftp_canary_path, c8.connect_timeout_s) == (
        CheckKind.GRIDFTP, "canary", "/canary", 2.0,
    )  # fmt: skip


def test_check_defaults_when_nothing_is_written() -> None:
    v = vs(real_servers=[{"ip_address": "192.0.2.5", "TCP_CHECK": {}}, {"ip_address": "192.0.2.6"}])
    c = v.check_for(v.real_servers[0])
    assert (c.connect_timeout_s, c.retry, c.delay_before_retry_s, c.delay_loop_s, c.alpha) == (
        5.0,
        1,
        1.0,
        60.0,
        False,
    )
    none = v.check_for(v.real_servers[1])
    assert none.kind is CheckKind.NONE and v.checks_for(v.real_servers[1]) == ()
    m = vs(real_servers=[{"ip_address": "192.0.2.5", "misc_check": {"misc_path": "x"}}])
    assert m.check_for(m.real_servers[0]).retry == D.CHECK_RETRY_MISC == 0


@pytest.mark.parametrize(
    ("text", "addr", "prefix", "dev", "net"),
    [
        ("129.93.239.157/26", "129.93.239.157", 26, None, "129.93.239.128/26"),
        ("10.1.1.1", "10.1.1.1", None, None, None),
        (
            "2600:900:6:1101::da7a:1055/64 dev em1 label em1:v6",
            "2600:900:6:1101::da7a:1055",
            64,
            "em1",
            "2600:900:6:1101::/64",
        ),
        ({"ip": "10.0.0.1/24", "dev": "eth1"}, "10.0.0.1", 24, "eth1", "10.0.0.0/24"),
    ],
)
def test_vip_forms(text: Any, addr: str, prefix: int | None, dev: str | None, net: str | None) -> None:
    vip = Vip.model_validate(text)
    assert (vip.address, vip.prefixlen, vip.dev) == (ip_address(addr), prefix, dev)
    assert vip.network == (ip_network(net) if net else None)


@pytest.mark.parametrize(
    "bad", ["10.0.0.1/33", "10.0.0.1/x", "10.0.0.1 dev", "10.0.0.1 colour red", "::1/129"]
)
def test_bad_vips(bad: str) -> None:
    with pytest.raises(ValidationError):
        Vip.model_validate(bad)


def test_track_entries_and_versions() -> None:
    inst = VrrpInstance.model_validate(
        {
            "interface": "eth0",
            "virtual_router_id": 3,
            "virtual_ipaddress": ["fe80::1/64"],
            "track_interface": ["eth1 weight -20", {"interface": "eth2"}],
            "track_script": "chk weight 10 reverse",
            "version": "2",
        }
    )
    assert [(t.name, t.weight) for t in inst.track_interface] == [("eth1", -20), ("eth2", None)]
    assert (inst.track_script[0].name, inst.track_script[0].weight, inst.track_script[0].reverse) == (
        "chk",
        10,
        True,
    )
    assert inst.family == 6 and inst.vrrp_version == 3  # IPv6 always speaks VRRPv3
    with pytest.raises(ValidationError):
        VrrpInstance.model_validate(
            {"interface": "e", "virtual_router_id": 1, "track_interface": "e weight 300"}
        )


def test_sorry_server_and_real_server_ip_alias() -> None:
    v = vs(sorry_server="192.0.2.99 2811")
    assert v.sorry_server is not None and (str(v.sorry_server.ip_address), v.sorry_server.port) == (
        "192.0.2.99",
        2811,
    )
    assert str(RealServer.model_validate({"ip": "192.0.2.3"}).ip_address) == "192.0.2.3"


def test_gridlb_settings() -> None:
    g = GridlbSettings()
    assert (g.dataplane, g.control_socket, g.timeouts.tcpfin) == (
        "auto",
        "/run/gridlb/control.sock",
        120,
    )
    assert GridlbSettings.model_validate({"metrics_listen": "[::1]:9100"}).metrics_listen == "[::1]:9100"
    for bad in ({"metrics_listen": "9100"}, {"dataplane": "xdp"}, {"gridftp_check": {"level": "canary"}}):
        with pytest.raises(ValidationError):
            GridlbSettings.model_validate(bad)


def test_proxy_workers_is_a_count_or_auto() -> None:
    assert ProxySettings().workers == D.PROXY_WORKERS == 1
    assert ProxySettings.model_validate({"workers": 2}).workers == 2
    assert ProxySettings.model_validate({"workers": "auto"}).workers == "auto"
    for bad in (0, 65, "many", -1):
        with pytest.raises(ValidationError, match="workers"):
            ProxySettings.model_validate({"workers": bad})


def test_models_are_frozen() -> None:
    v = vs()
    with pytest.raises(ValidationError):
        v.port = 1  # type: ignore[misc]  # deliberate: assigning to a frozen model must fail


DOCS = Path(__file__).resolve().parents[2] / "docs" / "config.md"


@pytest.mark.parametrize(
    "model",
    [
        VrrpInstance,
        VrrpScript,
        VirtualServer,
        RealServer,
        TcpCheck,
        MiscCheck,
        GridftpCheck,
        XrootdCheck,
        GridlbSettings,
        GridftpCheckSettings,
        XrootdCheckSettings,
        ProxySettings,
        GridftpService,
        HttpCheck,
        HttpUrl,
        SmtpCheck,
        SmtpHost,
        DnsCheck,
        UdpCheck,
        FileCheck,
        BfdCheck,
        VrrpSyncGroup,
        GlobalDefs,
        TrackFile,
        BfdInstance,
        TimeoutSettings,
        ScaleoutSettings,
        BgpPeer,
    ],
)
def test_every_field_is_documented(model: type[BaseModel]) -> None:
    text = DOCS.read_text()
    missing = [name for name in model.model_fields if f"`{name}`" not in text and f".{name}`" not in text]
    assert missing == []


def test_every_alias_is_documented() -> None:
    text = DOCS.read_text()
    assert [a for a in KEY_ALIASES if f"`{a}`" not in text and f"{a}`" not in text] == []


def test_persistence_granularity_is_a_netmask_or_an_ipv6_prefix_length() -> None:
    assert vs(persistence_granularity="255.255.255.0").service_spec().netmask == "255.255.255.0"
    v6 = vs(ip_address="fd00::1", persistence_granularity=64)  # YAML writes the length as a number
    assert v6.service_spec().netmask == "64"
    for bad, family in (("garbage", {}), ("64", {}), ("129", {"ip_address": "fd00::1"})):
        with pytest.raises(ValidationError, match="persistence_granularity"):
            vs(persistence_granularity=bad, **family)


def test_gridftp_services_name_a_vip_port_a_range_and_a_421_line() -> None:
    s = GridlbSettings.model_validate(
        {"gridftp_services": {"192.0.2.1:2811": {"data_ports": "50000-50999"}, "[2001:db8::1]:2811": {}}}
    )
    v4 = s.gridftp_service(ServiceKey.tcp("192.0.2.1", 2811))
    assert v4 is not None and v4.data_ports == (50000, 50999)
    assert v4.unavailable_reply.startswith("421 ")
    assert s.gridftp_service(ServiceKey.tcp("2001:db8::1", 2811)) is not None
    assert s.gridftp_service(ServiceKey.tcp("192.0.2.1", 2812)) is None
    for bad, where in (
        ({"x": {}}, "VIP:PORT"),
        ({"192.0.2.1:2811": {"data_ports": "51000-50000"}}, "above the last"),
        ({"192.0.2.1:2811": {"data_ports": "1-5000"}}, "at most 4096"),
        ({"192.0.2.1:2811": {"data_ports": "fifty"}}, "A-B"),
        ({"192.0.2.1:2811": {"unavailable_reply": "500 no"}}, "421"),
        ({"192.0.2.1:2811": {"unavailable_reply": "421 a\r\n220 b"}}, "one printable line"),
        ({"192.0.2.1:2811": {"data_ports": "2800-2900"}}, "share port 2811"),
        (
            {
                "192.0.2.1:2811": {"data_ports": "50000-50999"},
                "192.0.2.1:2812": {"data_ports": "50900-51000"},
            },
            "share port 50900",
        ),
    ):
        with pytest.raises(ValidationError, match=where):
            GridlbSettings.model_validate({"gridftp_services": bad})
