"""Locality-based least-connection: kernel-exact against the C transcription, plus scripted GC edges."""

from __future__ import annotations

from ipaddress import ip_address

from gridlb.sched import create_scheduler
from gridlb.sched._locality import HZ
from gridlb.sched.lblc import LocalityBasedLeastConnection
from tests.sched import kernel_ref as k
from tests.sched.common import PICKS_REQUIRED, flow, rk, scripted, view
from tests.sched.harness import check_scheduler

A, B = ip_address("10.0.1.1"), ip_address("10.0.1.2")
CLIENT = ip_address("192.0.2.1")
INIT = ("init", [("add", A, 2811, 10), ("add", B, 2811, 10)])  # kernel order: B (index 0), A (index 1)


def vip(n: int) -> object:
    return ip_address(f"10.0.0.{n}")


def pick(vaddr: object, dt: float = 0.0) -> tuple[object, ...]:
    return ("pick", CLIENT, 40000, vaddr, 2811, dt)


def test_lblc_agrees_with_kernel_on_10000_picks() -> None:
    counts = check_scheduler("lblc", examples=40, n_ops=400)
    assert counts.picks >= PICKS_REQUIRED


def test_lblc_keeps_an_address_on_its_server_until_it_is_unusable() -> None:
    s = create_scheduler("lblc")
    dests = [view(2, weight=10), view(1, weight=10)]
    assert s.pick(dests, flow(vaddr="10.0.0.1"), 0.0) == rk(2)
    busy = [view(2, weight=10, active=9), view(1, weight=10)]
    assert s.pick(busy, flow(vaddr="10.0.0.1"), 1.0) == rk(2)  # cached, though wlc would say 1
    assert s.pick(busy, flow(vaddr="10.0.0.2"), 1.0) == rk(1)  # a new address: wlc
    # lblc's own overload: more active than weight while some server is under half its weight
    over = [view(2, weight=10, active=11), view(1, weight=10, active=4)]
    assert s.pick(over, flow(vaddr="10.0.0.1"), 2.0) == rk(1)
    assert s.pick([view(2, weight=10), view(1, weight=10, active=4)], flow(vaddr="10.0.0.1"), 3.0) == rk(1)
    assert s.pick([view(2, weight=10)], flow(vaddr="10.0.0.1"), 4.0) == rk(2)  # 1 deleted: wlc again


def test_lblc_full_gc_drops_an_entry_unused_for_exactly_the_expiration() -> None:
    # The 30th GC run (t = 1800 s) finds the entry last used at 1780 s with a 20 s expiration: dropped
    # (1800 >= 1780 + 20), so the pick at 1800 s goes to wlc's choice A; a jiffy earlier it is cached.
    busy_b = ("counters", 0, 5, 0, False)
    seq = [INIT, pick(vip(1), 1780.0), pick(vip(1), 20.0), busy_b, pick(vip(1))]
    assert scripted("lblc", seq, expiration_s=20) == [rk(2), rk(2), rk(1)]
    seq = [INIT, pick(vip(1), 1780.0), pick(vip(1), 20.0 - 1 / HZ), busy_b, pick(vip(1))]
    assert scripted("lblc", seq, expiration_s=20) == [rk(2), rk(2), rk(2)]


def test_lblc_over_the_size_limit_drops_entries_unused_for_6_minutes() -> None:
    # 17 entries in a one-bucket table (limit 16): from then on every run drops those unused for 360 s.
    fill = [pick(vip(n)) for n in range(1, 18)]
    busy_b = ("counters", 0, 5, 0, False)
    seq = [INIT, *fill[:-1], pick(vip(17), 360.0), busy_b, pick(vip(1))]
    assert scripted("lblc", seq, tab_bits=0)[-1] == rk(1)
    seq = [INIT, *fill[:-1], pick(vip(17), 360.0 - 1 / HZ), busy_b, pick(vip(1))]
    assert scripted("lblc", seq, tab_bits=0)[-1] == rk(2)


def test_lblc_partial_gc_stops_after_the_bucket_that_reaches_its_goal_and_moves_the_rover() -> None:
    # Two buckets (limit 32). At 0 s, 20 addresses of bucket 1 and 30 of bucket 0; at 60 s, 10 more of
    # bucket 1. The run at 360 s (goal min((60 - 32) * 4/3, 16) = 16) starts after the rover, at
    # bucket 1, drops its 20 expired entries and stops: the rover stays at 1. The run at 420 s (goal 10)
    # so starts at bucket 0 and drops its 30 entries, leaving bucket 1's newer ten, expired by now.
    bucket: dict[int, list[int]] = {0: [], 1: []}
    for n in range(1, 160):
        bucket[k.hash_32(int(ip_address(f"10.0.0.{n}")), 1)].append(n)
    ones, zeros = bucket[1], bucket[0]
    first = [pick(vip(n)) for n in ones[:20] + zeros[:30]]
    later = [pick(vip(n)) for n in ones[20:30]]
    seq = [
        INIT,
        *first[:-1],
        pick(vip(zeros[29]), 60.0),
        *later[:-1],
        pick(vip(ones[29]), 360.0),
        ("counters", 0, 5, 0, False),  # B busy: a dropped address now goes to A
        pick(vip(zeros[0])),
        pick(vip(ones[20])),
    ]
    assert scripted("lblc", seq, tab_bits=1)[-2:] == [rk(1), rk(2)]


def test_lblc_partial_gc_goal_is_capped_at_half_the_limit() -> None:
    # Two buckets (limit 32), 50 entries: goal min((50 - 32) * 4/3, 16) = 16. The run at 360 s empties
    # bucket 1 (20 entries) and stops there (24 without the cap would go on), so bucket 0 stays cached.
    bucket: dict[int, list[int]] = {0: [], 1: []}
    for n in range(1, 120):
        bucket[k.hash_32(int(ip_address(f"10.0.0.{n}")), 1)].append(n)
    ones, zeros = bucket[1][:20], bucket[0][:30]
    fill = [pick(vip(n)) for n in ones + zeros]
    busy_b = ("counters", 0, 5, 0, False)
    seq = [INIT, *fill[:-1], pick(vip(zeros[-1]), 360.0), busy_b, pick(vip(zeros[0])), pick(vip(ones[0]))]
    assert scripted("lblc", seq, tab_bits=1)[-2:] == [rk(2), rk(1)]


def test_lblc_overload_rule_wraps_like_c_int() -> None:
    # A has 2**30 active connections: active * 2 wraps negative in C int, so "some server is under
    # half its weight" holds, B (11 > 10) counts as overloaded and the wlc choice (A: overhead 0 after
    # wrapping) takes the flow.
    seq = [INIT, pick(vip(1)), ("counters", 1, 2**30, 0, False), ("counters", 0, 11, 0, False), pick(vip(1))]
    assert scripted("lblc", seq) == [rk(2), rk(1)]


def test_lblc_replacing_an_entry_counts_it_twice_as_the_kernel_does() -> None:
    s = create_scheduler("lblc")
    assert s.pick([view(2, weight=10), view(1, weight=10)], flow(), 0.0) == rk(2)
    assert s.pick([view(2, weight=0), view(1, weight=10)], flow(), 1.0) == rk(1)
    assert isinstance(s, LocalityBasedLeastConnection)
    cache = s.cache
    assert (len(cache), cache.entries) == (1, 2)
