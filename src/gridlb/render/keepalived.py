"""Render one director's view of a site as keepalived.conf text that keepalived 2.2.7 `-t` accepts.

Choices (see docs/keepalived.md):

* modern keywords: `lvs_sched`, `lvs_method`, `unicast_src_ip`, `unicast_peer`, `retry`;
* `global_defs` names the director (`router_id`) and turns on `enable_script_security` with
  `script_user` (keepalived refuses to run scripts as root otherwise);
* `track_interface` of the instance's own interface is left out (keepalived 2.2.7 warns and `-t`
  exits 5 on it; the interface is tracked anyway);
* a checker written on the service (the seed's `tcp_check`) is written into every real server that
  has none of its own, since keepalived only has checkers inside `real_server`;
* a real server listed twice in one service is written once (the first);
* a GridFTP check becomes `MISC_CHECK { misc_path "<gridlb> check gridftp [options] ADDR:PORT";
  misc_dynamic }` running gridlb's own checker: exit weight+2 up, 1 down, 2 = up but refusing
  (421/422: weight 0, drained);
* a fwmark service is written without `protocol` and its real servers without ports (keepalived
  warns, and `-t` exits 5, otherwise);
* values equal to keepalived's defaults are left out, except the ones an operator looks for
  (state, priority, advert_int, lvs_sched, lvs_method, protocol, weight).
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from gridlb.config import defaults as D
from gridlb.config.check_command import CHECK_COMMANDS
from gridlb.config.keepalived_conf import Node, emit_lines, fmt
from gridlb.config.load import Site
from gridlb.config.schema import (
    CHECKER_BLOCKS,
    AnyChecker,
    BfdCheck,
    CheckSpec,
    DnsCheck,
    FileCheck,
    GridftpCheck,
    GridlbSettings,
    HttpCheck,
    KeepalivedExtras,
    MiscCheck,
    PingCheck,
    RealServer,
    SmtpCheck,
    TcpCheck,
    TrackInterface,
    TrackScript,
    UdpCheck,
    Vip,
    VirtualServer,
    VrrpInstance,
    VrrpScript,
    VrrpSyncGroup,
    XrootdCheck,
)
from gridlb.render import DirectorView, director_views, find_view
from gridlb.table import RealKey

#: The gridlb program keepalived runs for a GridFTP check (`--gridlb-command` changes it).
DEFAULT_GRIDLB_COMMAND = "/usr/local/bin/gridlb"

#: How much longer keepalived lets the GridFTP check run than the check's own timeout.
GRIDFTP_MISC_TIMEOUT_FACTOR = 3


AnyTiming = (
    TcpCheck
    | MiscCheck
    | GridftpCheck
    | XrootdCheck
    | HttpCheck
    | SmtpCheck
    | DnsCheck
    | UdpCheck
    | PingCheck
    | VirtualServer
    | RealServer
)


def _kv(keyword: str, value: object) -> Node:
    return Node(keyword, (fmt(value),))


class _Block:
    """Collects the statements of one block."""

    def __init__(self) -> None:
        self.items: list[Node] = []

    def add(self, keyword: str, *args: object) -> None:
        """Add `keyword args...`; None arguments (an optional port) are left out."""
        self.items.append(Node(keyword, _args(args)))

    def tristate(self, keyword: str, value: bool | None) -> None:
        """A flag that may be written off on purpose: bare when on, `off` when off, absent when None."""
        if value is True:
            self.add(keyword)
        elif value is False:
            self.add(keyword, False)

    def opt(self, keyword: str, value: object, default: object = None) -> None:
        """Add `keyword value` unless the value is None or the default."""
        if value is None or value == default:
            return
        if value is True:
            self.add(keyword)
        elif value is False:
            return
        else:
            self.add(keyword, value)

    def fields(self, x: object, *keywords: str) -> None:
        """`opt` for each field of `x` that keepalived names as the field is named."""
        for keyword in keywords:
            self.opt(keyword, getattr(x, keyword))

    def sub(self, keyword: str, children: list[Node], *args: object) -> None:
        self.items.append(Node(keyword, _args(args), tuple(children)))

    def lines(self, keyword: str, children: list[Node]) -> None:
        """Add a block of lines (`virtual_ipaddress { ... }`) unless it has none."""
        if children:
            self.sub(keyword, children)

    def node(self, keyword: str, *args: object) -> Node:
        return Node(keyword, _args(args), tuple(self.items))


def _args(args: tuple[object, ...]) -> tuple[str, ...]:
    return tuple(fmt(a) for a in args if a is not None)


def _global_defs(view: DirectorView) -> Node:
    b = _Block()
    g = view.keepalived.global_defs
    if g is not None:
        b.lines("notification_email", [Node(e) for e in g.notification_email])
        b.opt("notification_email_from", g.notification_email_from)
        if g.smtp_server is not None:
            b.add("smtp_server", *g.smtp_server.split())
        b.opt("smtp_helo_name", g.smtp_helo_name)
        b.opt("smtp_connect_timeout", g.smtp_connect_timeout)
        for kw in ("smtp_alert", "smtp_alert_vrrp", "smtp_alert_checker"):
            b.tristate(kw, getattr(g, kw))
    b.add("router_id", view.name)
    b.add("enable_script_security")
    b.add("script_user", view.gridlb.script_user)
    for name, inst in view.vrrp_instances.items():
        if inst.lvs_sync_daemon_interface is not None:
            sync_id = () if inst.lvs_sync_daemon_id is None else ("id", str(inst.lvs_sync_daemon_id))
            b.add("lvs_sync_daemon", inst.lvs_sync_daemon_interface, name, *sync_id)
            break  # keepalived runs one sync daemon
    return b.node("global_defs")


def _vrrp_script(name: str, s: VrrpScript) -> Node:
    b = _Block()
    b.add("script", s.script)
    b.add("interval", s.interval)
    b.opt("timeout", s.timeout)
    b.opt("weight", s.weight, D.VRRP_SCRIPT_WEIGHT)
    b.opt("rise", s.rise, D.VRRP_SCRIPT_RISE)
    b.opt("fall", s.fall, D.VRRP_SCRIPT_FALL)
    b.opt("user", s.user)
    b.opt("init_fail", s.init_fail)
    return b.node("vrrp_script", name)


def _vip_line(vip: Vip) -> Node:
    words = [str(vip)]
    for opt in ("dev", "label", "scope", "brd"):
        value = getattr(vip, opt)
        if value is not None:
            words += [opt, str(value)]
    return Node(words[0], tuple(words[1:]))


def _track_line(t: TrackInterface | TrackScript) -> Node:
    args: list[str] = []
    if t.weight is not None:
        args += ["weight", str(t.weight)]
    if t.reverse:
        args.append("reverse")
    return Node(t.name, tuple(args))


def _tracks(b: _Block, interfaces: Sequence[TrackInterface], scripts: Sequence[TrackScript]) -> None:
    """The `track_interface` and `track_script` blocks of an instance or a sync group."""
    b.lines("track_interface", [_track_line(t) for t in interfaces])
    b.lines("track_script", [_track_line(t) for t in scripts])


def _notify(b: _Block, x: VrrpInstance | VrrpSyncGroup) -> None:
    """The notify scripts and `smtp_alert` of an instance or a sync group."""
    b.fields(x, "notify_master", "notify_backup", "notify_fault", "notify_stop", "notify")
    b.tristate("smtp_alert", x.smtp_alert)


def own_interface_tracks(inst: VrrpInstance) -> list[str]:
    """The `track_interface` entries naming the instance's own interface (left out when rendering)."""
    return [t.name for t in inst.track_interface if t.name == inst.interface]


def _vrrp_instance(name: str, inst: VrrpInstance) -> Node:
    b = _Block()
    b.add("state", inst.state.value)
    b.add("interface", inst.interface)
    b.add("virtual_router_id", inst.virtual_router_id)
    b.add("priority", inst.priority)
    b.add("advert_int", inst.advert_int)
    b.fields(inst, "version", "native_ipv6", "dont_track_primary", "nopreempt", "preempt")
    b.opt("preempt_delay", inst.preempt_delay, D.VRRP_PREEMPT_DELAY_S)
    b.opt("garp_master_delay", inst.garp_master_delay, D.VRRP_GARP_MASTER_DELAY_S)
    b.opt("garp_master_repeat", inst.garp_master_repeat, D.VRRP_GARP_MASTER_REPEAT)
    b.opt("garp_master_refresh", inst.garp_master_refresh, D.VRRP_GARP_MASTER_REFRESH_S)
    b.opt("garp_master_refresh_repeat", inst.garp_master_refresh_repeat, D.VRRP_GARP_MASTER_REFRESH_REPEAT)
    b.opt("garp_lower_prio_delay", inst.garp_lower_prio_delay)
    b.opt("garp_lower_prio_repeat", inst.garp_lower_prio_repeat)
    if inst.auth_type is not None:
        auth = [_kv("auth_type", inst.auth_type)]
        if inst.auth_pass is not None:
            auth.append(_kv("auth_pass", inst.auth_pass))
        b.sub("authentication", auth)
    b.opt("unicast_src_ip", inst.unicast_source_ip)
    b.lines("unicast_peer", [Node(str(p)) for p in inst.unicast_peers])
    b.opt("mcast_src_ip", inst.multicast_source_ip)
    b.lines("virtual_ipaddress", [_vip_line(v) for v in inst.virtual_ipaddress])
    b.lines("virtual_ipaddress_excluded", [_vip_line(v) for v in inst.virtual_ipaddress_excluded])
    _tracks(b, [t for t in inst.track_interface if t.name != inst.interface], inst.track_script)
    _notify(b, inst)
    if inst.use_vmac is not None:
        b.add("use_vmac", *([inst.use_vmac] if inst.use_vmac else []))
    b.opt("vmac_xmit_base", inst.vmac_xmit_base)
    b.lines("virtual_routes", [_line(r) for r in inst.virtual_routes])
    b.lines("virtual_rules", [_line(r) for r in inst.virtual_rules])
    return b.node("vrrp_instance", name)


def _vrrp_sync_group(name: str, group: VrrpSyncGroup) -> Node:
    b = _Block()
    b.sub("group", [Node(i) for i in group.group])
    _notify(b, group)
    b.opt("global_tracking", group.global_tracking)
    b.opt("sync_group_tracking_weight", group.sync_group_tracking_weight)
    _tracks(b, group.track_interface, group.track_script)
    return b.node("vrrp_sync_group", name)


def _line(text: str) -> Node:
    words = text.split()
    return Node(words[0], tuple(words[1:]))


def _timing(b: _Block, c: AnyTiming) -> None:
    """The timing keys a checker shares with its real server and service."""
    b.opt("retry", c.retry)
    b.opt("delay_before_retry", c.delay_before_retry)
    b.opt("delay_loop", c.delay_loop)
    b.opt("warmup", c.warmup)
    b.tristate("alpha", c.alpha)


def _resolved(
    vs: VirtualServer, rs: RealServer, check: GridftpCheck | XrootdCheck, settings: GridlbSettings
) -> CheckSpec:
    """The check as keepalived's inheritance resolves it for `rs` (service → real server → checker)."""
    field = "xrootd_check" if isinstance(check, XrootdCheck) else "gridftp_check"
    blocks: dict[str, object] = {key: None for key, _model in CHECKER_BLOCKS.values()}
    alone = rs.model_copy(update={**blocks, field: check})
    return vs.checks_for(alone, settings)[0]


#: keepalived's misc_dynamic turns exit status N into weight N-2, so weights above this cannot be carried.
MISC_DYNAMIC_MAX_WEIGHT = 253


def check_command(
    vs: VirtualServer,
    rs: RealServer,
    check: GridftpCheck | XrootdCheck,
    settings: GridlbSettings,
    gridlb_command: str,
) -> str:
    """The `gridlb check gridftp|xrootd` command line keepalived runs for a GridFTP or XRootD check of `rs`.

    With `--misc-dynamic-weight W` (the server's weight) the check exits W+2 when up (weight W),
    2 when the server is up but refusing (GridFTP 421/422, XRootD kXR_wait: weight 0, drained) and
    1 when down.
    """
    command = CHECK_COMMANDS["xrootd_check" if isinstance(check, XrootdCheck) else "gridftp_check"]
    weight = rs.weight if rs.weight <= MISC_DYNAMIC_MAX_WEIGHT else None
    spec = _resolved(vs, rs, check, settings)
    return shlex.join(command.argv(spec, gridlb_command, vs.ip_address, weight))


def gridftp_command(
    vs: VirtualServer, rs: RealServer, check: GridftpCheck, settings: GridlbSettings, gridlb_command: str
) -> str:
    """The `gridlb check gridftp` command line keepalived runs for a GridFTP check of `rs`."""
    return check_command(vs, rs, check, settings, gridlb_command)


def xrootd_command(
    vs: VirtualServer, rs: RealServer, check: XrootdCheck, settings: GridlbSettings, gridlb_command: str
) -> str:
    """The `gridlb check xrootd` command line keepalived runs for an XRootD check of `rs`."""
    return check_command(vs, rs, check, settings, gridlb_command)


@dataclass(frozen=True, slots=True)
class _At:
    """Where a checker is written: its service and real server, the site's settings, the gridlb program."""

    vs: VirtualServer
    rs: RealServer
    settings: GridlbSettings
    gridlb_command: str


#: Where a checker connects to and from (an SMTP_CHECK `host` has them too).
_CONNECT_KEYS = ("connect_ip", "connect_port", "bindto", "bind_port", "bind_if", "connect_timeout")


def _connect(b: _Block, c: TcpCheck | HttpCheck | SmtpCheck | DnsCheck | UdpCheck | PingCheck) -> None:
    b.fields(c, *_CONNECT_KEYS)
    _timing(b, c)


def _tcp(b: _Block, c: TcpCheck | PingCheck, _at: _At) -> None:
    _connect(b, c)


def _http(b: _Block, c: HttpCheck, _at: _At) -> None:
    _connect(b, c)
    b.opt("virtualhost", c.virtualhost)
    b.opt("http_protocol", c.http_protocol)
    b.opt("enable_sni", c.enable_sni)
    b.opt("fast_recovery", c.fast_recovery)
    for url in c.url:
        u = _Block()
        u.add("path", url.path)
        u.opt("digest", url.digest)
        if url.status_code:
            u.add("status_code", *url.status_code)
        u.opt("virtualhost", url.virtualhost)
        b.sub("url", u.items)


def gridlb_only_http(c: HttpCheck, tls: bool) -> list[str]:
    """The gridlb settings of an HTTP/HTTPS check that keepalived's HTTP_GET/SSL_GET do not do."""
    out = [k for k in ("level", "canary_path", "ca_file", "cert_warn_days") if getattr(c, k) is not None]
    if tls and c.tls_verify is not False:
        out.append("tls_verify (certificate checks)")
    return out


def _misc(b: _Block, c: MiscCheck, _at: _At) -> None:
    b.add("misc_path", c.misc_path)
    b.opt("misc_timeout", c.misc_timeout)
    b.opt("misc_dynamic", c.misc_dynamic)
    b.opt("user", c.user)
    _timing(b, c)


def _gridlb_check(b: _Block, c: GridftpCheck | XrootdCheck, at: _At) -> None:
    """A GridFTP or XRootD check: a MISC_CHECK running `gridlb check`, given time beyond its own timeout."""
    timeout = _resolved(at.vs, at.rs, c, at.settings).connect_timeout_s
    b.add("misc_path", check_command(at.vs, at.rs, c, at.settings, at.gridlb_command))
    b.add("misc_timeout", math.ceil(timeout * GRIDFTP_MISC_TIMEOUT_FACTOR))
    b.opt("misc_dynamic", at.rs.weight <= MISC_DYNAMIC_MAX_WEIGHT)
    _timing(b, c)


def _smtp(b: _Block, c: SmtpCheck, _at: _At) -> None:
    _connect(b, c)
    b.opt("helo_name", c.helo_name)
    for host in c.host:
        h = _Block()
        h.fields(host, *_CONNECT_KEYS, "fwmark")
        b.sub("host", h.items)


def _dns(b: _Block, c: DnsCheck, _at: _At) -> None:
    _connect(b, c)
    b.opt("type", c.type)
    b.opt("name", c.name)


def _udp(b: _Block, c: UdpCheck, _at: _At) -> None:
    _connect(b, c)
    if c.payload is not None:
        b.add("payload", *c.payload.split())
    if c.require_reply is True:
        b.add("require_reply")
    elif isinstance(c.require_reply, str):
        b.add("require_reply", *c.require_reply.split())
    b.opt("min_reply_length", c.min_reply_length)
    b.opt("max_reply_length", c.max_reply_length)


def _file(b: _Block, c: FileCheck, _at: _At) -> None:
    b.add("track_file", c.track_file)
    if c.weight is not None:
        b.add("weight", c.weight, "reverse" if c.reverse else None)


def _bfd(b: _Block, c: BfdCheck, _at: _At) -> None:
    b.add("name", c.name)
    b.tristate("alpha", c.alpha)


#: One entry per checker block (site key): the keepalived block it is written as and what goes in it.
CHECKER_RENDERERS: dict[str, tuple[str, Callable[[_Block, Any, _At], None]]] = {
    "tcp_check": ("TCP_CHECK", _tcp),
    "misc_check": ("MISC_CHECK", _misc),
    "gridftp_check": ("MISC_CHECK", _gridlb_check),
    "xrootd_check": ("MISC_CHECK", _gridlb_check),
    "http_get": ("HTTP_GET", _http),
    "ssl_get": ("SSL_GET", _http),
    "smtp_check": ("SMTP_CHECK", _smtp),
    "dns_check": ("DNS_CHECK", _dns),
    "udp_check": ("UDP_CHECK", _udp),
    "ping_check": ("PING_CHECK", _tcp),
    "file_check": ("FILE_CHECK", _file),
    "bfd_check": ("BFD_CHECK", _bfd),
}


def _checker(key: str, c: AnyChecker, at: _At) -> Node:
    keyword, fill = CHECKER_RENDERERS[key]
    b = _Block()
    fill(b, c, at)
    return b.node(keyword)


def _inherited(b: _Block, x: VirtualServer | RealServer) -> None:
    b.opt("connect_timeout", x.connect_timeout)
    _timing(b, x)
    b.tristate("inhibit_on_failure", x.inhibit_on_failure)


def unique_real_servers(vs: VirtualServer) -> list[RealServer]:
    """The service's real servers with repeats of the same address and port left out (first kept)."""
    seen: set[RealKey] = set()
    out = []
    for rs in vs.real_servers:
        key = rs.real_key(vs)
        if key not in seen:
            seen.add(key)
            out.append(rs)
    return out


def _real_server(vs: VirtualServer, rs: RealServer, settings: GridlbSettings, gridlb_command: str) -> Node:
    b = _Block()
    b.add("weight", rs.weight)
    b.opt("lvs_method", rs.lb_kind)
    b.fields(rs, "uthreshold", "lthreshold", "notify_up", "notify_down")
    b.tristate("smtp_alert", rs.smtp_alert)
    b.opt("virtualhost", rs.virtualhost)
    _inherited(b, rs)
    at = _At(vs, rs, settings, gridlb_command)
    for key, c in rs.checker_blocks or vs.checker_blocks:
        b.items.append(_checker(key, c, at))
    if vs.fwmark is not None:
        return b.node("real_server", rs.ip_address)
    return b.node("real_server", rs.ip_address, rs.port if rs.port is not None else vs.port)


def _virtual_server(vs: VirtualServer, settings: GridlbSettings, gridlb_command: str) -> Node:
    b = _Block()
    b.opt("ip_family", vs.ip_family)
    b.add("lvs_sched", vs.lb_algo)
    b.add("lvs_method", vs.lb_kind)
    if vs.fwmark is None:
        b.add("protocol", vs.protocol.value)
    for flag in vs.scheduler_flags:
        b.add(flag)
    b.opt("ops", vs.ops)
    _inherited(b, vs)
    b.fields(vs, "persistence_timeout", "persistence_granularity")
    b.opt("quorum", vs.quorum, D.VS_QUORUM)
    b.opt("hysteresis", vs.hysteresis, D.VS_HYSTERESIS)
    b.fields(vs, "quorum_up", "quorum_down")
    if vs.sorry_server is not None:
        s = vs.sorry_server
        b.add("sorry_server", s.ip_address, s.port)
    b.fields(vs, "sorry_server_inhibit", "omega", "ha_suspend", "virtualhost")
    b.tristate("smtp_alert", vs.smtp_alert)
    for rs in unique_real_servers(vs):
        b.items.append(_real_server(vs, rs, settings, gridlb_command))
    if vs.fwmark is not None:
        return b.node("virtual_server", "fwmark", vs.fwmark)
    assert vs.ip_address is not None
    return b.node("virtual_server", vs.ip_address, vs.port)


def _extras_before(x: KeepalivedExtras) -> Iterator[Node]:
    """Top-level blocks written before the VRRP instances: static_*, track_file, bfd_instance."""
    if x.static_ipaddress:
        yield Node("static_ipaddress", (), tuple(_vip_line(a) for a in x.static_ipaddress))
    if x.static_routes:
        yield Node("static_routes", (), tuple(_line(r) for r in x.static_routes))
    if x.static_rules:
        yield Node("static_rules", (), tuple(_line(r) for r in x.static_rules))
    for name, tf in x.track_files.items():
        b = _Block()
        b.add("file", tf.file)
        b.opt("weight", tf.weight)
        if tf.init_file is not None:
            b.add("init_file", *tf.init_file.split())
        yield b.node("track_file", name)
    for name, bfd in x.bfd_instances.items():
        b = _Block()
        b.add("neighbor_ip", bfd.neighbor_ip)
        b.opt("source_ip", bfd.source_ip)
        b.fields(bfd, "min_rx", "min_tx", "idle_tx", "multiplier", "ttl", "max_hops")
        b.opt("passive", bfd.passive)
        yield b.node("bfd_instance", name)


def _comments(view: DirectorView) -> Iterator[str]:
    yield f"keepalived.conf of director {view.name}, rendered by gridlb from {', '.join(view.sources)}"
    if view.derived_from is not None:
        yield (
            f"derived from director {view.derived_from}: every instance BACKUP at a lower priority, "
            "unicast source and peer swapped"
        )


def _fwmark_notes(vs: VirtualServer, settings: GridlbSettings) -> list[str]:
    """The GridFTP firewall-mark recipe: which addresses and ports the kernel expects marked."""
    marked = [n for n, g in settings.gridftp_services.items() if vs.fwmark and g.fwmark == vs.fwmark]
    return (
        [
            f"GridFTP control and data ports of {', '.join(marked)} carry mark {vs.fwmark}: "
            "load the rules of `gridlb render fwmark` on every director"
        ]
        if marked
        else []
    )


def build(
    view: DirectorView, *, gridlb_command: str = DEFAULT_GRIDLB_COMMAND
) -> list[tuple[list[str], Node]]:
    """The top-level statements of the director's keepalived.conf, each with the comments before it."""
    out: list[tuple[list[str], Node]] = [(list(_comments(view)), _global_defs(view))]
    out.extend(([], node) for node in _extras_before(view.keepalived))
    for name, script in view.vrrp_scripts.items():
        out.append(([], _vrrp_script(name, script)))
    for name, inst in view.vrrp_instances.items():
        notes = [
            f"track_interface {t} left out: it is the instance's own interface, tracked anyway "
            "(keepalived 2.2.7 -t exits 5 on it)"
            for t in own_interface_tracks(inst)
        ]
        out.append((notes, _vrrp_instance(name, inst)))
    for name, group in view.keepalived.vrrp_sync_groups.items():
        notes = ["gridlb does not synchronise sync groups; keepalived does"]
        out.append((notes, _vrrp_sync_group(name, group)))
    for name, vs in view.virtual_servers.items():
        notes = [f"virtual server {name}"]
        dropped = len(vs.real_servers) - len(unique_real_servers(vs))
        if dropped:
            notes.append(f"{dropped} repeated real server(s) written once")
        gridftp = [
            rs
            for rs in vs.real_servers
            if any(isinstance(c, GridftpCheck) for c in rs.checkers or vs.checkers)
        ]
        for rs in vs.real_servers:
            for key, c in rs.checker_blocks or vs.checker_blocks:
                if isinstance(c, HttpCheck):
                    extra = gridlb_only_http(c, key == "ssl_get")
                    if extra:
                        notes.append(
                            f"{rs.ip_address}: gridlb's {key} also checks {', '.join(extra)}; "
                            "keepalived's checker does not"
                        )
        if gridftp:
            notes.append(
                "GridFTP checks run `gridlb check gridftp` (misc_dynamic: exit W+2 up at weight W, "
                "2 refusing: weight 0, 1 down)"
            )
        if any(rs.weight > MISC_DYNAMIC_MAX_WEIGHT for rs in gridftp):
            notes.append(
                f"real servers weighted over {MISC_DYNAMIC_MAX_WEIGHT} get no misc_dynamic: exit 0 up, "
                "1 down or refusing"
            )
        notes += _fwmark_notes(vs, view.gridlb)
        out.append((notes, _virtual_server(vs, view.gridlb, gridlb_command)))
    return out


def render_view(view: DirectorView, *, gridlb_command: str = DEFAULT_GRIDLB_COMMAND) -> str:
    """The keepalived.conf text of one director."""
    lines: list[str] = []
    for i, (notes, node) in enumerate(build(view, gridlb_command=gridlb_command)):
        if i:
            lines.append("")
        lines += [f"# {n}" for n in notes]
        lines += list(emit_lines([node]))
    return "\n".join(lines) + "\n"


def render_site(
    site: Site, *, director: str | None = None, gridlb_command: str = DEFAULT_GRIDLB_COMMAND
) -> dict[str, str]:
    """keepalived.conf text per director name (all directors, or only `director`), in file order."""
    views = director_views(site)
    if director is not None:
        views = [find_view(views, director)]
    return {v.name: render_view(v, gridlb_command=gridlb_command) for v in views}


def render_keepalived(site: Site, director: str) -> str:
    """The keepalived.conf text of one director of `site`."""
    return render_site(site, director=director)[director]
