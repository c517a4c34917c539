"""Tests of the table model: diff ordering and kernel-like application of ops."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridlb.table import (
    AddDest,
    AddService,
    DelDest,
    DelService,
    Dest,
    DestSpec,
    EditDest,
    IpvsTable,
    Proto,
    RealKey,
    Service,
    ServiceKey,
    apply_ops,
    diff,
)

VS = ServiceKey.tcp("10.0.0.1", 2811)
VS6 = ServiceKey.tcp("fd00::1", 2811)


def rk(i: int) -> RealKey:
    return RealKey.parse(f"10.0.1.{i}:2811")


def table(*svcs: Service) -> IpvsTable:
    return IpvsTable(services=svcs)


def test_new_service_added_before_its_dests() -> None:
    want = table(Service(VS, dests=(Dest(rk(2)), Dest(rk(1)))))
    ops = diff(IpvsTable(), want)
    assert isinstance(ops[0], AddService)
    assert [op.key for op in ops[1:] if isinstance(op, AddDest)] == [rk(1), rk(2)]
    assert apply_ops(IpvsTable(), ops) == want


def test_dests_deleted_before_their_service() -> None:
    have = table(Service(VS, dests=(Dest(rk(1)), Dest(rk(2)))))
    ops = diff(have, IpvsTable())
    assert ops == [DelDest(VS, rk(1)), DelDest(VS, rk(2)), DelService(VS)]


def test_weight_change_is_an_edit() -> None:
    have = table(Service(VS, dests=(Dest(rk(1)),)))
    want = table(Service(VS, dests=(Dest(rk(1), DestSpec(weight=0)),)))
    assert diff(have, want) == [EditDest(VS, rk(1), DestSpec(weight=0))]


def test_realkey_parse_forms() -> None:
    assert str(RealKey.parse("[fd00::5]:2811")) == "[fd00::5]:2811"
    assert RealKey.parse("10.0.0.5", default_port=2811) == RealKey.parse("10.0.0.5:2811")


@pytest.mark.parametrize(
    "text", ["10.0.0.5:65536", "10.0.0.5:-1", "10.0.0.5:1_0", "[fd00::5", "[fd00::5]2811"]
)
def test_realkey_parse_refuses_bad_ports_and_brackets(text: str) -> None:
    with pytest.raises(ValueError, match=r"port|V6ADDR"):
        RealKey.parse(text, default_port=2811)


specs = st.builds(DestSpec, weight=st.integers(0, 5))
dest_sets = st.dictionaries(st.integers(1, 8), specs, max_size=6)


@given(
    have=st.dictionaries(st.sampled_from([VS, VS6]), dest_sets),
    want=st.dictionaries(st.sampled_from([VS, VS6]), dest_sets),
)
def test_diff_then_apply_reaches_desired(
    have: dict[ServiceKey, dict[int, DestSpec]], want: dict[ServiceKey, dict[int, DestSpec]]
) -> None:
    def build(d: dict[ServiceKey, dict[int, DestSpec]]) -> IpvsTable:
        return table(*(Service(k, dests=tuple(Dest(rk(i), s) for i, s in v.items())) for k, v in d.items()))

    h, w = build(have), build(want)
    got = apply_ops(h, diff(h, w))
    assert {s.key: {d.key: d.spec for d in s.dests} for s in got.services} == {
        s.key: {d.key: d.spec for d in s.dests} for s in w.services
    }
    assert diff(got, w) == []


# --- added by the sched-ipvsadm engineer: kernel semantics the ipvsadm views rely on --------------


def test_apply_ops_adds_at_the_head_and_edits_in_place_keeping_counters() -> None:
    from dataclasses import replace

    from gridlb.table import DestCounters, EditService, ServiceSpec

    t = apply_ops(
        IpvsTable(),
        [AddService(VS, ServiceSpec()), AddDest(VS, rk(1), DestSpec()), AddDest(VS, rk(2), DestSpec())],
    )
    svc = t.service(VS)
    assert svc is not None and [d.key for d in svc.dests] == [rk(2), rk(1)]
    busy = replace(svc.dests[1], counters=DestCounters(active=4))
    t = t.with_service(replace(svc, dests=(svc.dests[0], busy)))
    t = apply_ops(t, [EditDest(VS, rk(1), DestSpec(weight=0)), EditService(VS, ServiceSpec(scheduler="rr"))])
    svc = t.service(VS)
    assert svc is not None and svc.spec.scheduler == "rr"
    assert [(d.key, d.spec.weight, d.counters.active) for d in svc.dests] == [(rk(2), 1, 0), (rk(1), 0, 4)]


def test_apply_ops_refuses_impossible_ops_with_ipvsadm_wording() -> None:
    import pytest

    from gridlb.table import ServiceSpec

    t = apply_ops(IpvsTable(), [AddService(VS, ServiceSpec())])
    with pytest.raises(ValueError, match="Service already exists"):
        apply_ops(t, [AddService(VS, ServiceSpec())])
    with pytest.raises(KeyError, match="No such service"):
        apply_ops(t, [DelService(VS6)])
    with pytest.raises(KeyError, match="No such destination"):
        apply_ops(t, [DelDest(VS, rk(1))])
    with pytest.raises(ValueError, match="Destination already exists"):
        apply_ops(t, [AddDest(VS, rk(1), DestSpec()), AddDest(VS, rk(1), DestSpec())])


def test_diff_edits_a_changed_service_and_keeps_unchanged_ones() -> None:
    from gridlb.table import EditService, ServiceSpec

    have = table(Service(VS, ServiceSpec(scheduler="wlc")), Service(VS6))
    want = table(Service(VS, ServiceSpec(scheduler="sh", flags=frozenset({"sh-port"}))), Service(VS6))
    assert diff(have, want) == [EditService(VS, ServiceSpec(scheduler="sh", flags=frozenset({"sh-port"})))]


def test_keys_print_as_ipvsadm_names_them() -> None:
    from gridlb.table import Proto

    assert str(VS6) == "TCP [fd00::1]:2811"
    assert str(ServiceKey(Proto.TCP, None, 0, fwmark=5, af=6)) == "FWM 5 IPv6"
    assert DestSpec().tun_type == "ipip" and DestSpec().tun_flags == "nocsum"


def test_keys_sort_across_families_and_protocols() -> None:
    keys = [RealKey.parse("[fd00::1]:1"), RealKey.parse("10.0.0.2:1"), RealKey.parse("10.0.0.1:2")]
    assert [str(k) for k in sorted(keys)] == ["10.0.0.1:2", "10.0.0.2:1", "[fd00::1]:1"]
    svcs = [VS6, VS, ServiceKey(Proto.UDP, VS.addr, 2811)]
    assert sorted(svcs)[0] == VS and sorted(svcs)[-1] == VS6


def test_apply_ops_keeps_untouched_objects_and_the_kernel_order_of_readds() -> None:
    from gridlb.table import ServiceSpec

    other = ServiceKey.tcp("10.0.0.9", 80)
    t = apply_ops(
        IpvsTable(),
        [
            AddService(VS, ServiceSpec()),
            AddService(other, ServiceSpec()),
            *(AddDest(VS, rk(i), DestSpec()) for i in (1, 2, 3)),
            AddDest(other, rk(4), DestSpec()),
        ],
    )
    kept = t.service(other)
    t2 = apply_ops(t, [DelDest(VS, rk(2)), AddDest(VS, rk(2), DestSpec(weight=5))])
    assert t2.service(other) is kept  # untouched: the same object
    svc = t2.service(VS)
    assert svc is not None and [(d.key, d.spec.weight) for d in svc.dests] == [
        (rk(2), 5),
        (rk(3), 1),
        (rk(1), 1),
    ]
    t3 = apply_ops(t2, [DelService(VS), AddService(VS, ServiceSpec("rr"))])
    assert [s.key for s in t3.services] == [other, VS]  # a re-added service comes last, empty
    assert t3.services[1].dests == () and t3.services[1].spec.scheduler == "rr"
