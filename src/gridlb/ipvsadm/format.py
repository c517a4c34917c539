"""ipvsadm 1.31's listings, byte for byte: -L/-l (with -n, --stats, --rate, --thresholds,
--persistent-conn, --tun-info, --exact, --nosort), -L -c, -L --timeout and -S (the rule format).

Everything here is a pure function of a table, the format options and a name resolver. Sorting is
libipvs's (`ipvs_cmp_services`, `ipvs_cmp_dests`, with their 32-bit wrap-around) run through the
same top-down merge sort glibc's qsort uses, so even the comparators' quirks come out identical.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from gridlb.ipvsadm.model import flag_bits, fwd_switch, netmask_text, netmask_value
from gridlb.ipvsadm.names import Resolver, addrport_to_anyname
from gridlb.table import ConnEntry, Dest, IPAddress, IpvsTable, Proto, Service, Stats

HEADER = "IP Virtual Server version 1.2.1 (size=4096)\n"
AF_INET, AF_INET6 = 2, 10
PROTO_NUMBER = {Proto.TCP: 6, Proto.UDP: 17, Proto.SCTP: 132}
TUNFLAGS = {"nocsum": "-c", "csum": "+c", "remcsum": "r+c"}
TUN_FLAG_OPTS = {"nocsum": "--tun-nocsum", "csum": "--tun-csum", "remcsum": "--tun-remcsum"}


@dataclass(frozen=True)
class Format:
    """The FMT_* bits of a listing."""

    numeric: bool = False
    rule: bool = False
    stats: bool = False
    rate: bool = False
    thresholds: bool = False
    persistent_conn: bool = False
    nosort: bool = False
    exact: bool = False
    tun_info: bool = False


T = TypeVar("T")


def _int(x: int) -> int:
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x & 0x80000000 else x


def glibc_msort(items: Sequence[T], cmp: Callable[[T, T], int]) -> list[T]:
    """glibc qsort (msort.c): top-down merge sort, the left run wins when cmp(a, b) <= 0."""
    b = list(items)

    def sort(lo: int, n: int) -> None:
        if n <= 1:
            return
        n1 = n // 2
        n2 = n - n1
        sort(lo, n1)
        sort(lo + n1, n2)
        i, j = lo, lo + n1
        out = []
        while n1 > 0 and n2 > 0:
            if cmp(b[i], b[j]) <= 0:
                out.append(b[i])
                i += 1
                n1 -= 1
            else:
                out.append(b[j])
                j += 1
                n2 -= 1
        out.extend(b[i : i + n1])
        b[lo : lo + len(out)] = out

    sort(0, len(b))
    return b


def _words(addr: IPAddress | None) -> list[int]:
    raw = addr.packed if addr is not None else bytes(16)
    raw = raw + bytes(16 - len(raw))
    return [int.from_bytes(raw[i : i + 4], "big") for i in range(0, 16, 4)]


def _cmp_addrs(a1: IPAddress | None, a2: IPAddress | None, v6: bool) -> int:
    """Compare addresses as libipvs does: 32-bit words as C ints (one word for IPv4, four for IPv6)."""
    w1, w2 = _words(a1), _words(a2)
    for i in range(4 if v6 else 1):
        r = _int(w1[i] - w2[i])
        if r:
            return r
    return 0


def cmp_services(s1: Service, s2: Service) -> int:
    """libipvs ipvs_cmp_services(): fwmark, af, protocol, address, port; int wrap-around kept."""
    k1, k2 = s1.key, s2.key
    r = _int(k1.fwmark - k2.fwmark)
    if r:
        return r
    af1, af2 = (AF_INET6 if k.af == 6 else AF_INET for k in (k1, k2))
    r = af1 - af2
    if r:
        return r
    r = PROTO_NUMBER[k1.proto] - PROTO_NUMBER[k2.proto]
    if r:
        return r
    return _cmp_addrs(k1.addr, k2.addr, af1 == AF_INET6) or k1.port - k2.port


def cmp_dests(d1: Dest, d2: Dest) -> int:
    """libipvs ipvs_cmp_dests(): address (by d1's family), then port."""
    return _cmp_addrs(d1.key.addr, d2.key.addr, d1.key.addr.version == 6) or d1.key.port - d2.key.port


def largenum(i: int, fmt: Format) -> str:
    """print_largenum(): 9 columns, scaled to K/M/G/T unless --exact."""
    if fmt.exact:
        text = str(i)
        return text.rjust(9 if len(text) <= 8 else len(text) + 1)
    if i < 100_000_000:
        return f"{i:9d}"
    if i < 1_000_000_000:
        return f"{i // 1000:8d}K"
    if i < 100_000_000_000:
        return f"{i // 1_000_000:8d}M"
    if i < 100_000_000_000_000:
        return f"{i // 1_000_000_000:8d}G"
    return f"{i // 1_000_000_000_000:8d}T"


def _sched_flags(svc: Service) -> str:
    bits = flag_bits(svc.spec.flags)
    names = []
    if svc.spec.scheduler == "sh":
        names = [n for b, n in ((0x08, "sh-fallback"), (0x10, "sh-port")) if bits & b]
    elif svc.spec.scheduler == "mh":
        names = [n for b, n in ((0x08, "mh-fallback"), (0x10, "mh-port")) if bits & b]
    else:
        names = [n for b, n in ((0x08, "flag-1"), (0x10, "flag-2"), (0x20, "flag-3")) if bits & b]
    return ",".join(names)


_LOCAL = "Prot LocalAddress:Port"
_REMOTE = "\n  -> RemoteAddress:Port\n"


def _title(fmt: Format) -> str:
    if fmt.stats:
        cols = ("Conns", "InPkts", "OutPkts", "InBytes", "OutBytes")
        return f"{_LOCAL:<33}" + "".join(f" {c:>8}" for c in cols) + _REMOTE
    if fmt.rate:
        cols = ("CPS", "InPPS", "OutPPS", "InBPS", "OutBPS")
        return f"{_LOCAL:<33}" + "".join(f" {c:>8}" for c in cols) + _REMOTE
    if fmt.thresholds:
        heads = ("Uthreshold", "Lthreshold", "ActiveConn", "InActConn")
        return f"{_LOCAL:<33}" + "".join(f" {c:<10}" for c in heads) + _REMOTE
    if fmt.persistent_conn:
        return (
            f"{_LOCAL:<33} {'Weight':<9} {'PersistConn':<11} {'ActiveConn':<10} {'InActConn':<10}" + _REMOTE
        )
    if fmt.tun_info:
        return (
            "Prot LocalAddress:Port Scheduler Flags\n"
            "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n"
        )
    if not fmt.rule:
        return (
            "Prot LocalAddress:Port Scheduler Flags\n"
            "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
        )
    return ""


def _stats_cols(s: Stats, fmt: Format, rate: bool) -> str:
    if rate:
        return "".join(largenum(v, fmt) for v in (s.cps, s.inpps, s.outpps, s.inbps, s.outbps))
    return "".join(largenum(v, fmt) for v in (s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes))


def _tun_info(d: Dest) -> str | None:
    if d.spec.forward.value != 2:
        return None
    if d.spec.tun_type == "ipip":
        return "ipip"
    if d.spec.tun_type == "gue":
        return f"gue:{d.spec.tun_port}:{TUNFLAGS[d.spec.tun_flags]}"[:15]
    if d.spec.tun_type == "gre":
        return f"gre:{TUNFLAGS[d.spec.tun_flags]}"
    return None


def service_entry(svc: Service, fmt: Format, resolver: Resolver) -> str:
    """print_service_entry(): the service line and its destination lines."""
    key, spec = svc.key, svc.spec
    proto = key.proto.value
    if key.fwmark:
        if fmt.rule:
            svc_name = f"-f {key.fwmark} -6" if key.af == 6 else f"-f {key.fwmark}"
        else:
            svc_name = f"FWM  {key.fwmark} IPv6" if key.af == 6 else f"FWM  {key.fwmark}"
    else:
        assert key.addr is not None
        vname = addrport_to_anyname(key.addr, key.port, proto, numeric=fmt.numeric, resolver=resolver)
        if fmt.rule:
            stype = {"TCP": "-t", "UDP": "-u", "SCTP": "--sctp-service"}[proto]
            svc_name = f"{stype} {vname}"
        else:
            svc_name = f"{proto:<4} {vname}"
            if key.af != 6:
                svc_name = svc_name[:33]
    bits = flag_bits(spec.flags)
    persistent = spec.persistence_timeout_s > 0
    mask = netmask_text(key.af, netmask_value(key, spec))  # "" for a host mask
    out: list[str] = []
    if fmt.rule:
        line = f"-A {svc_name} -s {spec.scheduler}"
        if persistent:
            line += f" -p {spec.persistence_timeout_s}"
            if mask:
                line += f" -M {mask}"
        if spec.pe_name:
            line += f" --pe {spec.pe_name}"
        if spec.one_packet:
            line += " -o"
        if bits & 0x38:
            line += " -b " + _sched_flags(svc)
    elif fmt.stats or fmt.rate:
        line = f"{svc_name:<33}" + _stats_cols(svc.stats, fmt, fmt.rate and not fmt.stats)
    else:
        line = f"{svc_name} {spec.scheduler}"
        if bits & 0x38:
            line += f" ({_sched_flags(svc)})"
        if persistent:
            line += f" persistent {spec.persistence_timeout_s}"
            if mask:
                line += f" mask {mask}"
            if spec.pe_name:
                line += f" pe {spec.pe_name}"
        if spec.one_packet:
            line += " ops"
    out.append(line + "\n")
    dests = list(svc.dests) if fmt.nosort else glibc_msort(svc.dests, cmp_dests)
    for d in dests:
        dname = addrport_to_anyname(d.key.addr, d.key.port, proto, numeric=fmt.numeric, resolver=resolver)
        if not fmt.rule and d.key.addr.version != 6:
            dname = dname[:28]
        c, ds = d.counters, d.spec
        if fmt.rule:
            line = f"-a {svc_name} -r {dname} {fwd_switch(ds.forward)} -w {ds.weight}"
            if ds.forward.value == 2:
                if ds.tun_type == "gre":
                    line += f" --tun-type gre {TUN_FLAG_OPTS[ds.tun_flags]}"
                elif ds.tun_type == "gue":
                    line += f" --tun-type gue --tun-port {ds.tun_port} {TUN_FLAG_OPTS[ds.tun_flags]}"
                elif ds.tun_type == "ipip":
                    line += " --tun-type ipip"
            out.append(line + "\n")
        elif fmt.stats:
            out.append(f"  -> {dname:<28}" + _stats_cols(c.stats, fmt, False) + "\n")
        elif fmt.rate:
            s = c.stats
            out.append(
                f"  -> {dname:<28} {s.cps:8d} {s.inpps:8d} {s.outpps:8d}"
                + largenum(s.inbps, fmt)
                + largenum(s.outbps, fmt)
                + "\n"
            )
        elif fmt.thresholds:
            cols4 = (ds.u_threshold, ds.l_threshold, c.active, c.inactive)
            out.append(f"  -> {dname:<28}" + "".join(f" {v:<10}" for v in cols4) + "\n")
        elif fmt.persistent_conn:
            out.append(
                f"  -> {dname:<28} {ds.weight:<9} {c.persistent:<11} {c.active:<10} {c.inactive:<10}\n"
            )
        elif fmt.tun_info:
            ti = _tun_info(d) or "n/a"
            fwd = ds.forward.ipvsadm_name
            cols = f"{fwd:<7} {ti:<13} {ds.weight:<6} {c.active:<10} {c.inactive:<10}"
            out.append(f"  -> {dname:<28} {cols}\n")
        else:
            fwd = ds.forward.ipvsadm_name
            out.append(f"  -> {dname:<28} {fwd:<7} {ds.weight:<6} {c.active:<10} {c.inactive:<10}\n")
    return "".join(out)


def list_all(table: IpvsTable, fmt: Format, resolver: Resolver) -> str:
    """list_all(): the header (not for -S), the column titles and every service, sorted."""
    out = "" if fmt.rule else HEADER
    services = list(table.services) if fmt.nosort else glibc_msort(table.services, cmp_services)
    out += _title(fmt)
    return out + "".join(service_entry(s, fmt, resolver) for s in services)


def list_service(svc: Service, fmt: Format, resolver: Resolver) -> str:
    """list_service(): -L with a service: titles and that service only (no version header)."""
    return _title(fmt) + service_entry(svc, fmt, resolver)


def save(table: IpvsTable, numeric: bool, resolver: Resolver) -> str:
    """ipvsadm -S [-n]: the rules that -R restores."""
    return list_all(table, Format(numeric=numeric, rule=True), resolver)


def list_timeout(table: IpvsTable) -> str:
    t = table.timeouts
    return f"Timeout (tcp tcpfin udp): {t.tcp} {t.tcpfin} {t.udp}\n"


def list_conn(entries: Sequence[ConnEntry], fmt: Format, resolver: Resolver) -> str:
    """list_conn(): the connection table (IPVS connection entries)."""
    out = ["IPVS connection entries\n"]
    if fmt.persistent_conn:
        heads = f"{'state':<11} {'source':<18} {'virtual':<18} {'destination':<18} {'pe name':<16}"
        out.append(f"pro expire {heads} pe_data\n")
    else:
        out.append(f"pro expire {'state':<11} {'source':<18} {'virtual':<18} destination\n")
    for e in entries:
        proto = e.proto.value
        c, v, d = (
            addrport_to_anyname(k.addr, k.port, proto, numeric=fmt.numeric, resolver=resolver)
            for k in (e.client, e.virtual, e.dest)
        )
        minutes, seconds = divmod(e.expire_s, 60)
        expire = f"{minutes:02d}:{seconds:02d}"
        out.append(f"{proto:<3} {expire:<6} {e.state:<11} {c:<18} {v:<18} {d}\n")
    return "".join(out)
