"""The shared retry / rise-fall tracker: table-driven, time passed in, no sleeps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridlb.health.base import CheckResult, Verdict
from gridlb.health.tracker import CheckPolicy, HealthChanged, Tracker
from gridlb.table import RealKey

RS = RealKey.parse("10.0.0.11:2811")
UP, REF, DOWN = Verdict.UP, Verdict.REFUSING, Verdict.DOWN


@dataclass(frozen=True)
class Step:
    """Feed `verdict` (with `weight`); expect `state`, the next check `delay` later, and an event or not."""

    verdict: Verdict
    state: Verdict
    delay: float
    event: tuple[Verdict, Verdict] | None = None
    weight: int | None = None


KEEPALIVED = CheckPolicy(delay_loop_s=10, delay_before_retry_s=1, retry=1)

SCENARIOS: dict[str, tuple[CheckPolicy, list[Step]]] = {
    # keepalived TCP_CHECK defaults: one retry delay_before_retry later, then down; first success: up
    "retry 1": (
        KEEPALIVED,
        [
            Step(UP, UP, 10),
            Step(DOWN, UP, 1),  # retry pending
            Step(DOWN, DOWN, 10, (UP, DOWN)),  # failed after 1 retry
            Step(DOWN, DOWN, 10),  # down: checked every delay_loop
            Step(UP, UP, 10, (DOWN, UP)),
        ],
    ),
    "a success resets the retries": (
        KEEPALIVED,
        [Step(DOWN, UP, 1), Step(UP, UP, 10), Step(DOWN, UP, 1), Step(DOWN, DOWN, 10, (UP, DOWN))],
    ),
    "retry 0": (
        CheckPolicy(delay_loop_s=10, retry=0),
        [Step(DOWN, DOWN, 10, (UP, DOWN)), Step(UP, UP, 10, (DOWN, UP))],
    ),
    "retry 3 with delay_before_retry 2": (
        CheckPolicy(delay_loop_s=6, retry=3, delay_before_retry_s=2),
        [
            Step(DOWN, UP, 2),
            Step(DOWN, UP, 2),
            Step(DOWN, UP, 2),
            Step(DOWN, DOWN, 6, (UP, DOWN)),
        ],
    ),
    "alpha starts down until the first success": (
        CheckPolicy(delay_loop_s=10, alpha=True),
        [Step(DOWN, DOWN, 10), Step(DOWN, DOWN, 10), Step(UP, UP, 10, (DOWN, UP))],
    ),
    "rise 2": (
        CheckPolicy(delay_loop_s=10, alpha=True, rise=2, delay_before_retry_s=1),
        [
            Step(UP, DOWN, 1),  # one success, confirming
            Step(DOWN, DOWN, 10),  # broken streak
            Step(UP, DOWN, 1),
            Step(UP, UP, 10, (DOWN, UP)),
        ],
    ),
    "fall overrides retry": (
        CheckPolicy(delay_loop_s=10, retry=0, fall=3, delay_before_retry_s=1),
        [Step(DOWN, UP, 1), Step(DOWN, UP, 1), Step(DOWN, DOWN, 10, (UP, DOWN))],
    ),
    "421 drains at once and 220 restores at once": (
        KEEPALIVED,
        [
            Step(REF, REF, 10, (UP, REF)),
            Step(REF, REF, 10),
            Step(UP, UP, 10, (REF, UP)),
            Step(REF, REF, 10, (UP, REF)),
        ],
    ),
    "refusing still needs the retries to go down": (
        KEEPALIVED,
        [Step(REF, REF, 10, (UP, REF)), Step(DOWN, REF, 1), Step(DOWN, DOWN, 10, (REF, DOWN))],
    ),
    "a failure streak is broken by a refusal": (
        KEEPALIVED,
        [Step(DOWN, UP, 1), Step(REF, REF, 10, (UP, REF)), Step(DOWN, REF, 1)],
    ),
    "down comes back as refusing": (
        CheckPolicy(delay_loop_s=10, alpha=True, rise=2, delay_before_retry_s=1),
        [Step(REF, DOWN, 1), Step(REF, REF, 10, (DOWN, REF))],
    ),
    "misc_dynamic weight changes are events": (
        KEEPALIVED,
        [
            Step(UP, UP, 10, (UP, UP), weight=5),
            Step(UP, UP, 10, weight=5),
            Step(UP, UP, 10, (UP, UP), weight=0),
            Step(UP, UP, 10, (UP, UP)),  # back to the configured weight
            Step(DOWN, UP, 1, weight=None),
            Step(DOWN, DOWN, 10, (UP, DOWN)),
        ],
    ),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario(name: str) -> None:
    policy, steps = SCENARIOS[name]
    now = 1000.0
    tracker = Tracker(RS, policy, now=now)
    assert tracker.state is (DOWN if policy.alpha else UP)
    assert tracker.next_check_at == now  # jitter 0: the first check is due at once
    for i, step in enumerate(steps):
        now = tracker.next_check_at + 0.25  # the check took 0.25 s
        old_state = tracker.state
        old_weight = tracker.weight
        result = CheckResult(step.verdict, f"step {i}", weight=step.weight)
        event = tracker.record(result, now)
        where = f"{name}, step {i}: {step}"
        assert tracker.state is step.state, where
        assert tracker.next_check_at == pytest.approx(now + step.delay), where
        if step.event is None:
            assert event is None, where
        else:
            assert event == HealthChanged(RS, *step.event, result, now, old_weight, tracker.weight), where
            assert event.old is old_state
            assert tracker.last_change_at == now
        assert tracker.snapshot().reason == f"step {i}"


@pytest.mark.parametrize(
    ("policy", "jitter", "first"),
    [
        (CheckPolicy(delay_loop_s=10), 0.5, 5.0),  # warmup defaults to delay_loop (keepalived)
        (CheckPolicy(delay_loop_s=10, warmup_s=4), 0.5, 2.0),
        (CheckPolicy(delay_loop_s=10, warmup_s=0), 0.9, 0.0),  # warmup 0: no spreading
        (CheckPolicy(delay_loop_s=60), 0.0, 0.0),
    ],
)
def test_warmup(policy: CheckPolicy, jitter: float, first: float) -> None:
    tracker = Tracker(RS, policy, now=100.0, jitter=jitter)
    assert tracker.next_check_at == pytest.approx(100.0 + first)
    assert not tracker.due(100.0 + first - 0.01) or first == 0.0
    assert tracker.due(100.0 + first)


def test_jitter_out_of_range() -> None:
    with pytest.raises(ValueError, match="jitter"):
        Tracker(RS, CheckPolicy(), now=0.0, jitter=1.0)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: CheckPolicy(delay_loop_s=0), "delay_loop_s"),
        (lambda: CheckPolicy(connect_timeout_s=-1), "connect_timeout_s"),
        (lambda: CheckPolicy(retry=-1), "retry"),
        (lambda: CheckPolicy(delay_before_retry_s=-0.5), "delay_before_retry_s"),
        (lambda: CheckPolicy(warmup_s=-1), "warmup_s"),
        (lambda: CheckPolicy(rise=0), "rise"),
        (lambda: CheckPolicy(fall=0), "fall"),
    ],
)
def test_policy_validation(make: Callable[[], CheckPolicy], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    ("verdicts", "inhibit", "weight", "expected"),
    [
        ([UP], False, None, 7),
        ([UP], False, 3, 3),  # misc_dynamic weight wins
        ([REF], False, None, 0),  # refusing: drain
        ([DOWN, DOWN], False, None, None),  # down: remove
        ([DOWN, DOWN], True, None, 0),  # inhibit_on_failure: keep with weight 0
    ],
)
def test_effective_weight(
    verdicts: list[Verdict], inhibit: bool, weight: int | None, expected: int | None
) -> None:
    tracker = Tracker(RS, CheckPolicy(inhibit_on_failure=inhibit), now=0.0)
    for i, v in enumerate(verdicts):
        tracker.record(CheckResult(v, weight=weight), float(i))
    assert tracker.effective_weight(7) == expected
    assert tracker.snapshot().inhibit_on_failure is inhibit


def test_set_policy_keeps_state_and_never_delays_past_the_new_loop() -> None:
    tracker = Tracker(RS, CheckPolicy(delay_loop_s=60, retry=0), now=0.0)
    tracker.record(CheckResult(DOWN, "refused"), 1.0)
    assert tracker.state is DOWN and tracker.next_check_at == 61.0
    tracker.set_policy(CheckPolicy(delay_loop_s=5, retry=0), now=2.0)
    assert tracker.state is DOWN and tracker.checks == 1
    assert tracker.next_check_at == 7.0
    tracker.set_policy(CheckPolicy(delay_loop_s=100, retry=0), now=3.0)
    assert tracker.next_check_at == 7.0  # a longer loop does not postpone the pending check
    tracker.check_soon(4.0)
    assert tracker.due(4.0)


def test_snapshot_counts() -> None:
    tracker = Tracker(RS, KEEPALIVED, now=0.0)
    for i, v in enumerate([UP, DOWN, DOWN, DOWN, UP]):
        tracker.record(CheckResult(v, str(v)), float(i))
    snap = tracker.snapshot()
    assert (snap.checks, snap.failures, snap.consecutive_ok, snap.consecutive_failures) == (5, 3, 1, 0)
    assert snap.state is UP and snap.reason == "up" and snap.last_check_at == 4.0
    assert snap.last_change_at == 4.0 and snap.next_check_at == 14.0


@settings(max_examples=300, deadline=None)
@given(
    verdicts=st.lists(st.sampled_from([UP, REF, DOWN]), max_size=40),
    retry=st.integers(0, 3),
    rise=st.integers(1, 3),
    alpha=st.booleans(),
)
def test_state_follows_the_streaks(verdicts: list[Verdict], retry: int, rise: int, alpha: bool) -> None:
    """Down only after retry+1 consecutive failures; back only after `rise` ok; events chain."""
    policy = CheckPolicy(delay_loop_s=10, delay_before_retry_s=1, retry=retry, rise=rise, alpha=alpha)
    tracker = Tracker(RS, policy, now=0.0)
    state = tracker.state
    history: list[Verdict] = []
    for i, v in enumerate(verdicts):
        event = tracker.record(CheckResult(v), float(i))
        history.append(v)
        if event is not None:
            assert event.old is state and event.new is tracker.state
        elif tracker.state is not state:
            pytest.fail("state changed without an event")
        if tracker.state is DOWN and state is not DOWN:
            assert history[-(retry + 1) :] == [DOWN] * (retry + 1)
        if state is DOWN and tracker.state is not DOWN:
            assert len(history) >= rise and DOWN not in history[-rise:]
        if tracker.state is not DOWN:
            assert tracker.state is history[-1] or (history[-1] is DOWN)
        state = tracker.state
