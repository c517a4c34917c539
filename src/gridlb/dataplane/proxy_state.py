"""Pure bookkeeping of the proxy dataplane: services, destinations, IPVS-like counters, thresholds, picks.

No sockets and no clock here: the relay engine passes `now` (seconds, monotonic) and calls
`pick` / `connect_failed` / `closed` / `expire` as connections come and go. The rules follow
the kernel (net/netfilter/ipvs/ip_vs_conn.c, ip_vs_ctl.c):

* a connection is bound to its destination when scheduled: `active += 1`, `conns += 1`, and the
  destination becomes OVERLOADED when `u_threshold` is set and `active + inactive >= u_threshold`;
* a proxied connection is active while its relay is open; once both directions are closed it
  counts as inactive for the FIN timeout (`Timeouts.tcpfin`), then it is unbound;
* on unbind the OVERLOAD flag is cleared when `active + inactive < l_threshold` (lower set), else
  when `(active + inactive) * 4 < u_threshold * 3` (only upper set), else unconditionally;
* editing a destination clears OVERLOAD when the new upper threshold is 0 or higher than before;
* a destination deleted while connections still reference it keeps counting in a trash list and is
  revived, counters included, when the same key is added back (as the kernel's dest trash does);
* a passive failure (refused or timed-out connect) takes the destination out of scheduling at once
  until the control side says it is up again (any AddDest/EditDest of it);
* a persistent service (`persistence_timeout`) schedules through the templates of persistence.py: a
  deleted or passively failed destination's templates are dropped, a drained one's kept.
"""

from __future__ import annotations

import bisect
import contextlib
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import replace
from ipaddress import ip_address

from gridlb.dataplane.persistence import INVALID_PORT, PersistenceTable, Template
from gridlb.sched.base import DestView, Flow, Scheduler, create_scheduler
from gridlb.table import (
    AddDest,
    AddService,
    ConnEntry,
    DelService,
    Dest,
    DestCounters,
    DestSpec,
    EditDest,
    EditService,
    IPAddress,
    IpvsTable,
    Op,
    Proto,
    RealKey,
    Service,
    ServiceKey,
    ServiceSpec,
    SetTimeouts,
    Stats,
    Timeouts,
    check_op,
)

#: The EWMA estimator period and weight the kernel uses for the rate columns (ip_vs_est.c: 2 s, 1/4).
RATE_PERIOD_S = 2.0


class Traffic:
    """Mutable traffic counters of a service or destination (bytes are payload bytes, pkts unknown)."""

    __slots__ = ("conns", "cps", "inbps", "inbytes", "last", "outbps", "outbytes")

    def __init__(self) -> None:
        self.conns = 0
        self.inbytes = 0  # client -> real server
        self.outbytes = 0  # real server -> client
        self.last = (0, 0, 0)  # (conns, inbytes, outbytes) at the previous rate sample
        self.cps = 0.0
        self.inbps = 0.0
        self.outbps = 0.0

    def sample(self, period_s: float) -> None:
        """Fold the last period into the rates: EWMA with weight 1/4, like the kernel estimator."""
        c0, i0, o0 = self.last
        self.cps += ((self.conns - c0) / period_s - self.cps) / 4
        self.inbps += ((self.inbytes - i0) * 8 / period_s - self.inbps) / 4
        self.outbps += ((self.outbytes - o0) * 8 / period_s - self.outbps) / 4
        self.last = (self.conns, self.inbytes, self.outbytes)

    def stats(self) -> Stats:
        """Return the counters as the table's frozen `Stats` (packet counts are not observed: 0)."""
        return Stats(
            conns=self.conns,
            inbytes=self.inbytes,
            outbytes=self.outbytes,
            cps=round(self.cps),
            inbps=round(self.inbps),
            outbps=round(self.outbps),
        )


class DestState:
    """One destination of one service, with its live counters."""

    __slots__ = (
        "active",
        "down",
        "inactive",
        "key",
        "overloaded",
        "service",
        "sockaddr",
        "spec",
        "traffic",
        "version",
        "view",
        "vpos",
        "weight",
    )

    def __init__(self, service: ServiceState, key: RealKey, spec: DestSpec) -> None:
        self.service = service
        self.key = key
        self.sockaddr = (str(key.addr), key.port)  # what connect() takes, computed once
        self.version = key.addr.version
        self.spec = spec
        self.weight = spec.weight  # `spec.weight`, read where a scheduler picks from live destinations
        self.active = 0
        self.inactive = 0
        self.overloaded = False
        self.down = False  # passive health: a connect to it failed
        self.traffic = Traffic()
        self.view: DestView | None = None  # cached scheduler view; None = stale
        self.vpos = -1  # index in the service's cached scheduler input, -1 = not in it

    def bind(self) -> None:
        """Count a new connection scheduled to this destination (kernel ip_vs_bind_dest)."""
        self.active += 1
        self.traffic.conns += 1
        self.service.traffic.conns += 1
        u = self.spec.u_threshold
        if u and self.active + self.inactive >= u:
            self.overloaded = True
        if self.view is not None:  # `touch`, inlined: this runs for every connection
            self.view = None
            if self.vpos >= 0:
                self.service.dirty.append(self)

    def to_inactive(self) -> None:
        """Count a connection whose relay ended inactive (active - 1, inactive + 1)."""
        self.active -= 1
        self.inactive += 1

    def drop_active(self) -> None:
        """Count an active connection gone without a close (a failed connect)."""
        self.active -= 1

    def drop_inactive(self) -> None:
        """Count an inactive connection whose FIN timeout ran out."""
        self.inactive -= 1

    def touch(self) -> None:
        """Counters changed: drop the cached view; the service re-makes only this entry at its next pick."""
        if self.view is not None:
            self.view = None
            if self.vpos >= 0:
                self.service.dirty.append(self)

    def unbind_check(self) -> None:
        """Re-evaluate OVERLOAD after a connection went away (kernel ip_vs_unbind_dest)."""
        total = self.active + self.inactive
        lo, up = self.spec.l_threshold, self.spec.u_threshold
        if lo:
            if total < lo:
                self.overloaded = False
        elif up:
            if total * 4 < up * 3:
                self.overloaded = False
        else:
            self.overloaded = False
        self.touch()

    def make_view(self) -> DestView:
        """Return (and cache) what the scheduler sees of this destination."""
        view = self.view
        if view is None:
            view = self.view = DestView(
                self.key, self.spec.weight, self.active, self.inactive, self.overloaded
            )
        return view

    def counters(self) -> DestCounters:
        """Return the observed counters for `dump()`."""
        return DestCounters(
            active=self.active,
            inactive=self.inactive,
            overloaded=self.overloaded,
            stats=self.traffic.stats(),
        )


class ServiceState:
    """One virtual service: spec, scheduler, destinations in kernel order (newest first)."""

    __slots__ = (
        "dests",
        "dirty",
        "key",
        "members",
        "scheduler",
        "shared",
        "spec",
        "tracks_owner",
        "traffic",
        "trash",
        "views",
    )

    def __init__(self, key: ServiceKey, spec: ServiceSpec, scheduler: Scheduler) -> None:
        self.key = key
        self.spec = spec
        self.scheduler = scheduler
        self.dests: list[DestState] = []
        self.trash: dict[RealKey, DestState] = {}  # deleted but still referenced by connections
        self.traffic = Traffic()
        self.views: list[DestView] | None = None  # scheduler input; None = stale
        self.members: list[DestState] = []  # the destination behind each entry of `views`
        self.dirty: list[DestState] = []  # members whose counters changed since `views` was made
        self.tracks_owner = False  # GridFTP data ports: remember which server holds each client's control
        self.shared = False  # counters shared by worker processes (proxy_shared.py), none of them logged

    def dest(self, key: RealKey) -> DestState | None:
        """Return the live destination `key`, or None."""
        for d in self.dests:
            if d.key == key:
                return d
        return None

    def candidate_views(self) -> list[DestView]:
        """Return the scheduler's input: every destination not passively marked down, kernel order."""
        views = self.views
        if views is None:
            for d in self.members:
                d.vpos = -1
            members = self.members = [d for d in self.dests if not d.down]
            views = self.views = [d.make_view() for d in members]
            for i, d in enumerate(members):
                d.vpos = i
            self.dirty.clear()
        elif self.dirty:
            # Only counters changed (a list change or down mark resets `views`): re-make just the
            # changed entries, in a new list so that no scheduler ever sees its input change.
            views = self.views = views.copy()
            members = self.members
            for d in self.dirty:
                i = d.vpos
                if i >= 0 and members[i] is d:
                    view = d.view  # `make_view`, inlined: this runs for every connection
                    if view is None:
                        view = d.view = DestView(d.key, d.spec.weight, d.active, d.inactive, d.overloaded)
                    views[i] = view
            self.dirty.clear()
        return views

    def notify_scheduler(self) -> None:
        """Tell the scheduler the destination list changed (kernel add/del/upd_dest hooks)."""
        self.views = None
        self.scheduler.update(self.candidate_views())


#: A finished connection counted inactive until `expires`: (expires, dest, client host, client port).
ClosedConn = tuple[float, "DestState", str, int]


def _expires(entry: ClosedConn) -> float:
    return entry[0]


def queue_closed(queue: deque[ClosedConn], entry: ClosedConn) -> None:
    """Add `entry` to a queue kept in expiry order (appended, unless the FIN timeout was lowered
    since the last entry went in)."""
    if queue and queue[-1][0] > entry[0]:
        bisect.insort(queue, entry, key=_expires)
    else:
        queue.append(entry)


class ProxyState:
    """Every service of one proxy dataplane, the inactive-connection queue and the timeouts."""

    def __init__(self, timeouts: Timeouts | None = None) -> None:
        self.services: dict[ServiceKey, ServiceState] = {}
        self.order: list[ServiceKey] = []  # services in the order they were added (ipvsadm order)
        self.timeouts = timeouts or Timeouts()
        self.closed: deque[ClosedConn] = deque()  # ordered by `expires`
        self.next_rate_sample = 0.0
        self.persist: PersistenceTable[DestState] = PersistenceTable()
        #: The template each connection of a persistent service was made through, until it is freed:
        #: (dest, client address, client port) -> templates (a list: a client port may come back).
        self.controls: dict[tuple[DestState, IPAddress, int], list[Template[DestState]]] = {}
        #: Open control connections of services that serve data ports: (service, client address) ->
        #: [(dest, client port)], oldest first (see `pick_owner`).
        self.owners: dict[tuple[ServiceKey, IPAddress], list[tuple[DestState, int]]] = {}

    # --- ops --------------------------------------------------------------------------------------

    def check(self, op: Op) -> None:
        """Raise ValueError/KeyError (ipvsadm's wording) when `op` cannot be applied; change nothing."""
        check_op(op, self.services.__contains__, self._has_dest)
        if isinstance(op, AddService | EditService):
            _check_service(op.key, op.spec)
        elif isinstance(op, AddDest | EditDest):
            _check_dest(op.spec)

    def _has_dest(self, service: ServiceKey, key: RealKey) -> bool:
        svc = self.services.get(service)
        return svc is not None and svc.dest(key) is not None

    def apply(self, op: Op) -> None:
        """Apply one op (after `check`); listeners are the engine's business."""
        self.check(op)
        if isinstance(op, SetTimeouts):
            self.set_timeouts(op.timeouts)
        elif isinstance(op, AddService):
            sched = create_scheduler(op.spec.scheduler, op.spec.flags)
            self.services[op.key] = ServiceState(op.key, op.spec, sched)
            self.order.append(op.key)
            self.services[op.key].notify_scheduler()
        elif isinstance(op, EditService):
            svc = self.services[op.key]
            if op.spec.scheduler != svc.spec.scheduler or op.spec.flags != svc.spec.flags:
                svc.scheduler = create_scheduler(op.spec.scheduler, op.spec.flags)
            svc.spec = op.spec
            svc.notify_scheduler()
        elif isinstance(op, DelService):
            svc = self.services.pop(op.key)
            self.order.remove(op.key)
            self.persist.drop_service(op.key)
            svc.dests.clear()
            svc.views = None
        elif isinstance(op, AddDest):
            svc = self.services[op.service]
            d = svc.trash.pop(op.key, None)
            if d is None:
                d = self.new_dest(svc, op.key, op.spec)
            else:
                self._edit(d, op.spec)
                d.down = False
            svc.dests.insert(0, d)
            svc.notify_scheduler()
        elif isinstance(op, EditDest):
            svc = self.services[op.service]
            d = svc.dest(op.key)
            assert d is not None
            self._edit(d, op.spec)
            d.down = False
            svc.notify_scheduler()
        else:
            svc = self.services[op.service]
            d = svc.dest(op.key)
            assert d is not None
            svc.dests.remove(d)
            if d.active or d.inactive:
                svc.trash[d.key] = d
            svc.notify_scheduler()

    def new_dest(self, svc: ServiceState, key: RealKey, spec: DestSpec) -> DestState:
        """Return a new destination of `svc` (a hook: worker replicas make ones with shared counters)."""
        return DestState(svc, key, spec)

    @staticmethod
    def _edit(d: DestState, spec: DestSpec) -> None:
        if spec.u_threshold == 0 or spec.u_threshold > d.spec.u_threshold:
            d.overloaded = False
        d.spec = spec
        d.weight = spec.weight
        d.view = None

    # --- connections ------------------------------------------------------------------------------

    def pick(self, svc: ServiceState, flow: Flow, now: float) -> DestState | None:
        """Schedule a new connection and bind it; None when no destination may take it."""
        sched = svc.scheduler
        if svc.spec.persistence_timeout_s:
            d = self._pick_persistent(svc, flow, now)
        elif sched.picks_live and svc.views is not None:  # `_schedule`'s live path, inlined
            d = sched.pick_live(svc.members, flow, now)
            if d is None or d.down:
                return None
            d.bind()
        else:
            d = self._schedule(svc, flow, now)
        if d is not None and svc.tracks_owner:
            self.owners.setdefault((svc.key, flow.client), []).append((d, flow.client_port))
        return d

    def pick_owner(self, svc: ServiceState, flow: Flow) -> DestState | None:
        """Bind a data connection to the server holding the client's control connection (same address).

        The newest open control connection from that address wins; with none open, the client's
        persistence template, if any. None: no server knows this client, the connection is refused.
        """
        held = self.owners.get((svc.key, flow.client))
        d: DestState | None = None
        if held:
            d = held[-1][0]
        elif svc.spec.persistence_timeout_s:
            t = self.persist.lookup(svc.key, svc.spec.netmask, flow.client, lambda _: True, lambda _: 1)
            d = t.dest if t is not None else None
        if d is not None:
            d.bind()
        return d

    def _disown(self, d: DestState, client: IPAddress | str, port: int) -> None:
        if isinstance(client, str):
            client = ip_address(client)
        key = (d.service.key, client)
        held = self.owners.get(key)
        if held:
            with contextlib.suppress(ValueError):
                held.remove((d, port))
            if not held:
                del self.owners[key]

    def _schedule(self, svc: ServiceState, flow: Flow, now: float) -> DestState | None:
        sched = svc.scheduler
        if sched.picks_live:
            # The scheduler reads only counters: give it the live destinations (the same list and
            # counters its views would show) and get the destination back; no view is made.
            if svc.views is None:
                svc.candidate_views()
            d = sched.pick_live(svc.members, flow, now)
            if d is None or d.down:
                return None
            d.bind()
            return d
        key = sched.pick(svc.candidate_views(), flow, now)
        if key is None:
            return None
        d = None
        # A scheduler returns the key of a view, the very object its destination holds: find it by
        # identity first (a dataclass == per destination costs more than the pick itself).
        for cand in svc.members:
            if cand.key is key:
                d = cand
                break
        else:
            for cand in svc.dests:
                if cand.key == key:
                    d = cand
                    break
        if d is None or d.down:
            return None
        d.bind()
        return d

    def _pick_persistent(self, svc: ServiceState, flow: Flow, now: float) -> DestState | None:
        """Kernel ip_vs_sched_persist: the client's template's destination, else schedule and make one."""
        spec = svc.spec
        t = self.persist.lookup(
            svc.key,
            spec.netmask,
            flow.client,
            lambda d: not d.down and svc.dest(d.key) is d,
            lambda d: d.spec.weight,
        )
        if t is not None:
            d = t.dest
            d.bind()
        else:
            found = self._schedule(svc, flow, now)
            if found is None:
                return None
            d = found
            t = self.persist.create(svc.key, spec.netmask, flow.client, d, spec.persistence_timeout_s, now)
        self.persist.use(t, now)
        self.controls.setdefault((d, flow.client, flow.client_port), []).append(t)
        return d

    def _release(self, d: DestState, client: IPAddress | str, port: int) -> None:
        """The connection (`d`, client, port) was freed: its template controls one fewer."""
        if not self.controls:
            return
        if isinstance(client, str):
            client = ip_address(client)
        key = (d, client, port)
        ts = self.controls.get(key)
        if ts:
            self.persist.release(ts.pop())
            if not ts:
                del self.controls[key]

    def connect_failed(self, d: DestState, *, mark_down: bool, flow: Flow | None = None) -> bool:
        """Unbind a connection whose connect failed; optionally mark `d` down. True if newly down."""
        if flow is not None:
            self._release(d, flow.client, flow.client_port)
            if d.service.tracks_owner:
                self._disown(d, flow.client, flow.client_port)
        d.drop_active()
        d.unbind_check()
        if not mark_down or d.down:
            self._collect(d)
            return False
        d.down = True
        svc = d.service
        if svc.dest(d.key) is d:
            svc.notify_scheduler()
        return True

    def closed_conn(self, d: DestState, now: float, client_host: str, client_port: int) -> None:
        """Move a finished relay from active to inactive for the FIN timeout."""
        d.to_inactive()
        if d.view is not None:  # `touch`, inlined: this runs for every connection
            d.view = None
            if d.vpos >= 0:
                d.service.dirty.append(d)
        if d.service.tracks_owner:
            self._disown(d, client_host, client_port)
        queue_closed(self.closed, (now + self.timeouts.tcpfin, d, client_host, client_port))

    def expire(self, now: float) -> float | None:
        """Drop inactive connections whose FIN timeout ran out; return the next deadline, if any."""
        closed = self.closed
        controls = self.controls
        while closed and closed[0][0] <= now:
            _, d, host, port = closed.popleft()
            d.drop_inactive()
            if d.overloaded:
                d.unbind_check()
            elif d.view is not None:  # not overloaded: `unbind_check` would only `touch`, inlined
                d.view = None
                if d.vpos >= 0:
                    d.service.dirty.append(d)
            if not d.inactive and not d.active:
                self._collect(d)
            if controls:
                self._release(d, host, port)
        nxt_t = self.persist.expire(now) if self.persist.live else None
        if now >= self.next_rate_sample:
            if self.next_rate_sample:
                for svc in self.services.values():
                    svc.traffic.sample(RATE_PERIOD_S)
                    for d in svc.dests:
                        d.traffic.sample(RATE_PERIOD_S)
            self.next_rate_sample = now + RATE_PERIOD_S
        head = closed[0][0] if closed else None
        nxt = self.next_rate_sample if head is None else min(head, self.next_rate_sample)
        return nxt if nxt_t is None else min(nxt, nxt_t)

    def set_timeouts(self, timeouts: Timeouts) -> None:
        """Change the timeouts; a new FIN timeout applies to connections that close from now on."""
        self.timeouts = timeouts

    @staticmethod
    def _collect(d: DestState) -> None:
        svc = d.service
        if not d.active and not d.inactive and svc.trash.get(d.key) is d:
            del svc.trash[d.key]

    # --- dump -------------------------------------------------------------------------------------

    def snapshot(self) -> IpvsTable:
        """Return the table with specs and counters (services in the order they were added)."""
        services = []
        for key in self.order:
            svc = self.services[key]
            if self.persist.live:
                held = Counter(id(t.dest) for t in self.persist.live)
                dests = tuple(
                    Dest(d.key, d.spec, replace(d.counters(), persistent=held[id(d)])) for d in svc.dests
                )
            else:
                dests = tuple(Dest(d.key, d.spec, d.counters()) for d in svc.dests)
            services.append(Service(key, svc.spec, dests, svc.traffic.stats()))
        return IpvsTable(services=tuple(services), timeouts=self.timeouts)

    def closed_entries(self, now: float) -> list[ConnEntry]:
        """Return the inactive connections as `ipvsadm -Lc` lists them (FIN_WAIT, time left)."""
        return fin_wait_entries(self.closed, now)

    def template_entries(self, now: float) -> list[ConnEntry]:
        """Return the persistence templates as `ipvsadm -Lc` lists them (state NONE, client port 0)."""
        out = []
        for t in self.persist:
            vaddr = t.service.addr
            assert vaddr is not None
            vport = t.service.port if t.valid else INVALID_PORT
            dkey = t.dest.key
            out.append(
                ConnEntry(
                    t.service.proto,
                    max(0, round(t.expires - now)),
                    "NONE",
                    RealKey(t.client, 0),
                    RealKey(vaddr, vport),
                    RealKey(dkey.addr, dkey.port if t.valid else INVALID_PORT),
                )
            )
        return out


def fin_wait_entries(closed: Iterable[ClosedConn], now: float) -> list[ConnEntry]:
    """Return inactive connections as `ipvsadm -Lc` lists them (FIN_WAIT, time left)."""
    out = []
    for expires, dest, host, port in closed:
        vkey = dest.service.key
        assert vkey.addr is not None
        out.append(
            ConnEntry(
                Proto.TCP,
                max(0, round(expires - now)),
                "FIN_WAIT",
                RealKey(ip_address(host), port),
                RealKey(vkey.addr, vkey.port),
                dest.key,
            )
        )
    return out


def _check_service(key: ServiceKey, spec: ServiceSpec) -> None:
    if key.fwmark or key.addr is None:
        raise ValueError("the proxy dataplane cannot serve firewall-mark services")
    if key.proto is not Proto.TCP:
        raise ValueError(f"the proxy dataplane relays TCP only, not {key.proto}")
    if not 0 < key.port < 65536:
        raise ValueError("the proxy dataplane needs a service port (1-65535)")
    create_scheduler(spec.scheduler, spec.flags)  # KeyError names the known schedulers


def _check_dest(spec: DestSpec) -> None:
    if spec.weight < 0:
        raise ValueError("weight must be >= 0")
    if spec.u_threshold < 0 or spec.l_threshold < 0:
        raise ValueError("thresholds must be >= 0")
    if spec.l_threshold > spec.u_threshold:  # the kernel refuses this with ERANGE
        raise ValueError("lower threshold is higher than upper threshold")


def apply_all(state: ProxyState, ops: Iterable[Op]) -> list[str]:
    """Apply `ops` in order; return one error string per op ('' on success). For tests and tools."""
    errors = []
    for op in ops:
        try:
            state.apply(op)
            errors.append("")
        except (KeyError, ValueError) as exc:
            errors.append(str(exc.args[0]) if exc.args else type(exc).__name__)
    return errors
