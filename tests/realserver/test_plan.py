"""The real server's desired state, diff and removal, as pure values."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import get_args

from gridlb.realserver.plan import (
    ARP_ANNOUNCE,
    ARP_IGNORE,
    ITEM_CHANGES,
    ArpRule,
    ForeignAddress,
    IPAddress,
    Item,
    LoAddress,
    Method,
    NftArpTable,
    Observed,
    Persist,
    Sysctl,
    Targets,
    UnitFile,
    UnitLink,
    Verb,
    desired_items,
    diff,
    removal,
    targets_from_site,
    unit_text,
)

VIP4, VIP6 = IPv4Address("10.0.0.100"), IPv6Address("fd00::100")
RIP4, RIP6 = IPv4Address("10.0.0.11"), IPv6Address("fd00::11")
SERVICES: list[tuple[IPAddress, int, str, list[IPAddress]]] = [
    (VIP4, 2811, "DR", [ip_address("10.0.0.12"), RIP4]),
    (VIP6, 2811, "DR", [RIP6]),
    (ip_address("10.0.0.200"), 80, "NAT", [RIP4]),  # NAT: the VIP does not belong on lo
    (ip_address("10.0.0.201"), 80, "DR", [ip_address("10.0.0.99")]),  # not this host
]


def targets() -> Targets:
    return targets_from_site(SERVICES, [RIP4, RIP6, ip_address("192.0.2.1")])


def test_targets_are_the_dr_services_listing_this_host() -> None:
    t = targets()
    assert t.vips == (VIP4, VIP6)
    assert t.rip_for(VIP4) == RIP4 and t.rip_for(VIP6) == RIP6
    assert targets_from_site(SERVICES, [ip_address("192.0.2.1")]).services == ()


def test_desired_items_per_method() -> None:
    lo = [LoAddress(VIP4), LoAddress(VIP6)]
    assert desired_items(targets(), Method.SYSCTL) == (
        *lo,
        Sysctl(ARP_IGNORE, "1"),
        Sysctl(ARP_ANNOUNCE, "2"),
    )
    assert desired_items(targets(), Method.ARPTABLES) == (
        *lo,
        ArpRule("INPUT", VIP4),
        ArpRule("OUTPUT", VIP4, RIP4),
    )
    assert desired_items(targets(), Method.NFT) == (*lo, NftArpTable((VIP4,)), Sysctl(ARP_ANNOUNCE, "2"))
    v6_only = targets_from_site([(VIP6, 2811, "DR", [RIP6])], [RIP6])
    for method in Method:
        assert desired_items(v6_only, method) == (LoAddress(VIP6),)  # IPv6 needs no ARP measure


def test_fresh_node_lists_every_missing_item_and_a_set_up_node_none() -> None:
    want = desired_items(targets(), Method.ARPTABLES)
    changes = diff(want, Observed(sysctls={ARP_IGNORE: "0", ARP_ANNOUNCE: "0"}))
    assert [c.problem for c in changes] == [
        "missing: VIP 10.0.0.100/32 on lo",
        "missing: VIP fd00::100/128 on lo",
        "missing: arptables -A INPUT -j DROP -d 10.0.0.100",
        "missing: arptables -A OUTPUT -j mangle -s 10.0.0.100 --mangle-ip-s 10.0.0.11",
    ]
    done = Observed(
        lo=frozenset({(VIP4, 32), (VIP6, 128), (ip_address("127.0.0.1"), 8)}),
        arp_rules=frozenset(r.save_line() for r in want if isinstance(r, ArpRule)),
    )
    assert diff(want, done) == []


def test_wrong_values_are_named() -> None:
    want = desired_items(targets(), Method.NFT)
    seen = Observed(
        lo=frozenset({(VIP4, 24), (VIP6, 128)}),
        elsewhere=frozenset({ForeignAddress(VIP4, 24, "eth0")}),
        sysctls={ARP_ANNOUNCE: "1"},
        nft_vips=(IPv4Address("10.0.0.9"),),
        arp_rules=frozenset({"-A INPUT -j DROP -d 10.0.0.100", "-A INPUT -j DROP -d 10.9.9.9"}),
    )
    lines = [c.problem for c in diff(want, seen, managed_vips=[VIP4, VIP6])]
    assert lines == [
        "wrong: VIP 10.0.0.100/24 on eth0 (it would answer ARP/ND for the VIP)",
        "wrong: VIP 10.0.0.100 is on lo as /24, want /32",
        "wrong: nft table arp gridlb_realserver drops 10.0.0.9",
        "wrong: sysctl net.ipv4.conf.all.arp_announce is 1, want 2",
        "wrong: arptables -A INPUT -j DROP -d 10.0.0.100 (not used by this method)",
    ]  # the rule for 10.9.9.9 is not gridlb's: left alone


def test_removal_undoes_every_method_and_leaves_foreign_state() -> None:
    p = Persist("/tmp/u", unit_text(["gridlb"], "/s.yaml", Method.SYSCTL))
    seen = Observed(
        lo=frozenset({(VIP4, 32), (ip_address("127.0.0.1"), 8)}),
        sysctls={ARP_IGNORE: "1", ARP_ANNOUNCE: "0"},
        arp_rules=frozenset({"-A INPUT -j DROP -d 10.0.0.100", "-A INPUT -j DROP -d 10.9.9.9"}),
        nft_vips=(VIP4,),
        files={p.unit_path: p.content},
        links={p.link_path: p.unit_path},
    )
    changes = removal(targets(), seen, p)
    assert [(c.verb, c.item) for c in changes] == [
        (Verb.DELETE, LoAddress(VIP4)),
        (Verb.DELETE, ArpRule("INPUT", VIP4)),
        (Verb.DELETE, NftArpTable((VIP4,))),
        (Verb.SET, Sysctl(ARP_IGNORE, "0")),
        (Verb.DELETE, UnitLink(p.link_path, p.unit_path)),
        (Verb.DELETE, UnitFile(p.unit_path, "")),
    ]
    assert removal(targets(), Observed(sysctls={ARP_IGNORE: "0"}), p) == []


def test_persist_items_and_unit_text() -> None:
    p = Persist("/etc/systemd/system", unit_text(["/usr/bin/gridlb"], "/etc/gridlb/site.yaml", Method.NFT))
    items = desired_items(targets(), Method.SYSCTL, p)
    assert items[-2:] == (
        UnitFile("/etc/systemd/system/gridlb-realserver.service", p.content),
        UnitLink(
            "/etc/systemd/system/multi-user.target.wants/gridlb-realserver.service",
            "/etc/systemd/system/gridlb-realserver.service",
        ),
    )
    assert "ExecStart=/usr/bin/gridlb realserver apply /etc/gridlb/site.yaml --method nft\n" in p.content
    assert "ExecStop=/usr/bin/gridlb realserver remove /etc/gridlb/site.yaml\n" in p.content
    assert "WantedBy=multi-user.target" in p.content and "Type=oneshot" in p.content
    changes = diff(
        items, Observed(lo=frozenset({(VIP4, 32), (VIP6, 128)}), sysctls={ARP_IGNORE: "1", ARP_ANNOUNCE: "2"})
    )
    assert [c.problem for c in changes] == [
        "missing: systemd unit /etc/systemd/system/gridlb-realserver.service",
        "missing: symlink /etc/systemd/system/multi-user.target.wants/gridlb-realserver.service -> "
        "/etc/systemd/system/gridlb-realserver.service",
    ]


def test_every_item_a_method_desires_has_its_change_and_a_host_that_has_it_needs_none() -> None:
    p = Persist("/etc/systemd/system", unit_text(["/usr/bin/gridlb"], "/etc/gridlb/site.yaml", Method.NFT))
    desired = [i for m in Method for i in desired_items(targets(), m, p)]
    assert {type(i) for i in desired} == set(ITEM_CHANGES) == set(get_args(Item)) - {ForeignAddress}
    fresh = Observed()
    for item in desired:
        assert [c.item for c in diff([item], fresh)] == [item], item
    arp = [i for i in desired if isinstance(i, ArpRule)]
    nft = next(i for i in desired if isinstance(i, NftArpTable))
    done = Observed(
        lo=frozenset({(VIP4, 32), (VIP6, 128)}),
        sysctls={ARP_IGNORE: "1", ARP_ANNOUNCE: "2"},
        arp_rules=frozenset(i.save_line() for i in arp),
        nft_vips=nft.vips,
        files={p.unit_path: p.content},
        links={p.link_path: p.unit_path},
    )
    for item in desired:
        assert ITEM_CHANGES[type(item)](item, done) is None, item
