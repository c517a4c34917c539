"""The packet-marking rules of the IPVS firewall-mark recipe for GridFTP (`gridlb render fwmark`).

Clients that ignore the PASV address (curl, Python's ftplib) open their data connections to the VIP.
Under IPVS the classic answer is one firewall-mark virtual server that groups the control port with
the real servers' passive port range, with persistence so that a client's data connections reach the
server holding its control connection. The kernel only sees the mark: these rules set it (nftables,
with the iptables equivalent as comments), for each `gridlb.gridftp_services` entry with `fwmark`.
"""

from __future__ import annotations

from gridlb.config.load import Site
from gridlb.table import RealKey


def fwmark_rules(site: Site) -> str:
    """Return an `nft -f` script marking each GridFTP service's control and data ports; "" if none."""
    rules: list[str] = []
    notes: list[str] = []
    for name, g in site.gridlb.gridftp_services.items():
        if g.fwmark is None:
            continue
        key = RealKey.parse(name)
        family = "ip6" if key.addr.version == 6 else "ip"
        ports = [str(key.port)]
        if g.data_ports is not None:
            ports.append("{}-{}".format(*g.data_ports))
        rules.append(
            f"    {family} daddr {key.addr} tcp dport {{ {', '.join(ports)} }} meta mark set {g.fwmark}"
        )
        tool = "ip6tables" if key.addr.version == 6 else "iptables"
        multi = ",".join(p.replace("-", ":") for p in ports)
        notes.append(
            f"#   {tool} -t mangle -A PREROUTING -d {key.addr} -p tcp -m multiport --dports {multi} "
            f"-j MARK --set-mark {g.fwmark}"
        )
    if not rules:
        return ""
    head = [
        "#!/usr/sbin/nft -f",
        "# GridFTP control and data ports marked for IPVS firewall-mark services; rendered by gridlb.",
        "# Load on both directors (nft -f FILE) before keepalived starts. The same with iptables:",
        *notes,
        "table inet gridlb_fwmark",
        "delete table inet gridlb_fwmark",
        "table inet gridlb_fwmark {",
        "  chain prerouting {",
        "    type filter hook prerouting priority mangle; policy accept;",
    ]
    return "\n".join([*head, *rules, "  }", "}"]) + "\n"


__all__ = ["fwmark_rules"]
