"""Replicas of the proxy's table kept equal through the shared log: one table's decisions, in one process."""

from __future__ import annotations

import pickle
import random
import threading
from collections.abc import Iterator
from ipaddress import ip_address

import pytest

from gridlb.dataplane.proxy_shared import LogOverrun, Replica, SharedLog
from gridlb.dataplane.proxy_state import DestState, ProxyState
from gridlb.sched.base import Flow
from gridlb.table import AddDest, AddService, DestSpec, EditDest, RealKey, ServiceKey, ServiceSpec, Timeouts

KEY = ServiceKey.tcp("127.0.0.1", 2811)
REALS = [RealKey.parse(f"127.0.0.{i + 2}:2811") for i in range(3)]


@pytest.fixture
def log() -> Iterator[SharedLog]:
    shared = SharedLog(threading.Lock(), size=1 << 22)
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
        flow = Flow(ip_address(host), 1024 + i, KEY.addr, KEY.port)  # type: ignore[arg-type]
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
    flow = Flow(ip_address("192.0.2.1"), 5000, KEY.addr, KEY.port)  # type: ignore[arg-type]
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
            rep.pick(rep.services[KEY], Flow(ip_address("192.0.2.1"), 6000 + i, KEY.addr, KEY.port), 0.0)  # type: ignore[arg-type]
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
        c.pick(c.services[KEY], Flow(ip_address("192.0.2.9"), 7000, KEY.addr, KEY.port), 1.0)  # type: ignore[arg-type]
    with a_lock:
        assert [d.active for d in a.services[KEY].dests] == [d.active for d in c.services[KEY].dests]
        assert sum(d.active for d in a.services[KEY].dests) == 4


def test_a_replica_left_a_ring_behind_refuses_to_go_on() -> None:
    log = SharedLog(threading.Lock(), size=512)
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
