"""`gridlb lab up|down|status|exec`: the seed's whole system in network namespaces on this machine."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from gridlb.errors import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE
from gridlb.lab import system

DESCRIPTION = """\
Build the seed's topology on this machine, in network namespaces, and run the real thing in it:

  client      a node to run clients in (globus-url-copy, gridlb gridftp-client, curl, ...)
  dir1, dir2  directors running `gridlb director run` with VRRP (dir1 priority 150, dir2 100;
              unicast adverts between them; with --directors 1 only dir1, multicast adverts)
  rs1..rsN    real servers, each set up by `gridlb realserver apply` (VIPs on lo, ARP
              suppressed by sysctls) and running a GridFTP server whose data interface is its
              own address: Globus' globus-gridftp-server (-data-interface, and -epsv-ip for
              IPv6) or gridlb's embedded server (--data-address)
  lan         the namespace holding the bridge br0 every node's eth0 is plugged into
  router      with --scaleout: BIRD with one eBGP session per director and ECMP for the VIP (L4
              hash; a resilient next-hop group, or BIRD's multipath route with --plain-multipath);
              its eth1 leads to the client network 10.A.(B+1).0/24
  remote      with --scaleout: a client behind the router (10.A.(B+1).50)

Addresses: 10.90.1.H/24 and fd00:5a:1::H/64 (H = 50 client, 2 and 3 directors, 11.. real servers),
MACs 02:5a:01:00:00:HH, VIPs 10.90.1.100 and fd00:5a:1::100 (--net A.B changes 90.1). Namespaces
are named glbLab-NAME-NODE; nothing is created in the root namespace. Each real server exports
hello.txt ("served by rsN"), random-1MiB.bin (the same bytes on every server) and a writable
upload/ directory. With Globus, ftp:// paths are the absolute path printed by `status`; with
gridlb's server they start at /.

up      build it and return once a director holds each VIP and every real server is in its table
        (the processes keep running). On any failure everything made is removed again.
        --start realservers sets up and starts the real servers but leaves dir1 and dir2 empty, for
        a director or keepalived of your own (`exec dir1 -- ...`); --start none builds only the
        namespaces, addresses and export files (real servers not set up, nothing running).
        --realservers 0 and --directors 0 go with --start realservers or none.
status  nodes, addresses, which director holds each VIP, every process with its PID and log,
        and commands to try. Exit 1 when a process has died or (with --start all) no director
        holds a VIP.
exec    run a command inside a node: gridlb lab exec NODE -- CMD [ARG ...] (its exit status).
down    stop every process the lab started (by recorded PID: SIGTERM, then SIGKILL), kill anything
        else left inside its namespaces, delete the namespaces (veths and the bridge go with them)
        and the lab's files. Nothing of the lab remains.

State and logs live in /run/gridlb-lab/NAME.json and /run/gridlb-lab/NAME/. Needs root, iproute2,
and for --gridftp globus the globus-gridftp-server-progs package (globus-url-copy is in
globus-gass-copy-progs). --dataplane proxy relays through the directors (lb_kind NAT); --dataplane
dr forwards by MAC rewrite in nftables (lb_kind DR: replies go from the real servers straight to
the client), with connection sync between the two directors.
"""

EXAMPLES = """\
examples:
  gridlb lab up --realservers 3 --ipv6
  gridlb lab status
  gridlb lab exec client -- globus-url-copy -vb ftp://10.90.1.100:2811/run/gridlb-lab/lab/export/hello.txt -
  gridlb lab exec dir1 -- ip -br addr
  gridlb lab down
"""


def _count(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        if not text.isdigit() or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a number from {low} to {high}")
        return int(text)

    return parse


def _name(text: str) -> str:
    if not text or len(text) > 12 or not all(c.isalnum() or c == "_" for c in text):
        raise argparse.ArgumentTypeError(f"{text!r}: 1 to 12 letters, digits or _")
    return text


def _net(text: str) -> tuple[int, int]:
    a, sep, b = text.partition(".")
    if not sep or not a.isdigit() or not b.isdigit() or not (1 <= int(a) <= 255 and 0 <= int(b) <= 255):
        raise argparse.ArgumentTypeError(f"{text!r}: expected A.B (the lab uses 10.A.B.0/24)")
    return int(a), int(b)


def register(subparsers: Any) -> None:
    """Add the `lab` subcommand with its actions up, down, status and exec."""
    p = subparsers.add_parser(
        "lab",
        help="the seed's whole system (client, directors, real servers) in network namespaces",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    named = argparse.ArgumentParser(add_help=False)
    named.add_argument(
        "--name", type=_name, default="lab", help="the lab's name (default: lab); several may run"
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    up = sub.add_parser("up", parents=[named], help="build the lab and start everything in it")
    up.add_argument(
        "--realservers", type=_count(0, 20), default=3, metavar="N", help="real servers (default 3)"
    )
    up.add_argument(
        "--gridftp", choices=system.GRIDFTP_KINDS, default="globus", help="the real servers' GridFTP server"
    )
    up.add_argument(
        "--directors",
        type=_count(0, 4),
        default=2,
        metavar="N",
        help="directors (default 2; 3 or 4 need --scaleout; 0 needs --start realservers or none)",
    )
    up.add_argument(
        "--scaleout",
        action="store_true",
        help="active directors announcing the VIP over BGP to a router (BIRD, ECMP) with a client behind it",
    )
    up.add_argument(
        "--plain-multipath",
        action="store_true",
        help="scale-out: keep BIRD's hash-threshold multipath route (default: a resilient next-hop group)",
    )
    up.add_argument(
        "--dataplane", default="proxy", metavar="proxy|dr", help="the directors' dataplane (default proxy)"
    )
    up.add_argument("--ipv6", action="store_true", help="also an IPv6 VIP, service and GridFTP addresses")
    up.add_argument("--net", type=_net, default=(90, 1), metavar="A.B", help="use 10.A.B.0/24 (default 90.1)")
    up.add_argument(
        "--start",
        choices=system.START_KINDS,
        default="all",
        help="what to start: everything (default), the real servers only, or nothing",
    )
    up.add_argument("--timeout", type=float, default=90.0, metavar="S", help="give up after S seconds (90)")
    sub.add_parser("down", parents=[named], help="stop everything and delete the lab")
    sub.add_parser("status", parents=[named], help="nodes, VIP holder, processes (exit 1 if unhealthy)")
    ex = sub.add_parser("exec", parents=[named], help="run a command inside a node: exec NODE -- CMD ...")
    ex.add_argument("node", metavar="NODE", help="client, dir1, dir2, rs1 ... or lan")
    ex.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD", help="the command and its arguments")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Carry out `args.action`."""
    if args.action == "up" and args.dataplane not in system.DATAPLANES:
        have = " or ".join(system.DATAPLANES)
        print(
            f"gridlb lab: error: --dataplane {args.dataplane}: no such dataplane; use {have}", file=sys.stderr
        )
        return EXIT_USAGE
    if args.action == "up" and args.start == "all" and 0 in (args.realservers, args.directors):
        what = "--realservers 0: the directors need a real server"
        if args.realservers:
            what = "--directors 0: nothing would serve the VIPs"
        print(f"gridlb lab: error: {what}; add --start realservers or --start none", file=sys.stderr)
        return EXIT_USAGE
    if os.geteuid() != 0:
        print("gridlb lab: error: needs root (network namespaces)", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.action == "up":
            return _up(args)
        state = system.load_state(args.name)
        if args.action == "down":
            for line in system.down(state):
                print(line)
            print(f"lab {args.name} removed")
            return EXIT_OK
        if args.action == "status":
            lines, healthy = system.status_lines(state)
            print("\n".join(lines))
            return EXIT_OK if healthy else EXIT_FINDINGS
        return _exec(state, args.node, args.argv)
    except system.LabStateError as exc:
        print(f"gridlb lab: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _up(args: argparse.Namespace) -> int:
    if args.directors > 2 and not args.scaleout:
        print("gridlb lab: error: --directors 3 or 4 needs --scaleout (VRRP pairs have 2)", file=sys.stderr)
        return EXIT_USAGE
    if args.scaleout and args.ipv6:
        print("gridlb lab: error: --scaleout builds IPv4 only; drop --ipv6", file=sys.stderr)
        return EXIT_USAGE
    options = system.LabOptions(
        name=args.name,
        realservers=args.realservers,
        gridftp=args.gridftp,
        directors=args.directors,
        dataplane=args.dataplane,
        ipv6=args.ipv6,
        net_a=args.net[0],
        net_b=args.net[1],
        start=args.start,
        scaleout=args.scaleout,
        resilient=not args.plain_multipath,
    )
    if sys.stderr.isatty():  # a spinner with the current step; plain lines otherwise
        from rich.console import Console

        with Console(stderr=True).status(f"lab {args.name}: building") as spinner:
            state = system.up(
                options, timeout_s=args.timeout, say=lambda text: spinner.update(f"lab {args.name}: {text}")
            )
    else:
        state = system.up(
            options,
            timeout_s=args.timeout,
            say=lambda text: print(f"lab {args.name}: {text}", file=sys.stderr, flush=True),
        )
    lines, _ = system.status_lines(state)
    print("\n".join(lines))
    return EXIT_OK


def _exec(state: system.LabState, node: str, command: list[str]) -> int:
    argv = command[1:] if command[:1] == ["--"] else command
    if not argv:
        print("gridlb lab exec: error: usage: gridlb lab exec NODE -- CMD [ARG ...]", file=sys.stderr)
        return EXIT_USAGE
    full = system.exec_argv(state, node, argv)
    sys.stdout.flush()
    os.execvp(full[0], full)  # does not return
