"""Tests of the pure reconciler: weights per health/override state, quorum and sorry server, site plans."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridlb.config.load import load_site, site_from_mapping
from gridlb.director.overrides import Overrides
from gridlb.director.reconcile import (
    Desired,
    HealthState,
    RealDecision,
    RealHealth,
    RealPlan,
    Reason,
    ServicePlan,
    SorryServer,
    build_table,
    plan_site,
    quorum_step,
)
from gridlb.table import DestSpec, ForwardMethod, RealKey, ServiceKey

DATA = Path(__file__).parent.parent / "data"
SVC = ServiceKey.tcp("10.0.0.1", 2811)
A, B, C = (RealKey.parse(f"10.0.1.{i}:2811") for i in (1, 2, 3))
SORRY = RealKey.parse("10.0.9.9:2811")
DOWN = RealHealth(HealthState.DOWN)


def plan(
    *weights: int, inhibit: bool = False, quorum: int = 1, sorry: SorryServer | None = None
) -> ServicePlan:
    reals = tuple(
        RealPlan(k, DestSpec(weight=w), inhibit_on_failure=inhibit)
        for k, w in zip((A, B, C), weights, strict=False)
    )
    return ServicePlan(SVC, reals=reals, quorum=quorum, sorry=sorry)


def weights(desired: Desired) -> dict[RealKey, int]:
    svc = desired.table.service(SVC)
    return {} if svc is None else {d.key: d.spec.weight for d in svc.dests}


def decision(desired: Desired, key: RealKey) -> RealDecision:
    """The decision on `key` in SVC (there must be one)."""
    made = desired.decision(SVC, key)
    assert made is not None
    return made


def test_all_up_gives_configured_weights_newest_first() -> None:
    d = build_table([plan(1, 2, 3)], {}, Overrides())
    svc = d.table.service(SVC)
    assert svc is not None
    # the kernel lists the most recently added destination first; plan order is add order
    assert [x.key for x in svc.dests] == [C, B, A]
    assert weights(d) == {A: 1, B: 2, C: 3}
    assert all(x.reason is Reason.SERVING for x in d.decisions)


def test_down_is_removed_or_inhibited() -> None:
    assert weights(build_table([plan(1, 2, 3)], {(SVC, B): DOWN}, Overrides())) == {A: 1, C: 3}
    d = build_table([plan(1, 2, 3, inhibit=True)], {(SVC, B): DOWN}, Overrides())
    assert weights(d) == {A: 1, B: 0, C: 3}
    assert decision(d, B).reason is Reason.INHIBITED


def test_refusing_drained_dynamic_and_retiring() -> None:
    health = {(SVC, A): RealHealth(HealthState.REFUSING), (SVC, C): RealHealth(HealthState.UP, weight=7)}
    d = build_table([plan(1, 2, 3)], health, Overrides().drain(B))
    assert weights(d) == {A: 0, B: 0, C: 7}
    assert [decision(d, k).reason for k in (A, B, C)] == [
        Reason.REFUSING,
        Reason.DRAINED,
        Reason.DYNAMIC,
    ]
    d = build_table([plan(1, 2, 3)], {}, Overrides().retire(SVC, C, deadline=5.0))
    assert weights(d) == {A: 1, B: 2, C: 0}
    # a retiring server that is down stays at weight 0 until the director finishes the retirement
    d = build_table([plan(1, 2, 3)], {(SVC, C): DOWN}, Overrides().retire(SVC, C, deadline=5.0))
    assert weights(d) == {A: 1, B: 2, C: 0}


def test_runtime_add_and_remove() -> None:
    o = Overrides().add(SVC, SORRY, 5).remove(SVC, A)
    d = build_table([plan(1, 2)], {}, o)
    assert weights(d) == {B: 2, SORRY: 5}
    svc = d.table.service(SVC)
    assert svc is not None and svc.dests[0].key == SORRY  # added last = newest = first
    assert decision(d, SORRY).runtime_added
    # re-adding a removed configured server brings it back
    assert A in weights(build_table([plan(1, 2)], {}, o.add(SVC, A, 4)))


def test_duplicate_real_counts_once() -> None:
    p = ServicePlan(SVC, reals=(RealPlan(A), RealPlan(A, DestSpec(weight=9)), RealPlan(B)))
    assert weights(build_table([p], {}, Overrides())) == {A: 1, B: 1}


def test_sorry_server_replaces_pool_without_quorum() -> None:
    p = plan(1, 1, 1, quorum=2, sorry=SorryServer(SORRY))
    d = build_table([p], {}, Overrides())
    assert d.quorum_up[SVC] and weights(d) == {A: 1, B: 1, C: 1}
    # two down: sum 1 < quorum 2 -> quorum lost, sorry server alone
    health = {(SVC, A): DOWN, (SVC, B): DOWN}
    d = build_table([p], health, Overrides(), d.quorum_up)
    assert not d.quorum_up[SVC]
    assert weights(d) == {SORRY: 1}
    assert decision(d, C).reason is Reason.NO_QUORUM
    # back: quorum regained, sorry server gone
    d = build_table([p], {}, Overrides(), d.quorum_up)
    assert d.quorum_up[SVC] and weights(d) == {A: 1, B: 1, C: 1}


def test_sorry_inhibit_and_inhibited_reals_without_quorum() -> None:
    p = plan(1, 1, inhibit=True, quorum=2, sorry=SorryServer(SORRY, inhibit=True))
    d = build_table([p], {}, Overrides())
    assert weights(d) == {A: 1, B: 1, SORRY: 0}
    d = build_table([p], {(SVC, A): DOWN}, Overrides(), d.quorum_up)
    # keepalived: with inhibit_on_failure the live servers are set to weight 0, not deleted
    assert weights(d) == {A: 0, B: 0, SORRY: 1}


def test_quorum_without_sorry_server_changes_nothing() -> None:
    d = build_table([plan(1, 1, quorum=5)], {}, Overrides())
    assert not d.quorum_up[SVC]
    assert weights(d) == {A: 1, B: 1}


def keepalived_quorum(was_up: bool, weight_sum: int, quorum: int, hysteresis: int) -> bool:
    """ipwrapper.c update_quorum_state, transcribed: threshold = quorum +/- hysteresis."""
    threshold = quorum + (-1 if was_up else 1) * hysteresis
    if not was_up and weight_sum >= threshold:
        return True
    if was_up and (not weight_sum or weight_sum < threshold):
        return False
    return was_up


@settings(max_examples=500, deadline=None)
@given(
    st.booleans(),
    st.integers(min_value=0, max_value=20),
    st.integers(min_value=0, max_value=10),
    st.integers(min_value=0, max_value=5),
)
def test_quorum_step_matches_keepalived(was_up: bool, total: int, quorum: int, hysteresis: int) -> None:
    assert quorum_step(was_up, total, quorum, hysteresis) == keepalived_quorum(
        was_up, total, quorum, hysteresis
    )


@pytest.mark.parametrize(
    ("total", "expected"),
    [(0, False), (2, False), (3, True), (4, True)],
)
def test_initial_quorum_is_sum_at_least_quorum_plus_hysteresis(total: int, expected: bool) -> None:
    # keepalived set_quorum_states: up = sum >= quorum + hysteresis
    assert quorum_step(None, total, 2, 1) is expected


def test_hysteresis_keeps_state_between_thresholds() -> None:
    # quorum 3, hysteresis 1: gain at >= 4, lose below 2
    assert quorum_step(False, 3, 3, 1) is False
    assert quorum_step(False, 4, 3, 1) is True
    assert quorum_step(True, 2, 3, 1) is True
    assert quorum_step(True, 1, 3, 1) is False


def test_plan_site_from_seed_hiera() -> None:
    site = load_site([DATA / "seed-hiera.yaml"])
    plans, checks = plan_site(site)
    (p,) = plans
    assert p.key == ServiceKey.tcp("129.93.239.157", 2811)
    assert p.spec.scheduler == "wlc"
    assert len(p.reals) == 11  # 12 listed, 129.93.239.168 twice
    assert all(r.spec.forward is ForwardMethod.ROUTE for r in p.reals)
    assert len(checks) == 11
    spec = checks[(p.key, p.reals[0].key)][0]
    assert spec.connect_timeout_s == 3 and spec.delay_loop_s == 10
    d = build_table(plans, {}, Overrides())
    svc = d.table.service(p.key)
    assert svc is not None and len(svc.dests) == 11


def test_plan_site_sorry_server_and_inhibit() -> None:
    site = site_from_mapping(
        {
            "virtual_servers": {
                "vs": {
                    "ip_address": "10.0.0.1",
                    "port": 2811,
                    "lb_kind": "NAT",
                    "quorum": 2,
                    "hysteresis": 1,
                    "sorry_server": "10.0.9.9",
                    "sorry_server_inhibit": True,
                    "inhibit_on_failure": True,
                    "real_servers": [{"ip_address": "10.0.1.1", "weight": 3}],
                }
            }
        }
    )
    (p,), _ = plan_site(site)
    assert p.quorum == 2 and p.hysteresis == 1
    assert p.sorry == SorryServer(RealKey.parse("10.0.9.9:2811"), ForwardMethod.MASQ, inhibit=True)
    assert p.reals[0].inhibit_on_failure and p.reals[0].spec.weight == 3
