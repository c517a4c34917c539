"""Pure bookkeeping of the dr dataplane: scheduling with the kernel's counts, TCP states, expiry, chains."""

from __future__ import annotations

from ipaddress import ip_address

from gridlb.dataplane.dr_rules import FlowKey
from gridlb.dataplane.dr_state import IDLE_CHECK_S, SYN_TIMEOUT_S, DrState, FlowRec, Link, TcpState
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


def tcp_state(rec: FlowRec) -> TcpState:
    """The record's state now: a call, so that a check after a poll reads it again (the poll moves it)."""
    return rec.state


def poll(
    s: DrState, now: float, packets: dict[FlowKey, int], fin: dict[FlowKey, float] | None = None
) -> list[FlowKey]:
    """One poll as the dataplane does it, against a kernel whose map counters are `packets` and
    whose FIN set is `fin` (seconds left): read back only the flows `due` names, and the FIN-set
    elements of those whose count moved and of the closing ones due."""
    fin = fin or {}
    opened, closing = s.due(now)
    read = {r.key: packets.get(r.key, 0) for r in opened}
    asked = s.moved(read) + [r.key for r in closing]
    return s.observe(now, read, {k: fin[k] for k in asked if k in fin})


def counts(s: DrState) -> dict[str, tuple[int, int]]:
    svc = s.table.services[SVC]
    return {str(d.key.addr): (d.active, d.inactive) for d in svc.dests}


def test_a_scheduled_syn_counts_inactive_then_established_active_then_fin_inactive() -> None:
    s = state()
    rec = s.schedule(flow(1000), now=0.0)
    assert rec is not None and rec.state is TcpState.SYN_RECV
    assert counts(s)[str(rec.dest.key.addr)] == (0, 1)
    poll(s, 1.0, {flow(1000): 1})
    assert tcp_state(rec) is TcpState.ESTABLISHED
    assert counts(s)[str(rec.dest.key.addr)] == (1, 0)
    poll(s, 2.0, {flow(1000): 2}, {flow(1000): 120.0})
    assert tcp_state(rec) is TcpState.FIN_WAIT
    assert counts(s)[str(rec.dest.key.addr)] == (0, 1)
    assert poll(s, 100.0, {flow(1000): 2}, {flow(1000): 22.0}) == []  # not due: not even read
    expired = poll(s, 130.0, {flow(1000): 2})
    assert expired == [flow(1000)]
    assert counts(s)[str(rec.dest.key.addr)] == (0, 0)


def test_syn_recv_expires_after_the_syn_timeout_only() -> None:
    s = state()
    s.schedule(flow(1), now=0.0)
    assert poll(s, SYN_TIMEOUT_S - 1, {}) == []
    assert poll(s, SYN_TIMEOUT_S + 1, {}) == [flow(1)]


def test_wlc_uses_the_observed_counts_newest_destination_first() -> None:
    s = state()
    picks = []
    for port in range(6):
        rec = s.schedule(flow(port), now=0.0)
        assert rec is not None
        poll(s, 0.0, dict.fromkeys(s.flows, 1))
        picks.append(str(rec.dest.key.addr))
    assert picks == ["10.0.0.13", "10.0.0.12", "10.0.0.11"] * 2


def test_a_flow_keeps_its_chain_through_drain_and_delete_until_it_expires() -> None:
    s = state()
    rec = s.schedule(flow(7), now=0.0)
    assert rec is not None
    victim = rec.dest.key
    poll(s, 1.0, {flow(7): 1})
    s.apply(EditDest(SVC, victim, DestSpec(weight=0)))
    for port in range(100, 110):
        other = s.schedule(flow(port), now=1.0)
        assert other is not None and other.dest.key != victim
    s.apply(DelDest(SVC, victim))
    assert rec.chain in {d.chain for d in s.ruleset().dests}
    assert s.flows[flow(7)].chain == rec.chain
    poll(s, 2.0, {k: 1 for k in s.flows if k != flow(7)} | {flow(7): 1})
    assert rec.chain in {d.chain for d in s.ruleset().dests}  # idle, but within the TCP timeout
    idle = 1.0 + s.timeouts.tcp + 1
    assert poll(s, idle, {k: 2 for k in s.flows if k != flow(7)} | {flow(7): 1}) == [flow(7)]
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
    assert poll(s, 100.0, {}) == []  # no own packets yet: held
    assert poll(s, 122.0, {}) == [flow(5)]
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
    poll(s, 0.5, {flow(1): 1})
    assert [r.key for r in s.to_sync(0.5, 60.0)] == [flow(1)]
    assert s.to_sync(1.0, 60.0) == []
    poll(s, 2.0, {flow(1): 2}, {flow(1): 120.0})
    assert [r.state for r in s.to_sync(2.0, 60.0)] == [TcpState.FIN_WAIT]
    assert [r.key for r in s.to_sync(62.5, 60.0)] == [flow(1)]
    assert s.to_sync(63.0, 60.0) == []  # sent again at 62.5: due at 122.5
    assert [r.key for r in s.to_sync(122.5, 60.0)] == [flow(1)]


def test_a_poll_reads_back_only_new_busy_idle_due_and_expiring_flows() -> None:
    s = state()
    for port in range(1000):
        s.schedule(flow(port), now=0.0)
    opened, closing = s.due(0.0)
    assert len(opened) == 1000 and closing == []  # SYN_RECV: read at every poll
    # 990 carry a FIN: closing, read no more until their FIN timeout runs out; 10 stay open
    poll(s, 0.5, dict.fromkeys(s.flows, 3), {flow(p): 120.0 for p in range(990)})
    assert counts(s) and sum(i for _, i in counts(s).values()) == 990
    opened, closing = s.due(1.0)  # the open ones moved at 0.5: read again
    assert sorted(r.key.client_port for r in opened) == list(range(990, 1000)) and closing == []
    poll(s, 1.0, dict.fromkeys(s.flows, 3))
    assert s.due(1.5) == ([], [])  # idle since: read every IDLE_CHECK_S
    opened, closing = s.due(1.0 + IDLE_CHECK_S)
    assert sorted(r.key.client_port for r in opened) == list(range(990, 1000)) and closing == []
    # a busy flow is read at every poll, an idle one every IDLE_CHECK_S
    busy = dict.fromkeys(s.flows, 3) | {flow(999): 50}
    poll(s, 1.0 + IDLE_CHECK_S, busy)
    assert [r.key for r in s.due(1.5 + IDLE_CHECK_S)[0]] == [flow(999)]
    # the FIN timeout of the closing ones runs out: each is read once more (a later FIN renews it)
    renewed = {flow(5): 60.0}
    expired = poll(s, 121.0, busy, renewed)
    assert len(expired) == 989 and flow(5) in s.flows and s.flows[flow(5)].state is TcpState.FIN_WAIT
    assert s.due(122.0)[1] == []
    assert poll(s, 182.0, busy) == [flow(5)]


def test_a_rebuilt_element_whose_count_went_back_counts_as_seen() -> None:
    s = state()
    rec = s.schedule(flow(1), now=0.0)
    assert rec is not None
    poll(s, 1.0, {flow(1): 40})
    poll(s, 1.0 + s.timeouts.tcp - 1, {flow(1): 0})  # the map was rebuilt: its counter restarted
    assert poll(s, 1.0 + s.timeouts.tcp + 1, {flow(1): 0}) == []
    assert rec.state is TcpState.ESTABLISHED


def test_a_syn_on_the_port_of_a_closing_flow_is_a_new_connection() -> None:
    s = state()
    old = s.schedule(flow(9), now=0.0)
    assert old is not None
    assert s.reuse(flow(9), now=0.1) is None  # SYN_RECV: a retransmitted SYN, not a reuse
    poll(s, 0.5, {flow(9): 4})
    assert s.reuse(flow(9), now=0.6) is None  # ESTABLISHED: the kernel keeps its real server
    poll(s, 1.0, {flow(9): 6}, {flow(9): 120.0})
    assert old.state is TcpState.FIN_WAIT and sum(i for _, i in counts(s).values()) == 1
    new = s.reuse(flow(9), now=2.0)
    assert new is not None and new is not old and new.state is TcpState.SYN_RECV
    assert s.flows[flow(9)] is new and s.reused == 1
    assert sum(a + i for a, i in counts(s).values()) == 1  # the old one is gone, the new one inactive
    assert new.dest.traffic.conns + old.dest.traffic.conns >= 2
    poll(s, 2.5, {flow(9): 1})  # the replaced element's counter starts again
    assert tcp_state(new) is TcpState.ESTABLISHED
    assert poll(s, 200.0, {flow(9): 1}) == []  # the old FIN timeout has no hold on it


def test_a_fin_found_outside_a_poll_closes_the_flow_at_once() -> None:
    s = state()
    rec = s.schedule(flow(3), now=0.0)
    assert rec is not None
    poll(s, 0.5, {flow(3): 2})
    assert s.close_now(flow(3), now=0.7)
    assert rec.state is TcpState.FIN_WAIT and not s.close_now(flow(3), now=0.8)
    assert counts(s)[str(rec.dest.key.addr)] == (0, 1)


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
    assert here.adopted == 50 and elsewhere.adopted == 0
    assert here.adopt(flow(40000), now=6.0) is None  # known already
    assert poll(here, 30.0, {flow(40000): 3}) == []  # held until its packets show
    assert len(poll(here, 5.0 + SYN_TIMEOUT_S + 1, {flow(40000): 3})) == 49  # or not


def test_only_mh_services_adopt_mid_connection_flows() -> None:
    s = state()  # wlc: another director may have picked any real server
    assert s.ruleset().mh_services == frozenset()
    assert s.adopt(flow(1), now=0.0) is None
    assert mh_state().adopt(FlowKey(ip_address("10.0.0.50"), 1, ip_address("10.0.0.99"), 2811), 0.0) is None
