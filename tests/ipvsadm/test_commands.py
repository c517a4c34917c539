"""Table changes with the kernel's semantics: zeroing, timeouts, overload, scheduler flags."""

from __future__ import annotations

from dataclasses import replace

from gridlb.table import DestCounters, ServiceKey, Stats
from tests.ipvsadm.helpers import restore, run

VS = ServiceKey.tcp("10.0.0.1", 80)


def test_zero_clears_traffic_counters_not_connections() -> None:
    t = restore("-A -t 10.0.0.1:80\n-a -t 10.0.0.1:80 -r 10.0.0.2\n")
    svc = t.service(VS)
    assert svc is not None
    busy = DestCounters(active=3, inactive=4, stats=Stats(conns=9, inbytes=100))
    t = t.with_service(replace(svc, stats=Stats(conns=9), dests=(replace(svc.dests[0], counters=busy),)))
    z = run("-Z", t).table.service(VS)
    assert z is not None and z.stats == Stats()
    assert z.dests[0].counters == DestCounters(active=3, inactive=4)
    assert run("-Z -t 10.0.0.1:80", t).table == run("-Z", t).table


def test_set_zero_keeps_a_timeout() -> None:
    t = run("--set 10 0 20").table
    assert (t.timeouts.tcp, t.timeouts.tcpfin, t.timeouts.udp) == (10, 120, 20)


def test_raising_the_upper_threshold_clears_overload() -> None:
    t = restore("-A -t 10.0.0.1:80\n-a -t 10.0.0.1:80 -r 10.0.0.2 -x 10\n")
    svc = t.service(VS)
    assert svc is not None
    t = t.with_service(replace(svc, dests=(replace(svc.dests[0], counters=DestCounters(overloaded=True)),)))
    kept = run("-e -t 10.0.0.1:80 -r 10.0.0.2 -x 5", t).table.service(VS)
    cleared = run("-e -t 10.0.0.1:80 -r 10.0.0.2 -x 20", t).table.service(VS)
    assert kept is not None and kept.dests[0].counters.overloaded
    assert cleared is not None and not cleared.dests[0].counters.overloaded


def test_edit_service_replaces_the_whole_spec() -> None:
    t = restore("-A -t 10.0.0.1:80 -s sh -b sh-port -p 60\n")
    svc = run("-E -t 10.0.0.1:80 -s rr", t).table.service(VS)
    assert svc is not None
    assert (svc.spec.scheduler, svc.spec.flags, svc.spec.persistence_timeout_s) == ("rr", frozenset(), 0)
    flagged = restore("-A -t 10.0.0.1:80 -s mh -b flag-1,flag-2\n").service(VS)
    assert flagged is not None and flagged.spec.flags == {"mh-fallback", "mh-port"}
