"""Helpers for the ipvsadm tests: a network-free resolver and an in-memory session runner."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import ip_address

from gridlb.ipvsadm.commands import Session
from gridlb.ipvsadm.names import Resolver, ServicesFile, StaticResolver
from gridlb.table import IpvsTable

SYSTEM_SERVICES = ServicesFile.load("/etc/services")
# CentOS's /etc/services (the seed's directors) names 3128/tcp "squid"; Debian's does not.
SERVICES = ServicesFile.parse(
    "\n".join(f"{name} {port}/{proto}" for (name, proto), port in SYSTEM_SERVICES.by_name.items())
    + "\nsquid 3128/tcp\n"
)
NO_DNS = StaticResolver({}, SERVICES)

# Made-up addresses for the seed's host names, increasing in the order its listing shows them.
SEED_HOSTS = {
    "red-squid.unl.edu": "129.93.239.150",
    "red-squid1.unl.edu": "129.93.239.151",
    "red-squid2.unl.edu": "129.93.239.152",
    "red-gridftp.unl.edu": "129.93.239.157",
    **{
        f"red-gridftp{n}.unl.edu": f"129.93.239.{170 + i}"
        for i, n in enumerate([6, 7, 8, 10, 4, 5, 2, 3, 9, 12])
    },
}
SEED_DNS = StaticResolver({k: ip_address(v) for k, v in SEED_HOSTS.items()}, SERVICES)


@dataclass
class Run:
    status: int
    out: str
    err: str
    table: IpvsTable


def run(
    args: str | list[str], table: IpvsTable | None = None, *, stdin: str = "", resolver: Resolver = NO_DNS
) -> Run:
    """Run one ipvsadm command line on `table` in memory."""
    argv = args.split() if isinstance(args, str) else args
    s = Session(table or IpvsTable(), resolver, read_stdin=lambda: stdin)
    status = s.run(argv)
    return Run(status, "".join(s.out), "".join(s.err), s.table)


def restore(text: str, table: IpvsTable | None = None, resolver: Resolver = NO_DNS) -> IpvsTable:
    r = run(["-R"], table, stdin=text, resolver=resolver)
    assert (r.status, r.err) == (0, ""), r.err
    return r.table
