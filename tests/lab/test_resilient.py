"""Tests of the lab router's glue from BIRD's multipath route to a resilient next-hop group (pure part)."""

from __future__ import annotations

from gridlb.lab.resilient import commands, hops_in, member_id


def test_gateways_are_read_from_a_multipath_or_a_single_route() -> None:
    multi = '[{"dst":"10.9.1.100","nexthops":[{"gateway":"10.9.1.3","dev":"eth0"},{"gateway":"10.9.1.2"}]}]'
    assert hops_in(multi) == ("10.9.1.2", "10.9.1.3")
    assert hops_in('[{"dst":"10.9.1.100","gateway":"10.9.1.4","dev":"eth0"}]') == ("10.9.1.4",)
    assert hops_in("[]") == () == hops_in("")


def test_commands_build_change_and_remove_the_group() -> None:
    a, b = "10.9.1.2", "10.9.1.3"
    assert member_id(a) == 1000 + 0x0102
    first = commands((), (a, b), "10.9.1.100/32", "eth0", 64)
    assert first == [
        ["nexthop", "replace", "id", "1258", "via", a, "dev", "eth0"],
        ["nexthop", "replace", "id", "1259", "via", b, "dev", "eth0"],
        [
            "nexthop",
            "add",
            "id",
            "100",
            "group",
            "1258/1259",
            "type",
            "resilient",
            "buckets",
            "64",
            "idle_timer",
            "5",
        ],
        ["route", "replace", "10.9.1.100/32", "nhid", "100"],
    ]
    shrink = commands((a, b), (a,), "10.9.1.100/32", "eth0", 64)
    assert shrink[0][:6] == ["nexthop", "replace", "id", "100", "group", "1258"]
    assert shrink[-1] == ["nexthop", "del", "id", "1259"]  # after the group no longer uses it
    assert commands((a,), (), "10.9.1.100/32", "eth0", 64) == [
        ["route", "del", "10.9.1.100/32"],
        ["nexthop", "del", "id", "100"],
        ["nexthop", "del", "id", "1258"],
    ]
    assert commands((), (), "p", "eth0", 64) == []
