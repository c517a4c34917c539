"""The VRRP instance settings the machine runs on (keepalived's vrrp_instance words, validated)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

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
