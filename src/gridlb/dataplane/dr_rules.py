"""The `dr` dataplane's nftables ruleset as a value, and the one nft transaction that turns one into another.

Pure: no nft, no sockets. The kernel side is one `netdev` table (`TABLE`):

* an ingress base chain per device facing real servers; while the director forwards (MASTER or
  STANDALONE) it looks every frame addressed to this host up in the verdict map `flows4`/`flows6`
  (client . port . VIP . port), which jumps to the flow's destination chain. Each element has a
  counter that the lookup itself bumps: the director reads it to see which flows carry packets
  (ESTABLISHED, as the kernel's TCP timeout counts), so a packet of an established connection costs
  one map lookup and no set update. A SYN (without ACK) of a flow in the FIN set is dropped: the
  director reads it off its packet socket and schedules it as a new connection (a reused port).
  A packet without SYN for an `mh` service (`mh4`/`mh6`) that
  is not in the map goes to `MIDFLOW_DEVICE` (at most `MIDFLOW_RATE` a second) for the director to
  adopt its flow. Any other frame
  for a service (`svc4`/`svc6`: VIP . port) that is not in the map is dropped, so the director's
  own TCP stack never answers for a VIP (a new connection's SYN was already read by the director
  off a packet socket, which sees frames before the ingress hook, and is forwarded by it once
  scheduled). Without forwarding (BACKUP) the chain is empty:
  the flows are kept but nothing is forwarded;
* one chain and one named counter per destination: a FIN or RST notes the flow in the dynamic set
  `fin4/6` (timeout = the FIN timeout); then count, rewrite the MACs and `fwd` out of the device in
  one rule.

`transaction(old, new)` returns one script that the kernel applies atomically; flow elements are
added and deleted in the same script when given.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from gridlb.table import IPAddress, Timeouts

TABLE = "gridlb_dr"
FAMILY = "netdev"
#: Size of the dynamic FIN set (per family): the most closing connections the data path tracks.
MAX_FLOWS = 1 << 20
#: Where a packet without SYN of a flow the map does not know goes, for a service scheduled by `mh`
#: (a flow that moved here from another director): the director reads it off this device and
#: forwards it by the same Maglev table. On `lo` nothing else takes it (not addressed to lo's MAC).
MIDFLOW_DEVICE = "lo"
#: At most this many such packets a second go to the director (per family); the rest are dropped as
#: any unknown frame is, so a flood of stray ACKs cannot occupy the director's Python loop.
MIDFLOW_RATE = 20000


@dataclass(frozen=True, slots=True, order=True)
class FlowKey:
    """A connection as the data path keys it: client address and port, virtual address and port."""

    client: IPAddress
    client_port: int
    vaddr: IPAddress
    vport: int

    @property
    def af(self) -> int:
        """Return 4 or 6."""
        return self.vaddr.version

    def element(self) -> str:
        """Return the key as nft writes a concatenation element."""
        return f"{self.client} . {self.client_port} . {self.vaddr} . {self.vport}"


def encode_key(key: FlowKey) -> bytes:
    """Return a flow as the kernel stores the concatenation key (each field padded to 4 bytes)."""
    pad = b"\0\0"
    return (
        key.client.packed
        + key.client_port.to_bytes(2, "big")
        + pad
        + key.vaddr.packed
        + key.vport.to_bytes(2, "big")
        + pad
    )


def decode_key(data: bytes) -> FlowKey | None:
    """Return the flow of a set key as the kernel stores a concatenation (each field padded to 4 bytes)."""
    if len(data) == 16:
        c, cp, v, vp = IPv4Address(data[0:4]), data[4:6], IPv4Address(data[8:12]), data[12:14]
        return FlowKey(c, int.from_bytes(cp, "big"), v, int.from_bytes(vp, "big"))
    if len(data) == 40:
        c6, v6 = IPv6Address(data[0:16]), IPv6Address(data[20:36])
        return FlowKey(c6, int.from_bytes(data[16:18], "big"), v6, int.from_bytes(data[36:38], "big"))
    return None


@dataclass(frozen=True, slots=True)
class DestRule:
    """One destination's chain: where its frames go (device and MACs) and under which name."""

    chain: str
    af: int
    device: str
    director_mac: str
    real_mac: str


@dataclass(frozen=True, slots=True)
class Ruleset:
    """Everything the table holds except flows and the FIN sets' contents."""

    devices: tuple[str, ...] = ()
    forwarding: bool = False
    services: frozenset[tuple[IPAddress, int]] = frozenset()
    dests: tuple[DestRule, ...] = ()
    timeouts: Timeouts = field(default_factory=Timeouts)
    mh_services: frozenset[tuple[IPAddress, int]] = frozenset()  # scheduled by `mh`: see MIDFLOW_DEVICE


def _ip(af: int) -> str:
    return "ip" if af == 4 else "ip6"


def _key_expr(af: int) -> str:
    ip = _ip(af)
    return f"{ip} saddr . tcp sport . {ip} daddr . tcp dport"


def _key_type(af: int) -> str:
    addr = "ipv4_addr" if af == 4 else "ipv6_addr"
    return f"{addr} . inet_service . {addr} . inet_service"


def ingress_chain(device: str) -> str:
    """Return the name of the ingress base chain of `device`."""
    return "in_" + "".join(c if c.isalnum() else "_" for c in device)


def _quote(name: str) -> str:
    if not name or any(c in name for c in '"\\\n'):
        raise ValueError(f"unusable interface name {name!r}")
    return f'"{name}"'


def _skeleton(timeouts: Timeouts) -> list[str]:
    """The table, its maps and sets."""
    out = [f"add table {FAMILY} {TABLE}"]
    for af in (4, 6):
        addr = "ipv4_addr" if af == 4 else "ipv6_addr"
        t = f"{FAMILY} {TABLE}"
        out.append(f"add set {t} svc{af} {{ type {addr} . inet_service; }}")
        out.append(f"add set {t} mh{af} {{ type {addr} . inet_service; }}")
        out.append(f"add map {t} flows{af} {{ type {_key_type(af)} : verdict; counter; }}")
        out.append(
            f"add set {t} fin{af} {{ type {_key_type(af)}; flags dynamic, timeout; "
            f"timeout {timeouts.tcpfin}s; size {MAX_FLOWS}; }}"
        )
    return out


def _dest_rules(d: DestRule, timeouts: Timeouts) -> list[str]:
    t = f"{FAMILY} {TABLE}"
    key = _key_expr(d.af)
    fin = f"update @fin{d.af} {{ {key} timeout {timeouts.tcpfin}s }}"
    return [
        f"add rule {t} {d.chain} tcp flags & (fin | rst) != 0 {fin}",
        f'add rule {t} {d.chain} counter name "{d.chain}" ether saddr set {d.director_mac} '
        f"ether daddr set {d.real_mac} fwd to {_quote(d.device)}",
    ]


def _ingress_rules(device: str, forwarding: bool) -> list[str]:
    if not forwarding:
        return []
    t = f"{FAMILY} {TABLE}"
    chain = ingress_chain(device)
    out = []
    for af in (4, 6):
        ip = _ip(af)
        # a SYN on the four numbers of a closing flow is a new connection: the director schedules it
        syn = "tcp flags & (syn | ack) == syn"
        out.append(f"add rule {t} {chain} meta pkttype host {syn} {_key_expr(af)} @fin{af} drop")
        out.append(f"add rule {t} {chain} meta pkttype host {_key_expr(af)} vmap @flows{af}")
        out.append(
            f"add rule {t} {chain} meta pkttype host {ip} daddr . tcp dport @mh{af} tcp flags & syn == 0 "
            f"limit rate {MIDFLOW_RATE}/second fwd to {_quote(MIDFLOW_DEVICE)}"
        )
        out.append(f"add rule {t} {chain} meta pkttype host {ip} daddr . tcp dport @svc{af} drop")
    return out


def _services(services: Iterable[tuple[IPAddress, int]], name: str = "svc") -> list[str]:
    out = []
    t = f"{FAMILY} {TABLE}"
    services = list(services)
    for af in (4, 6):
        out.append(f"flush set {t} {name}{af}")
        elems = sorted(f"{a} . {p}" for a, p in services if (4 if isinstance(a, IPv4Address) else 6) == af)
        if elems:
            out.append(f"add element {t} {name}{af} {{ {', '.join(elems)} }}")
    return out


def transaction(
    old: Ruleset | None,
    new: Ruleset,
    *,
    add_flows: Sequence[tuple[FlowKey, str]] = (),
    del_flows: Sequence[FlowKey] = (),
    clear_fin: Sequence[FlowKey] = (),
) -> str:
    """Return one nft script turning `old` (None = a fresh start) into `new`, with flow changes.

    A fresh start deletes any table of the same name first (a director restarting takes over).
    Flow elements are deleted before chains go, and added after new chains exist; a destination
    chain is only dropped from a ruleset once no flow references it (the caller's bookkeeping).
    `clear_fin` takes flows out of the FIN sets (a port reused: the new connection is not closing);
    each is added first, so the delete finds it even when its timeout has just run out.
    """
    t = f"{FAMILY} {TABLE}"
    out: list[str] = []
    if old is None:
        out += [f"add table {t}", f"delete table {t}"]
        out += _skeleton(new.timeouts)
        old = Ruleset(timeouts=new.timeouts)
    # A timeout change re-renders the destination chains: each per-packet `update` carries its timeout.
    for key in del_flows:
        out.append(f"delete element {t} flows{key.af} {{ {key.element()} }}")
    for key in clear_fin:
        out.append(f"add element {t} fin{key.af} {{ {key.element()} timeout 1s }}")
        out.append(f"delete element {t} fin{key.af} {{ {key.element()} }}")
    old_dests = {d.chain: d for d in old.dests}
    new_dests = {d.chain: d for d in new.dests}
    for name, d in new_dests.items():
        if name not in old_dests:
            out.append(f"add counter {t} {name}")
            out.append(f"add chain {t} {name}")
            out += _dest_rules(d, new.timeouts)
        elif old_dests[name] != d or old.timeouts != new.timeouts:
            out.append(f"flush chain {t} {name}")
            out += _dest_rules(d, new.timeouts)
    if old.services != new.services or not old.devices:
        out += _services(new.services)
    if old.mh_services != new.mh_services or not old.devices:
        out += _services(new.mh_services, "mh")
    for device in new.devices:
        chain = ingress_chain(device)
        if device not in old.devices:
            out.append(
                f"add chain {t} {chain} {{ type filter hook ingress device {_quote(device)} priority 0; "
                "policy accept; }"
            )
            out += _ingress_rules(device, new.forwarding)
        elif old.forwarding != new.forwarding:
            out.append(f"flush chain {t} {chain}")
            out += _ingress_rules(device, new.forwarding)
    for device in old.devices:
        if device not in new.devices:
            out.append(f"delete chain {t} {ingress_chain(device)}")
    for key, chain in add_flows:
        out.append(f"add element {t} flows{key.af} {{ {key.element()} : goto {chain} }}")
    for name in old_dests:
        if name not in new_dests:
            out.append(f"delete chain {t} {name}")
            out.append(f"delete counter {t} {name}")
    return "\n".join(out) + ("\n" if out else "")


def teardown() -> str:
    """Return the script that removes the whole table (forwarding stops at once)."""
    return f"add table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n"


__all__ = [
    "FAMILY",
    "MIDFLOW_DEVICE",
    "TABLE",
    "DestRule",
    "FlowKey",
    "Ruleset",
    "decode_key",
    "encode_key",
    "ingress_chain",
    "teardown",
    "transaction",
]
