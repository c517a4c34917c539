"""Round-robin: kernel-exact against the C transcription, plus hand-checked sequences."""

from __future__ import annotations

from gridlb.sched import create_scheduler
from tests.sched.common import PICKS_REQUIRED, flow, rk, view
from tests.sched.harness import check_scheduler


def test_rr_agrees_with_kernel_on_10000_picks() -> None:
    counts = check_scheduler("rr", examples=75, n_ops=200)
    assert counts.picks >= PICKS_REQUIRED


def test_rr_cycles_in_list_order_and_skips_quiesced() -> None:
    s = create_scheduler("rr")
    dests = [view(3), view(2, weight=0), view(1)]  # newest first
    s.update(dests)
    assert [s.pick(dests, flow(), 0.0) for _ in range(4)] == [rk(3), rk(1), rk(3), rk(1)]


def test_rr_new_destination_is_reached_after_the_wrap() -> None:
    s = create_scheduler("rr")
    dests = [view(2), view(1)]
    s.update(dests)
    assert s.pick(dests, flow(), 0.0) == rk(2)
    dests = [view(3), *dests]  # added at the head, the cursor stays on 2
    s.update(dests)
    assert [s.pick(dests, flow(), 0.0) for _ in range(3)] == [rk(1), rk(3), rk(2)]


def test_rr_deleting_the_cursor_moves_it_to_the_predecessor() -> None:
    s = create_scheduler("rr")
    dests = [view(3), view(2), view(1)]
    s.update(dests)
    assert [s.pick(dests, flow(), 0.0) for _ in range(2)] == [rk(3), rk(2)]
    dests = [view(3), view(1)]
    s.update(dests)
    assert s.pick(dests, flow(), 0.0) == rk(1)


def test_rr_none_when_all_overloaded() -> None:
    s = create_scheduler("rr")
    dests = [view(1, overloaded=True)]
    s.update(dests)
    assert s.pick(dests, flow(), 0.0) is None
