"""Semantic checks of a validated site: what keepalived accepts but an operator did not mean.

`lint_site(site)` returns `Finding`s, each printed as `file:line: severity: key: message`. Type and
range errors (weights, ports, priorities, VRIDs, advert_int, unknown keys) are caught earlier by
`gridlb.config.load` as `ConfigError`s; this module looks at relations between values:

* per service: a real server listed twice (both lines named); a service defined twice; DR with a
  real-server port other than the service port (DR cannot rewrite ports); a service address no
  VRRP instance holds.
* per service, against the dataplane a site file names (`gridlb.dataplane`): what it cannot do
  (a scheduler, persistence, a firewall mark: errors, refused at start too), or does differently
  (a forwarding method it replaces: a warning saying what happens instead).
* per instance: mixed address families among the VIPs or between VIPs and unicast addresses;
  tracking its own interface (keepalived 2.2.7 warns and `keepalived -t` exits 5); its own
  `unicast_source_ip` among its peers; a VIP outside its interface's subnet; advert_int not whole
  seconds with VRRPv2, or >= 40.96 s with VRRPv3; authentication with VRRPv3; an auth_pass longer
  than 8 characters; a `track_script` naming no `vrrp_scripts` entry; a fractional
  `garp_master_delay`, `garp_master_refresh` or `garp_lower_prio_delay` (keepalived 2.2.7 takes
  whole seconds).
* per director file: a virtual_router_id used twice on one interface (same family); a VIP held
  by two instances; a fractional vrrp_script `interval` or `timeout` (whole seconds in 2.2.7).
* across director files (files that define the same instance name): both MASTER at equal
  priority; unicast peers not mutual; different virtual_router_id or VIPs for the same instance;
  the same virtual server defined differently.
* checks this host cannot run as written (`gridlb.health.spec.site_check_problems`): a MISC_CHECK
  `user` (or `gridlb.script_user`) that does not exist, a script keepalived's
  `enable_script_security` would refuse (missing, not executable by its user, or run as root from
  a path a non-root user can change), a checker option its checker rejects.
* scale-out (`gridlb.scaleout`): an announced VIP that a VRRP instance also holds (two mechanisms
  moving one address); an announced address no service has; a scaled-out service whose scheduler
  is not `mh` (flows change real server when ECMP moves them between directors); `mh` without
  `inhibit_on_failure` and `mh_fallback` (the table follows the order of the real-server list,
  which removals and re-adds make differ between directors); the `proxy` dataplane (it terminates
  TCP: a flow moved to another director is reset); two directors with one `router_id`; a file
  whose director is not among `directors`; an announced VIP of a family no peer has.

What "VIP outside its interface's subnet" can infer: gridlb does not read the host's interfaces.
The only address known to be on an instance's interface is its `unicast_source_ip` (adverts leave
from it). When a VIP is written with a prefix (`129.93.239.157/26`) on that interface (no other
`dev`), the source address must lie in the VIP's subnet; a VIP without a prefix (/32, /128) says
nothing about the subnet and is not checked. Unicast peers outside that subnet are also reported
(as warnings: peers may be routed).
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Network

from gridlb.config import defaults as D
from gridlb.config.load import Site, SiteFile
from gridlb.config.schema import (
    CHECKER_BLOCKS,
    UNSUPPORTED_CHECKERS,
    InitialState,
    RealServer,
    VirtualServer,
    VrrpInstance,
)
from gridlb.errors import Location
from gridlb.health.spec import site_check_problems
from gridlb.table import ForwardMethod, IPAddress, Proto, RealKey, ServiceKey

VS = "virtual_servers"
VI = "vrrp_instances"


class Severity(enum.Enum):
    """How bad a finding is; both make `gridlb lint` exit 1."""

    ERROR = "error"
    WARNING = "warning"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Finding:
    """One lint result at one place in one file."""

    location: Location
    severity: Severity
    key: str
    message: str
    code: str  # stable short name, e.g. "duplicate-real-server"

    def __str__(self) -> str:
        return f"{self.location}: {self.severity}: {self.key}: {self.message}"


def lint_site(site: Site) -> list[Finding]:
    """Return every finding about `site`, ordered by file (as given) then line."""
    found: list[Finding] = []
    for f in site.files:
        found.extend(_services(f, site))
        found.extend(_dataplane(f, site))
        found.extend(_gridftp_services(f, site))
        found.extend(_dashboard(f))
        for name, inst in f.vrrp_instances.items():
            found.extend(_instance(f, name, inst, site))
        found.extend(_per_director(f))
        found.extend(_keepalived_only(f))
    found.extend(_across_files(site))
    found.extend(_checks(site))
    found.extend(_scaleout(site))
    order = {f.path: i for i, f in enumerate(site.files)}
    unique = list(dict.fromkeys(found))
    unique.sort(key=lambda x: (order.get(x.location.file, len(order)), x.location.line, x.code))
    return unique


def _at(f: SiteFile, path: tuple[str | int, ...], sev: Severity, code: str, message: str) -> Finding:
    return Finding(f.locate(*path), sev, f.key(*path), message, code)


def _line(f: SiteFile, *path: str | int) -> str:
    loc = f.locate(*path)
    return f"line {loc.line}" if loc.line else "elsewhere"


# ----------------------------------------------------------------------------------- checks


def _checks(site: Site) -> Iterator[Finding]:
    """Checks this host cannot run as written (the director refuses them at start-up too)."""
    for problem in site_check_problems(site):
        location = problem.location or Location(site.files[0].path if site.files else "<site>")
        yield Finding(location, Severity.ERROR, problem.key, problem.message, "check-cannot-run")


# ------------------------------------------------------------------- what only keepalived does


@dataclass(frozen=True, slots=True)
class UnsupportedChecker:
    """A checker a site names that gridlb does not run (keepalived would): where, and which."""

    service: str
    real_server: str  # "ADDR:PORT"
    keyword: str  # keepalived's name: SMTP_CHECK, DNS_CHECK, UDP_CHECK, PING_CHECK, FILE_CHECK, BFD_CHECK
    location: Location

    def __str__(self) -> str:
        return f"{self.location}: {self.keyword} of {self.real_server} in {self.service} is not run by gridlb"


def unsupported_checkers(site: Site) -> list[UnsupportedChecker]:
    """Every checker of `site` that gridlb will not run, in file order (for lint and the director's
    start-up message). A real server whose only checkers are these has no check in gridlb: always up."""
    out = []
    for f in site.files:
        for name, vs in f.virtual_servers.items():
            for i, rs in enumerate(vs.real_servers):
                own = bool(rs.checker_blocks)
                source = rs if own else vs
                for key, _block in source.checker_blocks:
                    if key not in UNSUPPORTED_CHECKERS:
                        continue
                    path = (VS, name, "real_servers", i, key) if own else (VS, name, key)
                    keyword = next(k for k, (site_key, _m) in CHECKER_BLOCKS.items() if site_key == key)
                    out.append(UnsupportedChecker(name, str(rs.real_key(vs)), keyword, f.locate(*path)))
    return out


def _keepalived_only(f: SiteFile) -> Iterator[Finding]:
    """What the site asks of keepalived that gridlb itself does not do."""
    for name, vs in f.virtual_servers.items():
        for i, rs in enumerate(vs.real_servers):
            own = bool(rs.checker_blocks)
            source = rs if own else vs
            blocks = source.checker_blocks
            for key, _block in blocks:
                if key not in UNSUPPORTED_CHECKERS:
                    continue
                path = (VS, name, "real_servers", i, key) if own else (VS, name, key)
                runs = [k for k, _b in blocks if k not in UNSUPPORTED_CHECKERS]
                effect = (
                    f"only its {', '.join(runs)} decide(s) its health"
                    if runs
                    else "the real server has no check in gridlb and counts as up"
                )
                yield _at(
                    f,
                    path,
                    Severity.WARNING,
                    "checker-not-run",
                    f"gridlb does not run {key} (keepalived does); {effect}",
                )
    for name, inst in f.vrrp_instances.items():
        if inst.use_vmac is not None:
            yield _at(
                f,
                (VI, name, "use_vmac"),
                Severity.WARNING,
                "vmac-not-supported",
                "gridlb does not create VMAC interfaces (keepalived does)",
            )
        for key in ("virtual_routes", "virtual_rules"):
            if getattr(inst, key):
                yield _at(
                    f,
                    (VI, name, key),
                    Severity.WARNING,
                    "routes-not-installed",
                    f"gridlb does not install {key} with the VIPs (keepalived does)",
                )
    x = f.keepalived
    for name in x.vrrp_sync_groups:
        yield _at(
            f,
            ("vrrp_sync_groups", name),
            Severity.WARNING,
            "sync-group-not-run",
            "gridlb runs each instance on its own and does not synchronise the group (keepalived does)",
        )
    for key in ("static_ipaddress", "static_routes", "static_rules"):
        if getattr(x, key):
            yield _at(
                f,
                (key,),
                Severity.WARNING,
                "static-not-installed",
                f"gridlb does not install {key} (keepalived does at start)",
            )
    for key in ("track_files", "bfd_instances"):
        for name in getattr(x, key):
            yield _at(
                f,
                (key, name),
                Severity.WARNING,
                "keepalived-only",
                f"gridlb does not run {key} (keepalived does)",
            )
    if x.global_defs is not None:
        yield _at(
            f,
            ("global_defs",),
            Severity.WARNING,
            "mail-not-sent",
            "gridlb sends no smtp_alert mail (keepalived does); the settings are kept for rendering",
        )


# ----------------------------------------------------------------------------------- services


def _dataplane(f: SiteFile, site: Site) -> Iterator[Finding]:
    from gridlb.dataplane.base import Severity as Level
    from gridlb.dataplane.base import resolve_factory

    if not any(sf.gridlb is not None and "dataplane" in sf.gridlb.model_fields_set for sf in site.files):
        return  # not named: `director run` says at start what its dataplane does differently
    factory, _ = resolve_factory(site.gridlb.dataplane)
    name = factory.name
    caps = factory.capabilities
    for vs_name, vs in f.virtual_servers.items():
        methods = [rs.dest_spec(vs).forward for rs in vs.real_servers]
        for m in caps.assess(vs.service_key(), vs.service_spec(), methods):
            sev = Severity.ERROR if m.severity is Level.ERROR else Severity.WARNING
            yield _at(f, (VS, vs_name), sev, "dataplane-cannot", f"the {name} dataplane: {m.message}")
    for inst_name, inst in f.vrrp_instances.items():
        if inst.lvs_sync_daemon_interface and not caps.connection_sync:
            yield _at(
                f,
                (VI, inst_name, "lvs_sync_daemon_interface"),
                Severity.WARNING,
                "sync-not-run",
                f"the {name} dataplane does not sync connections; lvs_sync_daemon_interface is not used",
            )
    if name != "proxy" and f.gridlb is not None and "workers" in f.gridlb.proxy.model_fields_set:
        yield _at(
            f,
            ("gridlb", "proxy", "workers"),
            Severity.WARNING,
            "proxy-setting-unused",
            f"the {name} dataplane has no relay workers; proxy.workers is not used",
        )


def _gridftp_services(f: SiteFile, site: Site) -> Iterator[Finding]:
    """`gridlb.gridftp_services`: each names a virtual server; the fwmark recipe is complete."""
    if f.gridlb is None:
        return
    by_addr = {vs.service_key(): n for n, vs in site.virtual_servers.items() if vs.fwmark is None}
    by_mark = {vs.fwmark: (n, vs) for n, vs in site.virtual_servers.items() if vs.fwmark is not None}
    for name, g in f.gridlb.gridftp_services.items():
        path = ("gridlb", "gridftp_services", name)
        rk = RealKey.parse(name)
        if g.fwmark is None:
            if ServiceKey(Proto.TCP, rk.addr, rk.port) not in by_addr:
                yield _at(f, path, Severity.ERROR, "gridftp-service-unknown", "names no virtual server")
            continue
        found = by_mark.get(g.fwmark)
        if found is None:
            yield _at(
                f,
                (*path, "fwmark"),
                Severity.ERROR,
                "gridftp-service-unknown",
                f"no virtual server has fwmark {g.fwmark}",
            )
            continue
        vs_name, vs = found
        if not vs.persistence_timeout:
            yield _at(
                f,
                (*path, "fwmark"),
                Severity.ERROR,
                "fwmark-without-persistence",
                f"virtual server {vs_name} (fwmark {g.fwmark}) has no persistence_timeout: a client's data "
                "connections could reach another real server than its control connection",
            )
        if vs.family != rk.addr.version:
            yield _at(
                f,
                (*path, "fwmark"),
                Severity.ERROR,
                "fwmark-family",
                f"virtual server {vs_name} is IPv{vs.family}, the address {rk.addr} is not",
            )
        if vs.forward is ForwardMethod.MASQ and any(rs.port for rs in vs.real_servers):
            yield _at(
                f,
                (*path, "fwmark"),
                Severity.ERROR,
                "fwmark-nat-port",
                f"virtual server {vs_name} is NAT with real-server ports: every data port would be "
                "rewritten to that port (use DR or TUN, or leave the real servers' port out)",
            )
        if g.data_ports is None:
            yield _at(
                f,
                path,
                Severity.WARNING,
                "fwmark-no-data-ports",
                "no data_ports: the mark covers the control port only, clients that ignore the PASV "
                "address still fail",
            )


def _dashboard(f: SiteFile) -> Iterator[Finding]:
    g = f.gridlb
    if g is not None and g.dashboard_token_file and not g.dashboard_listen:
        yield _at(
            f,
            ("gridlb", "dashboard_token_file"),
            Severity.WARNING,
            "dashboard-token-unused",
            "a token for dashboard actions, but gridlb.dashboard_listen is not set: the dashboard is off "
            "(unless `director run --dashboard` turns it on)",
        )


def _services(f: SiteFile, site: Site) -> Iterator[Finding]:
    held = {vip.address for sf in site.files for inst in sf.vrrp_instances.values() for vip in inst.vips}
    if held:  # an address scale-out announces is held by the directors' BGP routes instead
        held |= set(_announced(site))
    seen_service: dict[object, str] = {}
    for name, vs in f.virtual_servers.items():
        key = vs.service_key()
        if key in seen_service:
            other = seen_service[key]
            yield _at(
                f,
                (VS, name),
                Severity.ERROR,
                "duplicate-service",
                f"service {key} is also defined as {other} ({_line(f, VS, other)})",
            )
        else:
            seen_service[key] = name
        first: dict[RealKey, int] = {}
        for i, rs in enumerate(vs.real_servers):
            rk = rs.real_key(vs)
            if rk in first:
                j = first[rk]
                yield _at(
                    f,
                    (VS, name, "real_servers", i),
                    Severity.ERROR,
                    "duplicate-real-server",
                    f"real server {rk} is listed twice: {_line(f, VS, name, 'real_servers', j)} "
                    f"and {_line(f, VS, name, 'real_servers', i)}",
                )
            else:
                first[rk] = i
            dr = rs.forward(vs) is ForwardMethod.ROUTE
            if dr and rs.port is not None and vs.port and rs.port != vs.port:
                yield _at(
                    f,
                    (VS, name, "real_servers", i, "port"),
                    Severity.WARNING,
                    "dr-port",
                    f"direct routing cannot change the port: real server port {rs.port} "
                    f"differs from the service port {vs.port}",
                )
            if rs.ip_address.version != vs.family and vs.lb_kind != "NAT":
                yield _at(
                    f,
                    (VS, name, "real_servers", i, "ip_address"),
                    Severity.ERROR,
                    "rs-family",
                    f"real server {rs.ip_address} is IPv{rs.ip_address.version} but the service is "
                    f"IPv{vs.family} (only NAT can translate between families)",
                )
        if held and vs.ip_address is not None and vs.ip_address not in held:
            yield _at(
                f,
                (VS, name, "ip_address"),
                Severity.WARNING,
                "vip-not-held",
                f"no VRRP instance holds {vs.ip_address}: no director will answer for it",
            )


# ---------------------------------------------------------------------------------- instances


def _instance(f: SiteFile, name: str, inst: VrrpInstance, site: Site) -> Iterator[Finding]:
    p = (VI, name)
    families = {vip.address.version for vip in inst.virtual_ipaddress}
    if len(families) > 1:
        yield _at(
            f,
            (*p, "virtual_ipaddress"),
            Severity.ERROR,
            "mixed-family",
            "virtual_ipaddress mixes IPv4 and IPv6; keepalived needs one family per instance "
            "(put the other family under virtual_ipaddress_excluded or in its own instance)",
        )
    if inst.virtual_ipaddress:
        fam = inst.virtual_ipaddress[0].address.version
        for field in ("unicast_source_ip", "multicast_source_ip"):
            addr = getattr(inst, field)
            if addr is not None and addr.version != fam:
                yield _at(
                    f,
                    (*p, field),
                    Severity.ERROR,
                    "mixed-family",
                    f"{addr} is IPv{addr.version} but the instance's VIPs are IPv{fam}; keepalived "
                    "needs one family per instance (move the VIPs to virtual_ipaddress_excluded "
                    "of an instance of this family, or give this one addresses of their family)",
                )
        for i, peer in enumerate(inst.unicast_peers):
            if peer.version != fam:
                yield _at(
                    f,
                    (*p, "unicast_peers", i),
                    Severity.ERROR,
                    "mixed-family",
                    f"unicast peer {peer} is IPv{peer.version} but the instance's VIPs are IPv{fam}",
                )
    for i, track in enumerate(inst.track_interface):
        if track.name == inst.interface:
            yield _at(
                f,
                (*p, "track_interface", i),
                Severity.WARNING,
                "track-own-interface",
                f"the instance tracks its own interface {inst.interface}; keepalived warns "
                "and `keepalived -t` exits 5 (the interface is tracked anyway: drop this entry)",
            )
    if inst.unicast_source_ip is not None and inst.unicast_source_ip in inst.unicast_peers:
        i = inst.unicast_peers.index(inst.unicast_source_ip)
        yield _at(
            f,
            (*p, "unicast_peers", i),
            Severity.ERROR,
            "peer-is-self",
            f"{inst.unicast_source_ip} is this director's own unicast_source_ip, not a peer",
        )
    yield from _subnet(f, name, inst)
    for key in ("garp_master_delay", "garp_master_refresh", "garp_lower_prio_delay"):
        yield from _whole_seconds(f, (*p, key), getattr(inst, key))
    version = inst.vrrp_version
    if version == 2 and inst.advert_int != int(inst.advert_int):
        yield _at(
            f,
            (*p, "advert_int"),
            Severity.WARNING,
            "advert-int",
            f"VRRPv2 advert_int must be whole seconds; keepalived rounds {inst.advert_int:g} "
            f"to {round(inst.advert_int)} (use version 3 for sub-second adverts)",
        )
    if version == 3 and inst.advert_int > D.VRRP_V3_ADVERT_INT_MAX_S:
        yield _at(
            f,
            (*p, "advert_int"),
            Severity.ERROR,
            "advert-int",
            f"VRRPv3 advert_int must be below 40.96 s (12 bits of centiseconds), got {inst.advert_int:g}",
        )
    if inst.auth_type is not None and version == 3:
        yield _at(
            f,
            (*p, "auth_type"),
            Severity.ERROR,
            "auth-v3",
            "VRRPv3 has no authentication; remove auth_type/auth_pass or use version 2",
        )
    if inst.auth_pass is not None and len(inst.auth_pass) > D.VRRP_AUTH_PASS_MAX_LEN:
        yield _at(
            f,
            (*p, "auth_pass"),
            Severity.WARNING,
            "auth-pass-length",
            f"only the first {D.VRRP_AUTH_PASS_MAX_LEN} characters of auth_pass are sent",
        )
    if inst.auth_type is not None and inst.auth_pass is None:
        yield _at(f, (*p, "auth_type"), Severity.ERROR, "auth-pass", "auth_type needs auth_pass")
    for i, ts in enumerate(inst.track_script):
        if ts.name not in site.vrrp_scripts:
            yield _at(
                f,
                (*p, "track_script", i),
                Severity.ERROR,
                "unknown-script",
                f"no vrrp_scripts entry named {ts.name!r}",
            )
    if inst.nopreempt and inst.state is InitialState.MASTER:
        yield _at(
            f,
            (*p, "nopreempt"),
            Severity.WARNING,
            "nopreempt-master",
            "nopreempt only works when the initial state is BACKUP (keepalived.conf(5))",
        )


def _whole_seconds(f: SiteFile, path: tuple[str | int, ...], value: float | None) -> Iterator[Finding]:
    """keepalived 2.2.7 reads some times as integers and ignores a fraction with an error (`-t` exits 5)."""
    if value is not None and value != int(value):
        yield _at(
            f,
            path,
            Severity.WARNING,
            "whole-seconds",
            f"keepalived 2.2.7 reads {path[-1]} as whole seconds and ignores {value:g} "
            "(`keepalived -t` exits 5); gridlb's own VRRP takes it as written",
        )


def _subnet(f: SiteFile, name: str, inst: VrrpInstance) -> Iterator[Finding]:
    src = inst.unicast_source_ip
    if src is None:
        return
    p = (VI, name)
    for i, vip in enumerate(inst.virtual_ipaddress):
        net: IPv4Network | IPv6Network | None = vip.network
        if net is None or vip.dev not in (None, inst.interface) or vip.address.version != src.version:
            continue
        if src not in net:
            yield _at(
                f,
                (*p, "virtual_ipaddress", i),
                Severity.ERROR,
                "vip-subnet",
                f"VIP {vip} is outside the subnet of {inst.interface}: this director's address "
                f"there (unicast_source_ip {src}) is not in {net}",
            )
            continue
        for j, peer in enumerate(inst.unicast_peers):
            if peer.version == net.version and peer not in net:
                yield _at(
                    f,
                    (*p, "unicast_peers", j),
                    Severity.WARNING,
                    "peer-subnet",
                    f"unicast peer {peer} is outside the VIP's subnet {net} (fine only if routed)",
                )


def _per_director(f: SiteFile) -> Iterator[Finding]:
    for sname, script in f.vrrp_scripts.items():
        for key in ("interval", "timeout"):
            yield from _whole_seconds(f, ("vrrp_scripts", sname, key), getattr(script, key))
    by_vrid: dict[tuple[str, int, int], str] = {}
    by_vip: dict[object, str] = {}
    for name, inst in f.vrrp_instances.items():
        slot = (inst.interface, inst.virtual_router_id, inst.family)
        if slot in by_vrid:
            other = by_vrid[slot]
            yield _at(
                f,
                (VI, name, "virtual_router_id"),
                Severity.ERROR,
                "duplicate-vrid",
                f"virtual_router_id {inst.virtual_router_id} on {inst.interface} is also used by "
                f"{other} ({_line(f, VI, other, 'virtual_router_id')})",
            )
        else:
            by_vrid[slot] = name
        for i, vip in enumerate(inst.vips):
            if vip.address in by_vip and by_vip[vip.address] != name:
                yield _at(
                    f,
                    (VI, name, *_vip_path(inst, i)),
                    Severity.ERROR,
                    "duplicate-vip",
                    f"VIP {vip.address} is also held by instance {by_vip[vip.address]}",
                )
            by_vip.setdefault(vip.address, name)


def _vip_path(inst: VrrpInstance, i: int) -> tuple[str, int]:
    n = len(inst.virtual_ipaddress)
    return ("virtual_ipaddress", i) if i < n else ("virtual_ipaddress_excluded", i - n)


# ------------------------------------------------------------------------------- across files


def _across_files(site: Site) -> Iterator[Finding]:
    holders: dict[str, list[SiteFile]] = defaultdict(list)
    for f in site.files:
        for name in f.vrrp_instances:
            holders[name].append(f)
    for name, files in holders.items():
        for i, a in enumerate(files):
            for b in files[i + 1 :]:
                yield from _pair(name, a, b)
    yield from _service_mismatch(site)


def _pair(name: str, a: SiteFile, b: SiteFile) -> Iterator[Finding]:
    ia, ib = a.vrrp_instances[name], b.vrrp_instances[name]
    p = (VI, name)
    where_a = f"{a.path}:{a.locate(*p, 'state').line}"
    if ia.state is InitialState.MASTER and ib.state is InitialState.MASTER and ia.priority == ib.priority:
        for me, other, where in ((a, b, f"{b.path}:{b.locate(*p, 'state').line}"), (b, a, where_a)):
            yield _at(
                me,
                (*p, "state"),
                Severity.ERROR,
                "two-masters",
                f"{me.director} and {other.director} are both MASTER at priority {ia.priority} "
                f"(other: {where}); the tie goes to the higher address and both claim the VIP at "
                "start: make one BACKUP with a lower priority",
            )
    if ia.virtual_router_id != ib.virtual_router_id:
        yield _at(
            b,
            (*p, "virtual_router_id"),
            Severity.ERROR,
            "vrid-mismatch",
            f"virtual_router_id {ib.virtual_router_id} here but {ia.virtual_router_id} in {a.path} "
            f"({_line(a, *p, 'virtual_router_id')}): the directors will not see each other",
        )
    if {v.address for v in ia.vips} != {v.address for v in ib.vips}:
        yield _at(
            b,
            (*p, "virtual_ipaddress"),
            Severity.ERROR,
            "vip-mismatch",
            f"VIPs differ from {a.path} ({', '.join(map(str, ia.vips))} there, "
            f"{', '.join(map(str, ib.vips))} here)",
        )
    for me, other in ((a, b), (b, a)):
        im, io = me.vrrp_instances[name], other.vrrp_instances[name]
        if io.unicast_source_ip is None or not (im.unicast_peers or im.unicast_source_ip):
            continue
        if io.unicast_source_ip not in im.unicast_peers:
            path = (*p, "unicast_peers") if me.source.has((*p, "unicast_peers")) else p
            yield _at(
                me,
                path,
                Severity.ERROR,
                "peers-not-mutual",
                f"unicast peers are not mutual: {other.director} ({other.path}) sends from "
                f"{io.unicast_source_ip}, which is not among {me.director}'s unicast_peers "
                f"({', '.join(map(str, im.unicast_peers)) or 'none'})",
            )
    if ia.unicast_source_ip is not None and ia.unicast_source_ip == ib.unicast_source_ip:
        yield _at(
            b,
            (*p, "unicast_source_ip"),
            Severity.ERROR,
            "same-source",
            f"{a.director} and {b.director} both send from {ia.unicast_source_ip}: "
            "each director's file needs its own unicast_source_ip",
        )


def _service_mismatch(site: Site) -> Iterator[Finding]:
    first: dict[str, SiteFile] = {}
    for f in site.files:
        for name, vs in f.virtual_servers.items():
            if name not in first:
                first[name] = f
            elif first[name].virtual_servers[name] != vs:
                yield _at(
                    f,
                    (VS, name),
                    Severity.WARNING,
                    "service-mismatch",
                    f"differs from the definition in {first[name].path} "
                    f"({_line(first[name], VS, name)}), which is the one used",
                )


# ------------------------------------------------------------------------------------ scale-out

SO = ("gridlb", "scaleout")


def _announced(site: Site) -> tuple[IPAddress, ...]:
    so = site.gridlb.scaleout
    if so is None:
        return ()
    return so.announced([vs.ip_address for vs in site.virtual_servers.values() if vs.ip_address is not None])


def _inhibits(vs: VirtualServer, rs: RealServer) -> bool:
    value = rs.inhibit_on_failure if rs.inhibit_on_failure is not None else vs.inhibit_on_failure
    return bool(value)


def _scaleout_file(site: Site) -> SiteFile | None:
    """Return the last file that writes `gridlb.scaleout` (the one the merged view uses)."""
    found = None
    for f in site.files:
        if f.gridlb is not None and f.gridlb.scaleout is not None:
            found = f
    return found


def _scaleout(site: Site) -> Iterator[Finding]:
    so = site.gridlb.scaleout
    f = _scaleout_file(site)
    if so is None or f is None:
        return
    announced = _announced(site)

    def at_vip(vip: IPAddress) -> tuple[str | int, ...]:
        return (*SO, "announce", so.announce.index(vip)) if vip in so.announce else SO

    services = [(sf, name, vs) for sf in site.files for name, vs in sf.virtual_servers.items()]
    for vip in announced:
        for sf in site.files:
            for iname, inst in sf.vrrp_instances.items():
                if any(v.address == vip for v in inst.vips):
                    yield _at(
                        f,
                        at_vip(vip),
                        Severity.ERROR,
                        "scaleout-vrrp-vip",
                        f"{vip} is announced over BGP and also held by VRRP instance {iname} "
                        f"({sf.path}, {_line(sf, VI, iname)}): a scaled-out VIP is on every director at "
                        "once; take it out of the instance (or out of scaleout.announce)",
                    )
        if not any(p.address.version == vip.version for p in so.peers):
            yield _at(
                f,
                at_vip(vip),
                Severity.ERROR,
                "scaleout-family",
                f"{vip} is IPv{vip.version} but no peer is: each BGP session carries its own address "
                "family only, so nothing would announce it",
            )
        if not any(vs.ip_address == vip for _, _, vs in services):
            yield _at(
                f,
                at_vip(vip),
                Severity.ERROR,
                "scaleout-no-service",
                f"{vip} is announced but no virtual server has that address: the director never "
                "announces it (it announces a VIP only while a service on it can serve)",
            )
    seen: set[str] = set()
    for sf, name, vs in services:
        if vs.ip_address not in announced or name in seen:
            continue
        seen.add(name)
        if vs.scheduler != "mh":
            yield _at(
                sf,
                (VS, name, "lb_algo"),
                Severity.WARNING,
                "scaleout-scheduler",
                f"scheduler {vs.scheduler} on a scaled-out service: each director picks real servers on "
                "its own, so a flow that the router moves to another director (a director added, "
                "drained or lost) lands on a different real server and breaks; use mh (Maglev), "
                "which maps a flow to the same real server on every director",
            )
        elif not (vs.mh_fallback and all(_inhibits(vs, rs) for rs in vs.real_servers)):
            yield _at(
                sf,
                (VS, name),
                Severity.WARNING,
                "scaleout-mh-order",
                "mh builds its table in the order of the real-server list, and a failed server that is "
                "removed comes back at the head of it, so directors with different histories build "
                "tables that differ in a few entries (about 0.3 % for 4 servers), whose flows change "
                "real server when they move between directors; set inhibit_on_failure (a failed "
                "server keeps its place at weight 0) and mh_fallback (its flows go to the next server "
                "in the table)",
            )
    if site.gridlb.dataplane == "proxy" and any(
        sf.gridlb is not None and "dataplane" in sf.gridlb.model_fields_set for sf in site.files
    ):
        yield _at(
            f,
            SO,
            Severity.WARNING,
            "scaleout-dataplane",
            "the proxy dataplane terminates TCP on the director: a connection the router moves to "
            "another director (one added, drained or lost) is reset; flows survive that only with "
            "a dataplane that forwards packets (dr, ipvs)",
        )
    ids: dict[IPv4Address, SiteFile] = {}
    for sf in site.files:
        sso = sf.gridlb.scaleout if sf.gridlb is not None else None
        if sso is None:
            continue
        if sso.directors and sf.director not in sso.directors and (sf.vrrp_instances or sf.virtual_servers):
            yield _at(
                sf,
                (*SO, "directors"),
                Severity.WARNING,
                "scaleout-unknown-director",
                f"this file describes director {sf.director}, which is not among directors "
                f"({', '.join(sso.directors)}): it refuses to start with scaleout",
            )
        rid = sso.router_id
        if rid is not None and rid in ids and ids[rid].director != sf.director:
            yield _at(
                sf,
                (*SO, "router_id"),
                Severity.ERROR,
                "scaleout-router-id",
                f"router_id {rid} is also {ids[rid].director}'s ({ids[rid].path}): each director "
                "needs its own BGP identifier",
            )
        elif rid is not None:
            ids[rid] = sf
