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
    # an established packet takes one map lookup; a service's other frames are dropped (but an mh
    # service's packets without SYN go to the director); a SYN on a closing flow's port is dropped
    # before the lookup (the director schedules it anew)
    ingress = [x for x in lines if x.startswith("add rule netdev gridlb_dr in_eth0 ")]
    assert ingress == [
        "add rule netdev gridlb_dr in_eth0 meta pkttype host tcp flags & (syn | ack) == syn"
        " ip saddr . tcp sport . ip daddr . tcp dport @fin4 drop",
        "add rule netdev gridlb_dr in_eth0 meta pkttype host"
        " ip saddr . tcp sport . ip daddr . tcp dport vmap @flows4",
        "add rule netdev gridlb_dr in_eth0 meta pkttype host"
        ' ip daddr . tcp dport @mh4 tcp flags & syn == 0 limit rate 20000/second fwd to "lo"',
        "add rule netdev gridlb_dr in_eth0 meta pkttype host ip daddr . tcp dport @svc4 drop",
        "add rule netdev gridlb_dr in_eth0 meta pkttype host tcp flags & (syn | ack) == syn"
        " ip6 saddr . tcp sport . ip6 daddr . tcp dport @fin6 drop",
        "add rule netdev gridlb_dr in_eth0 meta pkttype host"
        " ip6 saddr . tcp sport . ip6 daddr . tcp dport vmap @flows6",
        "add rule netdev gridlb_dr in_eth0 meta pkttype host"
        ' ip6 daddr . tcp dport @mh6 tcp flags & syn == 0 limit rate 20000/second fwd to "lo"',
        "add rule netdev gridlb_dr in_eth0 meta pkttype host ip6 daddr . tcp dport @svc6 drop",
    ]
    # the flow maps count each element's packets (the lookup does): no per-packet set update
    assert (
        "add map netdev gridlb_dr flows4 { type ipv4_addr . inet_service . ipv4_addr . inet_service :"
        " verdict; counter; }" in lines
    )
    assert not any("est4" in x or "est6" in x for x in lines)
    # a destination chain: a FIN or RST noted, then count, rewrite and forward in one rule
    d1 = [x for x in lines if x.startswith("add rule netdev gridlb_dr d1 ")]
    assert len(d1) == 2
    assert "tcp flags & (fin | rst) != 0 update @fin4" in d1[0]
    assert d1[-1].endswith(
        'counter name "d1" ether saddr set 02:00:00:00:00:02 ether daddr set 02:00:00:00:00:0b fwd to "eth0"'
    )


def test_no_change_is_an_empty_script_and_a_role_change_only_touches_ingress() -> None:
    a = Ruleset(("eth0",), True, SVCS, (D1,))
    assert transaction(a, a) == ""
    b = Ruleset(("eth0",), False, SVCS, (D1,))
    assert transaction(a, b).splitlines() == ["flush chain netdev gridlb_dr in_eth0"]
    assert "vmap @flows4" in transaction(b, a)


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


def test_a_reused_port_replaces_its_element_and_leaves_the_fin_set() -> None:
    a = Ruleset(("eth0",), True, SVCS, (D1,))
    key = FlowKey(ip_address("10.0.0.50"), 1000, ip_address("10.0.0.100"), 2811)
    lines = transaction(a, a, add_flows=[(key, "d1")], del_flows=[key], clear_fin=[key]).splitlines()
    elem = "10.0.0.50 . 1000 . 10.0.0.100 . 2811"
    assert lines == [
        f"delete element netdev gridlb_dr flows4 {{ {elem} }}",
        f"add element netdev gridlb_dr fin4 {{ {elem} timeout 1s }}",  # so the delete finds it
        f"delete element netdev gridlb_dr fin4 {{ {elem} }}",
        f"add element netdev gridlb_dr flows4 {{ {elem} : goto d1 }}",
    ]


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
    assert "add set netdev gridlb_dr mh4 { type ipv4_addr . inet_service; }" in lines
    assert "flush set netdev gridlb_dr mh4" in lines
    assert not any("add element netdev gridlb_dr mh" in x for x in lines)
    b = Ruleset(("eth0",), True, SVCS, (D1,), mh_services=mh)
    assert transaction(a, b).splitlines() == [
        "flush set netdev gridlb_dr mh4",
        "add element netdev gridlb_dr mh4 { 10.0.0.100 . 2811 }",
        "flush set netdev gridlb_dr mh6",
    ]
