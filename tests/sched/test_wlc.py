"""Weighted least-connection: kernel-exact against the C transcription, plus the seed's case."""

from __future__ import annotations

from gridlb.sched import create_scheduler
from tests.sched.common import PICKS_REQUIRED, flow, rk, view
from tests.sched.harness import check_scheduler


def test_wlc_agrees_with_kernel_on_10000_picks() -> None:
    counts = check_scheduler("wlc", examples=75, n_ops=200)
    assert counts.picks >= PICKS_REQUIRED


def test_wlc_seed_listing_picks_the_server_with_no_active_connection() -> None:
    # From the seed's `ipvsadm -L`: gridftp5 has 0 active / 15 inactive, the others 1 active.
    s = create_scheduler("wlc")
    dests = [view(6, active=1, inactive=14), view(5, active=0, inactive=15), view(9, active=0, inactive=13)]
    assert s.pick(dests, flow(), 0.0) == rk(9)


def test_wlc_cross_multiplies_weights_and_keeps_the_earlier_on_ties() -> None:
    s = create_scheduler("wlc")
    # overhead/weight: 512/2 == 256/1 -> tie, the earlier (newest) destination stays
    assert s.pick([view(1, weight=2, active=2), view(2, weight=1, active=1)], flow(), 0.0) == rk(1)
    assert s.pick([view(1, weight=1, active=2), view(2, weight=1, active=1)], flow(), 0.0) == rk(2)


def test_wlc_skips_quiesced_and_overloaded() -> None:
    s = create_scheduler("wlc")
    assert s.pick([view(1, weight=0), view(2, overloaded=True), view(3, active=9)], flow(), 0.0) == rk(3)
    assert s.pick([view(1, weight=0), view(2, overloaded=True)], flow(), 0.0) is None
