"""Hypothesis strategies for IPVS tables."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address

from hypothesis import strategies as st

from gridlb.ipvsadm.model import KERNEL_SCHEDULERS
from gridlb.table import (
    ConnEntry,
    Dest,
    DestCounters,
    DestSpec,
    ForwardMethod,
    IpvsTable,
    Proto,
    RealKey,
    Service,
    ServiceKey,
    ServiceSpec,
    Stats,
    Timeouts,
)

v4 = st.integers(0x01000000, 0xDFFFFFFF).map(IPv4Address)  # unicast-looking
v6 = st.integers(0x20000000000000000000000000000000, 0x3FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF).map(IPv6Address)
ports = st.one_of(st.sampled_from([80, 2811, 53, 443]), st.integers(1, 65535))


def addrs(af: int) -> st.SearchStrategy[IPv4Address | IPv6Address]:
    """The address strategy of family `af` (4 or 6)."""
    return v4 if af == 4 else v6


@st.composite
def service_specs(draw: st.DrawFn, key: ServiceKey) -> ServiceSpec:
    sched = draw(st.sampled_from(sorted(KERNEL_SCHEDULERS)))
    names = {"sh": ["sh-fallback", "sh-port"], "mh": ["mh-fallback", "mh-port"]}.get(
        sched, ["flag-1", "flag-2", "flag-3"]
    )
    persistent = draw(st.one_of(st.just(0), st.integers(1, 86400 * 31)))
    netmask = ""
    if draw(st.booleans()):
        if key.af == 6:
            netmask = str(draw(st.integers(1, 127)))
        else:
            netmask = str(IPv4Address(draw(st.integers(0, 0xFFFFFFFE))))
    return ServiceSpec(
        scheduler=sched,
        persistence_timeout_s=persistent,
        netmask=netmask if persistent else "",
        flags=frozenset(draw(st.sets(st.sampled_from(names)))),
        one_packet=draw(st.booleans()) if (key.fwmark or key.proto is Proto.UDP) else False,
        pe_name=draw(st.sampled_from(["", "sip"])),
    )


@st.composite
def services(draw: st.DrawFn, *, counters: bool = False) -> Service:
    kind = draw(st.sampled_from(["v4", "v6", "fwm4", "fwm6"]))
    if kind.startswith("fwm"):
        key = ServiceKey(Proto.TCP, None, 0, draw(st.integers(1, 2**32 - 1)), 6 if kind == "fwm6" else 4)
    else:
        proto = draw(st.sampled_from(list(Proto)))
        key = ServiceKey(proto, draw(addrs(4 if kind == "v4" else 6)), draw(ports))
    spec = draw(service_specs(key))
    af = key.af
    dests: dict[RealKey, Dest] = {}
    for _ in range(draw(st.integers(0, 6))):
        fwd = draw(st.sampled_from([ForwardMethod.MASQ, ForwardMethod.ROUTE, ForwardMethod.TUNNEL]))
        port = draw(ports) if (key.fwmark or fwd is ForwardMethod.MASQ) else key.port
        rkey = RealKey(draw(addrs(af)), port)
        dspec = DestSpec(weight=draw(st.integers(0, 65535)), forward=fwd)
        if fwd is ForwardMethod.TUNNEL:
            ttype = draw(st.sampled_from(["ipip", "gue", "gre"]))
            dspec = replace(dspec, tun_type=ttype)
            if ttype == "gue":
                tun_port = draw(st.integers(1, 65535))
                tun_flags = draw(st.sampled_from(["nocsum", "csum", "remcsum"]))
                dspec = replace(dspec, tun_port=tun_port, tun_flags=tun_flags)
            elif ttype == "gre":
                dspec = replace(dspec, tun_flags=draw(st.sampled_from(["nocsum", "csum"])))
        cnt = DestCounters()
        if counters:
            cnt = draw(st.builds(DestCounters, stats=st.builds(Stats)))
        dests[rkey] = Dest(rkey, dspec, cnt)
    stats = draw(st.builds(Stats)) if counters else Stats()
    return Service(key, spec, tuple(dests.values()), stats)


@st.composite
def tables(draw: st.DrawFn, *, counters: bool = False) -> IpvsTable:
    svcs = {s.key: s for s in draw(st.lists(services(counters=counters), max_size=5))}
    if not counters:
        return IpvsTable(tuple(svcs.values()))
    conns = draw(
        st.lists(
            st.builds(
                ConnEntry,
                st.sampled_from(list(Proto)),
                st.integers(0, 10**6),
                st.sampled_from(["ESTABLISHED", "FIN_WAIT", "NONE"]),
                st.builds(RealKey, v4, ports),
                st.builds(RealKey, v4, ports),
                st.builds(RealKey, v4, ports),
            ),
            max_size=3,
        )
    )
    timeouts = draw(st.builds(Timeouts, st.integers(1, 10**6), st.integers(1, 10**6), st.integers(1, 10**6)))
    return IpvsTable(tuple(svcs.values()), timeouts, tuple(conns))
