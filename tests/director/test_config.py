"""The director's view of a site: GridFTP services (421 by default), keepalived's
lvs_sync_daemon_interface and connection sync."""

from __future__ import annotations

from gridlb.config.load import Site, parse_text, site_from_mapping
from gridlb.config.schema import GridftpService, GridlbSettings
from gridlb.dataplane import base
from gridlb.dataplane.base import Capabilities, Dataplane, DataplaneHooks
from gridlb.director.config import DirectorConfig
from gridlb.table import ForwardMethod, ServiceKey

SITE = """\
keepalived::vrrp_instances:
  VI_1:
    interface: eth0
    state: MASTER
    virtual_router_id: 1
    priority: 100
    virtual_ipaddress: [10.0.0.100/24]
    lvs_sync_daemon_interface: eth1
keepalived::virtual_servers:
  gridftp:
    ip_address: 10.0.0.100
    port: 2811
    lb_kind: DR
    real_servers:
      - ip_address: 10.0.0.11
        port: 2811
gridlb:
  dataplane: {dataplane}
{extra}"""


def config(dataplane: str, extra: str = "") -> DirectorConfig:
    text = SITE.format(dataplane=dataplane, extra=extra)
    return DirectorConfig.from_site(Site.from_files([parse_text(text, "lvs1.yaml")]))


def test_the_dr_dataplane_syncs_on_lvs_sync_daemon_interface() -> None:
    c = config("dr")
    assert c.settings.dr.sync_interface == "eth1"
    assert not [n for n in c.notices if "lvs_sync_daemon_interface" in n]


def test_gridlb_dr_sync_interface_wins_over_the_keepalived_keyword() -> None:
    assert config("dr", "  dr: {sync_interface: eth2}\n").settings.dr.sync_interface == "eth2"


def test_a_dataplane_without_sync_says_it_does_not_use_the_interface() -> None:
    c = config("proxy")
    assert c.settings.dr.sync_interface is None
    assert c.notices == (
        "lvs1.yaml: vrrp instance VI_1: lvs_sync_daemon_interface eth1: the proxy dataplane does not "
        "sync connections; it is not used",
    )


def test_a_gridftp_checked_service_gets_the_default_421_and_named_ones_keep_theirs() -> None:
    site = site_from_mapping(
        {
            "virtual_servers": {
                "g": {
                    "ip_address": "127.0.0.1",
                    "port": 2811,
                    "gridftp_check": {},
                    "real_servers": [{"ip_address": "127.0.0.2"}],
                },
                "x": {
                    "ip_address": "127.0.0.1",
                    "port": 1094,
                    "tcp_check": {},
                    "real_servers": [{"ip_address": "127.0.0.2"}],
                },
                "named": {
                    "ip_address": "127.0.0.5",
                    "port": 2811,
                    "gridftp_check": {},
                    "real_servers": [{"ip_address": "127.0.0.2"}],
                },
            },
            "gridlb": {"gridftp_services": {"127.0.0.5:2811": {"unavailable_reply": ""}}},
        },
        source="s.yaml",
    )
    settings = DirectorConfig.from_site(site).settings
    assert settings.gridftp_service(ServiceKey.tcp("127.0.0.1", 2811)) == GridftpService()
    assert settings.gridftp_service(ServiceKey.tcp("127.0.0.1", 1094)) is None  # not GridFTP
    named = settings.gridftp_service(ServiceKey.tcp("127.0.0.5", 2811))
    assert named is not None and named.unavailable_reply == ""


def test_proxy_workers_with_another_dataplane_is_said_at_start() -> None:
    class Other:
        name = "other-dp"
        capabilities = Capabilities(forwarding=frozenset(ForwardMethod), schedulers=frozenset({"wlc"}))

        def unavailable(self) -> str:
            return ""

        def create(self, settings: GridlbSettings, hooks: DataplaneHooks) -> Dataplane:
            raise NotImplementedError

    base.register(Other())
    try:
        _, said = config("other-dp", "  proxy: {workers: 2}\n").check_dataplane()
        _, proxy_said = config("proxy", "  proxy: {workers: 2}\n").check_dataplane()
    finally:
        base.unregister("other-dp")
    assert "gridlb.proxy.workers: the other-dp dataplane has no relay workers; it is not used" in said
    assert not [line for line in proxy_said if "workers" in line]
