"""`gridlb realserver apply|check|remove SITE.yaml`: set up (check, undo) a direct-routing real server."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path
from typing import Any

from gridlb.config.load import ConfigErrors, load_site
from gridlb.errors import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, ConfigError
from gridlb.realserver import host
from gridlb.realserver.gridftp_probe import probe
from gridlb.realserver.plan import (
    Change,
    IPAddress,
    LoAddress,
    Method,
    Persist,
    Targets,
    desired_items,
    diff,
    removal,
    targets_from_site,
    unit_text,
)

DESCRIPTION = """\
Make this host a real server of the site's direct-routing (lb_kind DR) services, the way the seed's
puppet did, without puppet. The services are those whose real_servers list one of this host's
addresses (or --address). For each such service:

  - the VIP is put on lo (IPv4 as /32, IPv6 as /128), so the host accepts packets sent to it;
  - ARP for IPv4 VIPs is suppressed, so only the director answers for the VIP:
      sysctl     net.ipv4.conf.all.arp_ignore=1 and arp_announce=2 (the default);
      arptables  the seed's rules: INPUT -d VIP -j DROP, OUTPUT -s VIP -j mangle --mangle-ip-s RIP;
      nft        an nftables table "arp gridlb_realserver" dropping ARP requests for the VIPs,
                 plus arp_announce=2.
    IPv6 needs nothing more: Linux answers neighbour solicitations only for addresses of the
    interface they arrive on, never for one on lo.
  - a VIP found on any other interface is removed (it would answer ARP for the VIP).

apply   changes only what differs, prints each change, and prints nothing to change on a host
        already set up. Running it twice changes nothing the second time.
check   changes nothing; prints one line per missing or wrong item and exits 1 if there is any.
        It also logs in to the local GridFTP server through the VIP (when the VIP is on lo) and
        asks for PASV (IPv4) or EPSV (IPv6): a server advertising the VIP or a loopback address
        (Globus without -data-interface), or an EPSV reply without an address (Globus without
        -epsv-ip), is wrong: clients could not open data connections to it.
remove  undoes what any method set up for the site's VIPs: the VIPs on lo, gridlb's arptables
        rules and nft table, the two sysctls back to the kernel's default 0 (when they hold the
        values gridlb sets), and with --persist the systemd unit.

--persist installs and enables the systemd unit gridlb-realserver.service, which runs `apply` at
boot (after network-online.target) and `remove` when stopped; --print-unit prints it and exits.

Exit status: 0 done (check: nothing wrong), 1 check found something, 2 usage, config or host error.
"""


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None


def register(subparsers: Any) -> None:
    """Add the `realserver` subcommand."""
    p = subparsers.add_parser(
        "realserver",
        help="set up, check or undo a direct-routing real server (VIPs on lo, ARP suppressed)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", choices=("apply", "check", "remove"), help="what to do")
    p.add_argument("site", metavar="SITE.yaml", help="the site file (the directors' file is fine)")
    p.add_argument(
        "--method",
        choices=[m.value for m in Method],
        default=Method.SYSCTL.value,
        help="how ARP for the VIPs is suppressed (default: sysctl)",
    )
    p.add_argument("--persist", action="store_true", help="also install/check/remove the systemd unit")
    p.add_argument("--print-unit", action="store_true", help="print the systemd unit and exit")
    p.add_argument(
        "--address",
        type=_address,
        action="append",
        metavar="RIP",
        help="this host's real-server address (repeatable; default: every address on its interfaces)",
    )
    p.add_argument(
        "--unit-dir",
        default="/etc/systemd/system",
        metavar="DIR",
        help="where --persist puts the unit (default: /etc/systemd/system)",
    )
    p.add_argument("--no-gridftp", action="store_true", help="check: do not ask the GridFTP server")
    p.set_defaults(func=run)


def _targets(args: argparse.Namespace) -> Targets:
    site = load_site([args.site])
    services = []
    for vs in site.virtual_servers.values():
        if vs.ip_address is None:
            continue  # fwmark services carry no address to put on lo
        reals = [rs.ip_address for rs in vs.real_servers]
        kinds = {rs.lb_kind or vs.lb_kind for rs in vs.real_servers} or {vs.lb_kind}
        kind = "DR" if "DR" in kinds else vs.lb_kind
        services.append((vs.ip_address, vs.port or 0, kind, reals))
    local = args.address if args.address else host.local_addresses()
    targets = targets_from_site(services, local)
    if not targets.services:
        addrs = ", ".join(map(str, local)) or "none"
        raise ConfigError(
            f"no DR service lists this host as a real server (this host's addresses: {addrs})",
            key="real_servers",
        )
    return targets


def _persist(args: argparse.Namespace, method: Method) -> Persist:
    site = str(Path(args.site).resolve())
    options = [f"--address {a}" for a in args.address or ()]
    return Persist(args.unit_dir, unit_text([sys.executable, "-m", "gridlb"], site, method, options))


def run(args: argparse.Namespace) -> int:
    """Carry out `args.action`."""
    method = Method(args.method)
    if args.print_unit:
        print(_persist(args, method).content, end="")
        return EXIT_OK
    try:
        targets = _targets(args)
    except ConfigErrors as exc:
        for err in exc.errors:
            print(err, file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        print(f"{args.site}: error: {exc.key}: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    persist = _persist(args, method) if args.persist else None
    try:
        if args.action != "remove":
            if method is Method.ARPTABLES:
                host.require_tool("arptables")
            elif method is Method.NFT:
                host.require_tool("nft")
        observed = host.observe(targets.vips, persist)
        if args.action == "remove":
            changes = removal(targets, observed, persist)
        else:
            changes = diff(desired_items(targets, method, persist), observed, managed_vips=targets.vips)
        if args.action == "check":
            return _check(args, targets, changes, observed.lo)
        host.apply(changes)
    except host.HostError as exc:
        print(f"gridlb realserver: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for change in changes:
        print(change)
    if not changes:
        print("nothing to change")
    return EXIT_OK


def _check(
    args: argparse.Namespace, targets: Targets, changes: list[Change], lo: frozenset[tuple[IPAddress, int]]
) -> int:
    problems = [c.problem for c in changes]
    on_lo = {addr for addr, plen in lo if plen == LoAddress(addr).prefixlen}
    if not args.no_gridftp:
        for service in targets.services:
            if service.vip not in on_lo:
                print(f"skipped: GridFTP on {service.vip}:{service.port}: the VIP is not on lo yet")
                continue
            result = probe(service.vip, service.port)
            if result.problem:
                problems.append(str(result))
            else:
                print(result)
    for line in problems:
        print(line)
    if not problems:
        print(f"ok: {len(targets.vips)} VIP(s) set up ({', '.join(map(str, targets.vips))})")
    return EXIT_FINDINGS if problems else EXIT_OK
