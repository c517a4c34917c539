"""The ipvs dataplane against a real kernel (VM tier): ops, dumps, errors, sync daemon, listings."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from ipaddress import ip_address

import pytest

from gridlb.dataplane.base import Role, SyncDaemonSpec
from gridlb.dataplane.ipvs import IpvsDataplane, IpvsOptions
from gridlb.ipvsadm.format import Format, list_all, save
from gridlb.ipvsadm.names import SystemResolver
from gridlb.table import (
    AddService,
    Dest,
    DestSpec,
    EditDest,
    EditService,
    ForwardMethod,
    IpvsTable,
    Op,
    Proto,
    RealKey,
    Service,
    ServiceKey,
    ServiceSpec,
    Timeouts,
    diff,
)
from tests.support import lab, need_root, need_tool

pytestmark = [pytest.mark.ipvs, pytest.mark.privileged]


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh network namespace (a fresh IPVS table) with lo up (IPVS refuses DR reals without it)."""
    need_root()
    need_tool("ipvsadm")
    with lab("I", realservers=0, directors=0, start="none") as built:  # the lab's client namespace
        yield built.node("client").ns


def ipvsadm(ns: str, *args: str) -> str:
    return sh("ip", "netns", "exec", ns, "ipvsadm", *args)


def seed_like_table() -> IpvsTable:
    """Every kind of service and destination the dataplane programs."""
    v4 = ServiceKey.tcp("10.0.0.1", 2811)
    v6 = ServiceKey(Proto.UDP, ip_address("2001:db8::1"), 2811)
    fwm = ServiceKey(Proto.TCP, None, 0, fwmark=7)
    persist = ServiceKey.tcp("10.0.0.2", 2811)
    return IpvsTable(
        services=(
            Service(
                v4,
                ServiceSpec("wlc"),
                (Dest(RealKey.parse("10.0.0.12:2811"), DestSpec(2)), Dest(RealKey.parse("10.0.0.11:2811"))),
            ),
            Service(
                v6,
                ServiceSpec("rr", 600, "64"),
                (
                    Dest(
                        RealKey.parse("[2001:db8::11]:2811"),
                        DestSpec(3, ForwardMethod.MASQ, u_threshold=100, l_threshold=10),
                    ),
                ),
            ),
            Service(
                fwm,
                ServiceSpec("sh", flags=frozenset({"sh-port"})),
                (Dest(RealKey.parse("10.0.0.21:0"), DestSpec(1, ForwardMethod.TUNNEL)),),
            ),
            Service(persist, ServiceSpec("lc", 300, "255.255.255.0", one_packet=False)),
        ),
        timeouts=Timeouts(1000, 100, 200),
    )


async def test_programs_every_kind_and_lists_as_ipvsadm(netns: str) -> None:
    dp = IpvsDataplane(IpvsOptions(netns=netns))
    try:
        want = seed_like_table()
        results = await dp.apply(diff(await dp.dump(), want))
        assert [r.error for r in results if not r.ok] == []
        have = await dp.dump()
        assert diff(have, want) == []  # the kernel holds exactly the desired specs
        resolver = SystemResolver()
        assert ipvsadm(netns, "-Sn") == save(have, True, resolver)
        assert ipvsadm(netns, "-Ln") == list_all(have, Format(numeric=True), resolver)
        assert ipvsadm(netns, "-Ln", "--thresholds") == list_all(
            have, Format(numeric=True, thresholds=True), resolver
        )
        assert ipvsadm(netns, "-L", "--timeout") == "Timeout (tcp tcpfin udp): 1000 100 200\n"
        assert await dp.connections() == []
        version, size = await dp.version()
        assert version == "1.2.1" and size > 0
    finally:
        await dp.close()


async def test_edit_keeps_the_full_spec_drain_and_errors_per_op(netns: str) -> None:
    dp = IpvsDataplane(IpvsOptions(netns=netns))
    try:
        table = seed_like_table()
        await dp.apply(diff(IpvsTable(), table))
        key = ServiceKey.tcp("10.0.0.2", 2811)
        rip = RealKey.parse("10.0.0.11:2811")
        ops: list[Op] = [
            EditService(key, ServiceSpec("wrr", 300, "255.255.255.0")),  # "set" with the whole spec
            AddService(key, ServiceSpec()),  # refused: exists; the next op still runs
            EditDest(ServiceKey.tcp("10.0.0.1", 2811), rip, DestSpec(0)),  # drain
            EditDest(key, rip, DestSpec(0)),  # refused: no such destination
        ]
        results = await dp.apply(ops)
        assert [r.error for r in results] == ["", "Service already exists", "", "No such destination"]
        saved = ipvsadm(netns, "-Sn")
        assert "-A -t 10.0.0.2:2811 -s wrr -p 300 -M 255.255.255.0\n" in saved
        assert "-a -t 10.0.0.1:2811 -r 10.0.0.11:2811 -g -w 0\n" in saved
        errors = (await dp.counters()).errors
        assert errors == {"refused EEXIST": 1, "refused ENOENT": 1}
    finally:
        await dp.close()


async def test_sync_daemon_follows_the_role(netns: str) -> None:
    sh("ip", "-n", netns, "link", "add", "sync0", "type", "veth", "peer", "name", "sync1")
    sh("ip", "-n", netns, "link", "set", "sync0", "up")
    sh("ip", "-n", netns, "link", "set", "sync1", "up")
    dp = IpvsDataplane(IpvsOptions(netns=netns, sync=SyncDaemonSpec("sync0", 7, "VI_1")))
    try:
        await dp.set_role(Role.STANDALONE)
        assert [d.state.name for d in await dp.sync_daemons()] == []
        await dp.set_role(Role.BACKUP)
        assert [(d.state.name, d.interface, d.sync_id) for d in await dp.sync_daemons()] == [
            ("BACKUP", "sync0", 7)
        ]
        await dp.set_role(Role.MASTER)
        assert [(d.state.name, d.interface, d.sync_id) for d in await dp.sync_daemons()] == [
            ("MASTER", "sync0", 7)
        ]
        assert "master sync daemon (mcast=sync0, syncid=7," in ipvsadm(netns, "-L", "--daemon")
        await dp.set_role(Role.FAULT)
        assert [d.state.name for d in await dp.sync_daemons()] == ["BACKUP"]
        await dp.close()  # the table and the daemons stay: a restarted director adopts them
        assert "backup sync daemon (mcast=sync0, syncid=7," in ipvsadm(netns, "-L", "--daemon")
    finally:
        await dp.close()


async def test_a_dump_redumps_only_what_changed_and_a_full_dump_sees_the_rest(netns: str) -> None:
    """The dump after an apply needs no GET_DEST; a hand edit is seen by the next dump."""
    dp = IpvsDataplane(IpvsOptions(netns=netns, full_dump_s=3600))  # no full dump falls in this test
    full = IpvsDataplane(IpvsOptions(netns=netns, full_dump_s=0))  # every dump is a full one
    try:
        want = seed_like_table()
        await dp.apply(diff(await dp.dump(), want))
        before = dp.services_dumped
        have = await dp.dump()
        assert dp.services_dumped == before  # known: the last dump plus the accepted ops
        assert have == await full.dump()  # the same table, order and counters, as a full dump
        v4 = ServiceKey.tcp("10.0.0.1", 2811)
        ipvsadm(netns, "-e", "-t", "10.0.0.1:2811", "-r", "10.0.0.11:2811", "-g", "-w", "7")
        ipvsadm(netns, "-a", "-t", "10.0.0.2:2811", "-r", "10.0.0.31:2811", "-g")
        have = await dp.dump()
        assert dp.services_dumped == before + 2  # the two services the listing shows changed
        assert have == await full.dump()
        svc = have.service(v4)
        dest = svc.dest(RealKey.parse("10.0.0.11:2811")) if svc is not None else None
        assert dest is not None and dest.spec.weight == 7
        # What /proc/net/ip_vs does not show (thresholds) waits for the next full dump.
        ipvsadm(netns, "-e", "-t", "10.0.0.1:2811", "-r", "10.0.0.11:2811", "-g", "-w", "7", "-x", "50")
        svc = (await full.dump()).service(v4)
        dest = svc.dest(RealKey.parse("10.0.0.11:2811")) if svc is not None else None
        assert dest is not None and dest.spec.u_threshold == 50
        ipvsadm(netns, "-C")  # gone behind its back: the dump says so
        assert (await dp.dump()).services == ()
    finally:
        await dp.close()
        await full.close()
