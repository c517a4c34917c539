"""Turn a keepalived.conf keyword tree into a site mapping in the seed's Hiera style, then into a `Site`.

The mapping uses the seed's keys (`keepalived::vrrp_instances`, `keepalived::virtual_servers`,
`keepalived::vrrp_scripts`, `gridlb:`) and the schema's canonical field names, so that
`gridlb.config.load.site_from_mapping` validates it and `gridlb import` can print it as a site file.

What is read (keepalived 2.2 keywords; old spellings `lb_algo`, `lb_kind`, `nb_get_retry` too):

* `global_defs`: `router_id` (becomes `gridlb.director_name`), `vrrp_version` (the default of each
  instance's `version`), `script_user`, `enable_script_security` (always rendered),
  `lvs_sync_daemon IF [inst] INSTANCE [id N]` (that instance's `lvs_sync_daemon_interface` and
  `lvs_sync_daemon_id`); other global settings are daemon tuning that a site file does not carry:
  they are dropped with a warning.
* `vrrp_script NAME { script interval timeout weight rise fall user init_fail }`.
* `vrrp_instance NAME { ... }`: the fields of `schema.VrrpInstance` with blocks `virtual_ipaddress`,
  `virtual_ipaddress_excluded`, `unicast_peer`, `track_interface`, `track_script`, `authentication`.
* `virtual_server IP PORT | fwmark N { ... real_server IP [PORT] { ... TCP_CHECK|MISC_CHECK { ... } } }`.
  A `MISC_CHECK` whose `misc_path` runs `gridlb check gridftp ... TARGET` (what the renderer writes
  for a GridFTP check) comes back as a `gridftp_check`.

Anything else is an error naming the file, line and keyword (with a did-you-mean), never dropped
silently. Virtual servers have no names in keepalived.conf; they are named `PROTO-ADDRESS-PORT`
(`tcp-129.93.239.157-2811`, `udp-...`) or `fwmark-N`.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

from gridlb.config import defaults as D
from gridlb.config.check_command import CHECK_COMMANDS, check_from_command
from gridlb.config.keepalived_conf import Node, parse_file, parse_text
from gridlb.config.keepalived_conf import number as _number
from gridlb.config.load import ConfigErrors, Site, did_you_mean, site_from_mapping
from gridlb.config.schema import CHECKER_BLOCKS
from gridlb.errors import ConfigError, Location

VRRP_INSTANCES = "keepalived::vrrp_instances"
VIRTUAL_SERVERS = "keepalived::virtual_servers"
VRRP_SCRIPTS = "keepalived::vrrp_scripts"
SYNC_GROUPS = "keepalived::vrrp_sync_groups"
GLOBAL_DEFS = "keepalived::global_defs"
STATIC_IPADDRESS = "keepalived::static_ipaddress"
STATIC_ROUTES = "keepalived::static_routes"
STATIC_RULES = "keepalived::static_rules"
TRACK_FILES = "keepalived::track_files"
BFD_INSTANCES = "keepalived::bfd_instances"
GRIDLB = "gridlb"

#: The top-level blocks the importer reads.
TOP_LEVEL_KEYWORDS = (
    "global_defs",
    "vrrp_script",
    "vrrp_instance",
    "vrrp_sync_group",
    "virtual_server_group",
    "virtual_server",
    "static_ipaddress",
    "static_routes",
    "static_rules",
    "track_file",
    "vrrp_track_file",
    "bfd_instance",
)

#: global_defs keywords about keepalived's mail (kept under `keepalived::global_defs`).
_MAIL_KEYWORDS = frozenset(
    {
        "notification_email",
        "notification_email_from",
        "smtp_server",
        "smtp_helo_name",
        "smtp_connect_timeout",
        "smtp_alert",
        "smtp_alert_vrrp",
        "smtp_alert_checker",
    }
)

#: Daemon settings keepalived also takes outside global_defs (dropped with a warning, as there).
_TOP_LEVEL_GLOBALS = frozenset(
    {
        "net_namespace",
        "net_namespace_ipvs",
        "namespace_with_ipsets",
        "instance",
        "use_pid_dir",
        "linkbeat_use_polling",
        "child_wait_time",
    }
)


@dataclass(frozen=True, slots=True)
class ImportWarning:
    """Something in the file that the site does not keep, with where it was."""

    location: Location
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: warning: {self.key}: {self.message}"


@dataclass
class Imported:
    """The result of an import: the site mapping, warnings, and where each mapping key came from."""

    source: str
    mapping: dict[str, Any]
    warnings: list[ImportWarning] = field(default_factory=list)
    locations: dict[str, Location] = field(default_factory=dict)
    errors: list[ConfigError] = field(default_factory=list)  # what the reader could not take

    def site(self) -> Site:
        """Validate the mapping into a `Site`; every error (reading and validation) names the
        keepalived.conf file and line, and all of them are raised together."""
        errors = list(self.errors)
        site: Site | None = None
        try:
            site = site_from_mapping(self.mapping, source=self.source)
        except ConfigErrors as exc:
            errors.extend(self._relocate(e) for e in exc.errors)
        except ConfigError as exc:
            errors.append(self._relocate(exc))
        if errors:
            seen: set[str] = set()
            unique = []
            for err in sorted(errors, key=_order):
                if str(err) not in seen:
                    seen.add(str(err))
                    unique.append(err)
            raise ConfigErrors(unique) if len(unique) > 1 else unique[0]
        assert site is not None
        return site

    def _relocate(self, err: ConfigError) -> ConfigError:
        key = err.key
        probe = key
        while probe:
            loc = self.locations.get(probe)
            if loc is not None:
                return ConfigError(err.message, location=loc, key=_conf_key(key))
            cut = max(probe.rfind("."), probe.rfind("["))
            probe = probe[:cut] if cut > 0 else ""
        return err


def _order(err: ConfigError) -> tuple[str, int]:
    loc = err.location
    return (loc.file, loc.line) if loc is not None else ("", 0)


def _conf_key(mapping_key: str) -> str:
    """The last word of a mapping key path, as a keepalived keyword reads (`...priority` → `priority`)."""
    last = re.split(r"[.\[]", mapping_key)[-1].rstrip("]")
    return last or mapping_key


# ------------------------------------------------------------------------------------ values


_BOOL_WORDS = {"on": True, "true": True, "yes": True, "off": False, "false": False, "no": False}


class _Reader:
    """Walks one tree, building the mapping and recording where each key came from."""

    def __init__(self, source: str) -> None:
        self.out = Imported(source=source, mapping={})
        self.sync_daemon: tuple[str, str, int | None, Node] | None = None
        self.rule_preference = RULE_PREFERENCE_START  # keepalived numbers rules without one downwards

    # -- helpers -------------------------------------------------------------------------------
    def error(self, node: Node, message: str) -> ConfigError:
        return ConfigError(message, location=node.location, key=node.keyword)

    def warn(self, node: Node, message: str) -> None:
        self.out.warnings.append(ImportWarning(node.location, node.keyword, message))

    def mark(self, key: str, node: Node) -> None:
        self.out.locations.setdefault(key, node.location)

    def one(self, node: Node) -> str:
        if len(node.args) != 1 or node.is_block:
            raise self.error(node, "expects exactly one value")
        return node.args[0]

    def flag(self, node: Node) -> bool:
        if node.is_block or len(node.args) > 1:
            raise self.error(node, "expects no value (or one of on/off/true/false/yes/no)")
        if not node.args:
            return True
        value = _BOOL_WORDS.get(node.args[0].lower())
        if value is None:
            raise self.error(node, f"expects on/off/true/false/yes/no, not {node.args[0]!r}")
        return value

    def script(self, node: Node) -> str:
        if node.is_block or not node.args:
            raise self.error(node, "expects a script (quote it when it has arguments)")
        if len(node.args) > 1:
            raise self.error(
                node,
                "a user/group after the script is not supported; quote the whole command line "
                "and set script_user in global_defs",
            )
        return node.args[0]

    def block(self, node: Node) -> tuple[Node, ...]:
        if node.children is None:
            raise self.error(node, "expects a { ... } block")
        return node.children

    def lines(self, node: Node) -> list[str]:
        """A block whose entries are lines of words (`virtual_ipaddress`, `track_script`, ...)."""
        items = []
        for child in self.block(node):
            if child.is_block:
                raise self.error(child, f"unexpected block inside {node.keyword}")
            items.append(" ".join(child.words()))
        return items

    def fill(
        self,
        target: dict[str, Any],
        base: str,
        node: Node,
        handlers: Mapping[str, Callable[[Node], tuple[str, Any]]],
        where: str,
    ) -> None:
        """Apply the handler of each child keyword; unknown keywords are errors with a did-you-mean."""
        for child in self.block(node):
            handler = handlers.get(child.keyword)
            try:
                if handler is None:
                    hint = did_you_mean(child.keyword, handlers)
                    raise self.error(child, f"unknown or unsupported keyword in {where}{hint}")
                name, value = handler(child)
            except ConfigError as exc:
                self.out.errors.append(exc)
                continue
            if name in target:
                self.warn(child, "given twice; the last one wins, as in keepalived")
            target[name] = value
            self.mark(f"{base}.{name}", child)

    # -- handler factories ---------------------------------------------------------------------
    def scalar(self, name: str, *, number: bool = True) -> Callable[[Node], tuple[str, Any]]:
        def handle(node: Node) -> tuple[str, Any]:
            word = self.one(node)
            return name, _number(word) if number else word

        return handle

    def boolean(self, name: str) -> Callable[[Node], tuple[str, Any]]:
        return lambda node: (name, self.flag(node))

    def scripted(self, name: str) -> Callable[[Node], tuple[str, Any]]:
        return lambda node: (name, self.script(node))

    # -- global_defs ---------------------------------------------------------------------------
    def global_defs(self, node: Node, settings: dict[str, Any], mail: dict[str, Any]) -> int | None:
        vrrp_version: int | None = None
        for child in self.block(node):
            try:
                vrrp_version = self._global_def(child, settings, mail) or vrrp_version
            except ConfigError as exc:
                self.out.errors.append(exc)
        return vrrp_version

    def _global_def(self, child: Node, settings: dict[str, Any], mail: dict[str, Any]) -> int | None:
        vrrp_version: int | None = None
        if True:
            kw = child.keyword
            if kw in _MAIL_KEYWORDS:
                if kw == "notification_email":
                    value: Any = self.lines(child)
                elif kw == "smtp_server":
                    if child.is_block or len(child.args) not in (1, 2):
                        raise self.error(child, "expects `smtp_server ADDRESS|NAME [PORT]`")
                    value = " ".join(child.args)
                elif kw in ("smtp_alert", "smtp_alert_vrrp", "smtp_alert_checker"):
                    value = self.flag(child)
                elif kw == "smtp_connect_timeout":
                    value = _number(self.one(child))
                else:
                    value = self.one(child)
                mail[kw] = value
                self.mark(f"{GLOBAL_DEFS}.{kw}", child)
            elif kw == "router_id":
                settings["director_name"] = self.one(child)
                self.mark(f"{GRIDLB}.director_name", child)
            elif kw == "script_user":
                if len(child.args) != 1:
                    raise self.error(child, "only `script_user USER` is supported (no group)")
                settings["script_user"] = child.args[0]
                self.mark(f"{GRIDLB}.script_user", child)
            elif kw == "vrrp_version":
                word = self.one(child)
                if word not in ("2", "3"):
                    raise self.error(child, f"expects 2 or 3, not {word!r}")
                vrrp_version = int(word)
            elif kw == "enable_script_security":
                self.flag(child)
            elif kw == "lvs_sync_daemon":
                words = [w for w in child.args if w != "inst"]
                sync_id: int | None = None
                if len(words) == 4 and words[2] == "id" and words[3].isdigit() and int(words[3]) <= 255:
                    sync_id, words = int(words[3]), words[:2]
                if len(words) != 2 or child.is_block:
                    raise self.error(
                        child,
                        "only `lvs_sync_daemon INTERFACE [inst] VRRP_INSTANCE [id 0..255]` is supported",
                    )
                self.sync_daemon = (words[0], words[1], sync_id, child)
            else:
                self.warn(child, "global setting not kept in the site (gridlb renders its own global_defs)")
        return vrrp_version

    # -- vrrp_script ---------------------------------------------------------------------------
    def vrrp_script(self, node: Node) -> dict[str, Any]:
        base = f"{VRRP_SCRIPTS}.{node.args[0]}"
        data: dict[str, Any] = {}
        self.fill(data, base, node, self._script_handlers(), "vrrp_script")
        if "script" not in data:
            raise self.error(node, "vrrp_script has no script")
        return data

    def _script_handlers(self) -> dict[str, Callable[[Node], tuple[str, Any]]]:
        return {
            "script": self.scripted("script"),
            "interval": self.scalar("interval"),
            "timeout": self.scalar("timeout"),
            "weight": self.scalar("weight"),
            "rise": self.scalar("rise"),
            "fall": self.scalar("fall"),
            "user": self.scalar("user", number=False),
            "init_fail": self.boolean("init_fail"),
        }

    # -- vrrp_instance -------------------------------------------------------------------------
    def vrrp_instance(self, node: Node, vrrp_version: int | None) -> dict[str, Any]:
        base = f"{VRRP_INSTANCES}.{node.args[0]}"
        data: dict[str, Any] = {}
        self.fill(data, base, node, self._instance_handlers(base), "vrrp_instance")
        auth = data.pop("authentication", None)
        if auth:
            data.update(auth)
            if (
                str(auth.get("auth_type", "")).upper() == "AH"
                and str(data.get("state", "")).upper() == "MASTER"
            ):
                self.warn(
                    node,
                    "initial state MASTER is incompatible with AH authentication: BACKUP, "
                    "as keepalived clears it",
                )
                data["state"] = "BACKUP"
        if vrrp_version is not None and "version" not in data:
            data["version"] = vrrp_version
        return data

    def _instance_handlers(self, base: str) -> dict[str, Callable[[Node], tuple[str, Any]]]:
        h: dict[str, Callable[[Node], tuple[str, Any]]] = {}
        for kw in (
            "virtual_router_id",
            "priority",
            "advert_int",
            "version",
            "preempt_delay",
            "garp_master_delay",
            "garp_master_repeat",
            "garp_master_refresh",
            "garp_master_refresh_repeat",
            "garp_lower_prio_delay",
            "garp_lower_prio_repeat",
        ):
            h[kw] = self.scalar(kw)
        for kw in ("interface", "state", "lvs_sync_daemon_interface"):
            h[kw] = self.scalar(kw, number=False)
        h["unicast_src_ip"] = self.scalar("unicast_source_ip", number=False)
        h["mcast_src_ip"] = self.scalar("multicast_source_ip", number=False)
        for kw in ("nopreempt", "preempt", "dont_track_primary", "native_ipv6"):
            h[kw] = self.boolean(kw)
        for kw in ("notify_master", "notify_backup", "notify_fault", "notify_stop", "notify"):
            h[kw] = self.scripted(kw)
        for kw in ("virtual_ipaddress", "virtual_ipaddress_excluded", "track_interface", "track_script"):
            h[kw] = self._lines_handler(kw, base)
        h["unicast_peer"] = lambda n: ("unicast_peers", self._peers(n, base))
        h["authentication"] = lambda n: ("authentication", self._auth(n, base))
        h["smtp_alert"] = self.boolean("smtp_alert")
        h["vmac_xmit_base"] = self.boolean("vmac_xmit_base")
        h["use_vmac"] = self._use_vmac
        h["virtual_routes"] = lambda n: ("virtual_routes", self._routes(n, base, "virtual_routes"))
        h["virtual_rules"] = lambda n: ("virtual_rules", self._rules(n, base, "virtual_rules"))
        return h

    def _use_vmac(self, node: Node) -> tuple[str, Any]:
        if node.is_block or len(node.args) > 1:
            raise self.error(node, "expects `use_vmac [NAME]`")
        return "use_vmac", node.args[0] if node.args else ""

    def _kept_lines(
        self,
        node: Node,
        base: str,
        name: str,
        keep: Callable[[Node, tuple[str, ...]], tuple[str, ...] | None],
    ) -> list[str]:
        """The lines of a route or rule block, each as `keep` writes it out (None: dropped, with the
        warning `keep` gave)."""
        out: list[str] = []
        for child in self.block(node):
            if child.is_block:
                self.out.errors.append(self.error(child, f"unexpected block inside {node.keyword}"))
                continue
            words = keep(child, child.words())
            if words is None:
                continue
            self.mark(f"{base}.{name}[{len(out)}]", child)
            out.append(" ".join(words))
        return out

    def _routes(self, node: Node, base: str, name: str) -> list[str]:
        """Route lines, kept as written; a line whose destination keepalived cannot read is dropped
        with a warning, as keepalived drops it."""

        def keep(child: Node, words: tuple[str, ...]) -> tuple[str, ...] | None:
            if not _route_destination_ok(words):
                self.warn(child, "keepalived cannot read this route's destination and skips it; dropped")
                return None
            words = _modern_route(words)
            if name == "virtual_routes" and "dev" not in words and "no_track" not in words:
                self.warn(child, "a route without dev is not tracked by keepalived; written with no_track")
                at = words.index("nexthop") if "nexthop" in words else len(words)
                words = (*words[:at], "no_track", *words[at:])
            return words

        return self._kept_lines(node, base, name, keep)

    def _rules(self, node: Node, base: str, name: str) -> list[str]:
        """Rule lines, kept as written; a `from`/`to` address keepalived cannot read drops the line
        with a warning, as keepalived skips it."""

        def keep(child: Node, words: tuple[str, ...]) -> tuple[str, ...] | None:
            bad = [w for k, w in itertools.pairwise(words) if k in ("from", "to") and not _prefix_ok(w)]
            if bad:
                self.warn(child, f"keepalived cannot read the address {bad[0]} and skips this rule; dropped")
                return None
            if not {"preference", "prio", "priority"} & set(words):
                words = (*words, "preference", str(self.rule_preference))
                self.warn(
                    child, f"no preference: keepalived gives this rule {self.rule_preference}; written out"
                )
                self.rule_preference -= 1
            return words

        return self._kept_lines(node, base, name, keep)

    def _lines_handler(self, name: str, base: str) -> Callable[[Node], tuple[str, Any]]:
        def handle(node: Node) -> tuple[str, Any]:
            for i, child in enumerate(self.block(node)):
                self.mark(f"{base}.{name}[{i}]", child)
            return name, self.lines(node)

        return handle

    def _peers(self, node: Node, base: str) -> list[str]:
        peers = []
        for i, child in enumerate(self.block(node)):
            if child.args or child.is_block:
                raise self.error(child, "unicast_peer options (min_ttl, max_ttl) are not supported")
            self.mark(f"{base}.unicast_peers[{i}]", child)
            peers.append(child.keyword)
        return peers

    def _auth(self, node: Node, base: str) -> dict[str, Any]:
        data: dict[str, Any] = {}
        self.fill(data, base, node, self._auth_handlers(), "authentication")
        return data

    def _auth_handlers(self) -> dict[str, Callable[[Node], tuple[str, Any]]]:
        return {
            "auth_type": self.scalar("auth_type", number=False),
            "auth_pass": self.scalar("auth_pass", number=False),
        }

    # -- virtual_server ------------------------------------------------------------------------
    def _inherited_handlers(self) -> dict[str, Callable[[Node], tuple[str, Any]]]:
        h: dict[str, Callable[[Node], tuple[str, Any]]] = {}
        for kw in ("connect_timeout", "retry", "delay_before_retry", "delay_loop", "warmup"):
            h[kw] = self.scalar(kw)
        for kw in ("alpha", "inhibit_on_failure"):
            h[kw] = self.boolean(kw)
        return h

    def virtual_server(
        self, node: Node, identity: tuple[str, ...] | None = None
    ) -> tuple[str, dict[str, Any]]:
        data: dict[str, Any] = {}
        args = identity or node.args
        if len(args) == 2 and args[0] == "fwmark":
            data["fwmark"] = _number(args[1])
        elif len(args) in (1, 2) and args[0] not in ("fwmark", "group"):
            data["ip_address"] = args[0]
            if len(args) == 2:
                data["port"] = _number(args[1])
        else:
            raise self.error(
                node,
                "expects `virtual_server IP [PORT]`, `virtual_server fwmark N` "
                "or `virtual_server group NAME`",
            )
        h = self._vs_handlers()
        real_nodes = [c for c in self.block(node) if c.keyword == "real_server"]
        other = Node(
            node.keyword, node.args, tuple(c for c in self.block(node) if c.keyword != "real_server")
        )
        proto = next(
            (c.args[0] for c in self.block(node) if c.keyword == "protocol" and len(c.args) == 1), "TCP"
        )
        name = (
            f"fwmark-{data['fwmark']}"
            if "fwmark" in data
            else f"{proto.lower()}-{args[0]}-{data.get('port', 0)}"
        )
        base = f"{VIRTUAL_SERVERS}.{name}"
        self.fill(data, base, other, h, "virtual_server")
        real_servers = []
        for i, rs in enumerate(real_nodes):
            self.mark(f"{base}.real_servers[{i}]", rs)
            real_servers.append(self.real_server(rs, f"{base}.real_servers[{i}]", data))
        data["real_servers"] = real_servers
        return name, data

    def _vs_handlers(self) -> dict[str, Callable[[Node], tuple[str, Any]]]:
        h = self._inherited_handlers()
        for kw in ("protocol", "persistence_granularity", "virtualhost", "ip_family"):
            h[kw] = self.scalar(kw, number=False)
        for kw in ("quorum", "hysteresis"):
            h[kw] = self.scalar(kw)
        h["lvs_sched"] = h["lb_algo"] = self.scalar("lb_algo", number=False)
        h["lvs_method"] = h["lb_kind"] = self._method("lb_kind")
        h["persistence_timeout"] = self._persistence
        for kw in ("quorum_up", "quorum_down"):
            h[kw] = self.scripted(kw)
        h["sorry_server"] = self._sorry
        for kw in ("sorry_server_inhibit", "omega", "ha_suspend", "ops", "smtp_alert"):
            h[kw] = self.boolean(kw)
        for kw in ("sh-port", "sh-fallback", "mh-port", "mh-fallback"):
            h[kw] = self.boolean(kw.replace("-", "_"))
        return h

    def _method(self, name: str) -> Callable[[Node], tuple[str, Any]]:
        def handle(node: Node) -> tuple[str, Any]:
            if len(node.args) != 1:
                raise self.error(node, "tunnel types and options are not supported; use NAT, DR or TUN")
            return name, node.args[0]

        return handle

    def _persistence(self, node: Node) -> tuple[str, Any]:
        if node.is_block or len(node.args) > 1:
            raise self.error(node, "expects at most one value")
        # keepalived's bare `persistence_timeout` means its default, 6 minutes
        return "persistence_timeout", _number(node.args[0]) if node.args else D.VS_PERSISTENCE_TIMEOUT_S

    def _sorry(self, node: Node) -> tuple[str, Any]:
        if node.is_block or len(node.args) not in (1, 2):
            raise self.error(node, "expects `sorry_server IP [PORT]`")
        sorry: dict[str, Any] = {"ip_address": node.args[0]}
        if len(node.args) == 2:
            sorry["port"] = _number(node.args[1])
        return "sorry_server", sorry

    def real_server(self, node: Node, base: str, vs: Mapping[str, Any]) -> dict[str, Any]:
        if len(node.args) not in (1, 2) or not node.is_block:
            raise self.error(node, "expects `real_server IP [PORT] { ... }`")
        data: dict[str, Any] = {"ip_address": node.args[0]}
        if len(node.args) == 2:
            data["port"] = _number(node.args[1])
        seen: set[str] = set()
        for child in self.block(node):
            if child.keyword in CHECKER_BLOCKS:
                if child.keyword in seen:
                    self.out.errors.append(
                        self.error(child, f"only one {child.keyword} per real server is supported")
                    )
                seen.add(child.keyword)
        self.fill(data, base, node, self._rs_handlers(base), "real_server")
        self._fix_weights(data)
        if "gridftp_check" in data or "xrootd_check" in data:
            self._normalise_gridftp(data, vs)
        return data

    def _rs_handlers(self, base: str) -> dict[str, Callable[[Node], tuple[str, Any]]]:
        h = self._inherited_handlers()
        for kw in ("weight", "uthreshold", "lthreshold"):
            h[kw] = self.scalar(kw)
        h["lvs_method"] = self._method("lb_kind")
        for kw in ("notify_up", "notify_down"):
            h[kw] = self.scripted(kw)
        h["MISC_CHECK"] = lambda n: self._misc_check(n, base)
        h["smtp_alert"] = self.boolean("smtp_alert")
        h["virtualhost"] = self.scalar("virtualhost", number=False)
        for keyword, read in self._checker_readers().items():
            h[keyword] = _checker_handler(CHECKER_BLOCKS[keyword][0], read, base)
        return h

    # -- the checkers --------------------------------------------------------------------------
    def _checker_readers(self) -> dict[str, Callable[[Node, str], dict[str, Any]]]:
        """One entry per keepalived checker block but MISC_CHECK (which may be a gridlb check): what
        reads it, given the block and the mapping key it goes under."""
        return {
            "TCP_CHECK": self._keywords_only(self._tcp_handlers),
            "HTTP_GET": lambda node, base: self._http_check(node, base, tls=False),
            "SSL_GET": lambda node, base: self._http_check(node, base, tls=True),
            "SMTP_CHECK": self._smtp_check,
            "DNS_CHECK": self._keywords_only(self._dns_handlers),
            "UDP_CHECK": self._keywords_only(self._udp_handlers),
            "PING_CHECK": self._keywords_only(self._tcp_handlers),
            "FILE_CHECK": self._keywords_only(self._file_handlers),
            "BFD_CHECK": self._keywords_only(self._bfd_handlers),
        }

    def _keywords_only(
        self, handlers: Callable[[], Mapping[str, Callable[[Node], tuple[str, Any]]]]
    ) -> Callable[[Node, str], dict[str, Any]]:
        """The reader of a checker block made of keywords only (no repeated sub-blocks)."""

        def read(node: Node, base: str) -> dict[str, Any]:
            data: dict[str, Any] = {}
            self.fill(data, base, node, handlers(), node.keyword)
            return data

        return read

    def _split(self, node: Node, keyword: str) -> tuple[list[Node], Node]:
        """The `keyword` sub-blocks of `node` (a checker may have several) and `node` without them."""
        subs = [c for c in self.block(node) if c.keyword == keyword]
        rest = tuple(c for c in self.block(node) if c.keyword != keyword)
        return subs, Node(node.keyword, node.args, rest, node.file, node.line)

    def _http_handlers(self, base: str) -> dict[str, Callable[[Node], tuple[str, Any]]]:
        h = self._tcp_handlers()
        h["virtualhost"] = self.scalar("virtualhost", number=False)
        h["http_protocol"] = self.scalar("http_protocol", number=False)
        h["enable_sni"] = self.boolean("enable_sni")
        h["fast_recovery"] = self.boolean("fast_recovery")
        h["url"] = lambda n: ("url", n)  # collected by _http_check (several urls)
        return h

    def _url_handlers(self) -> dict[str, Callable[[Node], tuple[str, Any]]]:
        return {
            "path": self.scalar("path", number=False),
            "digest": self.scalar("digest", number=False),
            "status_code": self._status_codes,
            "virtualhost": self.scalar("virtualhost", number=False),
        }

    def _status_codes(self, node: Node) -> tuple[str, Any]:
        if node.is_block or not node.args:
            raise self.error(node, "expects one or more codes or ranges (200, 200-299)")
        return "status_code", list(node.args)

    def _http_check(self, node: Node, base: str, *, tls: bool) -> dict[str, Any]:
        urls, other = self._split(node, "url")
        data: dict[str, Any] = {}
        self.fill(data, base, other, self._http_handlers(base), node.keyword)
        url_list: list[dict[str, Any]] = []
        for u in urls:
            udata: dict[str, Any] = {}
            ubase = f"{base}.url[{len(url_list)}]"
            try:
                self.fill(udata, ubase, u, self._url_handlers(), "url")
            except ConfigError as exc:
                self.out.errors.append(exc)
                continue
            if "path" not in udata:
                self.warn(u, "url has no path; keepalived ignores it")
                continue
            self.mark(ubase, u)
            url_list.append(udata)
        if url_list:
            data["url"] = url_list
        if tls:
            data["tls_verify"] = False  # keepalived's SSL_GET checks no certificate
        return data

    def _smtp_check(self, node: Node, base: str) -> dict[str, Any]:
        hosts, other = self._split(node, "host")
        data: dict[str, Any] = {}
        self.fill(data, base, other, self._smtp_handlers(), "SMTP_CHECK")
        host_list: list[dict[str, Any]] = []
        for host in hosts:
            hdata: dict[str, Any] = {}
            hh = {k: v for k, v in self._tcp_handlers().items() if k.startswith(("connect", "bind"))}
            hh["fwmark"] = self.scalar("fwmark")
            self.fill(hdata, f"{base}.host[{len(host_list)}]", host, hh, "host")
            self.mark(f"{base}.host[{len(host_list)}]", host)
            host_list.append(hdata)
        if host_list:
            data["host"] = host_list
        return data

    def _smtp_handlers(self) -> dict[str, Callable[[Node], tuple[str, Any]]]:
        h = self._tcp_handlers()
        h["helo_name"] = self.scalar("helo_name", number=False)
        h["host"] = lambda n: ("host", n)  # collected by _smtp_check (several hosts)
        return h

    def _dns_handlers(self) -> dict[str, Callable[[Node], tuple[str, Any]]]:
        h = self._tcp_handlers()
        h["type"] = self.scalar("type", number=False)
        h["name"] = self.scalar("name", number=False)
        return h

    def _udp_handlers(self) -> dict[str, Callable[[Node], tuple[str, Any]]]:
        h = self._tcp_handlers()
        h["payload"] = lambda n: ("payload", " ".join(n.args))
        h["require_reply"] = lambda n: ("require_reply", " ".join(n.args) if n.args else True)
        h["min_reply_length"] = self.scalar("min_reply_length")
        h["max_reply_length"] = self.scalar("max_reply_length")
        return h

    def _weight_words(self, node: Node) -> tuple[str, Any]:
        if node.is_block or not 1 <= len(node.args) <= 2 or node.args[1:] not in ((), ("reverse",)):
            raise self.error(node, "expects `weight W [reverse]`")
        return "weight", node.args

    def _file_handlers(self) -> dict[str, Callable[[Node], tuple[str, Any]]]:
        return {
            "track_file": self.scalar("track_file", number=False),
            "weight": self._weight_words,
        }

    def _bfd_handlers(self) -> dict[str, Callable[[Node], tuple[str, Any]]]:
        return {
            "name": self.scalar("name", number=False),
            "alpha": self.boolean("alpha"),
        }

    def _normalise_gridftp(self, rs: dict[str, Any], vs: Mapping[str, Any]) -> None:
        """Drop what the renderer spelled out only because the command needs it: the target when it
        is the real server itself and the timeout when it is the inherited one."""
        check = rs["gridftp_check"] if "gridftp_check" in rs else rs["xrootd_check"]
        if str(check.get("connect_ip")) == str(rs["ip_address"]):
            check.pop("connect_ip")
        if check.get("connect_port") == rs.get("port", vs.get("port")):
            check.pop("connect_port")
        inherited = rs.get("connect_timeout", vs.get("connect_timeout", D.CHECK_CONNECT_TIMEOUT_S))
        if check.get("connect_timeout") == inherited:
            check.pop("connect_timeout")

    def _timing_handlers(self) -> dict[str, Callable[[Node], tuple[str, Any]]]:
        h: dict[str, Callable[[Node], tuple[str, Any]]] = {}
        for kw in ("retry", "delay_before_retry", "delay_loop", "warmup"):
            h[kw] = self.scalar(kw)
        h["nb_get_retry"] = self.scalar("retry")
        h["alpha"] = self.boolean("alpha")
        return h

    def _tcp_handlers(self) -> dict[str, Callable[[Node], tuple[str, Any]]]:
        h = self._timing_handlers()
        for kw in ("connect_ip", "bindto", "bind_if"):
            h[kw] = self.scalar(kw, number=False)
        for kw in ("connect_port", "bind_port", "connect_timeout"):
            h[kw] = self.scalar(kw)
        return h

    def _fix_weights(self, data: dict[str, Any]) -> None:
        """`weight W [reverse]` words of FILE_CHECK / BFD_CHECK into the model's fields."""
        for key in ("file_check",):
            block = data.get(key)
            if isinstance(block, dict) and isinstance(block.get("weight"), tuple):
                words = block.pop("weight")
                block["weight"] = _number(words[0])
                if len(words) == 2:
                    block["reverse"] = True

    def _misc_handlers(self) -> dict[str, Callable[[Node], tuple[str, Any]]]:
        h = self._timing_handlers()
        h["misc_path"] = self.scripted("misc_path")
        h["misc_timeout"] = self.scalar("misc_timeout")
        h["misc_dynamic"] = self.boolean("misc_dynamic")
        h["user"] = self.scalar("user", number=False)
        return h

    def _misc_check(self, node: Node, rs_base: str) -> tuple[str, Any]:
        data: dict[str, Any] = {}
        self.fill(data, f"{rs_base}.misc_check", node, self._misc_handlers(), "MISC_CHECK")
        if "misc_path" not in data:
            raise self.error(node, "MISC_CHECK has no misc_path")
        found = check_from_command(data["misc_path"])
        if found is None:
            return "misc_check", data
        field, gridftp = found
        # The renderer's own spelling of a GridFTP/XRootD check: give back the block it came from.
        for key in ("retry", "delay_before_retry", "delay_loop", "warmup", "alpha"):
            if key in data:
                gridftp[key] = data[key]
        for key in list(self.out.locations):
            if key.startswith(f"{rs_base}.misc_check"):
                self.out.locations[key.replace(".misc_check", f".{field}", 1)] = self.out.locations.pop(key)
        return field, gridftp

    # -- sync groups, groups, static blocks ---------------------------------------------------
    def sync_group(self, node: Node, instances: Mapping[str, Any]) -> dict[str, Any] | None:
        base = f"{SYNC_GROUPS}.{node.args[0]}"
        data: dict[str, Any] = {}
        h: dict[str, Callable[[Node], tuple[str, Any]]] = {
            kw: self.scripted(kw)
            for kw in ("notify_master", "notify_backup", "notify_fault", "notify_stop", "notify")
        }
        for kw in ("smtp_alert", "global_tracking", "sync_group_tracking_weight"):
            h[kw] = self.boolean(kw)
        h["group"] = lambda n: ("group", self.lines(n))
        h["track_interface"] = self._lines_handler("track_interface", base)
        h["track_script"] = self._lines_handler("track_script", base)
        for child in self.block(node):
            if child.keyword not in h and not child.is_block and not child.args:
                # keepalived reads a bare name here as an unknown keyword and ignores it
                self.warn(
                    child,
                    "unknown keyword in vrrp_sync_group (instances go in `group { }`); keepalived ignores it",
                )
        known = Node(
            node.keyword,
            node.args,
            tuple(c for c in self.block(node) if c.keyword in h or c.is_block or c.args),
            node.file,
            node.line,
        )
        self.fill(data, base, known, h, "vrrp_sync_group")
        members = []
        for name in data.get("group", []):
            if name in instances:
                members.append(name)
            else:
                self.warn(
                    node, f"vrrp_instance {name} named in the group does not exist; keepalived ignores it"
                )
        if not members:
            self.warn(node, "the sync group has no vrrp_instance; keepalived removes it")
            return None
        data["group"] = members
        return data

    def vs_group(self, node: Node) -> list[tuple[str, ...]]:
        """The services a `virtual_server_group` names, ranges (`10.0.0.3-10`, `ae00::2-9`) expanded."""
        out: list[tuple[str, ...]] = []
        for child in self.block(node):
            words = child.words()
            try:
                if child.is_block:
                    raise self.error(child, "unexpected block inside virtual_server_group")
                if words[0] == "fwmark":
                    if len(words) not in (2, 3):
                        raise self.error(child, "expects `fwmark N [inet|inet6]`")
                    out.append(("fwmark", words[1]))
                elif len(words) == 2:
                    out.extend((addr, words[1]) for addr in _address_range(words[0], child, self))
                else:
                    raise self.error(child, "expects `ADDRESS[-LAST] PORT` or `fwmark N`")
            except ConfigError as exc:
                self.out.errors.append(exc)
        return out

    def static_addresses(self, node: Node) -> list[str]:
        out = []
        for i, child in enumerate(self.block(node)):
            self.mark(f"{STATIC_IPADDRESS}[{i}]", child)
            out.append(" ".join(child.words()))
        return out

    def keyed_block(
        self, node: Node, section: str, handlers: Mapping[str, Callable[[Node], tuple[str, Any]]]
    ) -> dict[str, Any]:
        data: dict[str, Any] = {}
        self.fill(data, f"{section}.{node.args[0]}", node, handlers, node.keyword)
        return data

    def _track_file_handlers(self) -> dict[str, Callable[[Node], tuple[str, Any]]]:
        return {
            "file": self.scalar("file", number=False),
            "weight": self.scalar("weight"),
            "init_file": lambda n: ("init_file", " ".join(n.args)),
        }

    def _bfd_instance_handlers(self) -> dict[str, Callable[[Node], tuple[str, Any]]]:
        h: dict[str, Callable[[Node], tuple[str, Any]]] = {
            "neighbor_ip": self.scalar("neighbor_ip", number=False),
            "source_ip": self.scalar("source_ip", number=False),
            "passive": self.boolean("passive"),
        }
        for kw in ("min_rx", "min_tx", "idle_tx", "multiplier", "ttl", "max_hops"):
            h[kw] = self.scalar(kw)
        return h

    # -- whole file ----------------------------------------------------------------------------
    def read(self, nodes: Sequence[Node]) -> Imported:
        mapping = self.out.mapping
        instances: dict[str, Any] = {}
        servers: dict[str, Any] = {}
        scripts: dict[str, Any] = {}
        settings: dict[str, Any] = {}
        mail: dict[str, Any] = {}
        groups: dict[str, list[tuple[str, ...]]] = {}
        group_nodes: dict[str, Node] = {}
        sync_nodes: list[Node] = []
        extra: dict[str, Any] = {}
        vrrp_version: int | None = None
        for node in nodes:
            if node.keyword == "global_defs":
                if not node.is_block:
                    self.out.errors.append(self.error(node, "expects a { ... } block"))
                    continue
                vrrp_version = self.global_defs(node, settings, mail) or vrrp_version
            elif node.keyword == "virtual_server_group":
                if len(node.args) != 1 or not node.is_block:
                    self.out.errors.append(self.error(node, "expects `virtual_server_group NAME { ... }`"))
                    continue
                groups[node.args[0]] = self.vs_group(node)
                group_nodes[node.args[0]] = node
        used_groups: set[str] = set()
        for node in nodes:
            try:
                self._top(
                    node, instances, servers, scripts, groups, used_groups, sync_nodes, extra, vrrp_version
                )
            except ConfigError as exc:
                self.out.errors.append(exc)
        for name, node in group_nodes.items():
            if name not in used_groups:
                self.warn(node, "no virtual_server uses this group; dropped")
        self._scripts_in_use(instances, scripts)
        syncs: dict[str, Any] = {}
        for node in sync_nodes:
            try:
                data = self.sync_group(node, instances)
            except ConfigError as exc:
                self.out.errors.append(exc)
                continue
            if data is not None:
                self.mark(f"{SYNC_GROUPS}.{node.args[0]}", node)
                syncs[node.args[0]] = data
        if self.sync_daemon is not None:
            interface, instance, sync_id, node = self.sync_daemon
            if instance not in instances:
                self.out.errors.append(self.error(node, f"no vrrp_instance named {instance}"))
            else:
                instances[instance]["lvs_sync_daemon_interface"] = interface
                self.mark(f"{VRRP_INSTANCES}.{instance}.lvs_sync_daemon_interface", node)
                if sync_id is not None:
                    instances[instance]["lvs_sync_daemon_id"] = sync_id
                    self.mark(f"{VRRP_INSTANCES}.{instance}.lvs_sync_daemon_id", node)
        if scripts:
            mapping[VRRP_SCRIPTS] = scripts
        if instances:
            mapping[VRRP_INSTANCES] = instances
        if syncs:
            mapping[SYNC_GROUPS] = syncs
        if servers:
            mapping[VIRTUAL_SERVERS] = servers
        mapping.update(extra)
        if mail:
            mapping[GLOBAL_DEFS] = mail
        settings.setdefault("director_name", Path(self.out.source).stem)
        mapping[GRIDLB] = settings
        return self.out

    def _scripts_in_use(self, instances: dict[str, Any], scripts: dict[str, Any]) -> None:
        """keepalived removes a vrrp_script without a script, and ignores track_script entries naming
        no script: so does the import, with warnings."""
        for name, inst in instances.items():
            tracked = inst.get("track_script")
            if not tracked:
                continue
            kept = []
            for i, entry in enumerate(tracked):
                if entry.split()[0] in scripts:
                    kept.append(entry)
                    continue
                loc = self.out.locations.get(
                    f"{VRRP_INSTANCES}.{name}.track_script[{i}]", Location(self.out.source)
                )
                self.out.warnings.append(
                    ImportWarning(
                        loc, "track_script", f"no vrrp_script {entry.split()[0]}; keepalived ignores it"
                    )
                )
            if len(kept) != len(tracked):
                inst["track_script"] = kept
                if not kept:
                    inst.pop("track_script")

    def _top(
        self,
        node: Node,
        instances: dict[str, Any],
        servers: dict[str, Any],
        scripts: dict[str, Any],
        groups: Mapping[str, list[tuple[str, ...]]],
        used_groups: set[str],
        sync_nodes: list[Node],
        extra: dict[str, Any],
        vrrp_version: int | None,
    ) -> None:
        kw = node.keyword
        if kw in ("global_defs", "virtual_server_group"):
            return
        named = (
            "vrrp_instance",
            "vrrp_script",
            "vrrp_sync_group",
            "track_file",
            "vrrp_track_file",
            "bfd_instance",
        )
        if kw in named and (len(node.args) != 1 or not node.is_block):
            raise self.error(node, f"expects `{kw} NAME {{ ... }}`")
        if kw in ("vrrp_instance", "vrrp_script"):
            table, section = (instances, VRRP_INSTANCES) if kw == "vrrp_instance" else (scripts, VRRP_SCRIPTS)
            name = node.args[0]
            if name in table:
                raise self.error(node, f"{kw} {name} is defined twice")
            if kw == "vrrp_script" and node.first("script") is None:
                self.warn(node, "vrrp_script has no script; keepalived removes it")
                return
            self.mark(f"{section}.{name}", node)
            if kw == "vrrp_instance":
                table[name] = self.vrrp_instance(node, vrrp_version)
            else:
                table[name] = self.vrrp_script(node)
        elif kw == "vrrp_sync_group":
            sync_nodes.append(node)
        elif kw == "virtual_server":
            if not node.is_block:
                raise self.error(node, "expects a { ... } block")
            if node.args[:1] == ("group",):
                if len(node.args) != 2:
                    raise self.error(node, "expects `virtual_server group NAME`")
                members = groups.get(node.args[1])
                if members is None:
                    raise self.error(node, f"no virtual_server_group named {node.args[1]}")
                used_groups.add(node.args[1])
                if not members:
                    self.warn(node, f"virtual_server_group {node.args[1]} is empty; nothing to balance")
                for identity in members:
                    self._one_server(node, servers, identity, group=node.args[1])
                return
            self._one_server(node, servers, None)
        elif kw in ("static_ipaddress", "static_routes", "static_rules"):
            if not node.is_block:
                raise self.error(node, "expects a { ... } block")
            key = {
                "static_ipaddress": STATIC_IPADDRESS,
                "static_routes": STATIC_ROUTES,
                "static_rules": STATIC_RULES,
            }[kw]
            if key in extra:
                self.warn(node, f"{kw} given twice; the blocks are joined, as in keepalived")
            if kw == "static_ipaddress":
                lines = self.static_addresses(node)
            elif kw == "static_routes":
                lines = self._routes(node, key, "")
            else:
                lines = self._rules(node, key, "")
            extra.setdefault(key, []).extend(lines)
            self.mark(key, node)
        elif kw in ("track_file", "vrrp_track_file"):
            extra.setdefault(TRACK_FILES, {})[node.args[0]] = self.keyed_block(
                node, TRACK_FILES, self._track_file_handlers()
            )
            self.mark(f"{TRACK_FILES}.{node.args[0]}", node)
        elif kw == "bfd_instance":
            extra.setdefault(BFD_INSTANCES, {})[node.args[0]] = self.keyed_block(
                node, BFD_INSTANCES, self._bfd_instance_handlers()
            )
            self.mark(f"{BFD_INSTANCES}.{node.args[0]}", node)
        elif kw in _TOP_LEVEL_GLOBALS:
            self.warn(node, "global setting not kept in the site (gridlb renders its own global_defs)")
        else:
            hint = did_you_mean(kw, TOP_LEVEL_KEYWORDS)
            raise self.error(node, f"unknown or unsupported top-level block{hint}")

    def _one_server(
        self, node: Node, servers: dict[str, Any], identity: tuple[str, ...] | None, group: str | None = None
    ) -> None:
        name, data = self.virtual_server(node, identity)
        if name in servers:
            raise self.error(node, "this virtual server is defined twice")
        if group is not None and "fwmark" in data:
            dropped = [rs.pop("port") for rs in data.get("real_servers", []) if "port" in rs]
            if dropped:
                self.warn(
                    node, f"group {group}: a fwmark service's real servers take no port; dropped for {name}"
                )
        self.mark(f"{VIRTUAL_SERVERS}.{name}", node)
        servers[name] = data


def _checker_handler(
    field: str, read: Callable[[Node, str], dict[str, Any]], rs_base: str
) -> Callable[[Node], tuple[str, Any]]:
    """The real server's handler of one checker block: its site key and what `read` makes of it."""
    return lambda node: (field, read(node, f"{rs_base}.{field}"))


#: The preference keepalived gives the first rule written without one (then one less each time).
RULE_PREFERENCE_START = 16384


def _modern_route(words: Sequence[str]) -> tuple[str, ...]:
    """keepalived's deprecated route words as it reads them: `gw` is `via`, `A or B` is two nexthops."""
    out = ["via" if w == "gw" else w for w in words]
    if "or" in out and "via" in out:
        i = out.index("via")
        hops = [out[i + 1]]
        j = i + 2
        while j + 1 < len(out) and out[j] == "or":
            hops.append(out[j + 1])
            j += 2
        out = out[:i] + [w for h in hops for w in ("nexthop", "via", h)] + out[j:]
    return tuple(out)


def _prefix_ok(word: str) -> bool:
    """True when keepalived can read `word` as an address or prefix (or `all`/`default`)."""
    if word in ("all", "default"):
        return True
    try:
        ip_network(word, strict=False)
    except ValueError:
        return False
    return True


_ROUTE_TYPES = frozenset(
    {
        "blackhole",
        "unreachable",
        "prohibit",
        "throw",
        "local",
        "broadcast",
        "anycast",
        "multicast",
        "nat",
        "unicast",
    }
)


def _route_destination_ok(words: Sequence[str]) -> bool:
    """True when the destination of a route line (after `src ADDR` and a route type) is readable."""
    i = 0
    while i < len(words):
        if words[i] == "src" and i + 1 < len(words):
            i += 2
            continue
        if words[i] in _ROUTE_TYPES:
            i += 1
            continue
        return _prefix_ok(words[i])
    return False


def _address_range(text: str, node: Node, reader: _Reader) -> list[str]:
    """`10.0.0.3-10` → 10.0.0.3 .. 10.0.0.10 (last byte); `ae00::2-9` → the last group, in hex."""
    base, sep, last = text.partition("-")
    try:
        first = ip_address(base)
    except ValueError:
        raise reader.error(node, f"{base!r} is not an IP address") from None
    if not sep:
        return [base]
    try:
        end = int(last, 16 if first.version == 6 else 10)
    except ValueError:
        raise reader.error(node, f"{text!r}: the range end must be a number") from None
    step_bits = 16 if first.version == 6 else 8
    low = int(first) & ((1 << step_bits) - 1)
    if not low <= end < (1 << step_bits):
        raise reader.error(
            node,
            f"{text!r}: the range end must be at least the start, within the last "
            f"{'group' if first.version == 6 else 'byte'}",
        )
    return [str(ip_address(int(first) - low + n)) for n in range(low, end + 1)]


def gridftp_check_from_command(command: str) -> dict[str, Any] | None:
    """The `gridftp_check` a `gridlb check gridftp [options] TARGET` command line stands for, else None.

    `--vip` and `--misc-dynamic-weight` are left out: the renderer derives them from the service's
    address and the real server's weight.
    """
    return CHECK_COMMANDS["gridftp_check"].parse(command)


def xrootd_check_from_command(command: str) -> dict[str, Any] | None:
    """The `xrootd_check` a `gridlb check xrootd [options] TARGET` command line stands for, else None."""
    return CHECK_COMMANDS["xrootd_check"].parse(command)


#: keepalived's global_defs keywords the importer keeps (others are dropped with a warning).
GLOBAL_DEFS_KEYWORDS = frozenset(
    {"router_id", "script_user", "vrrp_version", "enable_script_security", "lvs_sync_daemon"}
)

#: Old spellings read for old files that keepalived 2.2.7 itself rejects or warns about (`-t` exits 5).
DEPRECATED_KEYWORDS = {
    "vrrp_instance": frozenset({"lvs_sync_daemon_interface"}),
    "TCP_CHECK": frozenset({"nb_get_retry"}),
    "MISC_CHECK": frozenset({"nb_get_retry"}),
    "vrrp_sync_group": frozenset({"global_tracking"}),
    "": frozenset({"vrrp_track_file"}),
}


def supported_keywords() -> dict[str, frozenset[str]]:
    """Every keyword the importer reads, per block (top-level block names under "")."""
    r = _Reader("<keywords>")
    return {
        "": frozenset(TOP_LEVEL_KEYWORDS),
        "global_defs": GLOBAL_DEFS_KEYWORDS | _MAIL_KEYWORDS,
        "vrrp_script": frozenset(r._script_handlers()),
        "vrrp_instance": frozenset(r._instance_handlers("")),
        "authentication": frozenset(r._auth_handlers()),
        "vrrp_sync_group": frozenset(
            {
                "group",
                "notify_master",
                "notify_backup",
                "notify_fault",
                "notify_stop",
                "notify",
                "smtp_alert",
                "global_tracking",
                "sync_group_tracking_weight",
                "track_interface",
                "track_script",
            }
        ),
        "virtual_server": frozenset({*r._vs_handlers(), "real_server"}),
        "real_server": frozenset(r._rs_handlers("")),
        "TCP_CHECK": frozenset(r._tcp_handlers()),
        "MISC_CHECK": frozenset(r._misc_handlers()),
        "HTTP_GET": frozenset(r._http_handlers("")),
        "SSL_GET": frozenset(r._http_handlers("")),
        "url": frozenset(r._url_handlers()),
        "SMTP_CHECK": frozenset(r._smtp_handlers()),
        "DNS_CHECK": frozenset(r._dns_handlers()),
        "UDP_CHECK": frozenset(r._udp_handlers()),
        "PING_CHECK": frozenset(r._tcp_handlers()),
        "FILE_CHECK": frozenset(r._file_handlers()),
        "BFD_CHECK": frozenset(r._bfd_handlers()),
        "track_file": frozenset(r._track_file_handlers()),
        "bfd_instance": frozenset(r._bfd_instance_handlers()),
    }


def import_nodes(nodes: Sequence[Node], source: str, errors: Sequence[ConfigError] = ()) -> Imported:
    """Map a parsed keepalived.conf to a site mapping; problems (with `errors` from reading the file)
    are kept in `Imported.errors` and raised, all together, by `Imported.site()`."""
    out = _Reader(source).read(nodes)
    out.errors[:0] = list(errors)
    return out


def import_text(text: str, source: str = "<string>", *, config_id: str | None = None) -> Imported:
    """Map keepalived.conf text (no includes) to a site mapping."""
    errors: list[ConfigError] = []
    nodes = parse_text(text, source, config_id=config_id, errors=errors)
    return import_nodes(nodes, source, errors)


def import_file(path: str, *, config_id: str | None = None) -> Imported:
    """Map a keepalived.conf file (with its includes) to a site mapping."""
    errors: list[ConfigError] = []
    nodes = parse_file(path, config_id=config_id, errors=errors)
    return import_nodes(nodes, path, errors)
