"""-R as ipvsadm reads it, and lossless -S/-R round trips over random tables."""

from __future__ import annotations

from hypothesis import given, settings

from gridlb.ipvsadm.restore import config_stream_lines
from gridlb.table import IpvsTable
from tests.ipvsadm.helpers import NO_DNS, run
from tests.ipvsadm.strategies import tables

TRYHELP = "Try `ipvsadm -h' or 'ipvsadm --help' for more information.\n"


def lines(text: str) -> list[list[str]]:
    return list(config_stream_lines(text, "ipvsadm"))


def test_words_blank_lines_and_the_ipvsadm_token() -> None:
    assert lines("ipvsadm -A -t 10.0.0.1:80\n\n  \t\n-C\r\n") == [
        ["ipvsadm", "-A", "-t", "10.0.0.1:80"],
        ["ipvsadm"],
        ["ipvsadm"],
        ["ipvsadm", "-C"],
    ]
    assert lines("-C") == [["ipvsadm", "-C"]]  # last line without a newline
    assert lines("-C  ") == []  # ...but two blanks before EOF lose it, as config_stream does
    assert lines("-A -t x ipvsadm -s rr\n") == [["ipvsadm", "-A", "-t", "x", "-s", "rr"]]


def summary(table: IpvsTable) -> dict[object, object]:
    """What -S carries: service keys and specs, destination keys, weights, methods, tunnels."""
    return {
        s.key: (
            s.spec,
            {
                d.key: (d.spec.weight, d.spec.forward, d.spec.tun_type, d.spec.tun_port, d.spec.tun_flags)
                for d in s.dests
            },
        )
        for s in table.services
    }


def test_restore_runs_every_line_and_returns_the_last_status() -> None:
    r = run(["-R"], stdin="-A -t 10.0.0.1:80\n-A -t 10.0.0.1:80\n-A -t 10.0.0.2:80\n")
    assert r.err == "Service already exists\n" and r.status == 0 and len(r.table.services) == 2
    r = run(["-R"], stdin="-A -t 10.0.0.1:80\n-A -t 10.0.0.1:80\n")
    assert r.status == 255


def test_fail_stops_the_restore_and_keeps_earlier_lines() -> None:
    r = run(["-R"], stdin="-A -t 10.0.0.1:80\n-A -t 10.0.0.2\n-A -t 10.0.0.3:80\n")
    assert (r.status, r.err) == (2, "Zero port specified for non-persistent service\n")
    assert len(r.table.services) == 1


def test_a_comment_line_ends_the_restore_like_ipvsadm() -> None:
    r = run(["-R"], stdin="# saved by hand\n-A -t 10.0.0.1:80\n")
    assert (r.status, r.err, r.table.services) == (255, TRYHELP, ())


def test_nested_restore_is_refused() -> None:
    assert run(["-R"], stdin="-R\n").status == 255


@settings(max_examples=150, deadline=None)
@given(tables())
def test_save_restore_round_trip_is_lossless(table: IpvsTable) -> None:
    for args in ("-S -n", "-S"):
        saved = run(args, table).out
        back = run(["-R"], stdin=saved, resolver=NO_DNS)
        assert (back.status, back.err) == (0, "")
        assert summary(back.table) == summary(table)
        # (saving again need not give the same text: libipvs's comparators wrap around, so addresses
        # 2**31 apart compare "less" both ways and their order follows the input, as in ipvsadm)
