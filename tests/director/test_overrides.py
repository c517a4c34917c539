"""Tests of operator intents as immutable overrides."""

from __future__ import annotations

from gridlb.director.overrides import AddedReal, Overrides
from gridlb.table import RealKey, ServiceKey

SVC = ServiceKey.tcp("10.0.0.1", 2811)
A = RealKey.parse("10.0.1.1:2811")
B = RealKey.parse("10.0.1.2:2811")


def test_drain_and_enable() -> None:
    o = Overrides().drain(A)
    assert o.is_drained(A) and not o.is_drained(B)
    assert not o.enable(A).is_drained(A)
    assert Overrides().enable(A) == Overrides()  # enabling an undrained server changes nothing


def test_add_then_remove() -> None:
    o = Overrides().add(SVC, A, 3)
    assert o.added_to(SVC) == (AddedReal(SVC, A, 3),)
    o2 = o.add(SVC, A, 5)  # re-adding replaces the weight
    assert o2.added_to(SVC) == (AddedReal(SVC, A, 5),)
    o3 = o2.remove(SVC, A)
    assert o3.added_to(SVC) == () and (SVC, A) in o3.removed


def test_retire_then_retired() -> None:
    o = Overrides().retire(SVC, A, deadline=10.0)
    entry = o.retiring_entry(SVC, A)
    assert entry is not None and entry.deadline == 10.0
    assert o.retire(SVC, A, deadline=99.0).retiring_entry(SVC, A) == entry  # first deadline kept
    done = o.retired(SVC, A)
    assert done.retiring == () and (SVC, A) in done.removed
    # adding back cancels a retirement
    assert o.add(SVC, A, 1).retiring == ()


def test_after_reload_keeps_drains_and_unfinished_retirements() -> None:
    o = Overrides().drain(A).add(SVC, B, 2).remove(SVC, A).retire(SVC, B, deadline=5.0)
    kept = o.after_reload(frozenset({(SVC, A)}))
    assert kept.drained == frozenset({A})
    assert kept.added == () and kept.removed == frozenset()
    assert [r.key for r in kept.retiring] == [B]
    # a reload that configures the pair again ends its retirement
    assert o.after_reload(frozenset({(SVC, B)})).retiring == ()
