"""Tests of the shared test helpers: polling (`wait_for`, `time_until`) and stopping a process (`freeze`)."""

from __future__ import annotations

import itertools
import os
import signal

import pytest

from gridlb.lab.procfs import thread_states
from tests.support import freeze, sleeping_threads, time_until, wait_for


def test_wait_for_returns_the_first_truthy_value() -> None:
    calls = itertools.count()
    assert wait_for(lambda: {"n": n} if (n := next(calls)) >= 2 else None, 5, "the third call") == {"n": 2}


def test_wait_for_names_what_it_waited_for_after_the_deadline() -> None:
    calls = itertools.count()
    with pytest.raises(AssertionError, match=r"timed out after 0\.05 s waiting for the moon"):
        wait_for(lambda: next(calls) < 0, 0.05, "the moon", interval_s=0.01)
    assert next(calls) >= 2  # polled more than once


def test_time_until_returns_the_seconds_it_took_or_none() -> None:
    calls = itertools.count()
    took = time_until(lambda: next(calls) >= 3, 5)
    assert took is not None and 0 < took < 5
    assert time_until(lambda: False, 0.03) is None


def test_freeze_returns_once_every_thread_has_stopped() -> None:
    with sleeping_threads(4) as pid:
        freeze(pid)
        assert thread_states(pid) == ["T"] * 4
        os.kill(pid, signal.SIGCONT)
