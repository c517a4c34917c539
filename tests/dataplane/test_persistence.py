"""Persistence templates with the kernel's rules: reuse, re-arm, expire_later, invalidation, granularity."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from gridlb.dataplane.persistence import EXPIRE_LATER_S, PersistenceTable, client_net
from gridlb.dataplane.proxy_state import ProxyState, apply_all
from gridlb.ipvsadm.format import Format, list_conn
from gridlb.ipvsadm.names import StaticResolver
from gridlb.sched.base import Flow
from gridlb.table import (
    AddDest,
    AddService,
    DelDest,
    DestSpec,
    EditDest,
    Op,
    RealKey,
    ServiceKey,
    ServiceSpec,
)

SVC = ServiceKey.tcp("127.0.0.1", 2811)
A = RealKey.parse("127.0.0.2:2811")
B = RealKey.parse("127.0.0.3:2811")
C = RealKey.parse("127.0.0.4:2811")


def flow(client: str, port: int = 40000) -> Flow:
    return Flow(ip_address(client), port, ip_address("127.0.0.1"), 2811)


def make(timeout_s: int = 300, netmask: str = "") -> ProxyState:
    st = ProxyState()
    spec = ServiceSpec(scheduler="rr", persistence_timeout_s=timeout_s, netmask=netmask)
    ops: list[Op] = [AddService(SVC, spec), *(AddDest(SVC, k, DestSpec(weight=1)) for k in (C, B, A))]
    assert apply_all(st, ops) == [""] * len(ops)
    return st


@pytest.mark.parametrize(
    ("client", "mask", "net"),
    [
        ("10.1.2.3", "", "10.1.2.3"),
        ("10.1.2.3", "255.255.255.0", "10.1.2.0"),
        ("10.1.2.3", "255.255.0.0", "10.1.0.0"),
        ("2001:db8:1:2::9", "64", "2001:db8:1:2::"),
        ("2001:db8:1:2::9", "", "2001:db8:1:2::9"),
    ],
)
def test_client_net_masks_as_the_kernel(client: str, mask: str, net: str) -> None:
    assert client_net(ip_address(client), mask) == ip_address(net)


def pick_key(st: ProxyState, client: Flow, now: float) -> RealKey:
    """The real server `st` picks for `client` in the service SVC (one must be picked)."""
    d = st.pick(st.services[SVC], client, now)
    assert d is not None
    return d.key


def test_fifty_connections_from_one_client_reach_one_server_while_rr_would_spread() -> None:
    st = make()
    picked = {pick_key(st, flow("10.9.9.9", 40000 + i), now=float(i)) for i in range(50)}
    assert len(picked) == 1
    others = {pick_key(st, flow(f"10.9.9.{i}"), now=1.0) for i in range(10, 16)}
    assert len(others) == 3  # rr over new clients: every server in turn
    snap = st.snapshot().services[0]
    assert sum(d.counters.persistent for d in snap.dests) == 7  # one template per client
    assert sum(d.counters.active for d in snap.dests) == 56  # templates are not connections


def test_granularity_groups_a_network() -> None:
    st = make(netmask="255.255.255.0")
    got = {pick_key(st, flow(f"10.9.9.{i}"), now=0.0) for i in range(1, 30)}
    assert len(got) == 1
    assert len(st.persist.live) == 1


def test_template_rearmed_by_each_use_expires_after_timeout_then_client_may_move() -> None:
    st = make(timeout_s=10)
    svc = st.services[SVC]
    d = st.pick(svc, flow("10.0.0.1", 1), now=0.0)
    assert d is not None
    st.closed_conn(d, 0.5, "10.0.0.1", 1)  # freed at 0.5 + tcpfin (120)
    st.expire(8.0)
    assert st.pick(svc, flow("10.0.0.1", 2), now=8.0) is d  # re-armed: expires at 18
    st.closed_conn(d, 8.0, "10.0.0.1", 2)
    st.expire(17.0)
    assert len(st.persist.live) == 1
    # Timer ran out at 18 while both connections still count inactive: expire_later, 60 s.
    st.expire(18.0)
    (t,) = st.persist.live
    assert t.expires == 18.0 + EXPIRE_LATER_S and t.n_control == 2
    st.expire(128.5)  # both inactive entries freed (0.5+120, 8+120): nothing controlled
    assert t.n_control == 0
    st.expire(18.0 + EXPIRE_LATER_S)
    assert not st.persist.live
    # the next connection is scheduled afresh (rr moves on from where it stood)
    assert st.pick(svc, flow("10.0.0.1", 3), now=200.0) is not d


def test_drained_server_keeps_its_templates_deleted_and_failed_ones_are_dropped() -> None:
    st = make()
    svc = st.services[SVC]
    d = st.pick(svc, flow("10.0.0.1"), now=0.0)
    assert d is not None
    apply_all(st, [EditDest(SVC, d.key, DestSpec(weight=0))])
    assert st.pick(svc, flow("10.0.0.1", 2), now=1.0) is d  # expire_quiescent_template = 0
    apply_all(st, [DelDest(SVC, d.key)])
    moved = st.pick(svc, flow("10.0.0.1", 3), now=2.0)
    assert moved is not None and moved.key != d.key
    # the invalidated template is still listed, unhashed (ports 65535), until its timer ends
    rows = list_conn(st.template_entries(2.0), Format(numeric=True), StaticResolver()).splitlines()
    assert f"TCP 04:59  NONE        10.0.0.1:0         127.0.0.1:65535    {d.key.addr}:65535" in rows
    assert f"TCP 05:00  NONE        10.0.0.1:0         127.0.0.1:2811     {moved.key}" in rows
    # passive failure: the template is dropped at the next connection
    st.connect_failed(moved, mark_down=True, flow=flow("10.0.0.1", 3))
    again = st.pick(svc, flow("10.0.0.1", 4), now=3.0)
    assert again is not None and again is not moved


def test_expire_quiescent_drops_drained_templates_when_asked() -> None:
    st = make()
    st.persist.expire_quiescent = True
    svc = st.services[SVC]
    d = st.pick(svc, flow("10.0.0.1"), now=0.0)
    assert d is not None
    apply_all(st, [EditDest(SVC, d.key, DestSpec(weight=0))])
    assert st.pick(svc, flow("10.0.0.1", 2), now=1.0) is not d


def test_failed_connect_releases_the_template() -> None:
    st = make(timeout_s=5)
    svc = st.services[SVC]
    f = flow("10.0.0.1")
    d = st.pick(svc, f, now=0.0)
    assert d is not None
    st.connect_failed(d, mark_down=False, flow=f)
    assert not st.controls
    st.expire(5.0)
    assert not st.persist.live


def test_table_alone_rearms_and_counts() -> None:
    table: PersistenceTable[str] = PersistenceTable()
    t = table.create(SVC, "", ip_address("10.0.0.1"), "a", 10, now=0.0)
    table.use(t, 0.0)
    assert table.count("a") == 1 and table.count("b") == 0
    assert table.expire(9.0) == 10.0
    table.release(t)
    assert table.expire(10.0) is None
    assert table.count("a") == 0


def test_data_connections_follow_the_newest_control_connection_of_the_client() -> None:
    st = ProxyState()
    spec = ServiceSpec(scheduler="rr")
    assert (
        apply_all(st, [AddService(SVC, spec), *(AddDest(SVC, k, DestSpec(weight=1)) for k in (C, B, A))])
        == [""] * 4
    )
    svc = st.services[SVC]
    svc.tracks_owner = True
    assert st.pick_owner(svc, flow("10.0.0.1", 50001)) is None  # nobody holds this client: refused
    first = st.pick(svc, flow("10.0.0.1", 1000), now=0.0)
    other = st.pick(svc, flow("10.0.0.2", 1000), now=0.0)
    assert first is not None and other is not None and first is not other
    data = st.pick_owner(svc, flow("10.0.0.1", 50001))
    assert data is first and first.active == 2  # the data connection counts on that server
    st.closed_conn(data, 1.0, "10.0.0.1", 50001)  # a data connection closing changes no owner
    assert st.pick_owner(svc, flow("10.0.0.1", 50002)) is first
    st.closed_conn(first, 2.0, "10.0.0.1", 1000)  # the control connection ended
    assert st.pick_owner(svc, flow("10.0.0.1", 50003)) is None
    assert not st.owners.get((SVC, ip_address("10.0.0.1")))
    # a failed control connect forgets its owner entry too
    d = st.pick(svc, flow("10.0.0.3", 7), now=3.0)
    assert d is not None
    st.connect_failed(d, mark_down=False, flow=flow("10.0.0.3", 7))
    assert st.pick_owner(svc, flow("10.0.0.3", 50004)) is None


def test_data_connection_falls_back_to_the_persistence_template() -> None:
    st = make()
    svc = st.services[SVC]
    svc.tracks_owner = True
    d = st.pick(svc, flow("10.0.0.1", 1000), now=0.0)
    assert d is not None
    st.closed_conn(d, 1.0, "10.0.0.1", 1000)
    assert st.pick_owner(svc, flow("10.0.0.1", 50001)) is d  # no control open, the template holds


def test_the_site_setting_reaches_the_templates() -> None:
    import asyncio

    from gridlb.config.schema import GridlbSettings
    from gridlb.dataplane.base import DataplaneHooks
    from gridlb.dataplane.proxy import FACTORY
    from gridlb.dataplane.workers import WorkerPool

    async def main() -> tuple[bool, bool]:
        on = FACTORY.create(
            GridlbSettings.model_validate({"proxy": {"expire_quiescent_template": True}}), DataplaneHooks()
        )
        off = FACTORY.create(GridlbSettings(), DataplaneHooks())
        try:
            assert isinstance(on._pool, WorkerPool) and isinstance(off._pool, WorkerPool)  # one worker
            return on._pool.state.persist.expire_quiescent, off._pool.state.persist.expire_quiescent
        finally:
            await on.close()
            await off.close()

    assert asyncio.run(main()) == (True, False)
