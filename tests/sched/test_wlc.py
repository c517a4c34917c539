"""Weighted least-connection: kernel-exact against the C transcription, plus the seed's case."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import ip_address

from hypothesis import given, settings
from hypothesis import strategies as st

from gridlb.dataplane.proxy_state import DestState, ProxyState, apply_all
from gridlb.sched import create_scheduler
from gridlb.sched._kernel import conn_overhead, wlc_least
from gridlb.sched.base import DestView, Flow, Scheduler, register_scheduler
from gridlb.table import (
    AddDest,
    AddService,
    DestSpec,
    EditDest,
    Op,
    RealKey,
    ServiceKey,
    ServiceSpec,
    Timeouts,
)
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


# --- the one-pass scan against the scan it replaced -------------------------------------------------


def reference_wlc_least(dests: Sequence[DestView]) -> DestView | None:
    """The scan as it was before the one-pass rewrite (a start search, then conn_overhead per dest)."""
    start = next((i for i, d in enumerate(dests) if not d.overloaded and d.weight > 0), None)
    if start is None:
        return None
    least = dests[start]
    loh = conn_overhead(least.active, least.inactive)
    for d in dests[start + 1 :]:
        if d.overloaded:
            continue
        doh = conn_overhead(d.active, d.inactive)
        if loh * d.weight > doh * least.weight:
            least, loh = d, doh
    return least


# counters near and past the C int wrap of active * 256 + inactive, and weights of every sign
COUNTER = st.one_of(
    st.integers(0, 40),
    st.integers(-(1 << 24), 1 << 24),
    st.integers(-(1 << 33), 1 << 33),
    st.sampled_from([0x7FFFFF, 0x800000, -0x800000, -0x800001, 0x7FFFFFFF, 0x80000000, -1]),
)
VIEWS = st.lists(
    st.builds(
        view,
        st.integers(1, 250),
        weight=st.integers(-2, 5) | st.integers(-(1 << 31), 1 << 31),
        active=COUNTER,
        inactive=COUNTER,
        overloaded=st.booleans(),
    ),
    max_size=8,
)


@settings(max_examples=2000, deadline=None)
@given(VIEWS)
def test_one_pass_scan_picks_the_same_object_as_the_reference(dests: list[DestView]) -> None:
    assert wlc_least(dests) is reference_wlc_least(dests)


@register_scheduler
class ViewWlc(Scheduler):
    """wlc through views only (`picks_live` False): the proxy's path before live picks."""

    name = "test-wlc-views"

    def pick(self, dests: Sequence[DestView], flow: Flow, now: float) -> RealKey | None:
        least = reference_wlc_least(dests)
        return None if least is None else least.key


SVC = ServiceKey.tcp("127.0.0.1", 2811)
KEYS = [RealKey.parse(f"127.0.0.{i}:2811") for i in range(2, 6)]
KINDS = ["pick", "pick", "pick", "close", "expire", "edit", "fail"]
STEP = st.tuples(st.sampled_from(KINDS), st.integers(0, 99))


def _run(name: str, steps: list[tuple[str, int]]) -> list[RealKey | None]:
    """Drive one ProxyState with scheduler `name`; return every pick (None: nobody may take it)."""
    state = ProxyState(Timeouts(tcpfin=3))
    ops: list[Op] = [AddService(SVC, ServiceSpec(scheduler=name))]
    ops += [AddDest(SVC, k, DestSpec(weight=1 + i % 3, u_threshold=4 + i)) for i, k in enumerate(KEYS)]
    assert apply_all(state, ops) == [""] * len(ops)
    svc = state.services[SVC]
    open_: list[DestState] = []
    picks: list[RealKey | None] = []
    now = 0.0
    for kind, n in steps:
        now += 0.5
        f = Flow(ip_address("127.0.0.9"), 1024 + n, ip_address("127.0.0.1"), 2811)
        if kind == "pick":
            d = state.pick(svc, f, now)
            picks.append(None if d is None else d.key)
            if d is not None:
                open_.append(d)
        elif kind == "close" and open_:
            state.closed_conn(open_.pop(n % len(open_)), now, "127.0.0.9", 1024 + n)
        elif kind == "expire":
            state.expire(now + n / 10)
        elif kind == "edit":
            key = KEYS[n % len(KEYS)]
            assert apply_all(state, [EditDest(SVC, key, DestSpec(weight=n % 4, u_threshold=n % 7))]) == [""]
        elif kind == "fail" and open_:
            state.connect_failed(open_.pop(n % len(open_)), mark_down=n % 2 == 0, flow=f)
    return picks


@settings(max_examples=300, deadline=None)
@given(st.lists(STEP, min_size=1, max_size=120))
def test_live_picks_equal_view_picks_for_every_sequence(steps: list[tuple[str, int]]) -> None:
    assert create_scheduler("wlc").picks_live
    assert _run("wlc", steps) == _run(ViewWlc.name, steps)
