"""The one retry / rise-fall policy shared by every checker: turns check results into states and timers.

This is keepalived's checker epilog (check_tcp.c `tcp_epilog`, check_misc.c) as a pure object with time
passed in; no checker knows about retries. One `Tracker` follows one real server.

Rules (keepalived names in brackets):

- A server starts UP, or DOWN with `alpha` [alpha], and nothing is announced for that initial state.
- The first check runs `warmup * jitter` after creation [warmup, default delay_loop; the caller draws
  `jitter` in [0, 1) so that checks of many servers spread out].
- A result is "ok" when its verdict is UP or REFUSING (GridFTP 421/422: alive but refusing work), and a
  failure when DOWN.
- UP/REFUSING -> DOWN after `fall` consecutive failures; `fall` defaults to `retry + 1` [retry: a failure
  while up is retried `retry` times, `delay_before_retry` apart, before the server is declared down].
- DOWN -> UP/REFUSING after `rise` consecutive ok results (default 1: the first success, as keepalived).
- Among ok states the newest verdict wins at once: UP <-> REFUSING needs no confirmation, so a GridFTP
  server that starts answering 421 is drained at the next check. A MISC_CHECK dynamic weight
  (`CheckResult.weight`) is also taken at once.
- Next check: `delay_before_retry` after a result that started or continued an unconfirmed transition,
  otherwise `delay_loop` [delay_loop]. (keepalived also spends its retries while a server is already down;
  here a down server is simply re-checked every delay_loop.)
- Every change of (state, weight) yields one frozen `HealthChanged` event.
- `inhibit_on_failure` is not applied here: it is carried in the policy and in `effective_weight`, for the
  director (keep a DOWN server with weight 0 instead of removing it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gridlb.config import defaults as D
from gridlb.health.base import CheckResult, Verdict
from gridlb.table import RealKey


@dataclass(frozen=True, slots=True)
class CheckPolicy:
    """When to check a real server and how many results confirm a change (keepalived's checker keywords)."""

    delay_loop_s: float = D.CHECK_DELAY_LOOP_S
    connect_timeout_s: float = D.CHECK_CONNECT_TIMEOUT_S  # one check's time limit (script: misc_timeout)
    retry: int = D.CHECK_RETRY
    delay_before_retry_s: float = D.CHECK_DELAY_BEFORE_RETRY_S
    alpha: bool = D.CHECK_ALPHA
    warmup_s: float | None = None  # None: delay_loop_s, as keepalived; 0: check at once
    rise: int = 1
    fall: int | None = None  # None: retry + 1
    inhibit_on_failure: bool = D.CHECK_INHIBIT_ON_FAILURE

    def __post_init__(self) -> None:
        if self.delay_loop_s <= 0:
            raise ValueError(f"delay_loop_s must be > 0, not {self.delay_loop_s}")
        if self.connect_timeout_s <= 0:
            raise ValueError(f"connect_timeout_s must be > 0, not {self.connect_timeout_s}")
        if self.retry < 0:
            raise ValueError(f"retry must be >= 0, not {self.retry}")
        if self.delay_before_retry_s < 0:
            raise ValueError(f"delay_before_retry_s must be >= 0, not {self.delay_before_retry_s}")
        if self.warmup_s is not None and self.warmup_s < 0:
            raise ValueError(f"warmup_s must be >= 0, not {self.warmup_s}")
        if self.rise < 1:
            raise ValueError(f"rise must be >= 1, not {self.rise}")
        if self.fall is not None and self.fall < 1:
            raise ValueError(f"fall must be >= 1, not {self.fall}")

    @property
    def failures_to_down(self) -> int:
        """Consecutive failures that take an ok server down."""
        return self.fall if self.fall is not None else self.retry + 1

    @property
    def effective_warmup_s(self) -> float:
        """The longest delay before the first check."""
        return self.delay_loop_s if self.warmup_s is None else self.warmup_s


@dataclass(frozen=True, slots=True)
class HealthChanged:
    """A real server's health state or dynamic weight changed; `result` is the check that decided it."""

    real: RealKey
    old: Verdict
    new: Verdict
    result: CheckResult
    at: float = 0.0
    old_weight: int | None = None
    new_weight: int | None = None

    def __str__(self) -> str:
        what = f"{self.old} -> {self.new}"
        if self.old is self.new:
            what = f"{self.new}, weight {self.old_weight} -> {self.new_weight}"
        return f"{self.real}: {what}" + (f" ({self.result.reason})" if self.result.reason else "")


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    """What `gridlb status` shows about one real server's checks."""

    real: RealKey
    state: Verdict
    weight: int | None  # dynamic weight from the last ok result, None when the check sets none
    reason: str  # the last result's reason ("" before the first check)
    checks: int
    failures: int
    consecutive_ok: int
    consecutive_failures: int
    last_check_at: float | None
    last_change_at: float | None
    next_check_at: float
    inhibit_on_failure: bool
    last_result: CheckResult | None = field(default=None, compare=False)


class Tracker:
    """The health state machine of one real server (pure: every method takes `now`)."""

    def __init__(self, real: RealKey, policy: CheckPolicy, *, now: float, jitter: float = 0.0) -> None:
        if not 0.0 <= jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1), not {jitter}")
        self.real = real
        self.policy = policy
        self.state = Verdict.DOWN if policy.alpha else Verdict.UP
        self.weight: int | None = None
        self.next_check_at = now + policy.effective_warmup_s * jitter
        self.consecutive_ok = 0
        self.consecutive_failures = 0
        self.checks = 0
        self.failures = 0
        self.last_result: CheckResult | None = None
        self.last_check_at: float | None = None
        self.last_change_at: float | None = None

    @property
    def pending(self) -> bool:
        """True while results disagreeing with the state are being confirmed."""
        if self.state is Verdict.DOWN:
            return self.consecutive_ok > 0
        return self.consecutive_failures > 0

    def due(self, now: float) -> bool:
        """Return True when the next check should start."""
        return now >= self.next_check_at

    def record(self, result: CheckResult, now: float) -> HealthChanged | None:
        """Take one check result, schedule the next check, and return the change it caused, if any."""
        self.checks += 1
        self.last_result = result
        self.last_check_at = now
        old_state, old_weight = self.state, self.weight
        if result.ok:
            self.consecutive_ok += 1
            self.consecutive_failures = 0
            if self.state is not Verdict.DOWN or self.consecutive_ok >= self.policy.rise:
                self.state = result.verdict
                self.weight = result.weight
        else:
            self.failures += 1
            self.consecutive_failures += 1
            self.consecutive_ok = 0
            if self.state is not Verdict.DOWN and self.consecutive_failures >= self.policy.failures_to_down:
                self.state = Verdict.DOWN
                self.weight = None
        delay = self.policy.delay_before_retry_s if self.pending else self.policy.delay_loop_s
        self.next_check_at = now + delay
        if (self.state, self.weight) == (old_state, old_weight):
            return None
        self.last_change_at = now
        return HealthChanged(self.real, old_state, self.state, result, now, old_weight, self.weight)

    def set_policy(self, policy: CheckPolicy, now: float) -> None:
        """Adopt a new policy (a config reload), keeping the state; never delays a check past the new loop."""
        self.policy = policy
        self.next_check_at = min(self.next_check_at, now + policy.delay_loop_s)

    def check_soon(self, now: float) -> None:
        """Make the next check due now (an operator asked for one)."""
        self.next_check_at = min(self.next_check_at, now)

    def effective_weight(self, configured: int) -> int | None:
        """Return the weight the director should program, or None to remove the server.

        DOWN: None, or 0 with `inhibit_on_failure`; REFUSING: 0; UP: the dynamic weight if the check set
        one, else `configured`.
        """
        if self.state is Verdict.DOWN:
            return 0 if self.policy.inhibit_on_failure else None
        if self.state is Verdict.REFUSING:
            return 0
        return configured if self.weight is None else self.weight

    def snapshot(self) -> HealthSnapshot:
        """Return the current state as a frozen value."""
        return HealthSnapshot(
            real=self.real,
            state=self.state,
            weight=self.weight,
            reason=self.last_result.reason if self.last_result else "",
            checks=self.checks,
            failures=self.failures,
            consecutive_ok=self.consecutive_ok,
            consecutive_failures=self.consecutive_failures,
            last_check_at=self.last_check_at,
            last_change_at=self.last_change_at,
            next_check_at=self.next_check_at,
            inhibit_on_failure=self.policy.inhibit_on_failure,
            last_result=self.last_result,
        )
