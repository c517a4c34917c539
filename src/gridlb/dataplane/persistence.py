"""IPVS persistent-connection templates for a userspace dataplane: one per client network, time passed in.

The rules are the kernel's (net/netfilter/ipvs/ip_vs_core.c `ip_vs_sched_persist`,
ip_vs_conn.c `ip_vs_check_template` / `ip_vs_conn_expire`):

* a persistent service keeps one template per (service, client address masked by
  `persistence_granularity`); a new connection reuses the template's real server while the template
  is valid, else the scheduler picks one and a new template is made;
* every use re-arms the template to its timeout (the service's `persistence_timeout` when the template
  was made); when the timer runs out while connections it controls are still alive, it is re-armed
  for 60 s (the kernel's `expire_later`), else the template is freed;
* a template is invalid when its real server is no longer available: deleted from the service, or
  (in the proxy) passively failed. An invalid template is unhashed (never used again) and lingers in
  the listing, ports 65535, until its timer ends. A drained (weight 0) server's templates stay valid
  and keep being used: the kernel's `expire_quiescent_template` defaults to 0, and so does this
  module's `expire_quiescent`;
* templates count in the real server's `PersistConn` column, never in active or inactive.

Generic over the destination type: the caller says which destinations are usable.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_network
from typing import Generic, TypeVar

from gridlb.table import IPAddress, ServiceKey

D = TypeVar("D")

#: How long the kernel keeps a template whose timer ran out while it still controls connections.
EXPIRE_LATER_S = 60.0
#: The port an invalidated template is rehashed with (kernel: 0xffff), never matched by a lookup.
INVALID_PORT = 0xFFFF


def client_net(client: IPAddress, netmask: str) -> IPAddress:
    """Return `client` masked by `netmask` ("" = the host; IPv4 dotted mask; IPv6 prefix length)."""
    if not netmask:
        return client
    if isinstance(client, IPv6Address):
        return ip_network(f"{client}/{int(netmask)}", strict=False).network_address
    mask = int(IPv4Address(netmask))
    return IPv4Address(int(client) & mask)


@dataclass(eq=False, slots=True)
class Template(Generic[D]):
    """One persistence template: a client network bound to one destination until it expires."""

    service: ServiceKey
    client: IPAddress  # masked
    dest: D
    timeout_s: float
    expires: float
    n_control: int = 0  # connections made through this template and not freed yet
    valid: bool = True


@dataclass(slots=True)
class PersistenceTable(Generic[D]):
    """Every persistence template of one dataplane, with their expiry timers."""

    expire_quiescent: bool = False  # kernel sysctl expire_quiescent_template (default 0)
    by_key: dict[tuple[ServiceKey, IPAddress], Template[D]] = field(default_factory=dict)
    live: set[Template[D]] = field(default_factory=set)  # valid and invalidated, until freed
    _timers: list[tuple[float, int, Template[D]]] = field(default_factory=list)
    _seq: int = 0

    def lookup(
        self,
        service: ServiceKey,
        netmask: str,
        client: IPAddress,
        available: Callable[[D], bool],
        weight: Callable[[D], int],
    ) -> Template[D] | None:
        """Return the valid template for `client` on `service`; invalidate it when its dest is gone."""
        t = self.by_key.get((service, client_net(client, netmask)))
        if t is None:
            return None
        if available(t.dest) and not (self.expire_quiescent and weight(t.dest) == 0):
            return t
        self.invalidate(t)
        return None

    def create(
        self, service: ServiceKey, netmask: str, client: IPAddress, dest: D, timeout_s: float, now: float
    ) -> Template[D]:
        """Make the template binding `client`'s network to `dest` (after the scheduler picked it)."""
        net = client_net(client, netmask)
        old = self.by_key.get((service, net))
        if old is not None:
            self.invalidate(old)
        t = Template(service, net, dest, float(timeout_s), now + timeout_s)
        self.by_key[(service, net)] = t
        self.live.add(t)
        self._arm(t)
        return t

    def use(self, t: Template[D], now: float) -> None:
        """A connection was made through `t`: it controls one more, and its timer restarts."""
        t.n_control += 1
        t.expires = now + t.timeout_s
        self._arm(t)

    def release(self, t: Template[D]) -> None:
        """A connection made through `t` was freed."""
        t.n_control -= 1

    def invalidate(self, t: Template[D]) -> None:
        """Unhash `t`: no lookup finds it again; it is listed until its timer ends."""
        if t.valid:
            t.valid = False
            if self.by_key.get((t.service, t.client)) is t:
                del self.by_key[(t.service, t.client)]

    def drop_service(self, service: ServiceKey) -> None:
        """Invalidate every template of a deleted service."""
        for t in [t for t in self.by_key.values() if t.service == service]:
            self.invalidate(t)

    def expire(self, now: float) -> float | None:
        """Free templates whose timer ran out (re-arm those still controlling); return the next deadline."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, t = heapq.heappop(timers)
            if t not in self.live or t.expires > now:
                continue  # freed already, or re-armed (a later timer entry exists)
            if t.n_control > 0:
                t.timeout_s = EXPIRE_LATER_S
                t.expires = now + EXPIRE_LATER_S
                self._arm(t)
                continue
            self.invalidate(t)
            self.live.discard(t)
        return timers[0][0] if timers else None

    def count(self, dest: D) -> int:
        """Return how many live templates are bound to `dest` (the `PersistConn` column)."""
        return sum(1 for t in self.live if t.dest is dest)

    def __iter__(self) -> Iterator[Template[D]]:
        return iter(sorted(self.live, key=lambda t: t.expires))

    def _arm(self, t: Template[D]) -> None:
        self._seq += 1
        heapq.heappush(self._timers, (t.expires, self._seq, t))
        if len(self._timers) > 4 * len(self.live) + 64:  # re-arms leave stale entries: compact
            fresh = []
            for x in self.live:
                self._seq += 1
                fresh.append((x.expires, self._seq, x))
            heapq.heapify(fresh)
            self._timers = fresh


__all__ = ["EXPIRE_LATER_S", "INVALID_PORT", "PersistenceTable", "Template", "client_net"]
