"""Pure bookkeeping of the `dr` dataplane: services and schedulers, flows, their TCP states, and the ruleset.

No sockets, no nft, no clock: the I/O side passes `now` and what it read from the kernel. Services,
destinations, schedulers, thresholds and the deleted-but-referenced trash are `ProxyState`'s (the same
kernel rules); this adds what direct routing needs:

* a flow is bound when its SYN is scheduled. The kernel counts a new connection active and its SYN
  at once moves it to SYN_RECV, which is inactive: so does this. The data path counts each flow's
  packets in its map element and notes a FIN or RST in the dynamic set `fin` (see dr_rules);
  a flow whose count moved was seen then. A flow in `fin` is FIN_WAIT (inactive), else one seen
  within the TCP timeout is ESTABLISHED (active); a SYN_RECV flow seen in neither for
  `SYN_TIMEOUT_S`, an ESTABLISHED one not seen for the TCP timeout and a FIN_WAIT one gone from
  `fin` expire; the states are the kernel's input-only (DR) ones, observed by polling rather than
  per packet (a retransmitted SYN that passes the map counts as seen);
* the kernel reads per poll follow the flows that can change, never all tracked ones: `due` names the
  open (SYN_RECV, ESTABLISHED) flows to read back, each poll while its count moves and every
  `IDLE_CHECK_S` while idle, and the closing flows whose FIN timeout has run out; only those
  go to `observe`. A closing flow costs nothing until its timeout runs out, an idle one little;
* a SYN for a closing flow is a new connection on a reused port: `reuse` schedules it anew, as
  IPVS does with `conn_reuse_mode` for a connection in TIME_WAIT or CLOSE;
* a flow keeps its destination's chain until it expires, whatever happens to the destination (edit,
  weight 0, delete): a deleted destination stays in the trash, chain included, while flows use it;
* a destination is scheduled only once its MAC is known (`set_link`); until then it is held out like
  a passively failed one.
"""

from __future__ import annotations

import enum
import heapq
import math
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, replace

from gridlb.dataplane.dr_rules import DestRule, FlowKey, Ruleset
from gridlb.dataplane.proxy_state import DestState, ProxyState, ServiceState
from gridlb.sched.base import Flow
from gridlb.table import (
    ConnEntry,
    DelService,
    Dest,
    IPAddress,
    IpvsTable,
    Op,
    Proto,
    RealKey,
    Service,
    ServiceKey,
    Timeouts,
)

#: How long a connection may stay in SYN_RECV (the kernel's IP_VS_TCP_S_SYN_RECV timeout).
SYN_TIMEOUT_S = 60.0
#: How often an open flow whose packet count did not move is read back (a FIN it carries shows
#: within this; one whose count moves is read at every poll).
IDLE_CHECK_S = 2.0


class TcpState(enum.Enum):
    """A flow's state as `ipvsadm -Lc` names it."""

    SYN_RECV = "SYN_RECV"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT = "FIN_WAIT"


@dataclass(frozen=True, slots=True)
class Link:
    """Where a real server is on the wire: the device facing it, that device's MAC, the server's MAC."""

    device: str
    director_mac: str
    real_mac: str


@dataclass(slots=True)
class FlowRec:
    """One scheduled connection."""

    key: FlowKey
    service: ServiceKey
    dest: DestState
    chain: str
    state: TcpState
    created: float
    expires: float
    held_until: float = 0.0  # learned from the peer director: kept until then without own packets
    synced: tuple[TcpState, float] | None = None  # (state, when) last sent to the peer
    count: int = 0  # its map element's packet count when last read
    seen: float = -math.inf  # when that count last moved
    check_at: float = 0.0  # an open flow: when to read it back next


class DrState:
    """Every service, flow and destination chain of one `dr` dataplane."""

    def __init__(self, timeouts: Timeouts | None = None) -> None:
        self.table = ProxyState(timeouts)
        self.flows: dict[FlowKey, FlowRec] = {}
        self.chains: dict[tuple[ServiceKey, RealKey], str] = {}
        self.links: dict[IPAddress, Link] = {}
        self.forwarding = False
        self.counters: dict[str, tuple[int, int]] = {}  # chain -> (packets, bytes)
        self.dropped_flows: list[FlowKey] = []  # flows to delete from the kernel map (service deleted)
        self.adopted = 0  # flows met mid-connection and bound by the Maglev table (`adopt`)
        self.reused = 0  # SYNs for closing flows scheduled as new connections (`reuse`)
        self._next_chain = 1
        self._open: dict[FlowKey, FlowRec] = {}  # SYN_RECV and ESTABLISHED flows
        self._closing: list[tuple[float, FlowKey]] = []  # heap of (expires, key) of FIN_WAIT flows
        self._checking: dict[FlowKey, FlowRec] = {}  # closing flows due, read back until `observe`
        self._refs: Counter[tuple[ServiceKey, RealKey]] = Counter()  # flows per destination chain
        self._unsent: dict[FlowKey, None] = {}  # flows whose state the peer has not been sent yet
        self._sent: deque[tuple[float, FlowKey]] = deque()  # (when, key) sent to the peer, oldest first

    # --- table ops --------------------------------------------------------------------------------

    def apply(self, op: Op) -> None:
        """Apply one op (ValueError/KeyError in ipvsadm's words when impossible)."""
        self.table.apply(op)
        if isinstance(op, DelService):
            for key, rec in list(self.flows.items()):
                if rec.service == op.key:
                    self._drop(key)
                    self.dropped_flows.append(key)
        for svc in self.table.services.values():
            for d in svc.dests:
                self._chain_of(svc.key, d.key)
        self._hold_unresolved()
        self._collect_chains()

    @property
    def timeouts(self) -> Timeouts:
        """Return the connection timeouts."""
        return self.table.timeouts

    def _chain_of(self, service: ServiceKey, real: RealKey) -> str:
        key = (service, real)
        chain = self.chains.get(key)
        if chain is None:
            chain = self.chains[key] = f"d{self._next_chain}"
            self._next_chain += 1
        return chain

    def _referenced(self) -> set[tuple[ServiceKey, RealKey]]:
        keys = {k for k, n in self._refs.items() if n > 0}
        for svc in self.table.services.values():
            keys.update((svc.key, d.key) for d in svc.dests)
            keys.update((svc.key, k) for k in svc.trash)
        return keys

    def _collect_chains(self) -> None:
        live = self._referenced()
        for key in [k for k in self.chains if k not in live]:
            del self.chains[key]

    def addresses(self) -> set[IPAddress]:
        """Return every real server address the table or a flow uses (to resolve their MACs)."""
        return {real.addr for _, real in self.chains}

    def set_link(self, addr: IPAddress, link: Link) -> bool:
        """Record where real server `addr` is; return True when that changed anything."""
        if self.links.get(addr) == link:
            return False
        self.links[addr] = link
        self._hold_unresolved()
        return True

    def _hold_unresolved(self) -> None:
        """Hold destinations without a known MAC out of scheduling; put resolved ones back."""
        for svc in self.table.services.values():
            changed = False
            for d in svc.dests:
                down = d.key.addr not in self.links
                if d.down != down:
                    d.down = down
                    changed = True
            if changed:
                svc.notify_scheduler()

    def set_forwarding(self, forwarding: bool) -> None:
        """Forward (MASTER, STANDALONE) or keep the state only (BACKUP, FAULT)."""
        self.forwarding = forwarding

    def ruleset(self) -> Ruleset:
        """Return the ruleset this state asks of the kernel (destination chains with known MACs)."""
        dests = []
        devices = set()
        for (_, real), chain in sorted(self.chains.items(), key=lambda kv: int(kv[1][1:])):
            link = self.links.get(real.addr)
            if link is None:
                continue
            devices.add(link.device)
            dests.append(DestRule(chain, real.addr.version, link.device, link.director_mac, link.real_mac))
        services = frozenset(
            (k.addr, k.port) for k in self.table.services if k.addr is not None and k.proto is Proto.TCP
        )
        mh = frozenset(
            (k.addr, k.port)
            for k, svc in self.table.services.items()
            if k.addr is not None and k.proto is Proto.TCP and svc.spec.scheduler == "mh"
        )
        return Ruleset(tuple(sorted(devices)), self.forwarding, services, tuple(dests), self.timeouts, mh)

    # --- flows ------------------------------------------------------------------------------------

    def service_of(self, key: FlowKey) -> ServiceState | None:
        """Return the service a flow is addressed to, or None."""
        return self.table.services.get(ServiceKey(Proto.TCP, key.vaddr, key.vport))

    def schedule(self, key: FlowKey, now: float) -> FlowRec | None:
        """Pick a destination for a new connection (its SYN) and bind it; None when none may take it."""
        known = self.flows.get(key)
        if known is not None:
            return known
        svc = self.service_of(key)
        if svc is None:
            return None
        d = self.table.pick(svc, Flow(key.client, key.client_port, key.vaddr, key.vport), now)
        if d is None or d.key.addr not in self.links:
            if d is not None:
                self._unbind(d, active=True)
            return None
        # ip_vs_bind_dest counts it active; its SYN moves it to SYN_RECV at once: inactive.
        d.active -= 1
        d.inactive += 1
        d.touch()
        chain = self._chain_of(svc.key, d.key)
        rec = FlowRec(key, svc.key, d, chain, TcpState.SYN_RECV, now, now + SYN_TIMEOUT_S)
        self._add(rec)
        return rec

    def reuse(self, key: FlowKey, now: float) -> FlowRec | None:
        """Schedule a SYN for a closing flow (FIN_WAIT) as a new connection; None when not closing.

        A client that reuses its port within the FIN timeout (`tcp_tw_reuse`) opens a new
        connection on the same four numbers. IPVS (`conn_reuse_mode`) expires the old connection
        and schedules the SYN: so does this. The caller replaces the map element and clears the
        flow from the FIN set. Returns the new record, or None when the old one was not closing or
        no destination may take the new one (then the old one is gone as well).
        """
        rec = self.flows.get(key)
        if rec is None or rec.state is not TcpState.FIN_WAIT:
            return None
        self._drop(key)
        self._unbind(rec.dest, active=False)
        self.reused += 1
        new = self.schedule(key, now)
        if new is None:
            self._collect_chains()
        return new

    def close_now(self, key: FlowKey, now: float) -> bool:
        """Mark an open flow FIN_WAIT at once (its FIN was found outside a poll); True when it was open."""
        rec = self._open.get(key)
        if rec is None:
            return False
        self._set_state(rec, TcpState.FIN_WAIT, now + self.timeouts.tcpfin)
        return True

    def adopt(self, key: FlowKey, now: float) -> FlowRec | None:
        """Bind a flow met mid-connection (a packet without SYN that no entry matches) by the `mh` table.

        Such a flow moved here from another director (ECMP after a director left). Every director
        builds the same Maglev table, so the pick is the real server the flow already has (as
        Maglev and Katran do). Only `mh` services adopt; None for others, or when none may take it.
        The flow is bound ESTABLISHED and held for `SYN_TIMEOUT_S` until its packets show in the
        state sets: a stray packet holds an entry no longer, and a flow that expires idle is adopted
        again, by the same table, when it next sends.
        """
        svc = self.service_of(key)
        if key in self.flows or svc is None or svc.spec.scheduler != "mh":
            return None
        d = self.table.pick(svc, Flow(key.client, key.client_port, key.vaddr, key.vport), now)
        if d is None or d.key.addr not in self.links:
            if d is not None:
                self._unbind(d, active=True)
            return None
        d.touch()  # ip_vs_bind_dest counted it active, as an established flow is
        chain = self._chain_of(svc.key, d.key)
        hold = now + SYN_TIMEOUT_S
        rec = FlowRec(key, svc.key, d, chain, TcpState.ESTABLISHED, now, hold, held_until=hold)
        self._add(rec)
        self.adopted += 1
        return rec

    def forget(self, key: FlowKey) -> None:
        """Unbind a flow that never made it into the kernel map."""
        rec = self._drop(key)
        if rec is not None:
            self._unbind(rec.dest, active=rec.state is TcpState.ESTABLISHED)
            self._collect_chains()

    def _add(self, rec: FlowRec) -> None:
        self.flows[rec.key] = rec
        self._unsent[rec.key] = None
        self._refs[(rec.service, rec.dest.key)] += 1
        if rec.state is TcpState.FIN_WAIT:
            heapq.heappush(self._closing, (rec.expires, rec.key))
        else:
            self._open[rec.key] = rec

    def _drop(self, key: FlowKey) -> FlowRec | None:
        rec = self.flows.pop(key, None)
        if rec is not None:
            self._open.pop(key, None)
            self._checking.pop(key, None)
            self._unsent.pop(key, None)
            ref = (rec.service, rec.dest.key)
            self._refs[ref] -= 1
            if self._refs[ref] <= 0:
                del self._refs[ref]
        return rec

    def _set_state(self, rec: FlowRec, new: TcpState, expires: float) -> None:
        """Move a flow to `new` (counts as the kernel keeps them) expiring at `expires`."""
        if new is not rec.state:
            d = rec.dest
            was_active = rec.state is TcpState.ESTABLISHED
            is_active = new is TcpState.ESTABLISHED
            if was_active != is_active:
                d.active += 1 if is_active else -1
                d.inactive += -1 if is_active else 1
                if is_active:
                    d.touch()
                else:
                    d.unbind_check()
            if new is TcpState.FIN_WAIT:
                self._open.pop(rec.key, None)
            elif rec.state is TcpState.FIN_WAIT:
                self._open[rec.key] = rec
            rec.state = new
            self._unsent[rec.key] = None
        changed = rec.expires != expires
        rec.expires = expires
        if new is TcpState.FIN_WAIT and changed:
            heapq.heappush(self._closing, (expires, rec.key))

    def _unbind(self, d: DestState, *, active: bool) -> None:
        if active:
            d.active -= 1
        else:
            d.inactive -= 1
        d.unbind_check()
        svc = d.service
        if not d.active and not d.inactive and svc.trash.get(d.key) is d:
            del svc.trash[d.key]

    def due(self, now: float) -> tuple[list[FlowRec], list[FlowRec]]:
        """Return the flows to read back now: open ones due a check, and closing ones whose FIN
        timeout ran out (read their FIN-set element: a later FIN may have renewed it).

        The closing ones stay due until `observe` takes them.
        """
        opened = [rec for rec in self._open.values() if rec.check_at <= now]
        heap = self._closing
        while heap and heap[0][0] <= now:
            expires, key = heapq.heappop(heap)
            rec = self.flows.get(key)
            if rec is not None and rec.state is TcpState.FIN_WAIT and rec.expires == expires:
                self._checking[key] = rec
        return opened, list(self._checking.values())

    def moved(self, counts: Mapping[FlowKey, int]) -> list[FlowKey]:
        """Return the open flows whose packet count differs from the last one read (their FIN-set
        elements are to be read too: a FIN or RST moves the count)."""
        out = []
        for key, count in counts.items():
            rec = self._open.get(key)
            if rec is not None and count != rec.count:
                out.append(key)
        return out

    def observe(
        self, now: float, counts: Mapping[FlowKey, int], fin: Mapping[FlowKey, float]
    ) -> list[FlowKey]:
        """Move flows along what the data path shows; return the expired ones.

        `counts`: the packet counts of the open flows read back (from `due`); `fin`: seconds left of
        the FIN-set elements found, of moved open flows and of the closing flows due. A count that
        differs from the last one (more packets, or a reset when the element was added again)
        means packets passed since.
        """
        expired: list[FlowKey] = []
        tcp = self.timeouts.tcp
        for key, count in counts.items():
            rec = self._open.get(key)
            if rec is None:
                continue
            moved = count != rec.count
            if moved:
                rec.count = count
                rec.seen = now
            left = fin.get(key)
            if left is not None and left > 0:
                self._set_state(rec, TcpState.FIN_WAIT, now + left)
            elif now - rec.seen < tcp:
                self._set_state(rec, TcpState.ESTABLISHED, rec.seen + tcp)
                rec.check_at = now if moved else now + IDLE_CHECK_S
            elif rec.state is TcpState.SYN_RECV and now < rec.created + SYN_TIMEOUT_S:
                rec.check_at = now
            elif now < rec.held_until:
                rec.check_at = now + IDLE_CHECK_S  # learned from the peer: its packets have not come yet
            else:
                expired.append(key)
        for key, rec in list(self._checking.items()):
            del self._checking[key]
            if self.flows.get(key) is not rec or rec.state is not TcpState.FIN_WAIT:
                continue
            left = fin.get(key)
            if left is not None and left > 0:
                self._set_state(rec, TcpState.FIN_WAIT, now + left)
            elif now < rec.held_until:
                self._set_state(rec, TcpState.FIN_WAIT, rec.held_until)
            else:
                expired.append(key)
        for key in expired:
            gone = self._drop(key)
            if gone is not None:
                self._unbind(gone.dest, active=gone.state is TcpState.ESTABLISHED)
        if expired:
            self._collect_chains()
        return expired

    def learn(
        self, key: FlowKey, real: RealKey, state: TcpState, timeout_s: float, now: float
    ) -> FlowRec | None:
        """Adopt a flow the peer director reported (connection sync), bound as IPVS binds it.

        Returns the new record when the kernel map needs it (a new flow, or one that moved to
        another destination), else None. A flow for an unknown service or destination is ignored.
        """
        svc = self.service_of(key)
        if svc is None:
            return None
        d = svc.dest(real) or svc.trash.get(real)
        if d is None or d.key.addr not in self.links:
            return None
        rec = self.flows.get(key)
        if rec is not None and rec.dest is not d:
            self._drop(key)
            self._unbind(rec.dest, active=rec.state is TcpState.ESTABLISHED)
            rec = None
        if rec is None:
            if state is TcpState.ESTABLISHED:
                d.active += 1
            else:
                d.inactive += 1
            d.traffic.conns += 1
            svc.traffic.conns += 1
            d.touch()
            chain = self._chain_of(svc.key, d.key)
            rec = FlowRec(key, svc.key, d, chain, state, now, now + timeout_s, held_until=now + timeout_s)
            self._add(rec)
            return rec
        rec.held_until = now + timeout_s
        self._set_state(rec, state, now + timeout_s)
        return None

    def to_sync(self, now: float, refresh_s: float) -> list[FlowRec]:
        """Return the flows to send to the peer: state changed since last sent, or not sent for `refresh_s`.

        SYN_RECV flows are not sent (the kernel syncs established and closing states only). The
        work follows the flows that changed and those due again, never every tracked flow.
        """
        out: dict[FlowKey, FlowRec] = {}
        for key in self._unsent:  # a SYN_RECV flow is marked again when it moves on
            rec = self.flows[key]
            last = rec.synced
            if rec.state is not TcpState.SYN_RECV and (last is None or last[0] is not rec.state):
                out[key] = rec
        self._unsent = {}
        sent = self._sent
        while sent and now - sent[0][0] >= refresh_s:
            when, key = sent.popleft()
            got = self.flows.get(key)
            if got is not None and got.synced is not None and got.synced[1] == when:
                out[key] = got
        for rec in out.values():
            rec.synced = (rec.state, now)
            sent.append((now, rec.key))
        return list(out.values())

    # --- reports ----------------------------------------------------------------------------------

    def snapshot(self) -> IpvsTable:
        """Return the table with packet and byte counters from the destination chains' counters."""
        table = self.table.snapshot()
        services = []
        for svc in table.services:
            dests = []
            pkts_total = bytes_total = 0
            for d in svc.dests:
                chain = self.chains.get((svc.key, d.key))
                pkts, nbytes = self.counters.get(chain, (0, 0)) if chain else (0, 0)
                pkts_total += pkts
                bytes_total += nbytes
                stats = replace(d.counters.stats, inpkts=pkts, inbytes=nbytes)
                dests.append(Dest(d.key, d.spec, replace(d.counters, stats=stats)))
            stats = replace(svc.stats, inpkts=pkts_total, inbytes=bytes_total)
            services.append(Service(svc.key, svc.spec, tuple(dests), stats))
        return replace(table, services=tuple(services))

    def connections(self, now: float) -> list[ConnEntry]:
        """Return the connection list (`ipvsadm -Lc`), established first."""
        out = []
        for rec in self.flows.values():
            k = rec.key
            out.append(
                ConnEntry(
                    proto=Proto.TCP,
                    expire_s=max(0, round(rec.expires - now)),
                    state=rec.state.value,
                    client=RealKey(k.client, k.client_port),
                    virtual=RealKey(k.vaddr, k.vport),
                    dest=rec.dest.key,
                    age_s=round(now - rec.created, 3),
                )
            )
        out.sort(key=lambda c: (c.state != TcpState.ESTABLISHED.value, str(c.client)))
        return out

    def rate_tick(self, now: float) -> None:
        """Fold traffic into the rate estimators (every `RATE_PERIOD_S`)."""
        for svc in self.table.services.values():
            for d in svc.dests:
                chain = self.chains.get((svc.key, d.key))
                if chain in self.counters:
                    d.traffic.inbytes = self.counters[chain][1]
        self.table.expire(now)


__all__ = ["IDLE_CHECK_S", "SYN_TIMEOUT_S", "DrState", "FlowRec", "Link", "TcpState"]
