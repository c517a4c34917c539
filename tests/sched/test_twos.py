"""placeholder"""

from __future__ import annotations

from tests.sched.common import PICKS_REQUIRED
from tests.sched.harness import check_scheduler


def test_twos_agrees_with_kernel_on_10000_picks() -> None:
    counts = check_scheduler("twos", examples=75, n_ops=200)
    assert counts.picks >= PICKS_REQUIRED
