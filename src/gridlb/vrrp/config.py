"""The VRRP instance settings (keepalived's vrrp_instance words, defaults in one place) and their loader."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gridlb.errors import ConfigError, Location
from gridlb.vrrp.packet import AuthType

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass(frozen=True, slots=True)
class Tracked:
    """A tracked interface or script: weight 0 forces FAULT while down; otherwise it shifts priority.

    keepalived semantics: weight > 0 adds `weight` while up; weight < 0 subtracts |weight| while
    down; `reverse` swaps up and down.
    """

    name: str
    weight: int = 0
    reverse: bool = False


@dataclass(frozen=True, slots=True)
class TrackScript:
    """A `vrrp_script`: a command run every `interval_s`; rise/fall successes/failures flip it."""

    name: str
    script: str
    interval_s: float = 1.0
    timeout_s: float = 0.0  # 0 = interval_s
    weight: int = 0
    reverse: bool = False
    rise: int = 1
    fall: int = 1


@dataclass(frozen=True, slots=True)
class VrrpConfig:
    """One VRRP instance, as keepalived's `vrrp_instance` describes it."""

    name: str
    interface: str
    vrid: int
    priority: int = 100
    advert_int_s: float = 1.0
    version: int = 2
    vips: tuple[IPInterface, ...] = ()
    initial_state: str = "BACKUP"
    source_address: IPAddress | None = None
    unicast_peers: tuple[IPAddress, ...] = ()
    preempt: bool = True
    preempt_delay_s: float = 0.0
    garp_master_delay_s: float = 5.0
    garp_master_repeat: int = 5
    garp_master_refresh_s: float = 0.0
    garp_master_refresh_repeat: int = 1
    garp_lower_prio_repeat: int = 5
    lower_prio_no_advert: bool = False
    down_timer_adverts: int = 3
    auth_type: AuthType = AuthType.NONE
    auth_pass: str = ""
    track_interfaces: tuple[Tracked, ...] = ()
    track_scripts: tuple[TrackScript, ...] = ()
    notify_master: str | None = None
    notify_backup: str | None = None
    notify_fault: str | None = None
    notify_stop: str | None = None
    notify: str | None = None
    ipv6_deprecated: bool = True
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def family(self) -> int:
        if self.vips:
            return self.vips[0].version
        if self.source_address is not None:
            return self.source_address.version
        return 4

    @property
    def advert_int_cs(self) -> int:
        """The advert interval as carried on the wire, in centiseconds (v2: whole seconds × 100)."""
        if self.version == 2:
            return max(1, min(255, round(self.advert_int_s))) * 100
        return max(1, min(0xFFF, round(self.advert_int_s * 100)))

    def validate(self, where: Location | None = None) -> VrrpConfig:
        """Return self, or raise ConfigError naming the offending key."""

        def bad(key: str, msg: str) -> ConfigError:
            return ConfigError(msg, location=where, key=f"{self.name}.{key}")

        if not 1 <= self.vrid <= 255:
            raise bad("virtual_router_id", f"{self.vrid} is outside 1..255")
        if not 1 <= self.priority <= 255:
            raise bad("priority", f"{self.priority} is outside 1..255")
        if self.version not in (2, 3):
            raise bad("version", f"{self.version} is not 2 or 3")
        if self.version == 2 and self.family == 6:
            raise bad("version", "VRRPv2 is IPv4 only; IPv6 instances use version 3")
        if self.version == 2 and not (
            1 <= self.advert_int_s <= 255 and self.advert_int_s == int(self.advert_int_s)
        ):
            raise bad("advert_int", f"VRRPv2 needs whole seconds 1..255, not {self.advert_int_s}")
        if self.version == 3 and not 0.01 <= self.advert_int_s <= 40.95:
            raise bad("advert_int", f"VRRPv3 needs 0.01..40.95 s, not {self.advert_int_s}")
        if not self.vips:
            raise bad("virtual_ipaddress", "no virtual address")
        if len({v.version for v in self.vips}) != 1:
            raise bad("virtual_ipaddress", "mixes IPv4 and IPv6 (use one instance per family)")
        for peer in self.unicast_peers:
            if peer.version != self.family:
                raise bad("unicast_peers", f"{peer} is not of the instance's address family")
        if self.source_address is not None and self.source_address.version != self.family:
            raise bad("unicast_source_ip", f"{self.source_address} is not of the instance's address family")
        if self.auth_type is AuthType.AH:
            raise bad("auth_type", "AH authentication is not supported (use PASS or none)")
        if self.auth_type is not AuthType.NONE and self.version == 3:
            raise bad("auth_type", "VRRPv3 has no authentication")
        if self.initial_state not in ("MASTER", "BACKUP"):
            raise bad("state", f"{self.initial_state!r} is not MASTER or BACKUP")
        if not 0 <= self.preempt_delay_s <= 1000:
            raise bad("preempt_delay", f"{self.preempt_delay_s} is outside 0..1000")
        return self


_BOOL_TRUE = {"true", "yes", "on", "1"}


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in _BOOL_TRUE


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    if isinstance(value, Mapping):
        return list(value.keys())
    return list(value)


def _vip(text: str) -> IPInterface:
    # keepalived syntax: "10.0.0.1/24 dev eth0 label ..."; only the address matters here.
    word = str(text).split()[0]
    iface = ipaddress.ip_interface(word)
    if "/" not in word:
        iface = ipaddress.ip_interface(f"{iface.ip}/{iface.max_prefixlen}")
    return iface


def config_from_mapping(
    name: str, raw: Mapping[str, Any], *, version: int | None = None, where: Location | None = None
) -> VrrpConfig:
    """Build a VrrpConfig from one `keepalived::vrrp_instances` entry (Hiera/puppet-keepalived keys)."""
    known = {
        "interface", "state", "virtual_router_id", "priority", "advert_int", "version", "vrrp_version",
        "virtual_ipaddress", "virtual_ipaddress_int", "track_interface", "track_script", "unicast_source_ip",
        "unicast_src_ip", "unicast_peers", "unicast_peer", "nopreempt", "preempt", "preempt_delay",
        "garp_master_delay", "garp_master_repeat", "garp_master_refresh", "garp_master_refresh_repeat",
        "garp_lower_prio_repeat", "lower_prio_no_advert", "auth_type", "auth_pass", "notify_script_master",
        "notify_master", "notify_script_backup", "notify_backup", "notify_script_fault", "notify_fault",
        "notify_script_stop", "notify_stop", "notify_script", "notify", "down_timer_adverts",
        "ipv6_deprecated",
        "vrrp_scripts",
    }  # fmt: skip
    for key in raw:
        if key not in known:
            raise ConfigError("unknown key", location=where, key=f"{name}.{key}")

    def get(*keys: str, default: Any = None) -> Any:
        for k in keys:
            if k in raw and raw[k] is not None:
                return raw[k]
        return default

    try:
        vips = tuple(_vip(v) for v in _list(get("virtual_ipaddress", "virtual_ipaddress_int")))
        peers = tuple(
            ipaddress.ip_address(str(p).split()[0]) for p in _list(get("unicast_peers", "unicast_peer"))
        )
        src = get("unicast_source_ip", "unicast_src_ip")
        tracked: list[Tracked] = []
        for item in _list(get("track_interface")):
            if isinstance(item, Mapping):
                tracked.append(
                    Tracked(str(item["name"]), int(item.get("weight", 0)), _bool(item.get("reverse")))
                )
            else:
                words = str(item).split()
                weight = int(words[words.index("weight") + 1]) if "weight" in words else 0
                tracked.append(Tracked(words[0], weight, "reverse" in words))
        scripts: list[TrackScript] = []
        defs = get("vrrp_scripts", default={}) or {}
        for item in _list(get("track_script")):
            sname = str(item).split()[0]
            spec = defs.get(sname) if isinstance(defs, Mapping) else None
            if spec is None:
                raise ConfigError(
                    f"track_script {sname!r} has no vrrp_scripts entry", location=where, key=name
                )
            scripts.append(
                TrackScript(
                    sname,
                    str(spec["script"]),
                    float(spec.get("interval", 1)),
                    float(spec.get("timeout", 0)),
                    int(spec.get("weight", 0)),
                    _bool(spec.get("reverse", False)),
                    int(spec.get("rise", 1)),
                    int(spec.get("fall", 1)),
                )
            )
        vers = int(get("version", "vrrp_version", default=version if version is not None else 0))
        if vers == 0:
            vers = 3 if vips and vips[0].version == 6 else 2
        auth_type_raw = str(get("auth_type", default="")).upper()
        auth = {"": AuthType.NONE, "PASS": AuthType.PASS, "AH": AuthType.AH}.get(auth_type_raw)
        if auth is None:
            raise ConfigError(f"{auth_type_raw!r} is not PASS or AH", location=where, key=f"{name}.auth_type")
        cfg = VrrpConfig(
            name=name,
            interface=str(get("interface", default="")),
            vrid=int(get("virtual_router_id", default=0)),
            priority=int(get("priority", default=100)),
            advert_int_s=float(get("advert_int", default=1)),
            version=vers,
            vips=vips,
            initial_state=str(get("state", default="BACKUP")).upper(),
            source_address=ipaddress.ip_address(str(src)) if src else None,
            unicast_peers=peers,
            preempt=not _bool(get("nopreempt", default=False)),
            preempt_delay_s=float(get("preempt_delay", default=0)),
            garp_master_delay_s=float(get("garp_master_delay", default=5)),
            garp_master_repeat=int(get("garp_master_repeat", default=5)),
            garp_master_refresh_s=float(get("garp_master_refresh", default=0)),
            garp_master_refresh_repeat=int(get("garp_master_refresh_repeat", default=1)),
            garp_lower_prio_repeat=int(
                get("garp_lower_prio_repeat", default=get("garp_master_repeat", default=5))
            ),
            lower_prio_no_advert=_bool(get("lower_prio_no_advert", default=False)),
            down_timer_adverts=int(get("down_timer_adverts", default=3)),
            auth_type=auth,
            auth_pass=str(get("auth_pass", default="")),
            track_interfaces=tuple(tracked),
            track_scripts=tuple(scripts),
            notify_master=get("notify_script_master", "notify_master"),
            notify_backup=get("notify_script_backup", "notify_backup"),
            notify_fault=get("notify_script_fault", "notify_fault"),
            notify_stop=get("notify_script_stop", "notify_stop"),
            notify=get("notify_script", "notify"),
            ipv6_deprecated=_bool(get("ipv6_deprecated", default=True)),
        )
    except ConfigError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(str(exc), location=where, key=name) from None
    if not cfg.interface:
        raise ConfigError("missing", location=where, key=f"{name}.interface")
    return cfg.validate(where)


def load_site(path: str | Path) -> list[VrrpConfig]:
    """Every VRRP instance of a site YAML file (`keepalived::vrrp_instances`, as in the seed's Hiera data).

    `keepalived::vrrp_scripts` defines track scripts; `keepalived::global_defs: {vrrp_version: 3}`
    sets the default version. Errors name the file, line and key.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(exc.strerror or str(exc), location=Location(str(path))) from None
    try:
        doc = YAML(typ="rt").load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        raise ConfigError(str(getattr(exc, "problem", exc)), location=Location(str(path), line)) from None
    if not isinstance(doc, Mapping):
        raise ConfigError("not a mapping", location=Location(str(path), 1))

    def line_of(mapping: Any, key: str) -> int:
        try:
            return int(mapping.lc.key(key)[0]) + 1
        except Exception:
            return 0

    key = "keepalived::vrrp_instances" if "keepalived::vrrp_instances" in doc else "vrrp_instances"
    instances = doc.get(key)
    if not isinstance(instances, Mapping) or not instances:
        raise ConfigError(
            "no VRRP instances", location=Location(str(path), 1), key="keepalived::vrrp_instances"
        )
    scripts = doc.get("keepalived::vrrp_scripts") or {}
    globals_ = doc.get("keepalived::global_defs") or {}
    version = globals_.get("vrrp_version") if isinstance(globals_, Mapping) else None
    out = []
    for name, raw in instances.items():
        where = Location(str(path), line_of(instances, name))
        if not isinstance(raw, Mapping):
            raise ConfigError("not a mapping", location=where, key=str(name))
        merged = dict(raw)
        if scripts and "track_script" in merged:
            merged["vrrp_scripts"] = scripts
        out.append(
            config_from_mapping(str(name), merged, version=int(version) if version else None, where=where)
        )
    return out
