"""Replicas of the proxy's table kept equal through the shared log and the shared counters: one table's
decisions, in one process."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from ipaddress import ip_address

import pytest

from gridlb.dataplane.proxy_shared import (
    LogOverrun,
    Replica,
    RobustLock,
    SharedCounters,
    SharedDest,
    SharedLog,
)
from gridlb.dataplane.proxy_state import DestState, ProxyState
from gridlb.sched.base import Flow
from gridlb.table import (
    AddDest,
    AddService,
    DelDest,
    DestSpec,
    EditDest,
    EditService,
    Proto,
    RealKey,
    ServiceKey,
    ServiceSpec,
    Timeouts,
)

VIP = ip_address("127.0.0.1")
KEY = ServiceKey(Proto.TCP, VIP, 2811)
REALS = [RealKey.parse(f"127.0.0.{i + 2}:2811") for i in range(3)]


@pytest.fixture
def log() -> Iterator[SharedLog]:
    shared = SharedLog(multiprocessing.Lock(), size=1 << 22)
    yield shared
    shared.close()


def ops(scheduler: str, persistence_s: int = 0) -> list[AddService | AddDest]:
    return [
        AddService(KEY, ServiceSpec(scheduler=scheduler, persistence_timeout_s=persistence_s)),
        *(AddDest(KEY, r, DestSpec(weight=i + 1)) for i, r in enumerate(REALS)),
    ]


def worker(log: SharedLog, index: int) -> tuple[Replica, Replica]:
    """Return a replica and its lock (the replica itself: `with replica:`)."""
    r = Replica(index, Timeouts(tcpfin=5))
    r.attach(log, 0, index)
    return r, r


@pytest.mark.parametrize(("scheduler", "persistence_s"), [("wlc", 0), ("rr", 0), ("wrr", 0), ("lc", 30)])
def test_two_replicas_decide_as_one_table(log: SharedLog, scheduler: str, persistence_s: int) -> None:
    """Picks, closes and expiries spread over two replicas (and a third that only follows) give the
    picks and counters of a single ProxyState that sees the same events in the same order."""
    one = ProxyState(Timeouts(tcpfin=5))
    workers = [worker(log, 0), worker(log, 1)]
    with workers[0][1]:
        for op in ops(scheduler, persistence_s):
            workers[0][0].apply(op)
            one.apply(op)
    follower, follower_lock = worker(log, 2)
    rng = random.Random(14)
    held: list[tuple[int, DestState, DestState, str, int]] = []
    now = 0.0
    for i in range(3000):
        now += rng.random() * 0.02
        w = rng.randrange(2)
        replica, lock = workers[w]
        if held and (len(held) > 40 or rng.random() < 0.45):
            hw, d, d1, host, port = held.pop(rng.randrange(len(held)))
            with workers[hw][1]:
                workers[hw][0].closed_conn(d, now, host, port)
            one.closed_conn(d1, now, host, port)
            continue
        host = f"192.0.2.{rng.randrange(1, 30)}"
        flow = Flow(ip_address(host), 1024 + i, VIP, KEY.port)
        with lock:
            replica.expire(now)
            got = replica.pick(replica.services[KEY], flow, now)
        one.expire(now)
        want = one.pick(one.services[KEY], flow, now)
        assert got is not None and want is not None
        assert got.key == want.key, f"pick {i} differs from one table's"
        held.append((w, got, want, host, 1024 + i))
    with follower_lock:
        pass
    for replica, lock in [*workers, (follower, follower_lock)]:
        with lock:
            table = replica.snapshot()
        assert [
            (d.key, d.counters.active, d.counters.inactive, d.counters.stats.conns)
            for d in table.services[0].dests
        ] == [
            (d.key, d.counters.active, d.counters.inactive, d.counters.stats.conns)
            for d in one.snapshot().services[0].dests
        ]
        assert (
            replica.snapshot().services[0].dests[0].counters.persistent
            == one.snapshot().services[0].dests[0].counters.persistent
        )


def test_a_drain_reaches_every_replica_before_its_next_pick(log: SharedLog) -> None:
    (a, a_lock), (b, b_lock) = worker(log, 0), worker(log, 1)
    with a_lock:
        for op in ops("wlc"):
            a.apply(op)
        a.apply(EditDest(KEY, REALS[2], DestSpec(weight=0)))
    flow = Flow(ip_address("192.0.2.1"), 5000, VIP, KEY.port)
    for i in range(20):
        with b_lock:
            d = b.pick(b.services[KEY], flow, float(i))
        assert d is not None and d.key != REALS[2]


def test_a_dead_workers_connections_are_unbound_and_a_snapshot_carries_on(log: SharedLog) -> None:
    (a, a_lock), (b, b_lock) = worker(log, 0), worker(log, 1)
    with a_lock:
        for op in ops("wlc"):
            a.apply(op)
    for i in range(6):
        rep, lock = (a, a_lock) if i % 2 else (b, b_lock)
        with lock:
            rep.pick(rep.services[KEY], Flow(ip_address("192.0.2.1"), 6000 + i, VIP, KEY.port), 0.0)
    with a_lock:
        assert sum(d.active for d in a.services[KEY].dests) == 6
        assert a.abandon(1) == 3  # worker 1 died: its 3 connections died with it
        blob = pickle.dumps((a, a.pos))
    with b_lock:  # the log brings the loss to every replica
        assert sum(d.active for d in b.services[KEY].dests) == 3
    c, pos = pickle.loads(blob)  # the restarted worker 1 starts from a live copy
    c.attach(log, pos, 1)
    c_lock = c
    with c_lock:
        c.pick(c.services[KEY], Flow(ip_address("192.0.2.9"), 7000, VIP, KEY.port), 1.0)
    with a_lock:
        assert [d.active for d in a.services[KEY].dests] == [d.active for d in c.services[KEY].dests]
        assert sum(d.active for d in a.services[KEY].dests) == 4


def test_a_replica_left_a_ring_behind_refuses_to_go_on() -> None:
    log = SharedLog(multiprocessing.Lock(), size=512)
    try:
        (a, a_lock), (b, b_lock) = worker(log, 0), worker(log, 1)
        lost: list[str] = []
        b.on_lost = lost.append  # a worker process exits there, to be restarted from a live copy
        with a_lock:
            for op in ops("wlc"):
                a.apply(op)
            for i in range(40):
                a.expire(float(i))
        with pytest.raises(LogOverrun), b_lock:
            pass
        assert len(lost) == 1 and "past this worker" in lost[0]
    finally:
        log.close()


@pytest.fixture
def counters() -> Iterator[SharedCounters]:
    shared = SharedCounters(2, rows=64)
    yield shared
    shared.close()


def dest_of(state: ProxyState, key: RealKey) -> DestState:
    """The destination `key` of the service KEY in `state` (it must be there)."""
    d = state.services[KEY].dest(key)
    assert d is not None
    return d


def counting(log: SharedLog, counters: SharedCounters, index: int) -> Replica:
    r = Replica(index, Timeouts(tcpfin=5), counters=counters)
    r.attach(log, 0, index)
    return r


def flow(host: str, port: int) -> Flow:
    return Flow(ip_address(host), port, VIP, KEY.port)


@pytest.mark.parametrize(("scheduler", "slots"), [("wlc", 2), ("lc", 2), ("sed", 2), ("nq", 2), ("wlc", 3)])
def test_shared_counters_pick_as_one_table_over_10000_connections(
    log: SharedLog, scheduler: str, slots: int
) -> None:
    """Two workers counting in their own slots, never logging a connection, pick one after the other
    exactly as one table that sees the same opens, closes and expiries (of 3 slots, one unused)."""
    counters = SharedCounters(slots, rows=64)
    try:
        picked_as_one(log, counters, scheduler)
    finally:
        counters.close()


def picked_as_one(log: SharedLog, counters: SharedCounters, scheduler: str) -> None:
    one = ProxyState(Timeouts(tcpfin=5))
    a, b = counting(log, counters, 0), counting(log, counters, 1)
    for op in ops(scheduler):
        a.apply(op)
        one.apply(op)
    assert a.services[KEY].shared and all(isinstance(d, SharedDest) for d in a.services[KEY].dests)
    rng = random.Random(14)
    held: list[tuple[Replica, DestState, DestState, str, int]] = []
    now = 0.0
    for i in range(10_000):
        now += rng.random() * 0.004
        if held and (len(held) > 40 or rng.random() < 0.45):
            rep, d, d1, host, port = held.pop(rng.randrange(len(held)))
            rep.closed_conn(d, now, host, port)
            one.closed_conn(d1, now, host, port)
            continue
        rep = (a, b)[rng.randrange(2)]
        host = f"192.0.2.{rng.randrange(1, 30)}"
        a.expire(now)
        b.expire(now)
        one.expire(now)
        got = rep.pick(rep.services[KEY], flow(host, 1024 + i), now)
        want = one.pick(one.services[KEY], flow(host, 1024 + i), now)
        assert got is not None and want is not None
        assert got.key == want.key, f"pick {i} differs from one table's"
        held.append((rep, got, want, host, 1024 + i))
    assert a.pos == log.end  # nothing but the ops went through the log
    want_counts = [(d.key, d.counters.active, d.counters.inactive) for d in one.snapshot().services[0].dests]
    for rep in (a, b):
        assert [
            (d.key, d.counters.active, d.counters.inactive) for d in rep.snapshot().services[0].dests
        ] == want_counts
    conns = [
        sum(r.services[KEY].dests[j].traffic.conns for r in (a, b)) for j in range(len(REALS))
    ]  # each worker counts its own connections: the dump sums them
    assert conns == [d.traffic.conns for d in one.services[KEY].dests]


def test_shared_overload_flag_is_seen_by_every_worker(log: SharedLog, counters: SharedCounters) -> None:
    a, b = counting(log, counters, 0), counting(log, counters, 1)
    a.apply(AddService(KEY, ServiceSpec(scheduler="wlc")))
    a.apply(AddDest(KEY, REALS[0], DestSpec(weight=1, u_threshold=2)))
    a.apply(AddDest(KEY, REALS[1], DestSpec(weight=1)))
    with b:  # catches up with the ops (a worker does at its next pick)
        pass
    picked = [
        (a, b)[i % 2].pick((a, b)[i % 2].services[KEY], flow("192.0.2.1", 1 + i), 0.0) for i in range(4)
    ]
    picks = [d for d in picked if d is not None]
    assert [d.key for d in picks] == [REALS[1], REALS[0], REALS[1], REALS[0]]
    # worker b's bind made 2 connections on REALS[0] (one of them worker a's): overloaded for both
    assert dest_of(a, REALS[0]).overloaded
    for i in range(4):
        got = a.pick(a.services[KEY], flow("192.0.2.1", 10 + i), 0.0)
        assert got is not None and got.key == REALS[1]
    b.connect_failed(picks[3], mark_down=False, flow=flow("192.0.2.1", 4))
    assert not dest_of(a, REALS[0]).overloaded  # 1 * 4 < 2 * 3
    got = a.pick(a.services[KEY], flow("192.0.2.1", 20), 0.0)
    assert got is not None and got.key == REALS[0] and got.overloaded  # set by a, seen by b:
    assert dest_of(b, REALS[0]).overloaded
    b.apply(EditDest(KEY, REALS[0], DestSpec(weight=1, u_threshold=3)))  # higher: the writer clears it
    assert not dest_of(a, REALS[0]).overloaded
    got = b.pick(b.services[KEY], flow("192.0.2.1", 21), 0.0)
    assert got is not None and got.key == REALS[0] and got.overloaded  # 3 connections
    a.expire(0.0)  # a replays the edit now: a replayed op changes no shared flag
    assert dest_of(a, REALS[0]).overloaded


def test_a_passive_failure_in_one_worker_reaches_the_others(log: SharedLog, counters: SharedCounters) -> None:
    a, b = counting(log, counters, 0), counting(log, counters, 1)
    for op in ops("wlc"):
        a.apply(op)
    with b:
        pass
    d = b.pick(b.services[KEY], flow("192.0.2.1", 1), 0.0)
    assert d is not None
    assert b.connect_failed(d, mark_down=True, flow=flow("192.0.2.1", 1))
    for i in range(10):
        got = a.pick(a.services[KEY], flow("192.0.2.1", 10 + i), 0.0)
        assert got is not None and got.key != d.key
    assert sum(x.active for x in a.services[KEY].dests) == 10


def test_a_dead_workers_slots_are_zeroed_and_its_copy_forgets_the_others_closes(
    log: SharedLog, counters: SharedCounters
) -> None:
    a, b = counting(log, counters, 0), counting(log, counters, 1)
    for op in ops("wlc"):
        a.apply(op)
    with b:
        pass
    for i in range(6):
        rep = (a, b)[i % 2]
        d = rep.pick(rep.services[KEY], flow("192.0.2.1", 100 + i), 0.0)
        assert d is not None
        if i < 2:
            rep.closed_conn(d, 0.0, "192.0.2.1", 100 + i)
    assert (sum(d.active for d in a.services[KEY].dests), sum(d.inactive for d in a.services[KEY].dests)) == (
        4,
        2,
    )
    counters.zero_worker(1)  # worker 1 died: the pool forgets its connections
    assert (sum(d.active for d in a.services[KEY].dests), sum(d.inactive for d in a.services[KEY].dests)) == (
        2,
        1,
    )
    c, pos = pickle.loads(pickle.dumps((a, a.pos)))  # worker 1 restarts from worker 0's copy
    assert c.counters is None and len(c.own_closed) == 1
    c.attach(log, pos, 1, counters)
    assert not c.own_closed  # worker 0's inactive connection is counted in worker 0's slot only
    assert [d.active for d in c.services[KEY].dests] == [d.active for d in a.services[KEY].dests]
    got = c.pick(c.services[KEY], flow("192.0.2.9", 7000), 1.0)
    assert got is not None
    assert sum(d.active for d in a.services[KEY].dests) == 3
    a.expire(10.0)
    c.expire(10.0)
    assert sum(d.inactive for d in a.services[KEY].dests) == 0


def test_a_destination_added_back_counts_on_and_a_scheduler_change_keeps_picking(
    log: SharedLog, counters: SharedCounters
) -> None:
    a, b = counting(log, counters, 0), counting(log, counters, 1)
    for op in ops("wlc"):
        a.apply(op)
    d = a.pick(a.services[KEY], flow("192.0.2.1", 1), 0.0)
    assert d is not None
    a.apply(DelDest(KEY, d.key))
    a.apply(AddDest(KEY, d.key, DestSpec(weight=1)))
    with b:
        pass
    assert b.pick(b.services[KEY], flow("192.0.2.1", 2), 0.0) is not None  # b catches up
    assert dest_of(b, d.key).active == 1  # the kernel's trash
    a.apply(EditService(KEY, ServiceSpec(scheduler="rr")))  # to the log: rr's cursor is shared
    picks = []
    for i in range(6):
        rep = (a, b)[i % 2]
        got = rep.pick(rep.services[KEY], flow("192.0.2.1", 10 + i), 1.0)
        assert got is not None and not isinstance(got, SharedDest)
        picks.append(got.key)
    assert len(set(picks[:3])) == 3 and picks[:3] == picks[3:]  # one cursor over both workers
    a.closed_conn(d, 1.0, "192.0.2.1", 1)  # a connection from before the change ends on its own slot
    a.apply(EditService(KEY, ServiceSpec(scheduler="wlc")))
    assert isinstance(b.pick(b.services[KEY], flow("192.0.2.1", 30), 2.0), SharedDest)


def test_the_shared_counters_refuse_a_destination_past_their_rows(log: SharedLog) -> None:
    small = SharedCounters(2, rows=2)
    try:
        a = counting(log, small, 0)
        a.apply(AddService(KEY, ServiceSpec(scheduler="wlc")))
        a.apply(AddDest(KEY, REALS[0], DestSpec()))
        a.apply(AddDest(KEY, REALS[1], DestSpec()))
        with pytest.raises(ValueError, match="shared counters are full"):
            a.apply(AddDest(KEY, REALS[2], DestSpec()))
        assert len(a.services[KEY].dests) == 2
    finally:
        small.close()


def test_a_worker_killed_holding_the_lock_leaves_it_free() -> None:
    """The kernel releases the record lock of a process that dies holding it (even before it could
    record anything): the other workers go on."""
    lock = RobustLock()
    try:
        code = (
            "import sys, time\n"
            "from gridlb.dataplane.proxy_shared import RobustLock\n"
            "lock = RobustLock(sys.argv[1])\n"
            "lock.acquire()\n"
            "print('held', flush=True)\n"
            "time.sleep(60)\n"
        )
        child = subprocess.Popen([sys.executable, "-c", code, lock.path], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None and child.stdout.readline() == "held\n"
            assert not lock.acquire(False)
            assert not lock.acquire(True, timeout=0.05)
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
        assert lock.acquire(True, timeout=5.0)
        lock.release()
    finally:
        lock.close()


def test_the_robust_lock_excludes_threads_and_processes_alike() -> None:
    lock = RobustLock()
    assert os.fstat(lock.fd).st_nlink == 0  # no name: nothing left behind however the director ends
    other = pickle.loads(pickle.dumps(lock))  # what a spawned worker gets: the path, opened again
    try:
        with lock:
            assert not other.acquire(False)  # another open file: another process, as far as it knows
            got: list[bool] = []
            t = threading.Thread(target=lambda: got.append(lock.acquire(False)))
            t.start()
            t.join()
            assert got == [False]  # a thread of the same process waits too
        assert other.acquire(False)
        other.release()
    finally:
        other.close()
        lock.close()


def test_a_worker_started_from_the_directors_copy_counts_and_flags(
    log: SharedLog, counters: SharedCounters
) -> None:
    """With no live worker to copy, a worker starts from the director's spec-only copy (which never
    writes a shared flag): once attached it counts in its own slot and sets the flag."""
    spec = Replica(-1, Timeouts(tcpfin=5), counters=counters)
    spec.replaying = True
    spec.apply(AddService(KEY, ServiceSpec(scheduler="wlc")))
    spec.apply(AddDest(KEY, REALS[0], DestSpec(weight=1, u_threshold=1)))
    w, pos = pickle.loads(pickle.dumps((spec, log.end)))
    w.attach(log, pos, 1, counters)
    d = w.pick(w.services[KEY], flow("192.0.2.1", 1), 0.0)
    assert d is not None and d.overloaded and d.active == 1
    assert counters.q[0 * counters.stride + 3] == 1  # row 0, worker 1's active slot
    assert w.pick(w.services[KEY], flow("192.0.2.1", 2), 0.0) is None  # overloaded: refused
