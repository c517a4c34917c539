"""What a direct-routing real server must have, compared with what it has: desired items, diff, removal.

A real server behind a DR director accepts packets sent to the VIP, so the VIP must be a local
address, and it must never answer ARP for it (only the director may). gridlb puts each VIP on `lo`
(IPv4 /32, IPv6 /128; Linux answers neighbour solicitations only for addresses of the receiving
interface, so an IPv6 VIP on `lo` needs nothing more) and solves the ARP problem one of three ways:

- `sysctl`: `net.ipv4.conf.all.arp_ignore=1` (answer only for addresses of the receiving interface)
  and `arp_announce=2` (never use the VIP as an ARP source); the kernel uses the larger of `all` and
  the interface's value, so `all` covers every interface;
- `arptables`: the seed's rules, `-A INPUT -d VIP -j DROP` and `-A OUTPUT -s VIP -j mangle
  --mangle-ip-s RIP`;
- `nft`: an nftables `arp` table dropping requests for the VIPs, plus `arp_announce=2`.

Everything here is pure: `desired_items` and `diff` take values and return values; `host.py` observes
and applies. A VIP found on any other interface is wrong (it would answer ARP) and is removed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Any

IPAddress = IPv4Address | IPv6Address

NFT_TABLE = "gridlb_realserver"
UNIT_NAME = "gridlb-realserver.service"
ARP_IGNORE = "net.ipv4.conf.all.arp_ignore"
ARP_ANNOUNCE = "net.ipv4.conf.all.arp_announce"
#: The kernel's defaults, which `remove` restores.
SYSCTL_DEFAULTS = {ARP_IGNORE: "0", ARP_ANNOUNCE: "0"}


class Method(enum.Enum):
    """How ARP for the VIPs is suppressed."""

    SYSCTL = "sysctl"
    ARPTABLES = "arptables"
    NFT = "nft"


# ------------------------------------------------------------------------------------------ items


@dataclass(frozen=True, slots=True)
class LoAddress:
    """The VIP as a host address on `lo`."""

    address: IPAddress

    @property
    def prefixlen(self) -> int:
        return 32 if self.address.version == 4 else 128

    def __str__(self) -> str:
        return f"VIP {self.address}/{self.prefixlen} on lo"


@dataclass(frozen=True, slots=True)
class ForeignAddress:
    """A VIP on an interface other than `lo` (it would answer ARP / neighbour solicitations)."""

    address: IPAddress
    prefixlen: int
    ifname: str

    def __str__(self) -> str:
        return f"VIP {self.address}/{self.prefixlen} on {self.ifname}"


@dataclass(frozen=True, slots=True)
class Sysctl:
    """One sysctl and the value it must have."""

    key: str
    value: str

    def __str__(self) -> str:
        return f"sysctl {self.key}={self.value}"


@dataclass(frozen=True, slots=True)
class ArpRule:
    """One arptables rule of the seed's pair: INPUT drops requests for the VIP, OUTPUT mangles its source."""

    chain: str
    vip: IPv4Address
    rip: IPv4Address | None = None

    def args(self) -> list[str]:
        """The rule as arptables-save prints it after `-A CHAIN`."""
        if self.chain == "INPUT":
            return ["-j", "DROP", "-d", str(self.vip)]
        return ["-j", "mangle", "-s", str(self.vip), "--mangle-ip-s", str(self.rip)]

    def save_line(self) -> str:
        return " ".join(["-A", self.chain, *self.args()])

    def __str__(self) -> str:
        return f"arptables {self.save_line()}"


@dataclass(frozen=True, slots=True)
class NftArpTable:
    """The nftables `arp` table that drops ARP requests for the VIPs."""

    vips: tuple[IPv4Address, ...]

    def text(self) -> str:
        """The table as `nft -f` takes it."""
        rules = "".join(f"\t\tarp operation request arp daddr ip {v} drop\n" for v in self.vips)
        return (
            f"table arp {NFT_TABLE} {{\n\tchain input {{\n"
            f"\t\ttype filter hook input priority 0; policy accept;\n{rules}\t}}\n}}\n"
        )

    def __str__(self) -> str:
        return f"nft table arp {NFT_TABLE} dropping ARP requests for {', '.join(map(str, self.vips))}"


@dataclass(frozen=True, slots=True)
class UnitFile:
    """A file with exact content (the systemd unit)."""

    path: str
    content: str

    def __str__(self) -> str:
        return f"systemd unit {self.path}"


@dataclass(frozen=True, slots=True)
class UnitLink:
    """A symlink (the unit enabled in multi-user.target.wants)."""

    path: str
    target: str

    def __str__(self) -> str:
        return f"symlink {self.path} -> {self.target}"


Item = LoAddress | ForeignAddress | Sysctl | ArpRule | NftArpTable | UnitFile | UnitLink


# ------------------------------------------------------------------------------------------ targets


@dataclass(frozen=True, slots=True)
class Service:
    """A DR service this host serves: the VIP, the port, and this host's address in it."""

    vip: IPAddress
    port: int
    rip: IPAddress


@dataclass(frozen=True, slots=True)
class Targets:
    """The DR services of the site that list one of this host's addresses."""

    services: tuple[Service, ...]

    @property
    def vips(self) -> tuple[IPAddress, ...]:
        return tuple(dict.fromkeys(s.vip for s in self.services))

    def rip_for(self, vip: IPAddress) -> IPAddress:
        return next(s.rip for s in self.services if s.vip == vip)


@dataclass(frozen=True, slots=True)
class Persist:
    """Where the unit goes and what it runs."""

    unit_dir: str
    content: str

    @property
    def unit_path(self) -> str:
        return f"{self.unit_dir}/{UNIT_NAME}"

    @property
    def link_path(self) -> str:
        return f"{self.unit_dir}/multi-user.target.wants/{UNIT_NAME}"


def unit_text(command: Sequence[str], site: str, method: Method, options: Sequence[str] = ()) -> str:
    """The systemd unit that re-applies the real-server set-up at boot and removes it when stopped."""
    base = " ".join(command)
    extra = "".join(f" {o}" for o in options)
    return (
        "[Unit]\n"
        f"Description=gridlb real server set-up: VIPs on lo, ARP suppressed by {method.value} ({site})\n"
        "After=network-online.target\n"
        "Wants=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        "RemainAfterExit=yes\n"
        f"ExecStart={base} realserver apply {site} --method {method.value}{extra}\n"
        f"ExecStop={base} realserver remove {site}{extra}\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


# ------------------------------------------------------------------------------------------ desired


def desired_items(targets: Targets, method: Method, persist: Persist | None = None) -> tuple[Item, ...]:
    """Every item that must exist on this host."""
    items: list[Item] = [LoAddress(v) for v in targets.vips]
    v4 = [v for v in targets.vips if isinstance(v, IPv4Address)]
    if method is Method.SYSCTL and v4:
        items += [Sysctl(ARP_IGNORE, "1"), Sysctl(ARP_ANNOUNCE, "2")]
    elif method is Method.ARPTABLES:
        for vip in v4:
            rip = targets.rip_for(vip)
            assert isinstance(rip, IPv4Address)
            items += [ArpRule("INPUT", vip), ArpRule("OUTPUT", vip, rip)]
    elif method is Method.NFT and v4:
        items += [NftArpTable(tuple(v4)), Sysctl(ARP_ANNOUNCE, "2")]
    if persist is not None:
        items += [
            UnitFile(persist.unit_path, persist.content),
            UnitLink(persist.link_path, persist.unit_path),
        ]
    return tuple(items)


# ------------------------------------------------------------------------------------------ observed


@dataclass(frozen=True, slots=True)
class Observed:
    """What the host has, for the items gridlb manages."""

    lo: frozenset[tuple[IPAddress, int]] = frozenset()
    elsewhere: frozenset[ForeignAddress] = frozenset()
    sysctls: Mapping[str, str] = field(default_factory=dict)
    arp_rules: frozenset[str] = frozenset()  # arptables-save lines, whitespace-normalised
    nft_vips: tuple[IPv4Address, ...] | None = None  # None: no gridlb table
    files: Mapping[str, str | None] = field(default_factory=dict)
    links: Mapping[str, str | None] = field(default_factory=dict)


class Verb(enum.Enum):
    """What a change does."""

    ADD = "add"
    SET = "set"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Change:
    """One step towards the desired state, with the line `check` prints for it."""

    verb: Verb
    item: Item
    problem: str

    def __str__(self) -> str:
        return f"{self.verb.value} {self.item}"


def _lo_change(item: LoAddress, observed: Observed) -> Change | None:
    have = {plen for addr, plen in observed.lo if addr == item.address}
    if item.prefixlen in have:
        return None
    if have:
        plens = ", ".join(f"/{p}" for p in sorted(have))
        return Change(
            Verb.SET, item, f"wrong: VIP {item.address} is on lo as {plens}, want /{item.prefixlen}"
        )
    return Change(Verb.ADD, item, f"missing: {item}")


def _sysctl_change(item: Sysctl, observed: Observed) -> Change | None:
    have = observed.sysctls.get(item.key)
    if have == item.value:
        return None
    return Change(Verb.SET, item, f"wrong: sysctl {item.key} is {have}, want {item.value}")


def _arp_rule_change(item: ArpRule, observed: Observed) -> Change | None:
    if item.save_line() in observed.arp_rules:
        return None
    return Change(Verb.ADD, item, f"missing: {item}")


def _nft_change(item: NftArpTable, observed: Observed) -> Change | None:
    if observed.nft_vips is None:
        return Change(Verb.ADD, item, f"missing: {item}")
    if tuple(observed.nft_vips) == item.vips:
        return None
    got = ", ".join(map(str, observed.nft_vips)) or "nothing"
    return Change(Verb.SET, item, f"wrong: nft table arp {NFT_TABLE} drops {got}")


def _unit_file_change(item: UnitFile, observed: Observed) -> Change | None:
    content = observed.files.get(item.path)
    if content == item.content:
        return None
    what = "missing" if content is None else "wrong (other content)"
    return Change(Verb.SET, item, f"{what}: {item}")


def _unit_link_change(item: UnitLink, observed: Observed) -> Change | None:
    if observed.links.get(item.path) == item.target:
        return None
    return Change(Verb.SET, item, f"missing: {item}")


#: One entry per kind of desired item: the change a host observed as given needs for it, or None.
#: (A `ForeignAddress` is never desired: `diff` deletes the ones standing for managed VIPs.)
ITEM_CHANGES: dict[type[Item], Callable[[Any, Observed], Change | None]] = {
    LoAddress: _lo_change,
    Sysctl: _sysctl_change,
    ArpRule: _arp_rule_change,
    NftArpTable: _nft_change,
    UnitFile: _unit_file_change,
    UnitLink: _unit_link_change,
}


def diff(
    desired: Iterable[Item], observed: Observed, *, managed_vips: Iterable[IPAddress] = ()
) -> list[Change]:
    """The changes that turn `observed` into `desired` (empty when the host is as it should be).

    Besides adding what is missing it deletes what gridlb manages and no longer wants: the site's
    VIPs on other interfaces, gridlb's arptables rules for `managed_vips` that the method does not
    use, and gridlb's nft table when the method is not `nft`.
    """
    wanted = list(desired)
    changes: list[Change] = []
    vips = {i.address for i in wanted if isinstance(i, LoAddress)} | set(managed_vips)
    for foreign in sorted(observed.elsewhere, key=str):
        if foreign.address in vips:
            changes.append(
                Change(Verb.DELETE, foreign, f"wrong: {foreign} (it would answer ARP/ND for the VIP)")
            )
    for item in wanted:
        change = ITEM_CHANGES[type(item)](item, observed)
        if change is not None:
            changes.append(change)
    want_rules = {i.save_line() for i in wanted if isinstance(i, ArpRule)}
    nft_wanted = any(isinstance(i, NftArpTable) for i in wanted)
    for stale in _arp_leftovers(observed, vips, want_rules, keep_nft=nft_wanted):
        changes.append(Change(Verb.DELETE, stale, f"wrong: {stale} (not used by this method)"))
    return changes


def _arp_leftovers(
    observed: Observed, vips: set[IPAddress], keep_rules: set[str], *, keep_nft: bool
) -> list[ArpRule | NftArpTable]:
    """gridlb's own arptables rules for `vips` (but `keep_rules`) and its nft table (unless kept)."""
    out: list[ArpRule | NftArpTable] = []
    for line in sorted(observed.arp_rules - keep_rules):
        rule = _own_rule(line, vips)
        if rule is not None:
            out.append(rule)
    if observed.nft_vips is not None and not keep_nft:
        out.append(NftArpTable(tuple(observed.nft_vips)))
    return out


def _own_rule(line: str, vips: set[IPAddress]) -> ArpRule | None:
    """The ArpRule for an arptables-save line gridlb would have written for one of `vips`, else None."""
    words = line.split()
    if len(words) < 4 or words[0] != "-A":
        return None
    try:
        if words[1] == "INPUT" and words[2:4] == ["-j", "DROP"] and len(words) == 6 and words[4] == "-d":
            rule = ArpRule("INPUT", IPv4Address(words[5]))
        elif words[1] == "OUTPUT" and words[2:4] == ["-j", "mangle"] and len(words) == 8 and words[4] == "-s":
            rule = ArpRule("OUTPUT", IPv4Address(words[5]), IPv4Address(words[7]))
        else:
            return None
    except ValueError:
        return None
    return rule if rule.vip in vips and rule.save_line() == " ".join(words) else None


def removal(targets: Targets, observed: Observed, persist: Persist | None = None) -> list[Change]:
    """The changes that undo every method's set-up for the site's VIPs (restoring kernel defaults)."""
    changes: list[Change] = []
    vips = set(targets.vips)
    for addr, plen in sorted(observed.lo, key=str):
        if addr in vips:
            changes.append(Change(Verb.DELETE, LoAddress(addr), f"present: VIP {addr}/{plen} on lo"))
    for stale in _arp_leftovers(observed, vips, set(), keep_nft=False):
        changes.append(Change(Verb.DELETE, stale, f"present: {stale}"))
    ours = {ARP_IGNORE: "1", ARP_ANNOUNCE: "2"}
    for key, value in ours.items():
        if observed.sysctls.get(key) == value:
            item = Sysctl(key, SYSCTL_DEFAULTS[key])
            changes.append(Change(Verb.SET, item, f"present: sysctl {key}={value}"))
    if persist is not None:
        if observed.links.get(persist.link_path) is not None:
            link = UnitLink(persist.link_path, persist.unit_path)
            changes.append(Change(Verb.DELETE, link, f"present: {link}"))
        if observed.files.get(persist.unit_path) is not None:
            unit = UnitFile(persist.unit_path, "")
            changes.append(Change(Verb.DELETE, unit, f"present: {unit}"))
    return changes


def targets_from_site(
    services: Iterable[tuple[IPAddress, int, str, Sequence[IPAddress]]], local: Iterable[IPAddress]
) -> Targets:
    """The DR services (vip, port, lb_kind, real-server addresses) that list one of the `local` addresses."""
    mine = set(local)
    found: list[Service] = []
    for vip, port, kind, reals in services:
        if kind != "DR":
            continue
        for rip in reals:
            if rip in mine and rip.version == vip.version:
                found.append(Service(vip, port, rip))
                break
    return Targets(tuple(dict.fromkeys(found)))
