"""The proxy's pure bookkeeping: kernel threshold rules, FIN-timeout expiry, trash, passive failures."""

from __future__ import annotations

from ipaddress import ip_address

from hypothesis import given, settings
from hypothesis import strategies as st

from gridlb.dataplane.proxy_state import DestState, ProxyState, apply_all
from gridlb.sched.base import DestView, Flow
from gridlb.table import (
    AddDest,
    AddService,
    DelDest,
    DelService,
    DestSpec,
    EditDest,
    Op,
    RealKey,
    ServiceKey,
    ServiceSpec,
    Timeouts,
)
from tests.dataplane import testsched

SVC = ServiceKey.tcp("127.0.0.1", 2811)
A = RealKey.parse("127.0.0.2:2811")
B = RealKey.parse("127.0.0.3:2811")
SPEC = ServiceSpec(scheduler=testsched.NAME)
FLOW = Flow(ip_address("127.0.0.9"), 40000, ip_address("127.0.0.1"), 2811)


def make(*dests: tuple[RealKey, DestSpec], timeouts: Timeouts | None = None) -> ProxyState:
    st_ = ProxyState(timeouts)
    ops: list[Op] = [AddService(SVC, SPEC), *(AddDest(SVC, k, s) for k, s in reversed(dests))]
    assert apply_all(st_, ops) == [""] * len(ops)
    return st_


def test_upper_threshold_sets_overload_at_bind_and_three_quarters_clears_it() -> None:
    s = make((A, DestSpec(u_threshold=4)))
    svc = s.services[SVC]
    a = svc.dests[0]
    for i in range(4):
        assert s.pick(svc, FLOW, 0.0) is a
        assert a.overloaded is (i == 3)  # active+inactive >= 4
    assert s.pick(svc, FLOW, 0.0) is None  # overloaded and alone: nothing to schedule to
    for t in range(4):
        s.closed_conn(a, now=float(t), client_host="127.0.0.9", client_port=1)
    assert (a.active, a.inactive, a.overloaded) == (0, 4, True)  # closing alone changes no total
    s.expire(120.0)  # first entry gone: total 3, 3*4 < 4*3 is false: still overloaded
    assert (a.inactive, a.overloaded) == (3, True)
    s.expire(121.0)  # total 2: 8 < 12 -> cleared
    assert (a.inactive, a.overloaded) == (2, False)


def test_lower_threshold_governs_clearing_when_set() -> None:
    s = make((A, DestSpec(u_threshold=3, l_threshold=1)))
    svc = s.services[SVC]
    a = svc.dests[0]
    for _ in range(3):
        s.pick(svc, FLOW, 0.0)
    assert a.overloaded
    for _ in range(2):
        s.connect_failed(a, mark_down=False)
    assert (a.active, a.overloaded) == (1, True)  # 1 is not < l_threshold 1
    s.connect_failed(a, mark_down=False)
    assert (a.active, a.overloaded) == (0, False)


def overloaded(d: DestState) -> bool:
    """The flag read again: a pick or an edit moves it."""
    return d.overloaded


def test_edit_clears_overload_only_when_upper_is_unset_or_raised() -> None:
    s = make((A, DestSpec(u_threshold=2)))
    svc = s.services[SVC]
    a = svc.dests[0]
    s.pick(svc, FLOW, 0.0)
    s.pick(svc, FLOW, 0.0)
    assert overloaded(a)
    apply_all(s, [EditDest(SVC, A, DestSpec(u_threshold=1))])  # lowered: stays
    assert overloaded(a)
    apply_all(s, [EditDest(SVC, A, DestSpec(u_threshold=5))])  # raised: cleared
    assert not overloaded(a)
    s.pick(svc, FLOW, 0.0)
    apply_all(s, [EditDest(SVC, A, DestSpec(u_threshold=3))])
    assert not overloaded(a)  # 3 conns, but overload is only set when a connection is bound
    s.pick(svc, FLOW, 0.0)
    assert overloaded(a)


def test_fin_timeout_lowered_keeps_expiry_order() -> None:
    s = make((A, DestSpec()))
    svc = s.services[SVC]
    a = svc.dests[0]
    s.pick(svc, FLOW, 0.0)
    s.pick(svc, FLOW, 0.0)
    s.closed_conn(a, 0.0, "127.0.0.9", 1)  # expires at 120
    s.set_timeouts(Timeouts(tcpfin=10))
    s.closed_conn(a, 1.0, "127.0.0.9", 2)  # expires at 11, before the first
    assert [e[0] for e in s.closed] == [11.0, 120.0]
    s.expire(11.0)
    assert a.inactive == 1


def test_deleted_destination_goes_to_trash_and_is_revived_with_counters() -> None:
    s = make((A, DestSpec()), (B, DestSpec()))
    svc = s.services[SVC]
    d = s.pick(svc, FLOW, 0.0)
    assert d is not None
    apply_all(s, [DelDest(SVC, d.key)])
    assert svc.dest(d.key) is None and svc.trash[d.key] is d
    apply_all(s, [AddDest(SVC, d.key, DestSpec(weight=7))])
    assert svc.dest(d.key) is d and d.active == 1 and d.spec.weight == 7
    apply_all(s, [DelDest(SVC, d.key)])
    s.closed_conn(d, 0.0, "127.0.0.9", 1)
    s.expire(500.0)
    assert d.key not in svc.trash  # last reference gone: forgotten


def test_passive_failure_takes_destination_out_until_edited() -> None:
    s = make((A, DestSpec(weight=5)), (B, DestSpec()))
    svc = s.services[SVC]
    a = s.pick(svc, FLOW, 0.0)
    assert a is not None and a.key == A
    assert s.connect_failed(a, mark_down=True)  # newly down
    assert [v.key for v in svc.candidate_views()] == [B]
    b = s.pick(svc, FLOW, 0.0)
    assert b is not None and b.key == B
    apply_all(s, [EditDest(SVC, A, DestSpec(weight=5))])  # what the director sends to put it back
    assert [v.key for v in svc.candidate_views()] == [A, B]


def test_op_errors_use_ipvsadm_wording() -> None:
    s = make()
    assert apply_all(
        s,
        [
            AddService(SVC, SPEC),
            AddDest(ServiceKey.tcp("127.0.0.1", 1), A, DestSpec()),
            EditDest(SVC, A, DestSpec()),
            AddService(ServiceKey(SVC.proto, None, 0, fwmark=3), SPEC),
            DelService(SVC),
            DelService(SVC),
        ],
    ) == [
        "Service already exists",
        "No such service",
        "No such destination",
        "the proxy dataplane cannot serve firewall-mark services",
        "",
        "No such service",
    ]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("pcex"), st.integers(0, 1)), max_size=60))
def test_counters_never_negative_and_match_live_connections(events: list[tuple[str, int]]) -> None:
    s = make((A, DestSpec(u_threshold=3, l_threshold=1)), (B, DestSpec(u_threshold=2)))
    svc = s.services[SVC]
    live: list[DestState] = []
    now = 0.0
    for kind, which in events:
        if kind == "p":
            d = s.pick(svc, FLOW, 0.0)
            if d is not None:
                live.append(d)
        elif kind == "c" and live:
            s.closed_conn(live.pop(which % len(live)), now, "127.0.0.9", 1)
        elif kind == "x":
            now += 60.0
            s.expire(now)
        elif kind == "e" and live:
            s.connect_failed(live.pop(), mark_down=False)
    for d in svc.dests:
        assert d.active == sum(1 for x in live if x is d)
        assert d.inactive == sum(1 for e in s.closed if e[1] is d)
        assert d.active >= 0 and d.inactive >= 0
        if d.spec.u_threshold and d.active + d.inactive < d.spec.l_threshold:
            assert not d.overloaded


C = RealKey.parse("127.0.0.4:2811")


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("pcxfuade"), st.integers(0, 2)), max_size=80))
def test_cached_scheduler_input_equals_a_fresh_build(events: list[tuple[str, int]]) -> None:
    """Views re-made only for changed destinations always equal the full list built from scratch."""
    s = make((A, DestSpec(u_threshold=3, l_threshold=1)), (B, DestSpec(u_threshold=2)), (C, DestSpec()))
    svc = s.services[SVC]
    keys = (A, B, C)
    live: list[DestState] = []
    now = 0.0
    for kind, which in events:
        if kind == "p":
            d = s.pick(svc, FLOW, 0.0)
            if d is not None:
                live.append(d)
        elif kind == "c" and live:
            s.closed_conn(live.pop(which % len(live)), now, "127.0.0.9", 1)
        elif kind == "x":
            now += 60.0
            s.expire(now)
        elif kind == "f" and live:
            s.connect_failed(live.pop(which % len(live)), mark_down=True)
        elif kind == "u":
            have = svc.dest(keys[which])
            if have is not None:
                apply_all(s, [EditDest(SVC, keys[which], have.spec)])
        elif kind == "a":
            apply_all(s, [AddDest(SVC, keys[which], DestSpec(weight=which + 1))])
        elif kind == "d":
            apply_all(s, [DelDest(SVC, keys[which])])
        elif kind == "e":
            apply_all(s, [EditDest(SVC, keys[which], DestSpec(weight=which, u_threshold=4))])
        fresh = [
            DestView(d.key, d.spec.weight, d.active, d.inactive, d.overloaded)
            for d in svc.dests
            if not d.down
        ]
        assert svc.candidate_views() == fresh
