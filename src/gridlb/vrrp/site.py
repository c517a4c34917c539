"""Converts the site model's VRRP instances (gridlb.config) into the VRRP package's VrrpConfig."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from pathlib import Path

from gridlb.config.load import Site, load_site
from gridlb.config.schema import VrrpInstance, VrrpScript
from gridlb.errors import ConfigError, Location
from gridlb.vrrp.config import Tracked, TrackScript, VrrpConfig
from gridlb.vrrp.packet import AuthType


def from_instance(
    name: str, inst: VrrpInstance, scripts: Mapping[str, VrrpScript], *, where: Location | None = None
) -> VrrpConfig:
    """One `VrrpInstance` (+ the site's `vrrp_scripts`) as a validated VrrpConfig."""
    vips = []
    for vip in inst.vips:
        plen = vip.prefixlen if vip.prefixlen is not None else vip.address.max_prefixlen
        vips.append(ipaddress.ip_interface(f"{vip.address}/{plen}"))
    tracked_scripts = []
    for ts in inst.track_script:
        spec = scripts.get(ts.name)
        if spec is None:
            raise ConfigError(
                f"no vrrp_scripts entry named {ts.name!r}", location=where, key=f"{name}.track_script"
            )
        weight = ts.weight if ts.weight is not None else spec.weight
        tracked_scripts.append(
            TrackScript(
                ts.name,
                spec.script,
                spec.interval,
                spec.timeout or 0.0,
                weight,
                ts.reverse,
                spec.rise,
                spec.fall,
            )
        )
    master_repeat = inst.garp_master_repeat
    cfg = VrrpConfig(
        name=name,
        interface=inst.interface,
        vrid=inst.virtual_router_id,
        priority=inst.priority,
        advert_int_s=inst.advert_int,
        version=inst.vrrp_version,
        vips=tuple(vips),
        initial_state=inst.state.value,
        source_address=inst.unicast_source_ip or inst.multicast_source_ip,
        unicast_peers=tuple(inst.unicast_peers),
        preempt=not inst.nopreempt,
        preempt_delay_s=inst.preempt_delay,
        garp_master_delay_s=inst.garp_master_delay,
        garp_master_repeat=master_repeat,
        garp_master_refresh_s=inst.garp_master_refresh,
        garp_master_refresh_repeat=inst.garp_master_refresh_repeat,
        garp_lower_prio_repeat=inst.garp_lower_prio_repeat
        if inst.garp_lower_prio_repeat is not None
        else master_repeat,
        auth_type={None: AuthType.NONE, "PASS": AuthType.PASS, "AH": AuthType.AH}[inst.auth_type],
        auth_pass=inst.auth_pass or "",
        track_interfaces=tuple(Tracked(t.name, t.weight or 0, t.reverse) for t in inst.track_interface),
        track_scripts=tuple(tracked_scripts),
        notify_master=inst.notify_master,
        notify_backup=inst.notify_backup,
        notify_fault=inst.notify_fault,
        notify_stop=inst.notify_stop,
        notify=inst.notify,
    )
    return cfg.validate(where)


def configs_from_site(site: Site) -> list[VrrpConfig]:
    """Every VRRP instance of a loaded site."""
    return [
        from_instance(name, inst, site.vrrp_scripts, where=site.locate("vrrp_instances", name))
        for name, inst in site.vrrp_instances.items()
    ]


def load_configs(paths: Sequence[str | Path]) -> list[VrrpConfig]:
    """Load site files (seed Hiera keys) and return their VRRP instances; errors name file:line:key."""
    configs = configs_from_site(load_site(paths))
    if not configs:
        raise ConfigError(
            "no VRRP instances", location=Location(str(paths[0]), 1), key="keepalived::vrrp_instances"
        )
    return configs
