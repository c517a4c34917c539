"""Destination hashing: kernel-exact against the C transcription."""

from __future__ import annotations

from gridlb.sched import create_scheduler
from gridlb.sched.dh import DestinationHashing
from tests.sched.common import PICKS_REQUIRED, flow, rk, view
from tests.sched.harness import check_scheduler


def test_dh_agrees_with_kernel_on_10000_picks() -> None:
    counts = check_scheduler("dh", examples=75, n_ops=200)
    assert counts.picks >= PICKS_REQUIRED


def test_dh_fills_round_robin_and_keys_on_the_destination_address() -> None:
    s = create_scheduler("dh")
    assert isinstance(s, DestinationHashing)
    dests = [view(1, weight=5), view(2, weight=1)]
    s.update(dests)
    assert s.buckets[:4] == [rk(1), rk(2), rk(1), rk(2)]
    picks = {s.pick(dests, flow(client=f"192.0.2.{i}"), 0.0) for i in range(1, 50)}
    assert len(picks) == 1
