"""ipvsadm listings byte for byte: the seed's own -S/-L, every listing format, and the sort order."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_address
from pathlib import Path

from gridlb.ipvsadm.format import Format, glibc_msort, largenum
from gridlb.ipvsadm.names import StaticResolver
from gridlb.table import ConnEntry, DestCounters, IpvsTable, Proto, RealKey, ServiceKey, Stats
from tests.ipvsadm.helpers import NO_DNS, SEED_DNS, SERVICES, restore, run

DATA = Path(__file__).resolve().parents[1] / "data"
SEED_S = (DATA / "seed-ipvsadm-S.txt").read_text()
SEED_L = (DATA / "seed-ipvsadm-L.txt").read_text()
V6_S = "".join(line for line in SEED_S.splitlines(keepends=True) if "[" in line)
HEADER = "IP Virtual Server version 1.2.1 (size=4096)\n"
TITLES = (
    "Prot LocalAddress:Port Scheduler Flags\n"
    "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
)


def test_seed_ipv6_service_restores_and_saves_byte_identical() -> None:
    table = restore(V6_S)
    assert run("-S", table).out == V6_S
    assert run("-S -n", table).out == V6_S.replace(":gsiftp", ":2811")


def test_seed_ipv6_service_lists_as_the_seed_shows_it() -> None:
    table = restore(V6_S)
    out = run("-L", table).out
    seed_v6 = SEED_L[SEED_L.index("TCP  [") :]
    assert out == HEADER + TITLES + "".join(
        # the seed's markdown stripped the trailing blanks ipvsadm prints after InActConn (%-10u)
        line + " " * 9 + "\n" if line.startswith("  ->") else line + "\n"
        for line in seed_v6.splitlines()
    )
    assert [line.rstrip() for line in out.splitlines()] == (HEADER + TITLES + seed_v6).splitlines()


def test_whole_seed_round_trips_with_names_resolved() -> None:
    table = restore(SEED_S, resolver=SEED_DNS)
    assert run("-S", table, resolver=SEED_DNS).out == SEED_S
    # give the destinations the seed's connection counts, then -L is the seed's listing
    counts: dict[str, tuple[int, int]] = {}
    for line in SEED_L.splitlines():
        if line.startswith("  -> red-gridftp"):
            name, _fwd, _w, active_col, inactive_col = line.split()[1:]
            counts[name] = (int(active_col), int(inactive_col))
    svc = table.service(ServiceKey.tcp("129.93.239.157", 2811))
    assert svc is not None
    dests = []
    for d in svc.dests:
        host = SEED_DNS.host_by_addr(d.key.addr)
        active, inactive = counts[f"{host}:gsiftp"]
        dests.append(replace(d, counters=DestCounters(active=active, inactive=inactive)))
    table = table.with_service(replace(svc, dests=tuple(dests)))
    out = run("-L", table, resolver=SEED_DNS).out
    assert [line.rstrip() for line in out.splitlines()] == SEED_L.splitlines()


def test_ipv4_names_are_cut_to_ipvsadm_column_widths() -> None:
    table = restore("-A -t 10.0.0.1:2811\n-a -t 10.0.0.1:2811 -r 10.0.0.2:2811\n")
    long = {
        "a-very-long-virtual-host-name.example.org": "10.0.0.1",
        "a-long-real-server-name.example.org": "10.0.0.2",
    }
    r = StaticResolver({k: ip_address(v) for k, v in long.items()}, SERVICES)
    lines = run("-L", table, resolver=r).out.splitlines()
    assert lines[3] == "TCP  a-very-long-virtual-host-nam wlc"  # svc_name[33] = '\0'
    assert lines[4] == "  -> a-long-real-server-name.exam Route   1      0          0         "


def test_largenum_scales_like_print_largenum() -> None:
    f = Format()
    assert largenum(99_999_999, f) == " 99999999"
    assert largenum(100_000_000, f) == "  100000K"
    assert largenum(1_234_567_890, f) == "    1234M"
    assert largenum(123_456_789_012, f) == "     123G"
    assert largenum(123_456_789_012_345, f) == "     123T"
    assert largenum(123_456_789_012, Format(exact=True)) == " 123456789012"
    assert largenum(5, Format(exact=True)) == "        5"


def _with_traffic(table: IpvsTable) -> IpvsTable:
    svc = table.services[0]
    stats = Stats(
        conns=12, inpkts=3400, outpkts=0, inbytes=123_456_789_012, outbytes=0, cps=1, inpps=20, inbps=3000
    )
    dests = tuple(
        replace(d, counters=DestCounters(active=2, inactive=7, persistent=1, stats=stats)) for d in svc.dests
    )
    return table.with_service(replace(svc, stats=stats, dests=dests))


def test_stats_rate_thresholds_persistent_conn_exact() -> None:
    table = _with_traffic(
        restore("-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.0.2 -m -w 3 -x 50 -y 10\n")
    )
    svc_line = f"{'TCP  10.0.0.1:80':<33}" + "       12     3400        0     123G        0"
    dest_line = f"  -> {'10.0.0.2:80':<28}" + "       12     3400        0     123G        0"
    assert run("-L -n --stats", table).out == (
        HEADER + "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n"
        "  -> RemoteAddress:Port\n" + svc_line + "\n" + dest_line + "\n"
    )
    assert run("-L -n --stats --exact", table).out.splitlines()[3] == (
        f"{'TCP  10.0.0.1:80':<33}" + "       12     3400        0 123456789012        0"
    )
    assert run("-L -n --rate", table).out.splitlines()[1:] == [
        "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS",
        "  -> RemoteAddress:Port",
        f"{'TCP  10.0.0.1:80':<33}        1       20        0     3000        0",
        f"  -> {'10.0.0.2:80':<28}        1       20        0     3000        0",
    ]
    assert run("-L -n --thresholds", table).out.splitlines()[1:] == [
        "Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn ",
        "  -> RemoteAddress:Port",
        "TCP  10.0.0.1:80 rr",
        f"  -> {'10.0.0.2:80':<28} 50         10         2          7         ",
    ]
    assert run("-L -n --persistent-conn", table).out.splitlines()[4] == (
        f"  -> {'10.0.0.2:80':<28} 3         1           2          7         "
    )


def test_service_flags_persistence_and_ops_text() -> None:
    table = restore(
        "-A -u 10.0.0.1:53 -s sh -p 600 -M 255.255.255.0 -o -b sh-fallback,sh-port\n"
        "-A -f 7 -6 -s mh -p 60 -M 64 --pe sip -b mh-port\n"
        "-A -t 10.0.0.1:80 -s wrr -b flag-3\n"
    )
    assert run("-L -n", table).out.splitlines()[3:] == [
        "TCP  10.0.0.1:80 wrr (flag-3)",
        "UDP  10.0.0.1:53 sh (sh-fallback,sh-port) persistent 600 mask 255.255.255.0 ops",
        "FWM  7 IPv6 mh (mh-port) persistent 60 mask 64 pe sip",
    ]
    assert run("-S -n", table).out.splitlines() == [
        "-A -t 10.0.0.1:80 -s wrr -b flag-3",
        "-A -u 10.0.0.1:53 -s sh -p 600 -M 255.255.255.0 -o -b sh-fallback,sh-port",
        "-A -f 7 -6 -s mh -p 60 -M 64 --pe sip -b mh-port",
    ]


def test_tunnel_destinations_save_their_type_and_list_tun_info() -> None:
    table = restore(
        "-A -t 10.0.0.1:80\n"
        "-a -t 10.0.0.1:80 -r 10.0.0.2 -i\n"
        "-a -t 10.0.0.1:80 -r 10.0.0.3 -i --tun-type gue --tun-port 6080 --tun-csum\n"
        "-a -t 10.0.0.1:80 -r 10.0.0.4 -i --tun-type gre --tun-nocsum\n"
    )
    assert run("-S -n", table).out.splitlines()[1:] == [
        "-a -t 10.0.0.1:80 -r 10.0.0.2:80 -i -w 1 --tun-type ipip",
        "-a -t 10.0.0.1:80 -r 10.0.0.3:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-csum",
        "-a -t 10.0.0.1:80 -r 10.0.0.4:80 -i -w 1 --tun-type gre --tun-nocsum",
    ]
    assert run("-L -n --tun-info", table).out.splitlines()[2:] == [
        "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn",
        "TCP  10.0.0.1:80 wlc",
        f"  -> {'10.0.0.2:80':<28} Tunnel  ipip          1      0          0         ",
        f"  -> {'10.0.0.3:80':<28} Tunnel  gue:6080:+c   1      0          0         ",
        f"  -> {'10.0.0.4:80':<28} Tunnel  gre:-c        1      0          0         ",
    ]


def test_sorting_keeps_libipvs_wraparound_and_nosort_keeps_kernel_order() -> None:
    table = restore(
        "-A -t 10.0.0.1:80\n-A -t 200.0.0.1:80\n-A -u 10.0.0.1:80\n-A -t 10.0.0.1:22\n"
        "-A -f 3\n-A -t [::1]:80\n"
        "-a -t 10.0.0.1:80 -r 10.0.0.9\n-a -t 10.0.0.1:80 -r 10.0.0.3\n-a -t 10.0.0.1:80 -r 192.168.0.1\n"
    )
    services = [line for line in run("-L -n", table).out.splitlines() if not line.startswith(" ")][2:]
    # (int)(ntohl(a) - ntohl(b)): 10.0.0.1 - 200.0.0.1 wraps to a positive number, so 200.x sorts first
    assert services == [
        "TCP  200.0.0.1:80 wlc",
        "TCP  10.0.0.1:22 wlc",
        "TCP  10.0.0.1:80 wlc",
        "UDP  10.0.0.1:80 wlc",
        "TCP  [::1]:80 wlc",
        "FWM  3 wlc",
    ]
    dests = [line.split()[1] for line in run("-L -n -t 10.0.0.1:80", table).out.splitlines()[3:]]
    assert dests == ["192.168.0.1:80", "10.0.0.3:80", "10.0.0.9:80"]
    nosort = [line.split()[1] for line in run("-L -n --nosort -t 10.0.0.1:80", table).out.splitlines()[3:]]
    assert nosort == ["192.168.0.1:80", "10.0.0.3:80", "10.0.0.9:80"]  # kernel order: newest first


def test_glibc_msort_is_stable() -> None:
    items = [(1, "a"), (0, "b"), (1, "c"), (0, "d")]
    assert glibc_msort(items, lambda x, y: x[0] - y[0]) == [(0, "b"), (0, "d"), (1, "a"), (1, "c")]


def test_timeout_and_connection_listing() -> None:
    table = run("--set 3600 60 0", IpvsTable()).table
    assert run("-L --timeout", table).out == "Timeout (tcp tcpfin udp): 3600 60 300\n"
    conn = ConnEntry(
        Proto.TCP,
        125,
        "ESTABLISHED",
        RealKey.parse("192.0.2.7:40000"),
        RealKey.parse("10.0.0.1:2811"),
        RealKey.parse("10.0.0.2:2811"),
    )
    table = replace(table, connections=(conn,))
    assert run("-L -c -n", table).out == (
        "IPVS connection entries\n"
        "pro expire state       source             virtual            destination\n"
        "TCP 02:05  ESTABLISHED 192.0.2.7:40000    10.0.0.1:2811      10.0.0.2:2811\n"
    )
    assert run("-Lc", table, resolver=NO_DNS).out.splitlines()[2].endswith("10.0.0.2:gsiftp")


def test_addresses_2_to_the_31_apart_keep_input_order_as_ipvsadm_does() -> None:
    a = restore("-A -t 1.0.0.0:80\n-A -t 129.0.0.0:80\n")
    b = restore("-A -t 129.0.0.0:80\n-A -t 1.0.0.0:80\n")
    first = [line.split()[1] for line in run("-Ln", a).out.splitlines()[3:]]
    second = [line.split()[1] for line in run("-Ln", b).out.splitlines()[3:]]
    assert first == ["1.0.0.0:80", "129.0.0.0:80"] and second == ["129.0.0.0:80", "1.0.0.0:80"]
