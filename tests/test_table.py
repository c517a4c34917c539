"""Tests of the table model: diff ordering and kernel-like application of ops."""

from __future__ import annotations

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
