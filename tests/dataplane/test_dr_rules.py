"""The dr dataplane's nft transactions: a fresh table, incremental changes, flows, role."""

from __future__ import annotations

from ipaddress import ip_address

from gridlb.dataplane.dr_rules import DestRule, FlowKey, Ruleset, transaction

D1 = DestRule("d1", 4, "eth0", "02:00:00:00:00:02", "02:00:00:00:00:0b")
D2 = DestRule("d2", 6, "eth0", "02:00:00:00:00:02", "02:00:00:00:00:0c")
SVCS = frozenset({(ip_address("10.0.0.100"), 2811), (ip_address("fd00::100"), 2811)})


def test_a_fresh_start_replaces_any_old_table_and_builds_everything() -> None:
    script = transaction(None, Ruleset(("eth0",), True, SVCS, (D1, D2)))
    lines = script.splitlines()
    assert lines[:2] == ["add table netdev gridlb_dr", "delete table netdev gridlb_dr"]
    assert "add element netdev gridlb_dr svc4 { 10.0.0.100 . 2811 }" in lines
    assert "add element netdev gridlb_dr svc6 { fd00::100 . 2811 }" in lines
    assert any('ether daddr set 02:00:00:00:00:0b fwd to "eth0"' in x for x in lines)
    assert any('hook ingress device "eth0"' in x for x in lines)
    assert any("meta pkttype host ip daddr . tcp dport @svc4 jump v4" in x for x in lines)


def test_no_change_is_an_empty_script_and_a_role_change_only_touches_ingress() -> None:
    a = Ruleset(("eth0",), True, SVCS, (D1,))
    assert transaction(a, a) == ""
    b = Ruleset(("eth0",), False, SVCS, (D1,))
    assert transaction(a, b).splitlines() == ["flush chain netdev gridlb_dr in_eth0"]
    assert "jump v4" in transaction(b, a)


def test_flows_are_added_after_new_chains_and_removed_chains_go_last() -> None:
    a = Ruleset(("eth0",), True, SVCS, (D1,))
    b = Ruleset(("eth0",), True, SVCS, (D2,))
    key4 = FlowKey(ip_address("10.0.0.50"), 1000, ip_address("10.0.0.100"), 2811)
    key6 = FlowKey(ip_address("fd00::50"), 1000, ip_address("fd00::100"), 2811)
    lines = transaction(a, b, add_flows=[(key6, "d2")], del_flows=[key4]).splitlines()
    assert lines[0] == "delete element netdev gridlb_dr flows4 { 10.0.0.50 . 1000 . 10.0.0.100 . 2811 }"
    add = lines.index("add element netdev gridlb_dr flows6 { fd00::50 . 1000 . fd00::100 . 2811 : goto d2 }")
    assert (
        lines.index("add chain netdev gridlb_dr d2") < add < lines.index("delete chain netdev gridlb_dr d1")
    )


def test_a_mac_change_rewrites_only_that_chain() -> None:
    a = Ruleset(("eth0",), True, SVCS, (D1, D2))
    moved = DestRule("d1", 4, "eth0", "02:00:00:00:00:02", "02:00:00:00:00:99")
    lines = transaction(a, Ruleset(("eth0",), True, SVCS, (moved, D2))).splitlines()
    assert lines[0] == "flush chain netdev gridlb_dr d1"
    assert all(" d2" not in x for x in lines)


def test_mid_flow_packets_of_mh_services_go_to_the_director_before_the_drop() -> None:
    mh = frozenset({(ip_address("10.0.0.100"), 2811)})
    a = Ruleset(("eth0",), True, SVCS, (D1,))
    lines = transaction(None, a).splitlines()
    v4 = [x for x in lines if x.startswith("add rule netdev gridlb_dr v4 ")]
    assert v4[1:] == [
        'add rule netdev gridlb_dr v4 ip daddr . tcp dport @mh4 tcp flags & syn == 0 fwd to "lo"',
        "add rule netdev gridlb_dr v4 drop",
    ]
    assert "flush set netdev gridlb_dr mh4" in lines and not any(
        "add element netdev gridlb_dr mh" in x for x in lines
    )
    b = Ruleset(("eth0",), True, SVCS, (D1,), mh_services=mh)
    assert transaction(a, b).splitlines() == [
        "flush set netdev gridlb_dr mh4",
        "add element netdev gridlb_dr mh4 { 10.0.0.100 . 2811 }",
        "flush set netdev gridlb_dr mh6",
    ]
