"""Locality-based least-connection with replication: kernel-exact against the C transcription."""

from __future__ import annotations

from ipaddress import ip_address

from gridlb.sched import create_scheduler
from tests.sched.common import PICKS_REQUIRED, flow, rk, scripted, view
from tests.sched.harness import check_scheduler

A, B = ip_address("10.0.1.1"), ip_address("10.0.1.2")
CLIENT, V = ip_address("192.0.2.1"), ip_address("10.0.0.1")
INIT = ("init", [("add", A, 2811, 10), ("add", B, 2811, 10)])  # kernel order: B (index 0), A (index 1)


def pick(dt: float = 0.0) -> tuple[object, ...]:
    return ("pick", CLIENT, 40000, V, 2811, dt)


def test_lblcr_agrees_with_kernel_on_10000_picks() -> None:
    counts = check_scheduler("lblcr", examples=40, n_ops=400)
    assert counts.picks >= PICKS_REQUIRED


def test_lblcr_grows_the_set_and_uses_its_least_loaded_member() -> None:
    s = create_scheduler("lblcr")
    assert s.pick([view(2, weight=10), view(1, weight=10)], flow(), 0.0) == rk(2)
    # 2 quiesced: no usable member, so wlc's choice joins the set
    assert s.pick([view(2, weight=0), view(1, weight=10)], flow(), 1.0) == rk(1)
    # both usable again: the set's least loaded member, whichever joined first
    assert s.pick([view(2, weight=10), view(1, weight=10, active=3)], flow(), 2.0) == rk(2)
    assert s.pick([view(2, weight=10, active=5), view(1, weight=10, active=3)], flow(), 3.0) == rk(1)


def test_lblcr_newest_member_wins_a_tie() -> None:
    seq = [INIT, pick(), ("edit", 0, 0), pick(), ("edit", 0, 10), pick()]
    assert scripted("lblcr", seq) == [rk(2), rk(1), rk(1)]  # A joined last: first in the set


def test_lblcr_drops_the_first_of_equally_loaded_members() -> None:
    # Set [A, B], both idle: the least loaded is A (first), and so is the most loaded one dropped.
    seq = [INIT, pick(), ("edit", 0, 0), pick(21.0), ("edit", 0, 10), pick(), pick()]
    assert scripted("lblcr", seq, expiration_s=20) == [rk(2), rk(1), rk(1), rk(2)]


def test_lblcr_drops_the_most_loaded_member_only_after_the_expiration() -> None:
    # The set {A, B} last changed at 0 s; with a 20 s expiration the pick at 20 s keeps it (strictly
    # later is needed) and the pick at 21 s drops the most loaded member (then B) and serves A.
    seq = [
        INIT,
        pick(),  # B
        ("edit", 0, 0),
        pick(20.0),  # B quiesced: A joins the set
        ("edit", 0, 10),
        ("counters", 1, 5, 0, False),
        pick(1.0),  # 20 s: the set's least loaded, B; nothing dropped yet
        ("counters", 1, 0, 0, False),
        ("counters", 0, 5, 0, False),
        pick(),  # 21 s: A; B (most loaded) dropped
        ("counters", 0, 0, 0, False),
        ("counters", 1, 2, 0, False),
        pick(),  # only A left in the set: A, though wlc would take the idle B
    ]
    assert scripted("lblcr", seq, expiration_s=20) == [rk(2), rk(1), rk(2), rk(1), rk(1)]


def test_lblcr_deleted_member_stays_in_the_set_and_can_be_dropped_as_most_loaded() -> None:
    seq = [
        INIT,
        pick(),  # B
        ("edit", 0, 0),
        pick(),  # B quiesced: A joins the set {A, B}
        ("edit", 0, 10),
        ("counters", 0, 9, 0, False),
        pick(30.0),  # A (B busy); the scheduler sees B's 9 connections
        ("del", 0),
        pick(),  # 30 s: A; the deleted B, most loaded, is dropped from the set
        ("add", B, 2811, 10),  # B back (from the kernel's trash), but not into the set
        ("counters", 0, 0, 0, False),
        ("counters", 1, 3, 0, False),
        pick(),  # the set is {A}: A, though wlc would take the idle B
    ]
    assert scripted("lblcr", seq, expiration_s=20) == [rk(2), rk(1), rk(1), rk(1), rk(1)]
