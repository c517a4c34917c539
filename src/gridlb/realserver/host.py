"""The real server's privileged door: observes the managed items and applies changes to this host.

Addresses go through rtnetlink (pyroute2 `IPRoute`), sysctls through /proc/sys, arptables rules through
the `arptables` / `arptables-save` commands, the nft table through `nft -f` (replaced atomically in
one transaction), the systemd unit through plain files. Every failure is a `HostError` naming the
command and the kernel's or tool's message.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, ip_address
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from gridlb.errors import GridlbError
from gridlb.realserver.plan import (
    ARP_ANNOUNCE,
    ARP_IGNORE,
    NFT_TABLE,
    ArpRule,
    Change,
    ForeignAddress,
    IPAddress,
    LoAddress,
    NftArpTable,
    Observed,
    Persist,
    Sysctl,
    UnitFile,
    UnitLink,
    Verb,
)

IFA_F_NODAD = 0x02
SYSCTL_KEYS = (ARP_IGNORE, ARP_ANNOUNCE)


class HostError(GridlbError):
    """Changing or reading the host failed (a tool is missing, or the kernel refused)."""


def _run(argv: Sequence[str], *, stdin: str | None = None) -> str:
    try:
        proc = subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, timeout=30, check=False
        )
    except FileNotFoundError:
        raise HostError(f"{argv[0]}: not installed") from None
    if proc.returncode != 0:
        raise HostError(f"{' '.join(argv)}: {proc.stderr.strip() or f'exit status {proc.returncode}'}")
    return proc.stdout


def require_tool(name: str) -> None:
    """Raise HostError when the program `name` is not on PATH."""
    if shutil.which(name) is None:
        raise HostError(f"{name}: not installed (Debian package {name if name != 'nft' else 'nftables'})")


def sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def local_addresses() -> list[IPAddress]:
    """Every address on this host's interfaces other than `lo`."""
    out: list[IPAddress] = []
    with IPRoute() as ipr:
        lo = ipr.link_lookup(ifname="lo")
        for msg in ipr.get_addr():
            if lo and msg["index"] == lo[0]:
                continue
            out.append(ip_address(msg.get_attr("IFA_ADDRESS")))
    return out


def _parse_nft_vips(text: str) -> tuple[IPv4Address, ...]:
    vips = []
    for line in text.splitlines():
        words = line.split()
        if "daddr" in words and words[-1] == "drop":
            try:
                vips.append(IPv4Address(words[words.index("daddr") + 2]))
            except (ValueError, IndexError):
                continue
    return tuple(vips)


def observe(vips: Iterable[IPAddress], persist: Persist | None = None) -> Observed:
    """Read the managed items from the host."""
    wanted = set(vips)
    lo: set[tuple[IPAddress, int]] = set()
    elsewhere: set[ForeignAddress] = set()
    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for msg in ipr.get_addr():
            addr = ip_address(msg.get_attr("IFA_ADDRESS"))
            if addr not in wanted:
                continue
            ifname = names.get(msg["index"], str(msg["index"]))
            if ifname == "lo":
                lo.add((addr, msg["prefixlen"]))
            else:
                elsewhere.add(ForeignAddress(addr, msg["prefixlen"], ifname))
    sysctls = {}
    for key in SYSCTL_KEYS:
        with contextlib.suppress(OSError):
            sysctls[key] = sysctl_path(key).read_text().strip()
    arp_rules: frozenset[str] = frozenset()
    if shutil.which("arptables-save"):
        lines = _run(["arptables-save"]).splitlines()
        arp_rules = frozenset(" ".join(line.split()) for line in lines if line.startswith("-A "))
    nft_vips = None
    if shutil.which("nft"):
        proc = subprocess.run(
            ["nft", "list", "table", "arp", NFT_TABLE],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if proc.returncode == 0:
            nft_vips = _parse_nft_vips(proc.stdout)
    files: dict[str, str | None] = {}
    links: dict[str, str | None] = {}
    if persist is not None:
        try:
            files[persist.unit_path] = Path(persist.unit_path).read_text()
        except OSError:
            files[persist.unit_path] = None
        try:
            links[persist.link_path] = os.readlink(persist.link_path)
        except OSError:
            links[persist.link_path] = None
    return Observed(
        lo=frozenset(lo),
        elsewhere=frozenset(elsewhere),
        sysctls=sysctls,
        arp_rules=arp_rules,
        nft_vips=nft_vips,
        files=files,
        links=links,
    )


def _address(ipr: IPRoute, command: str, index: int, address: IPAddress, prefixlen: int) -> None:
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    extra = {"flags": IFA_F_NODAD} if address.version == 6 and command == "add" else {}
    try:
        ipr.addr(command, index=index, address=str(address), prefixlen=prefixlen, family=family, **extra)
    except NetlinkError as exc:
        raise HostError(f"{command} {address}/{prefixlen}: {exc.args[-1] if exc.args else exc}") from None


def _lo_set(ipr: IPRoute, item: LoAddress) -> None:
    lo = ipr.link_lookup(ifname="lo")[0]
    for msg in ipr.get_addr(index=lo):
        if ip_address(msg.get_attr("IFA_ADDRESS")) == item.address and msg["prefixlen"] != item.prefixlen:
            _address(ipr, "del", lo, item.address, msg["prefixlen"])
    _address(ipr, "add", lo, item.address, item.prefixlen)


def _nft_replace(table: NftArpTable | None) -> None:
    script = f"table arp {NFT_TABLE}\ndelete table arp {NFT_TABLE}\n"
    if table is not None:
        script += table.text()
    _run(["nft", "-f", "-"], stdin=script)


def apply(changes: Iterable[Change]) -> None:
    """Carry out `changes` in order; raise HostError at the first that fails."""
    with IPRoute() as ipr:
        for change in changes:
            _apply_one(ipr, change)


def _apply_one(ipr: IPRoute, change: Change) -> None:
    item, verb = change.item, change.verb
    if isinstance(item, LoAddress):
        lo = ipr.link_lookup(ifname="lo")[0]
        if verb is Verb.DELETE:
            for msg in ipr.get_addr(index=lo):
                if ip_address(msg.get_attr("IFA_ADDRESS")) == item.address:
                    _address(ipr, "del", lo, item.address, msg["prefixlen"])
        else:
            _lo_set(ipr, item)
    elif isinstance(item, ForeignAddress):
        index = ipr.link_lookup(ifname=item.ifname)
        if index:
            _address(ipr, "del", index[0], item.address, item.prefixlen)
    elif isinstance(item, Sysctl):
        try:
            sysctl_path(item.key).write_text(item.value + "\n")
        except OSError as exc:
            raise HostError(f"sysctl {item.key}={item.value}: {exc.strerror}") from None
    elif isinstance(item, ArpRule):
        op = "-D" if verb is Verb.DELETE else "-A"
        _run(["arptables", op, item.chain, *item.args()])
    elif isinstance(item, NftArpTable):
        _nft_replace(None if verb is Verb.DELETE else item)
    elif isinstance(item, UnitFile):
        path = Path(item.path)
        if verb is Verb.DELETE:
            path.unlink(missing_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(item.content)
            tmp.replace(path)
        _daemon_reload()
    elif isinstance(item, UnitLink):
        link = Path(item.path)
        if link.is_symlink() or link.exists():
            link.unlink()
        if verb is not Verb.DELETE:
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(item.target)


def _daemon_reload() -> None:
    """Tell a running systemd that unit files changed (nothing to do without one)."""
    if Path("/run/systemd/system").is_dir() and shutil.which("systemctl"):
        subprocess.run(["systemctl", "daemon-reload"], capture_output=True, timeout=60, check=False)
