"""Power of two choices: kernel-exact against the C transcription given the same random draws."""

from __future__ import annotations

from collections import Counter

from gridlb.sched import create_scheduler
from gridlb.sched.twos import TwoRandomChoices, random_below
from tests.sched.common import PICKS_REQUIRED, flow, rk, view
from tests.sched.harness import check_scheduler


def test_twos_agrees_with_kernel_on_10000_picks() -> None:
    counts = check_scheduler("twos", examples=75, n_ops=200)
    assert counts.picks >= PICKS_REQUIRED


def test_random_below_is_multiply_shift_with_rejection() -> None:
    draws = iter([2**31, 0xFFFFFFFF])
    assert [random_below(7, draws.__next__) for _ in range(2)] == [3, 6]
    # 0 * 7 has a low half under 2**32 % 7 == 4: rejected, the next draw decides
    draws = iter([0, 0, 2**31])
    assert random_below(7, draws.__next__) == 3
    assert next(draws, None) is None


def test_twos_second_choice_wins_only_when_less_loaded() -> None:
    dests = [view(3, weight=2, active=4), view(2, weight=2), view(1, weight=2)]
    one, three = 920350134, 2**31  # random_below(7) -> 1 and 3: first = 3, second = 2
    s = TwoRandomChoices(random_u32=iter([one, three]).__next__)
    assert s.pick(dests, flow(), 0.0) == rk(2)
    s = TwoRandomChoices(random_u32=iter([three, one]).__next__)
    assert s.pick(dests, flow(), 0.0) == rk(2)  # first = 2 (idle), second = 3 (busy): keep the first
    s = TwoRandomChoices(random_u32=iter([three, three]).__next__)
    assert s.pick(dests, flow(), 0.0) == rk(2)


def test_twos_skips_quiesced_and_overloaded_and_spreads_by_weight() -> None:
    s = create_scheduler("twos")
    assert s.pick([view(1, weight=0), view(2, overloaded=True)], flow(), 0.0) is None
    dests = [view(1, weight=0), view(2, weight=3), view(3, weight=1)]
    share = Counter(s.pick(dests, flow(), 0.0) for _ in range(4000))
    assert set(share) == {rk(2), rk(3)}
    assert share[rk(2)] > 2 * share[rk(3)]
