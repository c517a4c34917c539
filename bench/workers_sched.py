"""What keeping one scheduling table across proxy workers costs per connection: a lock, or a hand-off.

The proxy's workers share one `ProxyState`; every connection is picked and bound, then counted
closed, and each pump call adds its bytes. Two ways to keep that exact across threads:

* lock: every worker takes one `threading.Lock` around each use of the state (what gridlb does);
* owner: one thread owns the state and the workers post each pick to it and wait for the answer
  (a deque plus an eventfd wake-up each way, like `RelayEngine.call`);
* log: what the worker processes do for services other than the least-connection ones
  (proxy_shared.py): each process keeps a replica, logs its changes to a ring in shared memory
  under a process-shared lock and replays the others' first;
* counters: what they do for wlc, lc, sed and nq: each process counts in its own slots of shared
  memory (no lock, no log) and a pick sums every worker's slots.

All run the real `ProxyState` with gridlb.sched's wlc over 3 destinations, a pick + bind and a
close per connection, and report CPU µs per connection (all threads, and all processes for the log
and counters cases), medians of 3 rounds, spread min–max. The lock is measured with and without a
second worker taking it at the same time; the log and the counters with one process and with two,
whose replicas must end equal. The figure to watch: counters2 / none (two workers' cost per
connection over one worker's).

    python bench/workers_sched.py [--quick] [--conns 50000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from ipaddress import ip_address
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from gridlb.dataplane.proxy_shared import Replica, RobustLock, SharedCounters, SharedLog
from gridlb.dataplane.proxy_state import DestState, ProxyState, ServiceState
from gridlb.sched.base import Flow
from gridlb.table import AddDest, AddService, DestSpec, RealKey, ServiceKey, ServiceSpec, Timeouts


def table() -> tuple[ProxyState, ServiceState, Flow]:
    state = ProxyState(Timeouts(tcpfin=1))
    key = ServiceKey.tcp("127.0.0.1", 2811)
    state.apply(AddService(key, ServiceSpec(scheduler="wlc")))
    for i in range(3):
        state.apply(AddDest(key, RealKey.parse(f"127.0.0.{i + 2}:2811"), DestSpec(weight=i + 1)))
    flow = Flow(ip_address("192.0.2.1"), 40000, ip_address("127.0.0.1"), 2811)
    return state, state.services[key], flow


def one_conn(state: ProxyState, svc: ServiceState, flow: Flow, now: float) -> DestState:
    d = state.pick(svc, flow, now)
    assert d is not None
    state.closed_conn(d, now, "192.0.2.1", 40000)
    state.expire(now)
    return d


def plain(n: int) -> None:
    state, svc, flow = table()
    for i in range(n):
        one_conn(state, svc, flow, i * 1e-3)


def locked(n: int, threads: int = 1) -> None:
    state, svc, flow = table()
    lock = threading.Lock()
    clock = iter(range(n * threads))  # next() is atomic under the GIL

    def worker() -> None:
        for _ in range(n):
            with lock:  # pick + bind
                now = next(clock) * 1e-3
                d = state.pick(svc, flow, now)
            assert d is not None
            with lock:  # the close
                state.closed_conn(d, now, "192.0.2.1", 40000)
                state.expire(now)

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def owner(n: int) -> None:
    state, svc, flow = table()
    requests: deque[tuple[int, list[DestState | None]]] = deque()
    ask = os.eventfd(0)
    answer = os.eventfd(0)
    done = threading.Event()

    def run() -> None:
        while not done.is_set():
            os.eventfd_read(ask)
            while requests:
                i, box = requests.popleft()
                if i < 0:
                    return
                box.append(one_conn(state, svc, flow, i * 1e-3))
                os.eventfd_write(answer, 1)

    t = threading.Thread(target=run)
    t.start()
    for i in range(n):
        box: list[DestState | None] = []
        requests.append((i, box))
        os.eventfd_write(ask, 1)
        os.eventfd_read(answer)
        assert box
    requests.append((-1, []))
    os.eventfd_write(ask, 1)
    t.join()
    os.close(ask)
    os.close(answer)


def replica_worker(
    index: int, name: str, lock: Any, done: Any, n: int, out: Any, counters_name: str | None, procs: int
) -> None:
    """One worker process: a replica over the shared log (and counters); n connections; report its CPU."""
    log = SharedLog(lock, name)
    counters = SharedCounters(procs, counters_name) if counters_name else None
    rep = Replica(index, Timeouts(tcpfin=1), counters=counters)
    rep.attach(log, 0, index)
    shared = rep  # `with rep:` takes the process-shared lock (each change also takes it itself)
    key = ServiceKey.tcp("127.0.0.1", 2811)
    with shared:
        if index == 0:
            rep.apply(AddService(key, ServiceSpec(scheduler="wlc")))
            for i in range(3):
                rep.apply(AddDest(key, RealKey.parse(f"127.0.0.{i + 2}:2811"), DestSpec(weight=i + 1)))
    while True:  # worker 1 waits for worker 0's table
        with shared:
            if key in rep.services:
                break
    svc = rep.services[key]
    assert svc.shared is (counters is not None)
    host = f"192.0.2.{index + 1}"
    client, vaddr = ip_address(host), ip_address("127.0.0.1")
    done.wait()  # every worker starts together: they run at the same time
    c0 = time.process_time()
    if counters is None:
        for i in range(n):
            flow = Flow(client, 1024 + i % 60000, vaddr, 2811)  # each connection its own client port
            now = i * 1e-3
            with shared:  # pick + bind
                d = rep.pick(svc, flow, now)
            assert d is not None
            with shared:  # the close
                rep.closed_conn(d, now, host, 1024 + i % 60000)
                rep.expire(now)
    else:  # as a worker's engine calls it (NoLock): each change locks only if it must
        for i in range(n):
            flow = Flow(client, 1024 + i % 60000, vaddr, 2811)
            now = i * 1e-3
            d = rep.pick(svc, flow, now)
            assert d is not None
            rep.closed_conn(d, now, host, 1024 + i % 60000)
            rep.expire(now)
    cpu = time.process_time() - c0
    done.wait()  # every worker finished: the replicas must now be equal
    with shared:
        ends = [(d.active, d.inactive) for d in svc.dests]
    out.send((cpu, ends))
    log.close()
    if counters is not None:
        counters.close()


def logged(n: int, procs: int, shared: bool = False) -> float:
    """Run `procs` worker processes over one log (and shared counters); return their CPU µs per
    connection, summed."""
    ctx = multiprocessing.get_context("spawn")
    lock = RobustLock()  # the workers' lock
    log = SharedLog(lock)
    counters = SharedCounters(procs) if shared else None
    pipes = [ctx.Pipe(duplex=False) for _ in range(procs)]
    done = ctx.Barrier(procs)
    ps = [
        ctx.Process(
            target=replica_worker,
            args=(i, log.name, lock, done, n // procs, w, counters.name if counters else None, procs),
        )
        for i, (_, w) in enumerate(pipes)
    ]
    for p in ps:
        p.start()
    results: list[tuple[float, list[tuple[int, int]]]] = [r.recv() for r, _ in pipes]  # (cpu, ends)
    for p in ps:
        p.join()
    log.close()
    lock.close()
    if counters is not None:
        counters.close()
    if procs > 1:
        ends = {tuple(c) for _, c in results}
        assert len(ends) == 1, f"the replicas differ: {ends}"
    return sum(cpu for cpu, _ in results) * 1e6 / n


def measure(fn: Callable[[], None], conns: int) -> float:
    """Return process CPU µs per connection of `fn` (all threads)."""
    c0 = time.process_time()
    fn()
    return (time.process_time() - c0) * 1e6 / conns


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="30,000 connections per case")
    ap.add_argument("--conns", type=int, default=50_000)
    a = ap.parse_args()
    n = 30_000 if a.quick else a.conns
    cases: dict[str, tuple[str, Callable[[], None]]] = {
        "none": ("no lock (one worker, no sharing)", lambda: plain(n)),
        "lock": ("lock, 1 thread", lambda: locked(n)),
        "lock2": ("lock, 2 threads contending", lambda: locked(n // 2, 2)),
        "owner": ("owner thread, hand-off per pick", lambda: owner(n)),
    }
    procs: dict[str, tuple[str, Callable[[], float]]] = {
        "log": ("log, 1 process (worker processes)", lambda: logged(n, 1)),
        "log2": ("log, 2 processes contending", lambda: logged(n, 2)),
        "counters": ("shared counters, 1 process", lambda: logged(n, 1, shared=True)),
        "counters2": ("shared counters, 2 processes", lambda: logged(n, 2, shared=True)),
    }
    base = 0.0
    kv = {}
    print("CPU µs per connection, median of 3 [min–max], and the cost over no sharing")
    for key, (label, fn) in cases.items():
        vals = [measure(fn, n) for _ in range(3)]
        med = statistics.median(vals)
        base = base or med
        print(f"{label:<36} {med:7.2f} µs/conn [{min(vals):.2f}–{max(vals):.2f}]  +{med - base:.2f}")
        kv[f"{key}_us"] = f"{med:.2f}"
    for key, (label, run) in procs.items():
        vals = [run() for _ in range(3)]
        med = statistics.median(vals)
        print(f"{label:<36} {med:7.2f} µs/conn [{min(vals):.2f}–{max(vals):.2f}]  +{med - base:.2f}")
        kv[f"{key}_us"] = f"{med:.2f}"
    added = {k: float(kv[f"{k}_us"]) - float(kv["none_us"]) for k in ("log2", "counters2")}
    print(
        "added by two worker processes per connection (same run): "
        f"shared counters {added['counters2']:+.2f} µs, log {added['log2']:+.2f} µs"
    )
    kv.update({f"{k}_added_us": f"{v:.2f}" for k, v in added.items()})
    print("RESULT workers_sched " + " ".join(f"{k}={v}" for k, v in kv.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
