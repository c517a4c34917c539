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

import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gridlb.config import defaults as D
from gridlb.config.keepalived_conf import Node, parse_file, parse_text
from gridlb.config.load import ConfigErrors, Site, did_you_mean, site_from_mapping
from gridlb.errors import ConfigError, Location

VRRP_INSTANCES = "keepalived::vrrp_instances"
VIRTUAL_SERVERS = "keepalived::virtual_servers"
VRRP_SCRIPTS = "keepalived::vrrp_scripts"
GRIDLB = "gridlb"

#: The argv the renderer writes for a GridFTP check: `<path>/gridlb check gridftp [options] HOST PORT`.
GRIDFTP_CHECK_ARGV = ("check", "gridftp")

#: The port `gridlb check gridftp` assumes when its target has none.
GRIDFTP_DEFAULT_PORT = 2811


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

    def site(self) -> Site:
        """Validate the mapping into a `Site`; errors name the keepalived.conf file and line."""
        try:
            return site_from_mapping(self.mapping, source=self.source)
        except ConfigErrors as exc:
            raise ConfigErrors([self._relocate(e) for e in exc.errors]) from None
        except ConfigError as exc:
            raise self._relocate(exc) from None

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


def _conf_key(mapping_key: str) -> str:
    """The last word of a mapping key path, as a keepalived keyword reads (`...priority` → `priority`)."""
    last = re.split(r"[.\[]", mapping_key)[-1].rstrip("]")
    return last or mapping_key


# ------------------------------------------------------------------------------------ values


_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")
_BOOL_WORDS = {"on": True, "true": True, "yes": True, "off": False, "false": False, "no": False}


def _number(word: str) -> int | float | str:
    """A number when the word is one (left as text otherwise, for the schema to reject by name)."""
    if _INT.match(word):
        return int(word)
    if _FLOAT.match(word):
        return float(word)
    return word


class _Reader:
    """Walks one tree, building the mapping and recording where each key came from."""

    def __init__(self, source: str) -> None:
        self.out = Imported(source=source, mapping={})
        self.sync_daemon: tuple[str, str, int | None, Node] | None = None

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
            if handler is None:
                hint = did_you_mean(child.keyword, handlers)
                raise self.error(child, f"unknown or unsupported keyword in {where}{hint}")
            name, value = handler(child)
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
    def global_defs(self, node: Node, settings: dict[str, Any]) -> int | None:
        vrrp_version: int | None = None
        for child in self.block(node):
            kw = child.keyword
            if kw == "router_id":
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
        return h

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

    def virtual_server(self, node: Node) -> tuple[str, dict[str, Any]]:
        data: dict[str, Any] = {}
        args = node.args
        if len(args) == 2 and args[0] == "fwmark":
            data["fwmark"] = _number(args[1])
        elif len(args) in (1, 2) and args[0] not in ("fwmark", "group"):
            data["ip_address"] = args[0]
            if len(args) == 2:
                data["port"] = _number(args[1])
        elif args and args[0] == "group":
            raise self.error(node, "virtual_server group is not supported; list the services one by one")
        else:
            raise self.error(node, "expects `virtual_server IP [PORT]` or `virtual_server fwmark N`")
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
        for kw in ("sorry_server_inhibit", "omega", "ha_suspend", "ops"):
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
        for child in self.block(node):
            if (
                child.keyword in ("TCP_CHECK", "MISC_CHECK")
                and sum(1 for c in self.block(node) if c.keyword == child.keyword) > 1
            ):
                raise self.error(child, f"only one {child.keyword} per real server is supported")
        self.fill(data, base, node, self._rs_handlers(base), "real_server")
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
        h["TCP_CHECK"] = lambda n: ("tcp_check", self._tcp_check(n, f"{base}.tcp_check"))
        h["MISC_CHECK"] = lambda n: self._misc_check(n, base)
        return h

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

    def _tcp_check(self, node: Node, base: str) -> dict[str, Any]:
        data: dict[str, Any] = {}
        self.fill(data, base, node, self._tcp_handlers(), "TCP_CHECK")
        return data

    def _tcp_handlers(self) -> dict[str, Callable[[Node], tuple[str, Any]]]:
        h = self._timing_handlers()
        for kw in ("connect_ip", "bindto", "bind_if"):
            h[kw] = self.scalar(kw, number=False)
        for kw in ("connect_port", "bind_port", "connect_timeout"):
            h[kw] = self.scalar(kw)
        return h

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
        field = "gridftp_check"
        gridftp = gridftp_check_from_command(data["misc_path"])
        if gridftp is None:
            field, gridftp = "xrootd_check", xrootd_check_from_command(data["misc_path"])
        if gridftp is None:
            return "misc_check", data
        # The renderer's own spelling of a GridFTP/XRootD check: give back the block it came from.
        for key in ("retry", "delay_before_retry", "delay_loop", "warmup", "alpha"):
            if key in data:
                gridftp[key] = data[key]
        for key in list(self.out.locations):
            if key.startswith(f"{rs_base}.misc_check"):
                self.out.locations[key.replace(".misc_check", f".{field}", 1)] = self.out.locations.pop(key)
        return field, gridftp

    # -- whole file ----------------------------------------------------------------------------
    def read(self, nodes: Sequence[Node]) -> Imported:
        mapping = self.out.mapping
        instances: dict[str, Any] = {}
        servers: dict[str, Any] = {}
        scripts: dict[str, Any] = {}
        settings: dict[str, Any] = {}
        vrrp_version: int | None = None
        for node in nodes:
            if node.keyword == "global_defs":
                vrrp_version = self.global_defs(node, settings) or vrrp_version
        for node in nodes:
            kw = node.keyword
            if kw == "global_defs":
                continue
            if kw in ("vrrp_instance", "vrrp_script"):
                if len(node.args) != 1 or not node.is_block:
                    raise self.error(node, f"expects `{kw} NAME {{ ... }}`")
                table, section = (
                    (instances, VRRP_INSTANCES) if kw == "vrrp_instance" else (scripts, VRRP_SCRIPTS)
                )
                name = node.args[0]
                if name in table:
                    raise self.error(node, f"{kw} {name} is defined twice")
                self.mark(f"{section}.{name}", node)
                table[name] = (
                    self.vrrp_instance(node, vrrp_version)
                    if kw == "vrrp_instance"
                    else self.vrrp_script(node)
                )
            elif kw == "virtual_server":
                if not node.is_block:
                    raise self.error(node, "expects a { ... } block")
                name, data = self.virtual_server(node)
                if name in servers:
                    raise self.error(node, "this virtual server is defined twice")
                self.mark(f"{VIRTUAL_SERVERS}.{name}", node)
                servers[name] = data
            else:
                hint = did_you_mean(kw, ("global_defs", "vrrp_script", "vrrp_instance", "virtual_server"))
                raise self.error(node, f"unknown or unsupported top-level block{hint}")
        if self.sync_daemon is not None:
            interface, instance, sync_id, node = self.sync_daemon
            if instance not in instances:
                raise self.error(node, f"no vrrp_instance named {instance}")
            instances[instance]["lvs_sync_daemon_interface"] = interface
            self.mark(f"{VRRP_INSTANCES}.{instance}.lvs_sync_daemon_interface", node)
            if sync_id is not None:
                instances[instance]["lvs_sync_daemon_id"] = sync_id
                self.mark(f"{VRRP_INSTANCES}.{instance}.lvs_sync_daemon_id", node)
        if scripts:
            mapping[VRRP_SCRIPTS] = scripts
        if instances:
            mapping[VRRP_INSTANCES] = instances
        if servers:
            mapping[VIRTUAL_SERVERS] = servers
        settings.setdefault("director_name", Path(self.out.source).stem)
        mapping[GRIDLB] = settings
        return self.out


def _split_target(text: str) -> tuple[str, int | float | str] | None:
    """`ADDR:PORT`, `[V6]:PORT` or a bare address (GridFTP's port 2811)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    return (host, _number(port) if port else GRIDFTP_DEFAULT_PORT) if host else None


def gridftp_check_from_command(command: str) -> dict[str, Any] | None:
    """The `gridftp_check` a `gridlb check gridftp [options] TARGET` command line stands for, else None.

    `--vip` and `--misc-dynamic-weight` are left out: the renderer derives them from the service's
    address and the real server's weight.
    """
    try:
        argv = shlex.split(command)
    except ValueError:
        return None
    if len(argv) < 4 or Path(argv[0]).name != "gridlb" or tuple(argv[1:3]) != GRIDFTP_CHECK_ARGV:
        return None
    data: dict[str, Any] = {}
    valued = {
        "--level": "level",
        "--timeout": "connect_timeout",
        "--user": "user",
        "--password": "password",
        "--canary": "canary_path",
        "--bindto": "bindto",
        "--bind-port": "bind_port",
        "--bind-if": "bind_if",
        "--connect-ip": "connect_ip",
        "--connect-port": "connect_port",
        "--vip": "",
        "--misc-dynamic-weight": "",
    }
    target: tuple[str, Any] | None = None
    words = argv[3:]
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--no-data-address-check":
            data["check_data_address"] = False
            i += 1
        elif word in valued and i + 1 < len(words):
            if valued[word]:
                value = words[i + 1]
                numeric = word in ("--timeout", "--connect-port", "--bind-port")
                data[valued[word]] = _number(value) if numeric else value
            i += 2
        elif not word.startswith("-") and target is None:
            target = _split_target(word)
            if target is None:
                return None
            i += 1
        else:
            return None
    if target is None:
        return None
    data.setdefault("connect_ip", target[0])
    data.setdefault("connect_port", target[1])
    return data


def xrootd_check_from_command(command: str) -> dict[str, Any] | None:
    """The `xrootd_check` a `gridlb check xrootd [options] TARGET` command line stands for, else None.

    `--vip` and `--misc-dynamic-weight` are left out, as for `gridftp_check_from_command`.
    """
    try:
        argv = shlex.split(command)
    except ValueError:
        return None
    if len(argv) < 4 or Path(argv[0]).name != "gridlb" or tuple(argv[1:3]) != ("check", "xrootd"):
        return None
    data: dict[str, Any] = {}
    valued = {
        "--level": "level",
        "--timeout": "connect_timeout",
        "--user": "user",
        "--canary": "canary_path",
        "--bindto": "bindto",
        "--bind-port": "bind_port",
        "--bind-if": "bind_if",
        "--connect-ip": "connect_ip",
        "--connect-port": "connect_port",
        "--vip": "",
        "--misc-dynamic-weight": "",
    }
    target: tuple[str, Any] | None = None
    words = argv[3:]
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--no-redirect-check":
            data["check_redirect"] = False
            i += 1
        elif word in valued and i + 1 < len(words):
            if valued[word]:
                value = words[i + 1]
                numeric = word in ("--timeout", "--connect-port", "--bind-port")
                data[valued[word]] = _number(value) if numeric else value
            i += 2
        elif not word.startswith("-") and target is None:
            target = _split_target(word)
            if target is None:
                return None
            i += 1
        else:
            return None
    if target is None:
        return None
    data.setdefault("connect_ip", target[0])
    data.setdefault("connect_port", target[1])
    return data


#: keepalived's global_defs keywords the importer keeps (others are dropped with a warning).
GLOBAL_DEFS_KEYWORDS = frozenset(
    {"router_id", "script_user", "vrrp_version", "enable_script_security", "lvs_sync_daemon"}
)

#: Old spellings read for old files that keepalived 2.2.7 itself rejects or warns about (`-t` exits 5).
DEPRECATED_KEYWORDS = {
    "vrrp_instance": frozenset({"lvs_sync_daemon_interface"}),
    "TCP_CHECK": frozenset({"nb_get_retry"}),
    "MISC_CHECK": frozenset({"nb_get_retry"}),
}


def supported_keywords() -> dict[str, frozenset[str]]:
    """Every keyword the importer reads, per block (top-level block names under "")."""
    r = _Reader("<keywords>")
    return {
        "": frozenset({"global_defs", "vrrp_script", "vrrp_instance", "virtual_server"}),
        "global_defs": GLOBAL_DEFS_KEYWORDS,
        "vrrp_script": frozenset(r._script_handlers()),
        "vrrp_instance": frozenset(r._instance_handlers("")),
        "authentication": frozenset(r._auth_handlers()),
        "virtual_server": frozenset({*r._vs_handlers(), "real_server"}),
        "real_server": frozenset(r._rs_handlers("")),
        "TCP_CHECK": frozenset(r._tcp_handlers()),
        "MISC_CHECK": frozenset(r._misc_handlers()),
    }


def import_nodes(nodes: Sequence[Node], source: str) -> Imported:
    """Map a parsed keepalived.conf to a site mapping (raises `ConfigError` naming file:line:keyword)."""
    return _Reader(source).read(nodes)


def import_text(text: str, source: str = "<string>") -> Imported:
    """Map keepalived.conf text (no includes) to a site mapping."""
    return import_nodes(parse_text(text, source), source)


def import_file(path: str) -> Imported:
    """Map a keepalived.conf file (with its includes) to a site mapping."""
    return import_nodes(parse_file(path), path)
