"""Pure bookkeeping of the dr dataplane: scheduling with the kernel's counts, TCP states, expiry, chains."""

from __future__ import annotations

from ipaddress import ip_address

from gridlb.dataplane.dr_rules import FlowKey
from gridlb.dataplane.dr_state import SYN_TIMEOUT_S, Activity, DrState, Link, TcpState
from gridlb.table import AddDest, AddService, DelDest, DestSpec, EditDest, RealKey, ServiceKey, ServiceSpec

SVC = ServiceKey.tcp("10.0.0.100", 2811)
RS = [RealKey.parse(f"10.0.0.{i}:2811") for i in (11, 12, 13)]


def state(weights: tuple[int, ...] = (1, 1, 1)) -> DrState:
    s = DrState()
    s.apply(AddService(SVC, ServiceSpec("wlc")))
    for rs, w in zip(RS, weights, strict=True):
        s.apply(AddDest(SVC, rs, DestSpec(weight=w)))
        s.set_link(rs.addr, Link("eth0", "02:00:00:00:00:02", f"02:00:00:00:00:{rs.addr.packed[-1]:02x}"))
    return s


def flow(port: int) -> FlowKey:
    return FlowKey(ip_address("10.0.0.50"), port, ip_address("10.0.0.100"), 2811)


def counts(s: DrState) -> dict[str, tuple[int, int]]:
    svc = s.table.services[SVC]
    return {str(d.key.addr): (d.active, d.inactive) for d in svc.dests}


def test_a_scheduled_syn_counts_inactive_then_established_active_then_fin_inactive() -> None:
    s = state()
    rec = s.schedule(flow(1000), now=0.0)
    assert rec is not None and rec.state is TcpState.SYN_RECV
    assert counts(s)[str(rec.dest.key.addr)] == (0, 1)
    s.observe({flow(1000): 900.0}, {}, now=1.0)
    assert rec.state is TcpState.ESTABLISHED
    assert counts(s)[str(rec.dest.key.addr)] == (1, 0)
    s.observe({flow(1000): 899.0}, {flow(1000): 120.0}, now=2.0)
    assert rec.state is TcpState.FIN_WAIT
    assert counts(s)[str(rec.dest.key.addr)] == (0, 1)
    expired = s.observe({flow(1000): 898.0}, {}, now=130.0)
    assert expired == [flow(1000)]
    assert counts(s)[str(rec.dest.key.addr)] == (0, 0)


def test_syn_recv_expires_after_the_syn_timeout_only() -> None:
    s = state()
    s.schedule(flow(1), now=0.0)
    assert s.observe({}, {}, now=SYN_TIMEOUT_S - 1) == []
    assert s.observe({}, {}, now=SYN_TIMEOUT_S + 1) == [flow(1)]


def test_wlc_uses_the_observed_counts_newest_destination_first() -> None:
    s = state()
    picks = []
    for port in range(6):
        rec = s.schedule(flow(port), now=0.0)
        assert rec is not None
        s.observe({k: 900.0 for k in s.flows}, {}, now=0.0)
        picks.append(str(rec.dest.key.addr))
    assert picks == ["10.0.0.13", "10.0.0.12", "10.0.0.11"] * 2


def test_a_flow_keeps_its_chain_through_drain_and_delete_until_it_expires() -> None:
    s = state()
    rec = s.schedule(flow(7), now=0.0)
    assert rec is not None
    victim = rec.dest.key
    s.observe({flow(7): 900.0}, {}, now=1.0)
    s.apply(EditDest(SVC, victim, DestSpec(weight=0)))
    for port in range(100, 110):
        other = s.schedule(flow(port), now=1.0)
        assert other is not None and other.dest.key != victim
    s.apply(DelDest(SVC, victim))
    assert rec.chain in {d.chain for d in s.ruleset().dests}
    assert s.flows[flow(7)].chain == rec.chain
    s.observe({k: 900.0 for k in s.flows if k != flow(7)}, {}, now=2.0)
    assert rec.chain not in {d.chain for d in s.ruleset().dests}


def test_a_destination_without_a_known_mac_is_not_scheduled() -> None:
    s = DrState()
    s.apply(AddService(SVC, ServiceSpec("wlc")))
    s.apply(AddDest(SVC, RS[0], DestSpec()))
    s.apply(AddDest(SVC, RS[1], DestSpec()))
    s.set_link(RS[0].addr, Link("eth0", "02:00:00:00:00:02", "02:00:00:00:00:0b"))
    for port in range(5):
        rec = s.schedule(flow(port), now=0.0)
        assert rec is not None and rec.dest.key == RS[0]
    assert [d.chain for d in s.ruleset().dests] == [s.chains[(SVC, RS[0])]]
    assert s.ruleset().devices == ("eth0",)


def test_a_syn_for_no_service_or_without_destinations_is_not_scheduled() -> None:
    s = DrState()
    assert s.schedule(flow(1), now=0.0) is None
    s.apply(AddService(SVC, ServiceSpec("wlc")))
    assert s.schedule(flow(1), now=0.0) is None


def test_snapshot_takes_packets_and_bytes_from_the_chain_counters() -> None:
    s = state()
    s.counters = {s.chains[(SVC, RS[0])]: (10, 600)}
    table = s.snapshot()
    svc = table.services[0]
    d = svc.dest(RS[0])
    assert d is not None and d.counters.stats.inpkts == 10 and d.counters.stats.inbytes == 600
    assert svc.stats.inpkts == 10


def test_a_backup_learns_synced_flows_counts_them_and_holds_them_for_their_timeout() -> None:
    s = state()
    rec = s.learn(flow(5), RS[1], TcpState.ESTABLISHED, 900, now=0.0)
    assert rec is not None and rec.dest.key == RS[1]
    assert counts(s)["10.0.0.12"] == (1, 0)
    assert s.learn(flow(5), RS[1], TcpState.FIN_WAIT, 120, now=1.0) is None  # known: state only
    assert counts(s)["10.0.0.12"] == (0, 1)
    assert s.observe({}, {}, now=100.0) == []  # no own packets yet: held
    assert s.observe({}, {}, now=122.0) == [flow(5)]
    assert counts(s)["10.0.0.12"] == (0, 0)


def test_a_synced_flow_that_moved_is_rebound_and_unknown_reals_are_ignored() -> None:
    s = state()
    s.learn(flow(5), RS[1], TcpState.ESTABLISHED, 900, now=0.0)
    moved = s.learn(flow(5), RS[2], TcpState.ESTABLISHED, 900, now=1.0)
    assert moved is not None and moved.dest.key == RS[2]
    assert counts(s)["10.0.0.12"] == (0, 0) and counts(s)["10.0.0.13"] == (1, 0)
    assert s.learn(flow(6), RealKey.parse("10.0.0.99:2811"), TcpState.ESTABLISHED, 900, now=1.0) is None
    assert flow(6) not in s.flows


def test_the_master_sends_established_and_closing_flows_on_change_and_refresh() -> None:
    s = state()
    s.schedule(flow(1), now=0.0)
    assert s.to_sync(0.0, 60.0) == []  # SYN_RECV is not synced
    s.observe({flow(1): 900.0}, {}, now=0.5)
    assert [r.key for r in s.to_sync(0.5, 60.0)] == [flow(1)]
    assert s.to_sync(1.0, 60.0) == []
    s.observe({flow(1): 900.0}, {flow(1): 120.0}, now=2.0)
    assert [r.state for r in s.to_sync(2.0, 60.0)] == [TcpState.FIN_WAIT]
    assert [r.key for r in s.to_sync(62.5, 60.0)] == [flow(1)]


def test_activity_sees_a_flow_while_its_packet_count_moves_within_the_tcp_timeout() -> None:
    a, b, c = flow(1000), flow(1001), flow(1002)
    act = Activity()
    # first poll: a count above 0 means packets passed; 0 (only the scheduled SYN so far) does not
    assert act.update({a: 3, b: 0}, now=0.0, timeout_s=900) == {a: 900.0}
    # b's first packet after its SYN; a idle: its time runs down from when it last moved
    assert act.update({a: 3, b: 1}, now=10.0, timeout_s=900) == {a: 890.0, b: 900.0}
    # the element was added again (a rebuild): its count reset, which is a change too
    assert act.update({a: 0, b: 1, c: 0}, now=20.0, timeout_s=900) == {a: 900.0, b: 890.0}
    # the TCP timeout runs out for b; a flow gone from the map is forgotten
    assert act.update({a: 5, b: 1}, now=910.0, timeout_s=900) == {a: 900.0}
    assert act.update({b: 1}, now=911.0, timeout_s=900) == {}
    assert act.update({a: 5}, now=912.0, timeout_s=900) == {a: 900.0}  # back: counted as new


def test_activity_feeds_observe_as_the_state_set_did() -> None:
    s = state()
    act = Activity()
    rec = s.schedule(flow(1000), 0.0)
    assert rec is not None and rec.state is TcpState.SYN_RECV
    s.observe(act.update({flow(1000): 0}, 0.5, s.timeouts.tcp), {}, 0.5)
    assert rec.state is TcpState.SYN_RECV
    s.observe(act.update({flow(1000): 2}, 1.0, s.timeouts.tcp), {}, 1.0)
    assert rec.state is TcpState.ESTABLISHED and sum(v[0] for v in counts(s).values()) == 1
    later = 1.0 + s.timeouts.tcp + 1
    assert s.observe(act.update({flow(1000): 2}, later, s.timeouts.tcp), {}, later) == [flow(1000)]


def mh_state() -> DrState:
    s = DrState()
    s.apply(AddService(SVC, ServiceSpec("mh", flags=frozenset({"mh-port"}))))
    for rs in RS:
        s.apply(AddDest(SVC, rs, DestSpec()))
        s.set_link(rs.addr, Link("eth0", "02:00:00:00:00:02", f"02:00:00:00:00:{rs.addr.packed[-1]:02x}"))
    return s


def test_a_flow_met_mid_connection_is_adopted_by_the_maglev_table_as_its_syn_was_elsewhere() -> None:
    elsewhere, here = mh_state(), mh_state()  # two directors with the same real servers
    assert here.ruleset().mh_services == frozenset({(SVC.addr, 2811)})
    for port in range(40000, 40050):
        syn = elsewhere.schedule(flow(port), now=0.0)
        adopted = here.adopt(flow(port), now=5.0)
        assert syn is not None and adopted is not None
        assert adopted.dest.key == syn.dest.key and adopted.state is TcpState.ESTABLISHED
    assert sum(a for a, _ in counts(here).values()) == 50  # established: active
    assert here.adopt(flow(40000), now=6.0) is None  # known already
    assert here.observe({flow(40000): 900.0}, {}, now=30.0) == []  # held until its packets show
    assert len(here.observe({flow(40000): 870.0}, {}, now=5.0 + SYN_TIMEOUT_S + 1)) == 49  # or not


def test_only_mh_services_adopt_mid_connection_flows() -> None:
    s = state()  # wlc: another director may have picked any real server
    assert s.ruleset().mh_services == frozenset()
    assert s.adopt(flow(1), now=0.0) is None
    assert mh_state().adopt(FlowKey(ip_address("10.0.0.50"), 1, ip_address("10.0.0.99"), 2811), 0.0) is None
