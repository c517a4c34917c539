"""The typed site model: VRRP instances, virtual servers, checkers and the `gridlb:` section.

Every model is a frozen pydantic model that forbids unknown keys. Field names are the seed's Hiera
names (arioch/puppet-keepalived: `lb_algo`, `lb_kind`, `unicast_source_ip`, `unicast_peers`,
`tcp_check`, ...); keepalived's own keywords are accepted as aliases (`KEY_ALIASES`, applied by
`gridlb.config.load` before validation so that error lines still point at the key as written).
Defaults are keepalived's and live in `gridlb.config.defaults`; a `None` field means "not written,
inherit" where keepalived has an inheritance chain (service → real server → checker).

One file validates into `SiteData` (the sections of that file); `gridlb.config.load` wraps it into
`SiteFile` (with its path and line map) and several files into `Site`.

Helpers for other modules live on the models:

* `VirtualServer.service_key()`, `.scheduler`, `.forward`, `.service_spec()`;
* `RealServer.real_key(vs)`, `.forward(vs)`, `.dest_spec(vs)`;
* `VirtualServer.checks_for(rs, settings)` / `.check_for(rs, settings)` → `CheckSpec` with
  keepalived's inheritance and defaults applied;
* `VrrpInstance.family`, `.vrrp_version`, `.vips`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_interface
from itertools import pairwise
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from gridlb.config import defaults as D
from gridlb.sched import scheduler_names
from gridlb.table import (
    DestSpec,
    ForwardMethod,
    IPAddress,
    Proto,
    RealKey,
    ServiceKey,
    ServiceSpec,
    Timeouts,
    parse_address,
)

#: keepalived / puppet spellings accepted for a canonical field name (context-free: the same
#: alias never means two different fields). `gridlb.config.load` renames them before validation.
KEY_ALIASES: dict[str, str] = {
    "lvs_sched": "lb_algo",
    "lvs_method": "lb_kind",
    "unicast_src_ip": "unicast_source_ip",
    "unicast_peer": "unicast_peers",
    "mcast_src_ip": "multicast_source_ip",
    "nb_get_retry": "retry",
    "TCP_CHECK": "tcp_check",
    "MISC_CHECK": "misc_check",
    "GRIDFTP_CHECK": "gridftp_check",
    "XROOTD_CHECK": "xrootd_check",
    "HTTP_GET": "http_get",
    "SSL_GET": "ssl_get",
    "SMTP_CHECK": "smtp_check",
    "DNS_CHECK": "dns_check",
    "UDP_CHECK": "udp_check",
    "PING_CHECK": "ping_check",
    "FILE_CHECK": "file_check",
    "BFD_CHECK": "bfd_check",
    "notify_script_master": "notify_master",
    "notify_script_backup": "notify_backup",
    "notify_script_fault": "notify_fault",
    "notify_script_stop": "notify_stop",
    "notify_script": "notify",
    "lvs_interface": "lvs_sync_daemon_interface",
    "sh-port": "sh_port",
    "sh-fallback": "sh_fallback",
    "mh-port": "mh_port",
    "mh-fallback": "mh_fallback",
}

#: Top-level keys of a site file and the `SiteData` field each one fills.
TOP_LEVEL_KEYS: dict[str, str] = {
    "keepalived::vrrp_instances": "vrrp_instances",
    "keepalived::vrrp_instance": "vrrp_instances",
    "vrrp_instances": "vrrp_instances",
    "keepalived::virtual_servers": "virtual_servers",
    "keepalived::lvs::virtual_servers": "virtual_servers",
    "virtual_servers": "virtual_servers",
    "keepalived::vrrp_scripts": "vrrp_scripts",
    "keepalived::vrrp_script": "vrrp_scripts",
    "vrrp_scripts": "vrrp_scripts",
    "keepalived::vrrp_sync_groups": "vrrp_sync_groups",
    "keepalived::vrrp_sync_group": "vrrp_sync_groups",
    "vrrp_sync_groups": "vrrp_sync_groups",
    "keepalived::global_defs": "global_defs",
    "global_defs": "global_defs",
    "keepalived::static_ipaddress": "static_ipaddress",
    "static_ipaddress": "static_ipaddress",
    "keepalived::static_routes": "static_routes",
    "static_routes": "static_routes",
    "keepalived::static_rules": "static_rules",
    "static_rules": "static_rules",
    "keepalived::track_files": "track_files",
    "track_files": "track_files",
    "keepalived::bfd_instances": "bfd_instances",
    "bfd_instances": "bfd_instances",
    "gridlb": "gridlb",
}

#: ipvsadm scheduler names for `lb_algo` / `lvs_sched`: those gridlb.sched implements (its registry).
SCHEDULERS = tuple(scheduler_names())


def _known_scheduler(value: str) -> str:
    if value not in SCHEDULERS:
        raise ValueError(
            "should be " + ", ".join(repr(n) for n in SCHEDULERS[:-1]) + f" or {SCHEDULERS[-1]!r}"
        )
    return value


Scheduler = Annotated[str, AfterValidator(_known_scheduler)]
LbKind = Literal["NAT", "DR", "TUN"]

_FORWARD = {"NAT": ForwardMethod.MASQ, "DR": ForwardMethod.ROUTE, "TUN": ForwardMethod.TUNNEL}


def _to_ip(value: object) -> object:
    if isinstance(value, IPv4Address | IPv6Address):
        return value
    if isinstance(value, str):
        try:
            return parse_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address") from None
    raise ValueError(f"expected an IP address, got {value!r}")


def _listify(value: object) -> object:
    """Accept one item where a list is expected (Hiera writes `virtual_ipaddress: 'a/26'`)."""
    if value is None:
        return ()
    if isinstance(value, str | Mapping):
        return (value,)
    return value


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


IpAddr = Annotated[IPv4Address | IPv6Address, BeforeValidator(_to_ip)]
Port = Annotated[int, Field(ge=D.PORT_MIN, le=D.PORT_MAX)]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Interval = Annotated[float, Field(gt=0, allow_inf_nan=False)]  # keepalived refuses 0 (delay_loop, timeouts)
TrackWeight = Annotated[int, Field(ge=D.VRRP_TRACK_WEIGHT_MIN, le=D.VRRP_TRACK_WEIGHT_MAX)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, value: object) -> object:
        """Rename keepalived spellings when a model is built directly (load.py has done it already)."""
        if isinstance(value, Mapping) and any(k in KEY_ALIASES for k in value):
            out: dict[str, object] = {}
            for k, v in value.items():
                canon = KEY_ALIASES.get(k, k) if isinstance(k, str) else k
                if canon in cls.model_fields and canon in value and canon != k:
                    raise ValueError(f"{k} and {canon} are the same setting; keep one")
                out[canon if canon in cls.model_fields else k] = v
            return out
        return value


def _rename(value: object, old: str, new: str) -> object:
    """A mapping with key `old` renamed to `new` (when only `old` is written); anything else as is."""
    return _renamed(value, old, new) if isinstance(value, Mapping) else value


def _renamed(value: Mapping[Any, Any], old: str, new: str) -> dict[Any, Any]:
    data = dict(value)
    if old in data and new not in data:
        data[new] = data.pop(old)
    return data


def _int_to_str(value: object) -> object:
    """A YAML integer where text is expected (an IPv6 prefix length such as `64`) as its digits."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _int_or_same(value: object) -> object:
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value


class InitialState(enum.Enum):
    """A VRRP instance's configured start state (`state`)."""

    MASTER = "MASTER"
    BACKUP = "BACKUP"

    def __str__(self) -> str:
        return self.value


class CheckKind(enum.Enum):
    """Which checker watches a real server; values are the `gridlb.health` registry names."""

    TCP = "tcp"
    GRIDFTP = "gridftp"
    SCRIPT = "script"
    XROOTD = "xrootd"
    HTTP = "http"
    HTTPS = "https"
    NONE = "none"

    def __str__(self) -> str:
        return self.value


# --------------------------------------------------------------------------------------- VRRP


class Vip(_Model):
    """One `virtual_ipaddress` entry: `ADDR[/PREFIX] [dev IF] [label L] [scope S] [brd B]`."""

    address: IpAddr
    prefixlen: int | None = None  # None = keepalived's default, /32 or /128
    dev: str | None = None
    label: str | None = None
    scope: str | None = None
    brd: IpAddr | None = None

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: object) -> object:
        if isinstance(value, Mapping):
            value = _renamed(value, "ip", "address")
        elif isinstance(value, str):
            words = value.split()
            if not words:
                raise ValueError("empty virtual address")
            data: dict[str, object] = {"address": words[0]}
            rest = words[1:]
            if len(rest) % 2:
                raise ValueError(f"{value!r}: expected 'ADDR[/PREFIX] [dev IF] [label L] [scope S] [brd B]'")
            for opt, arg in zip(rest[::2], rest[1::2], strict=True):
                if opt not in ("dev", "label", "scope", "brd", "broadcast"):
                    raise ValueError(f"{value!r}: unknown option {opt!r}")
                data["brd" if opt == "broadcast" else opt] = arg
            value = data
        else:
            return value
        addr = value.get("address")
        if isinstance(addr, str) and "/" in addr:
            host, _, prefix = addr.partition("/")
            if not prefix.isdigit():
                raise ValueError(f"{addr!r}: prefix length must be a number")
            value["address"] = host
            value.setdefault("prefixlen", int(prefix))
        return value

    @model_validator(mode="after")
    def _check_prefix(self) -> Vip:
        limit = 32 if self.address.version == 4 else 128
        if self.prefixlen is not None and not 0 <= self.prefixlen <= limit:
            raise ValueError(f"prefix length {self.prefixlen} out of range 0..{limit}")
        return self

    @property
    def network(self) -> IPv4Network | IPv6Network | None:
        """Return the subnet the prefix length gives, or None when no prefix was written."""
        if self.prefixlen is None:
            return None
        return ip_interface(f"{self.address}/{self.prefixlen}").network

    def __str__(self) -> str:
        return f"{self.address}/{self.prefixlen}" if self.prefixlen is not None else str(self.address)


class _Track(_Model):
    """A tracked thing: `NAME [weight W [reverse]]` or a mapping."""

    name: str
    weight: TrackWeight | None = None
    reverse: bool = False

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: object) -> object:
        return _parse_track_words(value) if isinstance(value, str) else value


class TrackInterface(_Track):
    """One `track_interface` entry: `IF [weight W [reverse]]` or a mapping (`interface:` = `name:`)."""

    @model_validator(mode="before")
    @classmethod
    def _interface_key(cls, value: object) -> object:
        return _rename(value, "interface", "name")


class TrackScript(_Track):
    """One `track_script` entry: `NAME [weight W [reverse]]` naming a `vrrp_scripts` entry."""


def _parse_track_words(text: str) -> dict[str, object]:
    words = text.split()
    if not words:
        raise ValueError("empty entry")
    data: dict[str, object] = {"name": words[0]}
    rest = words[1:]
    if rest[:1] == ["weight"] and len(rest) >= 2:
        data["weight"] = rest[1]
        rest = rest[2:]
    if rest == ["reverse"]:
        data["reverse"] = True
    elif rest:
        raise ValueError(f"{text!r}: expected 'NAME [weight W [reverse]]'")
    return data


class VrrpScript(_Model):
    """A `vrrp_script` block: a command whose exit status adjusts an instance's priority."""

    script: str
    interval: Interval = D.VRRP_SCRIPT_INTERVAL_S
    timeout: Interval | None = None  # None = interval
    weight: TrackWeight = D.VRRP_SCRIPT_WEIGHT
    rise: Annotated[int, Field(ge=1)] = D.VRRP_SCRIPT_RISE
    fall: Annotated[int, Field(ge=1)] = D.VRRP_SCRIPT_FALL
    user: str | None = None
    init_fail: bool = False


class VrrpInstance(_Model):
    """A `vrrp_instance`: who holds the VIPs on one interface (seed's `keepalived::vrrp_instances`)."""

    interface: str
    state: InitialState = InitialState(D.VRRP_STATE)
    virtual_router_id: Annotated[int, Field(ge=D.VRID_MIN, le=D.VRID_MAX)]
    priority: Annotated[int, Field(ge=D.VRRP_PRIORITY_MIN, le=D.VRRP_PRIORITY_MAX)] = D.VRRP_PRIORITY
    advert_int: Annotated[float, Field(ge=D.VRRP_ADVERT_INT_MIN_S, le=D.VRRP_ADVERT_INT_MAX_S)] = (
        D.VRRP_ADVERT_INT_S
    )
    version: Annotated[Literal[2, 3] | None, BeforeValidator(_int_or_same)] = (
        None  # None = 2, or 3 for IPv6 (see `vrrp_version`)
    )
    native_ipv6: bool = False
    virtual_ipaddress: Annotated[tuple[Vip, ...], BeforeValidator(_listify)] = ()
    virtual_ipaddress_excluded: Annotated[tuple[Vip, ...], BeforeValidator(_listify)] = ()
    track_interface: Annotated[tuple[TrackInterface, ...], BeforeValidator(_listify)] = ()
    track_script: Annotated[tuple[TrackScript, ...], BeforeValidator(_listify)] = ()
    dont_track_primary: bool = False
    unicast_source_ip: IpAddr | None = None
    unicast_peers: Annotated[tuple[IpAddr, ...], BeforeValidator(_listify)] = ()
    multicast_source_ip: IpAddr | None = None
    nopreempt: bool = False
    preempt: bool = False  # keepalived accepts it "for backwards compatibility"; no effect
    preempt_delay: Annotated[float, Field(ge=0, le=D.VRRP_PREEMPT_DELAY_MAX_S)] = D.VRRP_PREEMPT_DELAY_S
    garp_master_delay: Seconds = D.VRRP_GARP_MASTER_DELAY_S
    garp_master_repeat: Annotated[int, Field(ge=1)] = D.VRRP_GARP_MASTER_REPEAT
    garp_master_refresh: Seconds = D.VRRP_GARP_MASTER_REFRESH_S
    garp_master_refresh_repeat: Annotated[int, Field(ge=1)] = D.VRRP_GARP_MASTER_REFRESH_REPEAT
    garp_lower_prio_delay: Seconds | None = None  # None = garp_master_delay
    garp_lower_prio_repeat: Annotated[int, Field(ge=0)] | None = None  # None = garp_master_repeat
    auth_type: Literal["PASS", "AH"] | None = None
    auth_pass: str | None = None
    notify_master: str | None = None
    notify_backup: str | None = None
    notify_fault: str | None = None
    notify_stop: str | None = None
    notify: str | None = None
    lvs_sync_daemon_interface: str | None = None
    lvs_sync_daemon_id: Annotated[int, Field(ge=0, le=255)] | None = None  # None = virtual_router_id
    smtp_alert: bool | None = None  # keepalived mails on state changes (global_defs says where)
    use_vmac: str | None = None  # "" = keepalived's default name (vrrp.VRID); gridlb has no VMAC
    vmac_xmit_base: bool = False
    virtual_routes: Annotated[tuple[str, ...], BeforeValidator(_listify)] = ()  # installed by keepalived only
    virtual_rules: Annotated[tuple[str, ...], BeforeValidator(_listify)] = ()

    _upper_state = field_validator("state", "auth_type", mode="before")(_upper)

    @property
    def vips(self) -> tuple[Vip, ...]:
        """Return every address the instance manages (`virtual_ipaddress` then `_excluded`)."""
        return self.virtual_ipaddress + self.virtual_ipaddress_excluded

    @property
    def family(self) -> int:
        """Return 4 or 6: the family of the first VIP, else of the unicast addresses, else 4."""
        if self.virtual_ipaddress:
            return self.virtual_ipaddress[0].address.version
        if self.native_ipv6:
            return 6
        for addr in (self.unicast_source_ip, *self.unicast_peers, self.multicast_source_ip):
            if addr is not None:
                return addr.version
        return 4

    @property
    def vrrp_version(self) -> int:
        """Return the VRRP version spoken: `version` if written, else 3 for IPv6 and 2 for IPv4."""
        if self.family == 6:
            return 3
        return self.version if self.version is not None else D.VRRP_VERSION


# ------------------------------------------------------------------------------------ checkers


class _CheckTiming(_Model):
    """Keys every checker shares with its real server and service (None = inherit)."""

    retry: Annotated[int, Field(ge=0)] | None = None
    delay_before_retry: Seconds | None = None
    delay_loop: Interval | None = None
    warmup: Seconds | None = None
    alpha: bool | None = None


class _ConnectCheck(_CheckTiming):
    connect_ip: IpAddr | None = None
    connect_port: Port | None = None
    bindto: IpAddr | None = None
    bind_port: Port | None = None
    bind_if: str | None = None
    connect_timeout: Interval | None = None


class TcpCheck(_ConnectCheck):
    """keepalived `TCP_CHECK`: up when a TCP connect completes within `connect_timeout`."""


class MiscCheck(_CheckTiming):
    """keepalived `MISC_CHECK`: run `misc_path`; exit 0 up, 1 down, 2..255 = weight+2 if dynamic."""

    misc_path: str
    misc_timeout: Annotated[int, Field(ge=0)] | None = (
        None  # whole seconds, as keepalived; None or 0 = delay_loop
    )
    misc_dynamic: bool = False
    user: str | None = None  # USER [GROUP]; None = gridlb.script_user if written, else the director's


class GridftpCheck(_ConnectCheck):
    """gridlb `GRIDFTP_CHECK`: banner (220 up, 421/422 refusing), login or canary transfer."""

    level: Literal["banner", "login", "canary"] | None = None  # None = gridlb.gridftp_check.level
    canary_path: str | None = None
    check_data_address: bool | None = None
    user: str | None = None
    password: str | None = None


class XrootdCheck(_ConnectCheck):
    """gridlb `XROOTD_CHECK`: handshake and kXR_protocol, kXR_login (login), kXR_stat or kXR_ping (canary)."""

    level: Literal["connect", "login", "canary"] | None = None  # None = gridlb.xrootd_check.level
    canary_path: str | None = None  # canary: kXR_stat of this path; None = kXR_ping
    user: str | None = None  # kXR_login user name (at most 8 bytes)
    check_redirect: bool | None = None  # report a redirect to a VIP or to loopback

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        return None if value is None else _xrootd_user(value)


def _xrootd_user(value: str) -> str:
    if not 0 < len(value.encode()) <= 8 or not value.isprintable() or " " in value:
        raise ValueError(f"{value!r}: a kXR_login user name is 1 to 8 printable bytes without spaces")
    return value


class HttpUrl(_Model):
    """One `url { }` of HTTP_GET / SSL_GET: the path, and what the answer must be."""

    path: str
    digest: str | None = None  # keepalived: MD5 of the body, 32 hex digits
    status_code: Annotated[tuple[str, ...], BeforeValidator(_listify)] = ()  # "200", "200-299"; () = 200-299
    virtualhost: str | None = None

    @field_validator("digest", mode="before")
    @classmethod
    def _digest(cls, value: object) -> object:
        if isinstance(value, str):
            if not re.fullmatch(r"[0-9A-Fa-f]{32}", value):
                raise ValueError(f"{value!r}: a digest is 32 hexadecimal digits (an MD5, as genhash prints)")
            return value.lower()
        return value

    @field_validator("status_code", mode="before")
    @classmethod
    def _codes(cls, value: object) -> object:
        if isinstance(value, int):
            value = (str(value),)
        elif isinstance(value, str):
            value = tuple(value.split())
        items = _listify(value)
        out = []
        for item in items if isinstance(items, tuple | list) else ():
            text = str(item)
            low, _, high = text.partition("-")
            try:
                lo, hi = int(low), int(high or low)
            except ValueError:
                raise ValueError(f"status_code {text!r}: expected N or N-M") from None
            if not (D.HTTP_STATUS_MIN <= lo <= hi <= D.HTTP_STATUS_MAX):
                raise ValueError(f"status_code {text!r}: codes are {D.HTTP_STATUS_MIN}..{D.HTTP_STATUS_MAX}")
            out.append(text)
        return tuple(out)

    def accepts(self, status: int) -> bool:
        """Return True when `status` is one of the codes (keepalived's default 200-299 when none)."""
        if not self.status_code:
            return D.HTTP_DEFAULT_STATUS_MIN <= status <= D.HTTP_DEFAULT_STATUS_MAX
        for text in self.status_code:
            low, _, high = text.partition("-")
            if int(low) <= status <= int(high or low):
                return True
        return False


class HttpCheck(_ConnectCheck):
    """keepalived `HTTP_GET` / `SSL_GET`, run by gridlb's `http` / `https` checker.

    The keepalived keys behave as keepalived's; the gridlb keys (`level`, `tls_verify`, `ca_file`,
    `cert_warn_days`, `canary_path`) add WebDAV levels and certificate checks.
    """

    url: Annotated[tuple[HttpUrl, ...], BeforeValidator(_listify)] = ()
    virtualhost: str | None = None
    http_protocol: Literal["1.0", "1.0C", "1.1"] | None = None
    enable_sni: bool | None = None
    fast_recovery: bool | None = None
    # gridlb's own (rendered as `gridlb check http|https` for keepalived)
    level: Literal["get", "options", "canary", "propfind"] | None = None  # None = get
    canary_path: str | None = None
    tls_verify: bool | None = None  # None = verify (SSL_GET from a keepalived.conf imports as false)
    ca_file: str | None = None
    cert_warn_days: Annotated[int, Field(ge=0)] | None = None

    @field_validator("http_protocol", mode="before")
    @classmethod
    def _protocol(cls, value: object) -> object:
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _check_level(self) -> HttpCheck:
        if self.level == "canary" and not self.canary_path:
            raise ValueError("level 'canary' needs canary_path")
        return self

    @property
    def gridlb_only(self) -> bool:
        """Return True when a setting keepalived's HTTP_GET/SSL_GET cannot express is used."""
        return (
            any(v is not None for v in (self.level, self.canary_path, self.ca_file, self.cert_warn_days))
            or self.tls_verify is not None
        )


class SmtpHost(_Model):
    """One `host { }` of SMTP_CHECK: another address to try."""

    connect_ip: IpAddr | None = None
    connect_port: Port | None = None
    bindto: IpAddr | None = None
    bind_port: Port | None = None
    bind_if: str | None = None
    connect_timeout: Interval | None = None
    fwmark: Annotated[int, Field(ge=0)] | None = None


class SmtpCheck(_ConnectCheck):
    """keepalived `SMTP_CHECK` (gridlb does not run it: imported, rendered and reported by lint)."""

    helo_name: str | None = None
    host: Annotated[tuple[SmtpHost, ...], BeforeValidator(_listify)] = ()


class DnsCheck(_ConnectCheck):
    """keepalived `DNS_CHECK` (gridlb does not run it)."""

    type: Literal["A", "NS", "CNAME", "SOA", "MX", "TXT", "AAAA"] | None = None
    name: str | None = None

    _upper_type = field_validator("type", mode="before")(_upper)


class UdpCheck(_ConnectCheck):
    """keepalived `UDP_CHECK` (gridlb does not run it)."""

    payload: str | None = None
    require_reply: str | bool | None = None  # True = any reply, text = hex the reply must match
    min_reply_length: Annotated[int, Field(ge=0)] | None = None
    max_reply_length: Annotated[int, Field(ge=0)] | None = None


class PingCheck(_ConnectCheck):
    """keepalived `PING_CHECK` (gridlb does not run it)."""


class FileCheck(_Model):
    """keepalived `FILE_CHECK`: a weight read from a `track_file` (gridlb does not run it)."""

    track_file: str
    weight: int | None = None
    reverse: bool = False


class BfdCheck(_Model):
    """keepalived `BFD_CHECK`: the state of a `bfd_instance` (gridlb does not run it)."""

    name: str
    alpha: bool | None = None


#: keepalived checker keyword → (site key, model), in the order the renderer writes them.
CHECKER_BLOCKS: dict[str, tuple[str, type[_Model]]] = {
    "TCP_CHECK": ("tcp_check", TcpCheck),
    "MISC_CHECK": ("misc_check", MiscCheck),
    "GRIDFTP_CHECK": ("gridftp_check", GridftpCheck),
    "XROOTD_CHECK": ("xrootd_check", XrootdCheck),
    "HTTP_GET": ("http_get", HttpCheck),
    "SSL_GET": ("ssl_get", HttpCheck),
    "SMTP_CHECK": ("smtp_check", SmtpCheck),
    "DNS_CHECK": ("dns_check", DnsCheck),
    "UDP_CHECK": ("udp_check", UdpCheck),
    "PING_CHECK": ("ping_check", PingCheck),
    "FILE_CHECK": ("file_check", FileCheck),
    "BFD_CHECK": ("bfd_check", BfdCheck),
}

#: The checkers gridlb reads, renders and lints but does not run (site keys).
UNSUPPORTED_CHECKERS = ("smtp_check", "dns_check", "udp_check", "ping_check", "file_check", "bfd_check")

AnyChecker = (
    TcpCheck
    | MiscCheck
    | GridftpCheck
    | XrootdCheck
    | HttpCheck
    | SmtpCheck
    | DnsCheck
    | UdpCheck
    | PingCheck
    | FileCheck
    | BfdCheck
)


@dataclass(frozen=True, slots=True)
class HttpSpec:
    """The HTTP part of a resolved `http` / `https` check."""

    urls: tuple[HttpUrl, ...]
    virtualhost: str | None = None  # the url's own virtualhost wins
    tls: bool = False
    sni: bool = False
    http_protocol: str = "1.0"
    level: str = "get"
    canary_path: str | None = None
    tls_verify: bool = True
    ca_file: str | None = None
    cert_warn_days: int | None = None


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """One resolved health check of one real server: kind, target and keepalived-inherited timing."""

    kind: CheckKind
    target: RealKey
    connect_timeout_s: float = D.CHECK_CONNECT_TIMEOUT_S
    delay_loop_s: float = D.CHECK_DELAY_LOOP_S
    retry: int = D.CHECK_RETRY
    delay_before_retry_s: float = D.CHECK_DELAY_BEFORE_RETRY_S
    warmup_s: float | None = None  # None = keepalived: random delay up to delay_loop_s
    alpha: bool = D.CHECK_ALPHA
    inhibit_on_failure: bool = D.CHECK_INHIBIT_ON_FAILURE
    bindto: IPAddress | None = None
    bind_port: int | None = None
    bind_if: str | None = None
    script: str | None = None  # SCRIPT: the command line (misc_path)
    script_timeout_s: float | None = None
    script_dynamic: bool = False
    script_user: str | None = None
    gridftp_level: str = D.GRIDFTP_CHECK_LEVEL
    gridftp_canary_path: str | None = None
    gridftp_check_data_address: bool = D.GRIDFTP_CHECK_DATA_ADDRESS
    gridftp_user: str = D.GRIDFTP_CHECK_USER
    gridftp_password: str = D.GRIDFTP_CHECK_PASSWORD
    xrootd_level: str = D.XROOTD_CHECK_LEVEL
    xrootd_canary_path: str | None = None
    xrootd_user: str = D.XROOTD_CHECK_USER
    xrootd_check_redirect: bool = True
    http: HttpSpec | None = None  # HTTP / HTTPS


# ------------------------------------------------------------------------------- virtual servers


class _Inherited(_Model):
    """Checker keys a service or real server sets as the default for what is below it."""

    connect_timeout: Interval | None = None
    retry: Annotated[int, Field(ge=0)] | None = None
    delay_before_retry: Seconds | None = None
    delay_loop: Interval | None = None
    warmup: Seconds | None = None
    alpha: bool | None = None
    inhibit_on_failure: bool | None = None
    tcp_check: TcpCheck | None = None
    misc_check: MiscCheck | None = None
    gridftp_check: GridftpCheck | None = None
    xrootd_check: XrootdCheck | None = None
    http_get: HttpCheck | None = None
    ssl_get: HttpCheck | None = None
    smtp_check: SmtpCheck | None = None
    dns_check: DnsCheck | None = None
    udp_check: UdpCheck | None = None
    ping_check: PingCheck | None = None
    file_check: FileCheck | None = None
    bfd_check: BfdCheck | None = None
    smtp_alert: bool | None = None
    virtualhost: str | None = None

    @property
    def checker_blocks(self) -> tuple[tuple[str, AnyChecker], ...]:
        """Return (site key, block) of every checker written here, in `CHECKER_BLOCKS` order."""
        out = []
        for key, _model in CHECKER_BLOCKS.values():
            block = getattr(self, key)
            if block is not None:
                out.append((key, block))
        return tuple(out)

    @property
    def checkers(self) -> tuple[TcpCheck | MiscCheck | GridftpCheck | XrootdCheck | HttpCheck, ...]:
        """Return the checker blocks gridlb runs, in a fixed order (tcp, misc, gridftp, xrootd, http, ssl)."""
        blocks = (
            self.tcp_check,
            self.misc_check,
            self.gridftp_check,
            self.xrootd_check,
            self.http_get,
            self.ssl_get,
        )
        return tuple(c for c in blocks if c is not None)

    @property
    def unsupported_checkers(self) -> tuple[str, ...]:
        """Return the keepalived keywords of the checkers written here that gridlb does not run."""
        return tuple(
            kw
            for kw, (key, _m) in CHECKER_BLOCKS.items()
            if key in UNSUPPORTED_CHECKERS and getattr(self, key) is not None
        )


class RealServer(_Inherited):
    """A `real_server` (Hiera: an item of `real_servers`); `port` defaults to the service's port."""

    ip_address: IpAddr
    port: Port | None = None
    weight: Annotated[int, Field(ge=D.RS_WEIGHT_MIN, le=D.RS_WEIGHT_MAX)] = D.RS_WEIGHT
    lb_kind: LbKind | None = None  # None = the service's
    uthreshold: Annotated[int, Field(ge=0)] | None = None
    lthreshold: Annotated[int, Field(ge=0)] | None = None
    notify_up: str | None = None
    notify_down: str | None = None

    _upper_kind = field_validator("lb_kind", mode="before")(_upper)

    @model_validator(mode="before")
    @classmethod
    def _ip_alias(cls, value: object) -> object:
        return _rename(value, "ip", "ip_address")

    def real_key(self, vs: VirtualServer) -> RealKey:
        """Return this server's destination key in `vs` (port defaults to the service's port)."""
        port = self.port if self.port is not None else (vs.port or 0)
        return RealKey(self.ip_address, port)

    def forward(self, vs: VirtualServer) -> ForwardMethod:
        """Return the forwarding method: this server's `lb_kind`, else the service's."""
        return _FORWARD[self.lb_kind or vs.lb_kind]

    def dest_spec(self, vs: VirtualServer, weight: int | None = None) -> DestSpec:
        """Return the IPVS destination spec (optionally with a weight other than the configured one)."""
        return DestSpec(
            weight=self.weight if weight is None else weight,
            forward=self.forward(vs),
            u_threshold=self.uthreshold or 0,
            l_threshold=self.lthreshold or 0,
        )


class SorryServer(_Model):
    """The server that replaces all real servers while the quorum is lost."""

    ip_address: IpAddr
    port: Port | None = None

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: object) -> object:
        if isinstance(value, str):
            words = value.split()
            if len(words) not in (1, 2):
                raise ValueError(f"{value!r}: expected 'IP [PORT]'")
            return {"ip_address": words[0], **({"port": words[1]} if len(words) == 2 else {})}
        return _rename(value, "ip", "ip_address")


class VirtualServer(_Inherited):
    """A `virtual_server` (seed: `keepalived::virtual_servers`): `ip_address`+`port` or `fwmark`."""

    ip_address: IpAddr | None = None
    port: Port | None = None
    fwmark: Annotated[int, Field(ge=D.FWMARK_MIN, le=D.FWMARK_MAX)] | None = None
    ip_family: Literal["inet", "inet6"] | None = None
    protocol: Proto = Proto(D.VS_PROTOCOL)
    lb_algo: Scheduler = D.VS_SCHEDULER
    lb_kind: LbKind = D.VS_LB_KIND
    persistence_timeout: Annotated[int, Field(ge=0)] | None = None
    persistence_granularity: Annotated[str | None, BeforeValidator(_int_to_str)] = None  # mask or /len
    quorum: Annotated[int, Field(ge=0)] = D.VS_QUORUM
    hysteresis: Annotated[int, Field(ge=0)] = D.VS_HYSTERESIS
    quorum_up: str | None = None
    quorum_down: str | None = None
    sorry_server: SorryServer | None = None
    sorry_server_inhibit: bool = False
    omega: bool = False
    ha_suspend: bool = False
    sh_port: bool = False
    sh_fallback: bool = False
    mh_port: bool = False
    mh_fallback: bool = False
    ops: bool = False
    real_servers: Annotated[tuple[RealServer, ...], BeforeValidator(_listify)] = ()

    _upper_fields = field_validator("protocol", "lb_kind", mode="before")(_upper)
    _lower_fields = field_validator("lb_algo", "ip_family", mode="before")(_lower)

    @field_validator("persistence_timeout", mode="before")
    @classmethod
    def _bare_persistence(cls, value: object) -> object:
        if value is True:
            return D.VS_PERSISTENCE_TIMEOUT_S
        if value is False:
            return None
        return value

    @model_validator(mode="after")
    def _check_identity(self) -> VirtualServer:
        if self.fwmark is not None:
            if self.ip_address is not None:
                raise ValueError("give either ip_address (and port) or fwmark, not both")
        elif self.ip_address is None:
            raise ValueError("a virtual server needs ip_address and port, or fwmark")
        elif self.port is None and not self.persistence_timeout:
            raise ValueError("port is required (only a persistent service may leave it out)")
        g = self.persistence_granularity
        if g is not None and self.family == 6:
            if not (g.isascii() and g.isdigit() and 1 <= int(g) <= 128):
                raise ValueError(
                    f"persistence_granularity {g!r}: an IPv6 service takes a prefix length 1..128"
                )
        elif g is not None:
            try:
                IPv4Address(g)
            except ValueError:
                raise ValueError(
                    f"persistence_granularity {g!r}: an IPv4 service takes a netmask such as 255.255.255.0"
                ) from None
        return self

    @property
    def scheduler(self) -> str:
        """Return the ipvsadm scheduler name (`lb_algo` / `lvs_sched`)."""
        return self.lb_algo

    @property
    def forward(self) -> ForwardMethod:
        """Return the service's forwarding method (`lb_kind` / `lvs_method`)."""
        return _FORWARD[self.lb_kind]

    @property
    def family(self) -> int:
        """Return 4 or 6: from the address, else `ip_family`, else the first real server's."""
        if self.ip_address is not None:
            return self.ip_address.version
        if self.ip_family is not None:
            return 6 if self.ip_family == "inet6" else 4
        if self.real_servers:
            return self.real_servers[0].ip_address.version
        return 4

    def service_key(self) -> ServiceKey:
        """Return the IPVS service key (protocol, address, port) or (fwmark, family)."""
        if self.fwmark is not None:
            return ServiceKey(self.protocol, None, 0, fwmark=self.fwmark, af=self.family)
        assert self.ip_address is not None
        return ServiceKey(self.protocol, self.ip_address, self.port or 0)

    @property
    def scheduler_flags(self) -> tuple[str, ...]:
        """Return the scheduler flags turned on, in the order sh-port, sh-fallback, mh-port, mh-fallback."""
        return tuple(
            name
            for name, on in (
                ("sh-port", self.sh_port),
                ("sh-fallback", self.sh_fallback),
                ("mh-port", self.mh_port),
                ("mh-fallback", self.mh_fallback),
            )
            if on
        )

    def service_spec(self) -> ServiceSpec:
        """Return the IPVS service spec (scheduler, persistence, scheduler flags)."""
        return ServiceSpec(
            scheduler=self.lb_algo,
            persistence_timeout_s=self.persistence_timeout or 0,
            netmask=self.persistence_granularity or "",
            flags=frozenset(self.scheduler_flags),
            one_packet=self.ops,
        )

    def checks_for(self, rs: RealServer, settings: GridlbSettings | None = None) -> tuple[CheckSpec, ...]:
        """Return the resolved checks of `rs`: its own checker blocks, else the service's; may be empty.

        Inheritance is keepalived's: the service's value is the default for the real server, the real
        server's for its checkers; keys nobody wrote take keepalived's defaults.
        """
        blocks = rs.checkers if rs.checker_blocks else self.checkers
        return tuple(self._resolve(rs, block, settings or GridlbSettings()) for block in blocks)

    def check_for(self, rs: RealServer, settings: GridlbSettings | None = None) -> CheckSpec:
        """Return the first resolved check of `rs`, or a `CheckKind.NONE` spec when it has none."""
        checks = self.checks_for(rs, settings)
        if checks:
            return checks[0]
        return CheckSpec(
            kind=CheckKind.NONE,
            target=rs.real_key(self),
            inhibit_on_failure=_first(rs.inhibit_on_failure, self.inhibit_on_failure)
            or D.CHECK_INHIBIT_ON_FAILURE,
        )

    def _resolve(
        self,
        rs: RealServer,
        block: TcpCheck | MiscCheck | GridftpCheck | XrootdCheck | HttpCheck,
        settings: GridlbSettings,
    ) -> CheckSpec:
        def pick(name: str, default: Any) -> Any:
            value = _first(getattr(block, name, None), getattr(rs, name), getattr(self, name))
            return default if value is None else value

        key = rs.real_key(self)
        kind = {
            TcpCheck: CheckKind.TCP,
            MiscCheck: CheckKind.SCRIPT,
            GridftpCheck: CheckKind.GRIDFTP,
            XrootdCheck: CheckKind.XROOTD,
        }.get(
            type(block), CheckKind.HTTPS if block is rs.ssl_get or block is self.ssl_get else CheckKind.HTTP
        )
        delay_loop = float(pick("delay_loop", D.CHECK_DELAY_LOOP_S))
        common: dict[str, Any] = {
            "kind": kind,
            "target": key,
            "connect_timeout_s": float(pick("connect_timeout", D.CHECK_CONNECT_TIMEOUT_S)),
            "delay_loop_s": delay_loop,
            "retry": int(pick("retry", D.CHECK_RETRY_MISC if kind is CheckKind.SCRIPT else D.CHECK_RETRY)),
            "delay_before_retry_s": float(
                pick(
                    "delay_before_retry",
                    D.CHECK_DELAY_BEFORE_RETRY_HTTP_S
                    if kind in (CheckKind.HTTP, CheckKind.HTTPS)
                    else D.CHECK_DELAY_BEFORE_RETRY_S,
                )
            ),
            "warmup_s": pick("warmup", None),
            "alpha": bool(pick("alpha", D.CHECK_ALPHA)),
            "inhibit_on_failure": bool(
                _first(rs.inhibit_on_failure, self.inhibit_on_failure) or D.CHECK_INHIBIT_ON_FAILURE
            ),
        }
        if isinstance(block, MiscCheck):
            common.update(
                script=block.misc_path,
                script_timeout_s=block.misc_timeout or delay_loop,  # keepalived: 0 = delay_loop
                script_dynamic=block.misc_dynamic,
                # keepalived: the checker's `user`, else global_defs script_user, else its own user
                script_user=block.user
                or (settings.script_user if "script_user" in settings.model_fields_set else None),
            )
            return CheckSpec(**common)
        common.update(
            target=RealKey(
                block.connect_ip or key.addr,
                block.connect_port if block.connect_port is not None else key.port,
            ),
            bindto=block.bindto,
            bind_port=block.bind_port,
            bind_if=block.bind_if,
        )
        if isinstance(block, GridftpCheck):
            g = settings.gridftp_check
            common.update(
                gridftp_level=block.level or g.level,
                gridftp_canary_path=block.canary_path or g.canary_path,
                gridftp_check_data_address=_first(block.check_data_address, g.check_data_address),
                gridftp_user=block.user or g.user,
                gridftp_password=block.password or g.password,
            )
        if isinstance(block, XrootdCheck):
            x = settings.xrootd_check
            common.update(
                xrootd_level=block.level or x.level,
                xrootd_canary_path=block.canary_path or x.canary_path,
                xrootd_user=block.user or x.user,
                xrootd_check_redirect=_first(block.check_redirect, x.check_redirect),
            )
        if isinstance(block, HttpCheck):
            tls = kind is CheckKind.HTTPS
            common["http"] = HttpSpec(
                urls=block.url,
                virtualhost=_first(block.virtualhost, rs.virtualhost, self.virtualhost),
                tls=tls,
                sni=bool(block.enable_sni),
                http_protocol=block.http_protocol or D.HTTP_PROTOCOL,
                level=block.level or D.HTTP_CHECK_LEVEL,
                canary_path=block.canary_path,
                tls_verify=tls and _first(block.tls_verify, True),
                ca_file=block.ca_file,
                cert_warn_days=block.cert_warn_days,
            )
        return CheckSpec(**common)


def _first(*values: Any) -> Any:
    for value in values:
        if value is not None:
            return value
    return None


# -------------------------------------------------------------------------------- gridlb section


class GridftpCheckSettings(_Model):
    """Site-wide defaults of `GRIDFTP_CHECK` blocks."""

    level: Literal["banner", "login", "canary"] = D.GRIDFTP_CHECK_LEVEL
    canary_path: str | None = None  # file read by the canary level (a small RETR)
    check_data_address: bool = D.GRIDFTP_CHECK_DATA_ADDRESS  # report a PASV reply naming the VIP
    user: str = D.GRIDFTP_CHECK_USER
    password: str = D.GRIDFTP_CHECK_PASSWORD

    @model_validator(mode="after")
    def _canary_needs_path(self) -> GridftpCheckSettings:
        if self.level == "canary" and not self.canary_path:
            raise ValueError("level 'canary' needs canary_path")
        return self


class XrootdCheckSettings(_Model):
    """Site-wide defaults of `XROOTD_CHECK` blocks."""

    level: Literal["connect", "login", "canary"] = D.XROOTD_CHECK_LEVEL
    canary_path: str | None = None  # canary: kXR_stat of this path; None = kXR_ping
    user: str = D.XROOTD_CHECK_USER  # kXR_login user name
    check_redirect: bool = True  # a redirect to a VIP or to loopback is a fault

    @field_validator("user")
    @classmethod
    def _user(cls, value: str) -> str:
        return _xrootd_user(value)


class ProxySettings(_Model):
    """Settings of the userspace proxy dataplane."""

    connect_timeout_s: Seconds = D.PROXY_CONNECT_TIMEOUT_S
    #: Relay threads sharing one scheduling state, each with its own SO_REUSEPORT listener per
    #: service; "auto" = one per CPU this process may use.
    workers: Annotated[int, Field(ge=1, le=D.PROXY_WORKERS_MAX)] | Literal["auto"] = D.PROXY_WORKERS
    #: The kernel sysctl of the same name: a drained (weight 0) server's persistence templates are
    #: dropped at their client's next connection instead of kept (the kernel's default: kept).
    expire_quiescent_template: bool = False


def _data_ports(value: object) -> object:
    if isinstance(value, str):
        a, sep, b = value.replace(" ", "").partition("-")
        if not sep or not a.isdigit() or not b.isdigit():
            raise ValueError(f"{value!r}: expected a port range A-B, e.g. 50000-50999")
        return (int(a), int(b))
    return value


class GridftpService(_Model):
    """What the balancer knows of one GridFTP virtual service (`gridlb.gridftp_services`)."""

    #: The real servers' passive data port range (Globus: GLOBUS_TCP_PORT_RANGE / `-port-range`); the
    #: proxy serves these ports on the VIP too, for clients that ignore the PASV address (curl, ftplib).
    data_ports: Annotated[tuple[Port, Port] | None, BeforeValidator(_data_ports)] = None
    #: The line answered when no real server can take a client ("" = close without a word).
    unavailable_reply: str = D.GRIDFTP_UNAVAILABLE_REPLY
    #: IPVS sites: the firewall-mark virtual server that serves this VIP's control and data ports
    #: (`gridlb render fwmark` writes the rules that mark them).
    fwmark: Annotated[int, Field(ge=D.FWMARK_MIN, le=D.FWMARK_MAX)] | None = None

    @field_validator("data_ports")
    @classmethod
    def _range(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None:
            a, b = value
            if a > b:
                raise ValueError(f"{a}-{b}: the first port is above the last")
            if b - a + 1 > D.GRIDFTP_DATA_PORTS_MAX:
                raise ValueError(f"{a}-{b}: at most {D.GRIDFTP_DATA_PORTS_MAX} data ports per service")
        return value

    @field_validator("unavailable_reply")
    @classmethod
    def _reply(cls, value: str) -> str:
        if value and not value.startswith("421 "):
            raise ValueError(f"{value!r}: expected an FTP reply line starting with '421 '")
        if "\r" in value or "\n" in value or not value.isprintable():
            raise ValueError("one printable line, please")
        return value


class DrSettings(_Model):
    """Settings of the dr dataplane: connection sync between the directors (off without an interface)."""

    sync_interface: str | None = None  # send and receive IPVS sync v1 datagrams on this interface
    syncid: Annotated[int, Field(ge=0, le=255)] = 0  # 0 = accept every sync id, send 0


TimeoutSeconds = Annotated[int, Field(ge=1, le=D.TIMEOUT_MAX_S)]


class TimeoutSettings(_Model):
    """Connection timeouts, as `ipvsadm --set TCP TCPFIN UDP` (keepalived's `lvs_timeouts`).

    `tcpfin` is also how long the proxy dataplane counts a closed connection as inactive.
    """

    tcp: TimeoutSeconds = D.TIMEOUT_TCP_S
    tcpfin: TimeoutSeconds = D.TIMEOUT_TCPFIN_S
    udp: TimeoutSeconds = D.TIMEOUT_UDP_S

    def table_timeouts(self) -> Timeouts:
        """Return these timeouts as the table model holds them."""
        return Timeouts(self.tcp, self.tcpfin, self.udp)


class BgpPeer(_Model):
    """One BGP neighbour of a scaled-out director (the upstream router): address and AS numbers."""

    address: IpAddr
    asn: Annotated[int, Field(ge=1, le=D.ASN_MAX)]  # the router's AS
    local_address: IpAddr | None = None  # this director's address for the session (None: the kernel's)

    @model_validator(mode="after")
    def _family(self) -> BgpPeer:
        if self.local_address is not None and self.local_address.version != self.address.version:
            raise ValueError("local_address and address must be of the same family")
        return self


class ScaleoutSettings(_Model):
    """`gridlb.scaleout`: active directors that announce VIPs over BGP through a speaker gridlb drives."""

    speaker: Literal["bird"] = D.SCALEOUT_SPEAKER  # BIRD 2, run by the director (config + birdc)
    directors: Annotated[tuple[str, ...], BeforeValidator(_listify)] = ()  # director names that announce
    local_asn: Annotated[int, Field(ge=1, le=D.ASN_MAX)]  # the directors' AS
    router_id: IPv4Address | None = None  # BGP identifier, unique per director (None: first peer's local)
    peers: Annotated[tuple[BgpPeer, ...], BeforeValidator(_listify), Field(min_length=1)]
    announce: Annotated[tuple[IpAddr, ...], BeforeValidator(_listify)] = ()  # () = every service address
    hold_time_s: Annotated[int, Field(ge=D.BGP_HOLD_TIME_MIN_S, le=D.BGP_HOLD_TIME_MAX_S)] = (
        D.SCALEOUT_HOLD_TIME_S
    )
    check_interval_s: Annotated[float, Field(gt=0, le=60, allow_inf_nan=False)] = D.SCALEOUT_CHECK_INTERVAL_S
    bird_binary: str = "bird"
    birdc_binary: str = "birdc"
    bird_config: str = D.SCALEOUT_BIRD_CONFIG  # written by the director
    bird_socket: str = D.SCALEOUT_BIRD_SOCKET  # BIRD's control socket

    @field_validator("router_id", mode="before")
    @classmethod
    def _router_id(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return IPv4Address(value)
            except ValueError:
                raise ValueError(f"{value!r}: a BGP router id is written as an IPv4 address") from None
        return value

    @model_validator(mode="after")
    def _unique(self) -> ScaleoutSettings:
        seen: set[object] = set()
        for peer in self.peers:
            if peer.address in seen:
                raise ValueError(f"peer {peer.address} is listed twice")
            seen.add(peer.address)
        if len(set(self.directors)) != len(self.directors):
            raise ValueError("a director is listed twice in directors")
        return self

    def announced(self, service_addresses: Sequence[IPv4Address | IPv6Address]) -> tuple[IPAddress, ...]:
        """Return the VIPs to announce: `announce`, else every service address (in order, once)."""
        if self.announce:
            return tuple(dict.fromkeys(self.announce))
        return tuple(dict.fromkeys(service_addresses))


_LISTEN_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[0-9.]+|[A-Za-z0-9.-]+):(\d+)$")


class GridlbSettings(_Model):
    """The `gridlb:` section: what keepalived has no words for."""

    dataplane: str = D.GRIDLB_DATAPLANE  # a name in the dataplane registry
    director_name: str | None = None  # names the director this file describes (default: file stem)
    script_user: str = "root"  # keepalived global_defs script_user (rendered with enable_script_security)
    control_socket: str = D.GRIDLB_CONTROL_SOCKET
    control_group: str | None = None  # group allowed to change things over the control socket
    metrics_listen: str | None = None  # "ADDR:PORT" for Prometheus metrics; None = off
    dashboard_listen: str | None = None  # "ADDR:PORT" for the web dashboard; None = off
    dashboard_token_file: str | None = None  # file holding the token that allows drain/enable from it
    gridftp_check: GridftpCheckSettings = GridftpCheckSettings()
    xrootd_check: XrootdCheckSettings = XrootdCheckSettings()
    proxy: ProxySettings = ProxySettings()
    dr: DrSettings = DrSettings()
    timeouts: TimeoutSettings = TimeoutSettings()
    #: GridFTP services by "VIP:PORT": data ports served on the VIP, the reply when nothing is up.
    #: A service with a GRIDFTP_CHECK and no entry here gets the defaults (a 421 line, no data ports).
    gridftp_services: dict[str, GridftpService] = {}
    #: How long a real server put out by a passive failure (a refused connect) stays out before it is
    #: tried again, with or without a checker.
    passive_retry_s: Annotated[float, Field(gt=0, le=86400, allow_inf_nan=False)] = D.PASSIVE_RETRY_S
    scaleout: ScaleoutSettings | None = None  # active directors announcing VIPs over BGP; None = off

    _lower_dataplane = field_validator("dataplane", mode="before")(_lower)

    @field_validator("dataplane")
    @classmethod
    def _known_dataplane(cls, value: str) -> str:
        from gridlb.dataplane.base import AUTO, dataplane_names

        names = (AUTO, *dataplane_names())
        if value not in names:
            raise ValueError(f"{value!r}: this build has the dataplanes {', '.join(names)}")
        return value

    @field_validator("gridftp_services")
    @classmethod
    def _service_keys(cls, value: dict[str, GridftpService]) -> dict[str, GridftpService]:
        for name in value:
            try:
                key = RealKey.parse(name)
            except ValueError:
                raise ValueError(
                    f"{name!r}: name a GridFTP service as VIP:PORT, e.g. 192.0.2.10:2811"
                ) from None
            if not key.port:
                raise ValueError(f"{name!r}: the service port must not be 0")
        taken: dict[IPAddress, list[tuple[int, int, str]]] = {}
        for name, g in value.items():
            key = RealKey.parse(name)
            ranges = taken.setdefault(key.addr, [])
            ranges.append((key.port, key.port, name))
            if g.data_ports is not None:
                ranges.append((*g.data_ports, f"{name} data_ports"))
        for ranges in taken.values():
            ranges.sort()
            for (_, b1, n1), (a2, _, n2) in pairwise(ranges):
                if a2 <= b1:
                    raise ValueError(f"{n1} and {n2} share port {a2} on one address")
        return value

    def gridftp_service(self, key: ServiceKey) -> GridftpService | None:
        """Return the GridFTP settings of service `key`, or None when it is not named here."""
        if key.addr is None:
            return None
        for name, svc in self.gridftp_services.items():
            rk = RealKey.parse(name)
            if rk.addr == key.addr and rk.port == key.port:
                return svc
        return None

    @field_validator("metrics_listen", "dashboard_listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is None:
            return None
        m = _LISTEN_RE.match(value)
        if not m or not 0 < int(m.group(2)) <= D.PORT_MAX:
            raise ValueError(f"{value!r}: expected ADDR:PORT, e.g. 127.0.0.1:9100 or [::1]:9100")
        return value


# ------------------------------------------------------------------- keepalived-only sections


class VrrpSyncGroup(_Model):
    """A `vrrp_sync_group`: instances that change state together (gridlb does not synchronise them)."""

    group: Annotated[tuple[str, ...], BeforeValidator(_listify)]
    notify_master: str | None = None
    notify_backup: str | None = None
    notify_fault: str | None = None
    notify_stop: str | None = None
    notify: str | None = None
    smtp_alert: bool | None = None
    global_tracking: bool = False
    sync_group_tracking_weight: bool = False
    track_interface: Annotated[tuple[TrackInterface, ...], BeforeValidator(_listify)] = ()
    track_script: Annotated[tuple[TrackScript, ...], BeforeValidator(_listify)] = ()

    @field_validator("group")
    @classmethod
    def _two_or_more(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("a sync group names at least one vrrp_instance")
        return value


class GlobalDefs(_Model):
    """The `global_defs` settings a site keeps besides `gridlb:`: where keepalived's mail goes."""

    notification_email: Annotated[tuple[str, ...], BeforeValidator(_listify)] = ()
    notification_email_from: str | None = None
    smtp_server: str | None = None  # "ADDR [PORT]" or a host name
    smtp_helo_name: str | None = None
    smtp_connect_timeout: Annotated[int, Field(ge=1)] | None = None
    smtp_alert: bool | None = None
    smtp_alert_vrrp: bool | None = None
    smtp_alert_checker: bool | None = None

    @field_validator("smtp_server", mode="before")
    @classmethod
    def _server(cls, value: object) -> object:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class TrackFile(_Model):
    """A `track_file` (keepalived 2.2 name; `vrrp_track_file` is the old one): a weight read from a file."""

    file: str
    weight: int | None = None
    init_file: str | None = None  # "" = create it with 0; "VALUE" (overwrite) as keepalived's words


class BfdInstance(_Model):
    """A `bfd_instance`: a BFD session keepalived runs (gridlb does not)."""

    neighbor_ip: IpAddr
    source_ip: IpAddr | None = None
    min_rx: Annotated[int, Field(ge=1)] | None = None
    min_tx: Annotated[int, Field(ge=1)] | None = None
    idle_tx: Annotated[int, Field(ge=1)] | None = None
    multiplier: Annotated[int, Field(ge=1, le=255)] | None = None
    passive: bool = False
    ttl: Annotated[int, Field(ge=1, le=255)] | None = None
    max_hops: Annotated[int, Field(ge=0, le=255)] | None = None


class StaticAddress(Vip):
    """One `static_ipaddress` line: `ADDR[/PREFIX] [dev IF] [scope S] [label L] [brd B]`."""


@dataclass(frozen=True)
class KeepalivedExtras:
    """What a site carries only for keepalived: gridlb itself does not act on it (lint says so)."""

    vrrp_sync_groups: Mapping[str, VrrpSyncGroup]
    global_defs: GlobalDefs | None
    static_ipaddress: tuple[StaticAddress, ...]
    static_routes: tuple[str, ...]
    static_rules: tuple[str, ...]
    track_files: Mapping[str, TrackFile]
    bfd_instances: Mapping[str, BfdInstance]

    @classmethod
    def empty(cls) -> KeepalivedExtras:
        """Return extras with nothing in them."""
        return cls({}, None, (), (), (), {}, {})

    @classmethod
    def of(cls, data: SiteData) -> KeepalivedExtras:
        """Return the extras one file's data gives."""
        return cls(
            dict(data.vrrp_sync_groups),
            data.global_defs,
            data.static_ipaddress,
            data.static_routes,
            data.static_rules,
            dict(data.track_files),
            dict(data.bfd_instances),
        )

    def merged(self, other: KeepalivedExtras) -> KeepalivedExtras:
        """Return these extras with `other`'s added (names and lists already here win)."""
        return KeepalivedExtras(
            {**other.vrrp_sync_groups, **self.vrrp_sync_groups},
            self.global_defs or other.global_defs,
            self.static_ipaddress or other.static_ipaddress,
            self.static_routes or other.static_routes,
            self.static_rules or other.static_rules,
            {**other.track_files, **self.track_files},
            {**other.bfd_instances, **self.bfd_instances},
        )

    def __bool__(self) -> bool:
        return any(
            (
                self.vrrp_sync_groups,
                self.global_defs,
                self.static_ipaddress,
                self.static_routes,
                self.static_rules,
                self.track_files,
                self.bfd_instances,
            )
        )


# ------------------------------------------------------------------------------------ one file


class SiteData(_Model):
    """What one site file says (top-level keys renamed through `TOP_LEVEL_KEYS`)."""

    vrrp_instances: dict[str, VrrpInstance] = {}
    virtual_servers: dict[str, VirtualServer] = {}
    vrrp_scripts: dict[str, VrrpScript] = {}
    gridlb: GridlbSettings | None = None
    vrrp_sync_groups: dict[str, VrrpSyncGroup] = {}
    global_defs: GlobalDefs | None = None
    static_ipaddress: Annotated[tuple[StaticAddress, ...], BeforeValidator(_listify)] = ()
    static_routes: Annotated[tuple[str, ...], BeforeValidator(_listify)] = ()
    static_rules: Annotated[tuple[str, ...], BeforeValidator(_listify)] = ()
    track_files: dict[str, TrackFile] = {}
    bfd_instances: dict[str, BfdInstance] = {}

    @field_validator(
        "vrrp_instances",
        "virtual_servers",
        "vrrp_scripts",
        "vrrp_sync_groups",
        "track_files",
        "bfd_instances",
        mode="before",
    )
    @classmethod
    def _null_is_empty(cls, value: object) -> object:
        return {} if value is None else value
