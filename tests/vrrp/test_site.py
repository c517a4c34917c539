"""The site model's VRRP instances convert into VrrpConfig (the seed's Hiera data included)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from gridlb.config.load import site_from_mapping
from gridlb.errors import ConfigError
from gridlb.vrrp.config import Tracked
from gridlb.vrrp.packet import AuthType
from gridlb.vrrp.site import configs_from_site, load_configs

DATA = Path(__file__).parents[1] / "data"


def one(raw: dict[str, Any], **top: Any) -> Any:
    (cfg,) = configs_from_site(site_from_mapping({"keepalived::vrrp_instances": {"VI_1": raw}, **top}))
    return cfg


def test_seed_hiera_converts() -> None:
    (cfg,) = load_configs([DATA / "seed-hiera.yaml"])
    assert cfg.name == "VI_1" and cfg.interface == "em1" and cfg.vrid == 1 and cfg.priority == 100
    assert cfg.version == 2 and cfg.advert_int_s == 1.0 and cfg.initial_state == "MASTER"
    assert cfg.vips == (ipaddress.ip_interface("129.93.239.157/26"),)
    assert cfg.source_address == ipaddress.ip_address("129.93.239.133")
    assert cfg.unicast_peers == (ipaddress.ip_address("129.93.239.134"),)
    assert cfg.track_interfaces == (Tracked("em1"),)
    assert cfg.preempt and cfg.garp_master_delay_s == 5.0 and cfg.garp_master_repeat == 5


def test_every_setting_is_carried() -> None:
    cfg = one(
        {
            "interface": "eth0",
            "virtual_router_id": 9,
            "priority": 150,
            "advert_int": 0.5,
            "version": 3,
            "virtual_ipaddress": ["fd00::100/64 dev eth0", "fd00::101"],
            "nopreempt": True,
            "preempt_delay": 3,
            "garp_master_delay": 2,
            "garp_master_repeat": 4,
            "garp_master_refresh": 60,
            "garp_master_refresh_repeat": 2,
            "garp_lower_prio_repeat": 1,
            "track_interface": ["eth1 weight -20"],
            "track_script": ["chk weight 7 reverse"],
            "notify": "/bin/n",
            "notify_master": "/bin/m arg",
            "unicast_source_ip": "fd00::2",
            "unicast_peers": ["fd00::3"],
        },
        **{"keepalived::vrrp_scripts": {"chk": {"script": "/bin/true x", "interval": 2, "fall": 3}}},
    )
    assert cfg.version == 3 and cfg.advert_int_cs == 50 and cfg.family == 6
    assert [str(v) for v in cfg.vips] == ["fd00::100/64", "fd00::101/128"]
    assert not cfg.preempt and cfg.preempt_delay_s == 3
    assert (cfg.garp_master_delay_s, cfg.garp_master_repeat, cfg.garp_master_refresh_s) == (2, 4, 60)
    assert (cfg.garp_master_refresh_repeat, cfg.garp_lower_prio_repeat) == (2, 1)
    assert cfg.track_interfaces == (Tracked("eth1", -20),)
    (script,) = cfg.track_scripts
    got = (script.script, script.interval_s, script.weight, script.reverse, script.fall)
    assert got == ("/bin/true x", 2, 7, True, 3)
    assert cfg.notify == "/bin/n" and cfg.notify_master == "/bin/m arg"


def test_pass_auth() -> None:
    cfg = one(
        {
            "interface": "eth0",
            "virtual_router_id": 1,
            "virtual_ipaddress": "10.0.0.1",
            "auth_type": "PASS",
            "auth_pass": "secret",
        }
    )
    assert cfg.auth_type is AuthType.PASS and cfg.auth_pass == "secret"


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (
            {"virtual_ipaddress": "10.0.0.1", "version": 3, "auth_type": "PASS", "auth_pass": "x"},
            "VI_1.auth_type",
        ),
        ({"virtual_ipaddress": "10.0.0.1", "advert_int": 0.5}, "VI_1.advert_int"),
        ({"virtual_ipaddress": ["10.0.0.1", "fd00::1"]}, "VI_1.virtual_ipaddress"),
        ({}, "VI_1.virtual_ipaddress"),
        ({"virtual_ipaddress": "10.0.0.1", "unicast_peers": ["fd00::1"]}, "VI_1.unicast_peers"),
        ({"virtual_ipaddress": "10.0.0.1", "track_script": ["nope"]}, "VI_1.track_script"),
    ],
)
def test_unusable_settings_name_the_key(raw: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        one({"interface": "eth0", "virtual_router_id": 1, **raw})
    assert err.value.key == key
