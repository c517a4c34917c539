"""Benchmark of the proxy dataplane against haproxy (default and 256 KiB buffers) and a direct connection.

Placement: the proxy under test runs alone on CPU 1; the backends and the load generator run on
CPU 0. Every system balances least-connection over 3 banner backends ("220 ..." then close, like an
FTP greeting) and 3 bulk senders (the client sends `<MiB>\\n`, the sender writes that many MiB and
closes). The proxy's CPU time (with its worker processes) is read before and after each load run,
so "µs per connection" and "CPU-s per GB" do not depend on the load side's ceiling: the run time
of each of its threads in nanoseconds (/proc/PID/task/TID/schedstat), or /proc/PID/stat's clock
ticks (10 ms) for a run in which a thread started or ended. haproxy runs from a config in a temp
dir, started and killed by PID. All traffic is on 127.0.0.1. Rounds interleave the systems
(each round runs every system once); every figure is the median over the rounds, shown with its
spread (min–max), and every ratio to haproxy is taken within a round (same minute, same foreign
load) before its median.

    python bench/proxy.py            # full run: 3 rounds, then 100,000 connections through gridlb
    python bench/proxy.py --quick    # 3 shorter rounds, about a minute

The row `gridlb-2w` is the proxy with 2 worker processes (`gridlb.proxy.workers: 2`, worker i on
CPU i, so one shares CPU 0 with the load), judged by CPU µs per short connection against the 1-worker row
of the same round (the load shares the CPUs, so the total rate is not the figure). Under the verdict
both gridlb rows show each process's user/system CPU per connection (p0 the director, p2 and p3 its
worker processes) and the context switches per connection: a half-loaded worker that is woken per
event instead of per batch shows there (docs/proxy.md, Workers).

Internal roles (the bench runs itself in subprocesses): --role backends|proxy|loadgen.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from math import inf, nan
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from gridlb.lab import procfs  # noqa: E402

BANNER = b"220 gridlb-bench GridFTP-like ready\r\n"
LOAD_CPU = 0
PROXY_CPU = 1
HOST = "127.0.0.1"


# --- small helpers ----------------------------------------------------------------------------------


def pin(cpu: int) -> None:
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {cpu})


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind((HOST, 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def cpu_s(pid: int) -> tuple[float, float]:
    """Return (user, system) CPU seconds of process `pid` (all its threads) and of its live descendants
    (gridlb's relay worker processes)."""
    user, system = procfs.cpu_times(pid)
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in task.read_text().split():
            u, s = cpu_s(int(child))
            user, system = user + u, system + s
    return user, system


def run_ns(pid: int) -> dict[int, int]:
    """Return {thread id: nanoseconds on a CPU} of every live thread of `pid` and its descendants.

    The scheduler's own count (the first field of /proc/PID/task/TID/schedstat) is exact where
    /proc/PID/stat's user and system times come in clock ticks (10 ms): a bulk test's relay CPU is a
    few ticks. A thread that ends takes its count with it, so a run is measured this way only when
    the same threads live before and after it (`measure`).
    """
    out: dict[int, int] = {}
    for p in processes(pid):
        for stat in Path(f"/proc/{p}/task").glob("*/schedstat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                out[int(stat.parent.name)] = int(stat.read_text().split()[0])
    return out


def processes(pid: int) -> list[int]:
    """Return `pid` and its live descendants (gridlb's relay worker processes), parents first."""
    out = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            for child in task.read_text().split():
                out.extend(processes(int(child)))
    return out


def ctx_switches(pid: int) -> int:
    """Return the context switches (voluntary + not) of every thread of `pid` and its descendants.

    A relay loop that handles its events in batches switches rarely; one woken per event (a worker
    with half the load) switches about once per connection: the figure behind `us_conn_2w_vs_1w`.
    """
    total = 0
    for p in processes(pid):
        for status in Path(f"/proc/{p}/task").glob("*/status"):
            with contextlib.suppress(OSError):
                for line in status.read_text().splitlines():
                    if "ctxt_switches:" in line:
                        total += int(line.split()[1])
    return total


def wait_port(port: int, timeout_s: float = 10.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            socket.create_connection((HOST, port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


# --- role: backends (CPU 0) ---------------------------------------------------------------------------


def run_backends(banner_ports: Sequence[int], bulk_ports: Sequence[int], duration_s: float) -> None:
    """Serve banner ports from one epoll loop and bulk ports with a thread per stream."""
    pin(LOAD_CPU)
    ep = select.epoll()
    kinds: dict[int, tuple[socket.socket, bool]] = {}
    for ports, bulk in ((banner_ports, False), (bulk_ports, True)):
        for port in ports:
            ls = socket.socket()
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ls.bind((HOST, port))
            ls.listen(4096)
            ls.setblocking(False)
            kinds[ls.fileno()] = (ls, bulk)
            ep.register(ls.fileno(), select.EPOLLIN)
    chunk = b"x" * (1 << 20)

    def bulk_stream(c: socket.socket) -> None:
        with c:
            try:
                line = b""
                while not line.endswith(b"\n") and len(line) < 32:
                    part = c.recv(32)
                    if not part:
                        return
                    line += part
                for _ in range(int(line)):
                    c.sendall(chunk)
            except (OSError, ValueError):
                pass

    end = time.monotonic() + duration_s
    while time.monotonic() < end:
        for fd, _ in ep.poll(1.0):
            ls, bulk = kinds[fd]
            for _ in range(256):
                try:
                    c, _ = ls.accept()
                except BlockingIOError:
                    break
                if bulk:
                    threading.Thread(target=bulk_stream, args=(c,), daemon=True).start()
                else:
                    with contextlib.suppress(OSError):
                        c.send(BANNER)
                    c.close()


# --- role: load generator (CPU 0) ---------------------------------------------------------------------


def loadgen_banner(
    port: int, conc: int, duration_s: float, max_conns: int, rate: float = 0.0
) -> dict[str, Any]:
    """Keep `conc` connections in flight: connect, read to EOF (check 220), close, repeat.

    A `rate` > 0 paces the starts instead (open loop): connection k starts at k / `rate` seconds
    (to the millisecond: epoll waits in whole milliseconds, so starts come in bursts of about
    `rate` / 1000), with at most `conc` in flight (a start that would exceed it waits for a
    connection to end).
    """
    pin(LOAD_CPU)
    ep = select.epoll()
    conns: dict[int, tuple[socket.socket, float, bytearray]] = {}
    lat: list[float] = []
    errors = bad = started = 0
    dst = (HOST, port)
    t0 = time.monotonic()
    t_end = t0 + duration_s

    def start() -> None:
        nonlocal started, errors
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        t = time.monotonic()
        err = s.connect_ex(dst)
        if err not in (0, 115):  # EINPROGRESS
            errors += 1
            s.close()
            return
        started += 1
        conns[s.fileno()] = (s, t, bytearray())
        ep.register(s.fileno(), select.EPOLLIN | select.EPOLLRDHUP)

    for _ in range(1 if rate > 0 else conc):
        if started < max_conns:
            start()
    buf = bytearray(4096)
    while conns or (rate > 0 and time.monotonic() < t_end and started < max_conns):
        now = time.monotonic()
        if now > t_end + 30:
            errors += len(conns)
            break
        wait = 0.5
        if rate > 0 and now < t_end and started < max_conns and len(conns) < conc:
            due = t0 + started / rate  # the next start's moment
            if due <= now:
                start()
                continue
            wait = min(wait, due - now)
        for fd, _ in ep.poll(wait):
            s, t, got = conns[fd]
            done = 0
            while True:
                try:
                    n = s.recv_into(buf)
                except BlockingIOError:
                    break
                except OSError:
                    done = 2
                    break
                if not n:
                    done = 1
                    break
                got += buf[:n]
            if not done:
                continue
            now = time.monotonic()
            del conns[fd]
            s.close()
            if done == 2 or not got:
                errors += 1
            else:
                if not got.startswith(b"220"):
                    bad += 1
                lat.append(now - t)
            if rate <= 0 and now < t_end and started < max_conns:
                start()
    elapsed = time.monotonic() - t0
    lat.sort()
    n = len(lat)
    return {
        "conns": n,
        "errors": errors,
        "bad": bad,
        "elapsed": elapsed,
        "cps": n / elapsed if elapsed else 0.0,
        "p50_us": lat[n // 2] * 1e6 if n else 0.0,
        "p99_us": lat[n * 99 // 100] * 1e6 if n else 0.0,
    }


def loadgen_bulk(port: int, streams: int, mib: int, timeout_s: float) -> dict[str, Any]:
    """Open `streams` streams, ask each for `mib` MiB, read everything; report MB/s."""
    pin(LOAD_CPU)
    ep = select.epoll()
    socks: dict[int, socket.socket] = {}
    got: dict[int, int] = {}
    errors = 0
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    for _ in range(streams):
        s = socket.create_connection((HOST, port), 10)
        s.sendall(f"{mib}\n".encode())
        s.setblocking(False)
        socks[s.fileno()] = s
        got[s.fileno()] = 0
        ep.register(s.fileno(), select.EPOLLIN)
    buf = bytearray(1 << 18)
    total = 0
    while socks and time.monotonic() - t0 < timeout_s:
        for fd, _ in ep.poll(0.5):
            s = socks[fd]
            try:
                n = s.recv_into(buf)
            except BlockingIOError:
                continue
            except OSError:
                n = -1
            if n > 0:
                got[fd] += n
                continue
            if n < 0 or got[fd] != mib << 20:
                errors += 1
            total += got[fd]
            del socks[fd]
            s.close()
    errors += len(socks)
    elapsed = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    client_cpu_s = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime  # the transfer, not start-up
    return {
        "bytes": total,
        "errors": errors,
        "elapsed": elapsed,
        "MBps": total / elapsed / 1e6,
        "client_cpu_s": client_cpu_s,
    }


# --- role: our proxy (CPU 1) --------------------------------------------------------------------------


def ensure_wlc() -> str:
    """Return the scheduler name to use: the shared 'wlc' when present, else a local copy of its rule."""
    from gridlb.sched.base import DestView, Flow, Scheduler, create_scheduler, register_scheduler
    from gridlb.table import RealKey

    try:
        create_scheduler("wlc")
        return "wlc"
    except KeyError:
        pass

    @register_scheduler
    class BenchWlc(Scheduler):
        """Kernel ip_vs_wlc rule (overhead = active*256 + inactive), used until gridlb.sched.wlc lands."""

        name = "bench-wlc"

        def pick(self, dests: Sequence[DestView], flow: Flow, now: float) -> RealKey | None:
            best: DestView | None = None
            boh = 0
            for d in dests:
                if d.overloaded or d.weight <= 0:
                    continue
                oh = d.active * 256 + d.inactive
                if best is None or boh * d.weight > oh * best.weight:
                    best, boh = d, oh
            return None if best is None else best.key

    return "bench-wlc"


def run_proxy(
    listen: Sequence[int],
    pools: Sequence[Sequence[int]],
    mode: str,
    workers: int = 1,
    notsent_lowat: int | None = None,
    congestion_control: str | None = None,
) -> None:
    from dataclasses import replace

    from gridlb.dataplane.proxy import ProxyDataplane, ProxyOptions
    from gridlb.dataplane.relay import RelayMode
    from gridlb.table import AddDest, AddService, DestSpec, RealKey, ServiceKey, ServiceSpec

    if workers == 1:
        pin(PROXY_CPU)
    # several workers: one relay thread per CPU (worker i on CPU i), the load shares CPU 0 with one
    cpu = 0 if workers > 1 else None
    sched = ensure_wlc()

    async def main() -> None:
        opts = ProxyOptions(relay=RelayMode(mode), workers=workers, cpu=cpu)
        if notsent_lowat is not None:
            opts = replace(opts, notsent_lowat=notsent_lowat)
        if congestion_control:
            opts = replace(opts, congestion_control=congestion_control)
        dp = ProxyDataplane(options=opts)
        ops: list[Any] = []
        for port, pool in zip(listen, pools, strict=True):
            key = ServiceKey.tcp(HOST, port)
            ops.append(AddService(key, ServiceSpec(scheduler=sched)))
            ops.extend(AddDest(key, RealKey.parse(f"{HOST}:{p}"), DestSpec()) for p in pool)
        results = await dp.apply(ops)
        bad = [r.error for r in results if not r.ok]
        if bad:
            raise SystemExit(f"apply failed: {bad}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        ready = {"ready": True, "scheduler": sched, "relay": dp.relay_mode.value}
        ready["notsent_lowat"] = opts.notsent_lowat
        ready["congestion_control"] = opts.congestion_control or "host default"
        print(json.dumps(ready), flush=True)
        await stop.wait()
        errors = dict((await dp.counters()).errors)
        print(json.dumps({"errors": errors}), flush=True)
        await dp.close()

    asyncio.run(main())


# --- orchestration ------------------------------------------------------------------------------------


class System:
    """One system under test: how to start it and where its banner and bulk listeners are."""

    def __init__(self, name: str, banner: int, bulk: int) -> None:
        self.name = name
        self.banner = banner
        self.bulk = bulk
        self.proc: subprocess.Popen[str] | None = None
        self.extra: dict[str, Any] = {}

    def start(self, tmp: Path, pools: tuple[list[int], list[int]]) -> None:
        if self.name == "direct":
            return
        if self.name.startswith("haproxy"):
            cfg = tmp / f"{self.name}.cfg"
            cfg.write_text(haproxy_cfg(self, pools, tuned=self.name.endswith("256k")))
            cmd = ["taskset", "-c", str(PROXY_CPU), "haproxy", "-f", str(cfg), "-db"]
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        else:
            cmd = [sys.executable, __file__, "--role", "proxy", "--listen", f"{self.banner},{self.bulk}"]
            cmd += ["--pools", ";".join(",".join(map(str, p)) for p in pools), "--mode", self.extra["mode"]]
            cmd += ["--workers", str(self.extra.get("workers", 1))]
            if self.extra.get("lowat") is not None:
                cmd += ["--notsent-lowat", str(self.extra["lowat"])]
            if self.extra.get("cc"):
                cmd += ["--congestion-control", self.extra["cc"]]
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline()
            if not line:
                raise SystemExit(
                    f"{self.name} did not start: {self.proc.stderr.read() if self.proc.stderr else ''}"
                )
            self.extra.update(json.loads(line))
        if not (wait_port(self.banner) and wait_port(self.bulk)):
            self.stop()
            raise SystemExit(f"{self.name} is not listening")

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        for line in (out or "").splitlines():
            with contextlib.suppress(ValueError):
                msg = json.loads(line)
                if "errors" in msg:
                    self.extra["dataplane_errors"] = msg["errors"]


def haproxy_cfg(sys_: System, pools: tuple[list[int], list[int]], *, tuned: bool) -> str:
    lines = ["global", "    nbthread 1", "    maxconn 9000"]
    if tuned:
        lines.append("    tune.bufsize 262144")
    lines += ["defaults", "    mode tcp", "    timeout connect 5s", "    timeout client 30s"]
    lines += ["    timeout server 30s", "    maxconn 9000"]
    for label, port, pool in (("banner", sys_.banner, pools[0]), ("bulk", sys_.bulk, pools[1])):
        lines += [f"frontend fe_{label}", f"    bind {HOST}:{port}", f"    default_backend be_{label}"]
        lines += [f"backend be_{label}", "    balance leastconn"]
        lines += [f"    server s{i} {HOST}:{p}" for i, p in enumerate(pool)]
    return "\n".join(lines) + "\n"


def loadgen(args: list[str], timeout_s: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--role", "loadgen", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def measure(
    sys_: System, test: str, args: list[str], timeout_s: float, backends: int | None = None
) -> dict[str, Any]:
    """Run one load; add the proxy's CPU seconds (and the backends', when their PID is given)."""
    pid = sys_.pid
    before = cpu_s(pid) if pid else (0.0, 0.0)
    back0 = sum(cpu_s(backends)) if backends else 0.0
    procs = processes(pid) if pid else []
    split0 = [procfs.cpu_times(p) for p in procs]  # each alone, no descendant
    cs0 = ctx_switches(pid) if pid else 0
    ns0 = run_ns(pid) if pid else {}
    res = loadgen(args, timeout_s)
    ns1 = run_ns(pid) if pid else {}
    if pid:
        res["ctx_switches"] = ctx_switches(pid) - cs0
        # each process's own (user, system) seconds: the director, then each worker process
        res["cpu_split_s"] = [
            (a[0] - b[0], a[1] - b[1]) for a, b in zip(map(procfs.cpu_times, procs), split0, strict=True)
        ]
    if backends:
        res["backend_cpu_s"] = sum(cpu_s(backends)) - back0
    after = cpu_s(pid) if pid else (0.0, 0.0)
    res["cpu_user_s"] = after[0] - before[0]
    res["cpu_sys_s"] = after[1] - before[1]
    res["cpu_s"] = res["cpu_user_s"] + res["cpu_sys_s"]
    if ns0 and ns0.keys() == ns1.keys():  # the same threads throughout: their exact run time
        res["cpu_s"] = (sum(ns1.values()) - sum(ns0.values())) / 1e9
        res["cpu_clock"] = "ns"
    elif pid:
        res["cpu_clock"] = "ticks"
    res["test"] = test
    return res


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 short rounds, about a minute")
    ap.add_argument("--rounds", type=int, default=3, help="rounds (at least 3 for a median and spread)")
    ap.add_argument("--mode", default="auto", help="relay mode of gridlb: auto, splice or copy")
    ap.add_argument("--role", choices=["backends", "proxy", "loadgen"])
    ap.add_argument("--listen", default="")
    ap.add_argument("--pools", default="")
    ap.add_argument("--workers", type=int, default=1, help="relay workers of the gridlb proxy (role proxy)")
    ap.add_argument(
        "--notsent-lowat",
        type=int,
        default=None,
        help="gridlb's TCP_NOTSENT_LOWAT in bytes (default: ProxyOptions'; docs/proxy.md, bulk)",
    )
    ap.add_argument(
        "--congestion-control",
        default=None,
        metavar="NAME",
        help="TCP congestion control of gridlb's relayed sockets (default: the host's; docs/proxy.md, bulk)",
    )
    ap.add_argument("rest", nargs="*")
    a = ap.parse_args(argv)
    if a.role == "backends":
        ports = [list(map(int, x.split(","))) for x in a.pools.split(";")]
        run_backends(ports[0], ports[1], float(a.rest[0]))
        return 0
    if a.role == "proxy":
        run_proxy(
            [int(x) for x in a.listen.split(",")],
            [list(map(int, x.split(","))) for x in a.pools.split(";")],
            a.mode,
            a.workers,
            a.notsent_lowat,
            a.congestion_control,
        )
        return 0
    if a.role == "loadgen":
        kind, port, n, *more = a.rest
        if kind == "banner":
            res = loadgen_banner(int(port), int(n), float(more[0]), int(more[1]), *map(float, more[2:3]))
        else:
            res = loadgen_bulk(int(port), int(n), int(more[0]), float(more[1]))
        print(json.dumps(res))
        return 0
    if a.rounds < 1:
        ap.error("--rounds must be at least 1")
    return orchestrate(a.quick, a.rounds, a.mode, a.notsent_lowat, a.congestion_control)


def orchestrate(quick: bool, rounds: int, mode: str, lowat: int | None = None, cc: str | None = None) -> int:
    if os.cpu_count() is None or len(os.sched_getaffinity(0)) < 2:
        print("needs 2 CPUs (proxy on CPU 1, load on CPU 0)", file=sys.stderr)
        return 2
    have_haproxy = shutil.which("haproxy") is not None
    ports = free_ports(6 + 10)
    pools = (ports[0:3], ports[3:6])
    # gridlb-2w: the proxy with 2 relay workers (the multi-worker row)
    names = ["direct", *(["haproxy", "haproxy-256k"] if have_haproxy else []), "gridlb-2w", "gridlb"]
    systems = [System(n, ports[6 + 2 * i], ports[7 + 2 * i]) for i, n in enumerate(names)]
    systems[0].banner, systems[0].bulk = pools[0][0], pools[1][0]
    systems[-1].extra["mode"] = systems[-2].extra["mode"] = mode
    systems[-1].extra["lowat"] = systems[-2].extra["lowat"] = lowat
    systems[-1].extra["cc"] = systems[-2].extra["cc"] = cc
    systems[-2].extra["workers"] = 2
    c1 = ("1", "0.6", "20000") if quick else ("1", "3", "40000")
    c64 = ("64", "1.0", "30000") if quick else ("64", "30", "40000")
    # bulk: 512 MiB per test in --quick (256 MiB took ~0.15 s, too short to rise above the noise)
    bulk1 = ("1", "512" if quick else "2048")
    bulk8 = ("8", "64" if quick else "256")
    total_s = 3600.0  # bound on the backends process; it is killed by PID when the run ends
    pool_arg = ";".join(",".join(map(str, p)) for p in pools)
    backend = subprocess.Popen(
        [sys.executable, __file__, "--role", "backends", "--pools", pool_arg, str(total_s)]
    )
    results: dict[str, list[dict[str, Any]]] = {s.name: [] for s in systems}
    # round -> the offered rate (conn/s) at which both gridlb rows are measured once more, open loop
    same_rate: dict[int, int] = {}
    try:
        for p in (*pools[0], *pools[1]):
            if not wait_port(p):
                raise SystemExit(f"backend port {p} is not listening")
        with tempfile.TemporaryDirectory(prefix="gridlb-bench-") as tmpd:
            tmp = Path(tmpd)
            for rnd in range(rounds):
                for s in systems:
                    s.start(tmp, pools)
                    try:
                        time.sleep(0.2)
                        runs = [
                            measure(s, "c1", ["banner", str(s.banner), *c1], 120),
                            measure(s, "c64", ["banner", str(s.banner), *c64], 180),
                        ]
                        if s.name == "gridlb-2w":  # (it runs before gridlb in every round)
                            same_rate[rnd] = max(1, round(runs[-1]["cps"] * SAME_RATE_SHARE))
                        if s.name.startswith("gridlb") and rnd in same_rate:
                            rate_args = ["banner", str(s.banner), *c64, str(same_rate[rnd])]
                            runs.append(measure(s, "rate", rate_args, 180))
                        runs += [
                            measure(s, "bulk1", ["bulk", str(s.bulk), *bulk1, "120"], 180, backend.pid),
                            measure(s, "bulk8", ["bulk", str(s.bulk), *bulk8, "120"], 180, backend.pid),
                        ]
                    finally:
                        s.stop()
                    for r in runs:
                        r["round"] = rnd
                        r["dataplane_errors"] = s.extra.get("dataplane_errors", {})
                    results[s.name].extend(runs)
                    print(f"# round {rnd} {s.name}: " + json.dumps(runs), file=sys.stderr, flush=True)
            if not quick:  # the error goal: 100,000 connections through gridlb in one run
                ours = systems[-1]
                ours.start(tmp, pools)
                try:
                    soak = measure(ours, "soak", ["banner", str(ours.banner), "64", "150", "100000"], 240)
                finally:
                    ours.stop()
                soak["dataplane_errors"] = ours.extra.get("dataplane_errors", {})
                results[ours.name].append(soak)
                print("# soak gridlb: " + json.dumps(soak), file=sys.stderr, flush=True)
    finally:
        for s in systems:
            s.stop()
        backend.send_signal(signal.SIGTERM)
        try:
            backend.wait(5)
        except subprocess.TimeoutExpired:
            backend.kill()
            backend.wait()
    return report(results, systems[-1].extra)


def per_round(runs: list[dict[str, Any]]) -> dict[int, dict[str, float]]:
    """Return {round: figures} of one system: CPU µs per connection, rates, latency, MB/s, CPU-s/GB."""
    tests: dict[int, dict[str, dict[str, Any]]] = {}
    for r in runs:
        if "round" in r:
            tests.setdefault(r["round"], {})[r["test"]] = r
    out: dict[int, dict[str, float]] = {}
    for rnd, t in sorted(tests.items()):
        f: dict[str, float] = {}
        if c64 := t.get("c64"):
            f["us_conn"] = c64["cpu_s"] * 1e6 / max(1, c64["conns"])
            f["cps64"] = c64["cps"]
            ticks = c64["cpu_user_s"] + c64["cpu_sys_s"]  # the user/system split comes in ticks only
            f["user_share"] = c64["cpu_user_s"] / ticks if ticks else 0.0
            if "ctx_switches" in c64:
                f["cs_conn"] = c64["ctx_switches"] / max(1, c64["conns"])
            for i, (u, sy) in enumerate(c64.get("cpu_split_s", ())):
                f[f"us_user_p{i}"] = u * 1e6 / max(1, c64["conns"])
                f[f"us_sys_p{i}"] = sy * 1e6 / max(1, c64["conns"])
        if rate := t.get("rate"):  # the same offered rate for both gridlb rows (open loop)
            f["us_rate"] = rate["cpu_s"] * 1e6 / max(1, rate["conns"])
            f["cps_rate"] = rate["cps"]
            f["cs_rate"] = rate.get("ctx_switches", 0) / max(1, rate["conns"])
        if c1 := t.get("c1"):
            f["cps1"], f["p50"], f["p99"] = c1["cps"], c1["p50_us"], c1["p99_us"]
        for key, test in (("1", "bulk1"), ("8", "bulk8")):
            if b := t.get(test):
                f[f"mb{key}"] = b["MBps"]
                f[f"gb{key}"] = b["cpu_s"] / (b["bytes"] / 1e9) if b["bytes"] else inf
                if "backend_cpu_s" in b and "client_cpu_s" in b and b["bytes"]:
                    # the load side (senders + client, CPU 0): on a quiet machine its CPU is the limit
                    f[f"load{key}"] = (b["backend_cpu_s"] + b["client_cpu_s"]) / (b["bytes"] / 1e9)
        out[rnd] = f
    return out


def spread(values: list[float]) -> tuple[float, float, float]:
    """Return (median, min, max) of `values` (nan when there are none)."""
    if not values:
        return nan, nan, nan
    return statistics.median(values), min(values), max(values)


def report(results: dict[str, list[dict[str, Any]]], ours_info: dict[str, Any]) -> int:
    rounds = {name: per_round(runs) for name, runs in results.items()}
    n_rounds = max((len(r) for r in rounds.values()), default=0)

    def fig(name: str, key: str) -> tuple[float, float, float]:
        return spread([f[key] for f in rounds.get(name, {}).values() if key in f])

    rows: dict[str, dict[str, float]] = {}
    for name, runs in results.items():
        row = {key: fig(name, key)[0] for key in FIGURES}
        counted = [r for r in runs if r["test"] in ("c1", "c64", "rate", "soak")]
        row["conns"] = sum(r["conns"] for r in counted)
        row["soak_conns"] = sum(r["conns"] for r in runs if r["test"] == "soak")
        row["errors"] = sum(r["errors"] + r.get("bad", 0) for r in runs)
        rows[name] = row
    d = rows["direct"]
    h = rows.get("haproxy")
    ht = rows.get("haproxy-256k")
    g = rows["gridlb"]
    print(f"medians of {n_rounds} rounds (spread below)")
    hdr = (
        f"{'system':<13} {'µs/conn':>8} {'cap×hap':>8} {'conn/s c1':>10} {'conn/s c64':>10} "
        f"{'p50 c1':>7} {'p99 c1':>7} {'+p50':>6} {'MB/s 1':>7} {'MB/s 8':>7} {'CPUs/GB 1/8':>12} "
        f"{'usr%':>5} {'conns':>7} {'errors':>6}"
    )
    print(hdr)
    for name, r in rows.items():
        us = f"{r['us_conn']:.0f}" if name != "direct" else "-"
        cap = f"{h['us_conn'] / r['us_conn']:.2f}" if h and name != "direct" and r["us_conn"] else "-"
        gb = f"{r['gb1']:.2f}/{r['gb8']:.2f}" if name != "direct" else "-"
        usr = f"{100 * r['user_share']:.0f}" if name != "direct" else "-"
        print(
            f"{name:<13} {us:>8} {cap:>8} {r['cps1']:>10.0f} {r['cps64']:>10.0f} {r['p50']:>7.0f} "
            f"{r['p99']:>7.0f} {r['p50'] - d['p50']:>+6.0f} {r['mb1']:>7.0f} {r['mb8']:>7.0f} {gb:>12} "
            f"{usr:>5} {r['conns']:>7.0f} {r['errors']:>6.0f}"
        )
    # What the backends and the client (CPU 0) spent per GB through each system: where CPU 0 is the
    # limit (a quiet machine), MB/s goes as its inverse, so this explains a bulk ratio.
    print(
        "load side CPU-s/GB 1/8 (medians): "
        + ", ".join(f"{name} {r['load1']:.2f}/{r['load8']:.2f}" for name, r in rows.items())
    )
    # Proxy + load side: on loopback the TCP work of both connections lands on whichever CPU runs
    # it, so a proxy can lower its own figure by moving work to CPU 0 (and MB/s with it).
    print(
        "all CPU-s/GB 1/8, proxy + load side (medians): "
        + ", ".join(
            f"{name} {r['load1'] + (r['gb1'] if name != 'direct' else 0):.2f}/"
            f"{r['load8'] + (r['gb8'] if name != 'direct' else 0):.2f}"
            for name, r in rows.items()
        )
    )
    print(f"spread over {n_rounds} rounds (min–max)")
    for name in rows:
        parts = []
        for key, label, fmt in SPREAD_COLUMNS:
            if name == "direct" and key in ("us_conn", "gb1", "gb8"):
                continue
            _, lo, hi = fig(name, key)
            parts.append(f"{label} {lo:{fmt}}–{hi:{fmt}}")
        print(f"  {name:<13} " + ", ".join(parts))
    # Proxy CPU: exact per-thread run time, unless a thread came or went during the run (then ticks)
    clocks = [run.get("cpu_clock") for runs in results.values() for run in runs if "cpu_clock" in run]
    print(
        f"proxy CPU time: exact (ns) in {clocks.count('ns')} of {len(clocks)} load runs, "
        f"clock ticks ({1000 // procfs.TICKS_PER_S} ms) in {clocks.count('ticks')}"
    )
    dp_errors: dict[str, int] = {}
    for run in results["gridlb"]:
        for k, v in run.get("dataplane_errors", {}).items():
            dp_errors[k] = max(dp_errors.get(k, 0), v)
    print(
        f"gridlb: scheduler={ours_info.get('scheduler')} relay={ours_info.get('relay')} "
        f"notsent_lowat={ours_info.get('notsent_lowat')} "
        f"congestion_control={ours_info.get('congestion_control')} "
        f"dataplane errors={dp_errors or 0}"
    )
    kv: dict[str, str] = {
        "rounds": str(n_rounds),
        "us_conn": f"{g['us_conn']:.0f}",
        "cps_c1": f"{g['cps1']:.0f}",
        "cps_c64": f"{g['cps64']:.0f}",
        "p50_us": f"{g['p50']:.0f}",
        "p99_us": f"{g['p99']:.0f}",
        "added_p50_us": f"{g['p50'] - d['p50']:.0f}",
        "mbps_1": f"{g['mb1']:.0f}",
        "mbps_8": f"{g['mb8']:.0f}",
        "cpu_s_per_gb": f"{(g['gb1'] + g['gb8']) / 2:.2f}",
        "load_cpu_s_per_gb": f"{(g['load1'] + g['load8']) / 2:.2f}",
        "conns": f"{g['conns']:.0f}",
        "soak_conns": f"{g['soak_conns']:.0f}",
        "errors": f"{g['errors']:.0f}",  # seen by clients: failed or short connections, bad banners
        "dataplane_errors": f"{sum(dp_errors.values())}",  # counted inside gridlb (incl. peer resets)
    }
    ok = g["errors"] == 0
    if h and ht:
        # each ratio is taken within one round (the systems ran minutes apart at most), then its median
        Pair = dict[str, dict[str, float]]
        goals: dict[str, tuple[Callable[[Pair], float], float, str]] = {
            "capacity_ratio": (lambda r: r["h"]["us_conn"] / r["g"]["us_conn"], 0.8, ">="),
            "added_p50_vs_haproxy_us": (lambda r: r["g"]["p50"] - r["h"]["p50"], 50, "<="),
            "p99_c1_us": (lambda r: r["g"]["p99"], 1000, "<="),
            "mb1_vs_haproxy": (lambda r: r["g"]["mb1"] / r["h"]["mb1"], 1.0, ">="),
            "mb8_vs_haproxy": (lambda r: r["g"]["mb8"] / r["h"]["mb8"], 1.0, ">="),
            "mb1_vs_haproxy_256k": (lambda r: r["g"]["mb1"] / r["ht"]["mb1"], 0.8, ">="),
            "mb8_vs_haproxy_256k": (lambda r: r["g"]["mb8"] / r["ht"]["mb8"], 0.9, ">="),
            "cpu_gb_vs_haproxy_256k": (
                lambda r: (r["g"]["gb1"] + r["g"]["gb8"]) / (r["ht"]["gb1"] + r["ht"]["gb8"]),
                0.5,
                "<=",
            ),
        }
        paired = [
            {"g": rounds["gridlb"][i], "h": rounds["haproxy"][i], "ht": rounds["haproxy-256k"][i]}
            for i in sorted(rounds["gridlb"])
            if i in rounds["haproxy"] and i in rounds["haproxy-256k"]
        ]
        print("goals (median of per-round values [min–max], judged on the median):")
        for goal, (value, lim, op) in goals.items():
            vals = []
            for pair in paired:
                with contextlib.suppress(KeyError, ZeroDivisionError):
                    vals.append(float(value(pair)))
            med, lo, hi = spread(vals)
            met = med >= lim if op == ">=" else med <= lim
            ok = ok and met
            print(f"  {goal:<26} {med:8.2f} [{lo:.2f}–{hi:.2f}] {op} {lim:<6} {'ok' if met else 'MISSED'}")
            kv[goal] = f"{med:.2f}"
            kv[f"{goal}_range"] = f"{lo:.2f}..{hi:.2f}"
        print(
            f"  {'errors':<26} {int(kv['errors']):8d} == 0      {'ok' if kv['errors'] == '0' else 'MISSED'}"
        )
    if "gridlb-2w" in rounds:
        # The multi-worker row: CPU per short connection with 2 workers over 1, within each round (the
        # load generator shares this machine's CPUs, so total rate is not the figure). Judged at the
        # same offered rate: a relay loop's CPU per connection falls as it gets busier (it handles more
        # events per wake-up), and with the same 64 clients one worker runs saturated at its full rate
        # while each of two runs half-loaded at a lower one (docs/proxy.md, "The 2-worker row"); that
        # figure is printed too.
        def ratio(key: str) -> tuple[float, float, float]:
            return spread(
                [
                    rounds["gridlb-2w"][i][key] / rounds["gridlb"][i][key]
                    for i in sorted(rounds["gridlb"])
                    if rounds["gridlb-2w"].get(i, {}).get(key) and rounds["gridlb"][i].get(key)
                ]
            )

        med, lo, hi = ratio("us_rate")
        rate = spread([f["cps_rate"] for f in rounds["gridlb"].values() if "cps_rate" in f])[0]
        met = med <= 1.1
        ok = ok and met
        verdict = "ok" if met else "MISSED"
        print(
            f"  {'us_conn_2w_vs_1w_same_rate':<26} {med:8.2f} [{lo:.2f}–{hi:.2f}] <= 1.1    {verdict}"
            f"  (both at {rate:.0f} conn/s, open loop: {100 * SAME_RATE_SHARE:.0f} % of what 2 workers"
            " reach with 64 clients)"
        )
        kv["us_conn_2w_vs_1w_same_rate"] = f"{med:.2f}"
        kv["us_conn_2w_vs_1w_same_rate_range"] = f"{lo:.2f}..{hi:.2f}"
        kv["same_rate_cps"] = f"{rate:.0f}"
        med, lo, hi = ratio("us_conn")
        print(
            f"  {'us_conn_2w_vs_1w':<26} {med:8.2f} [{lo:.2f}–{hi:.2f}]  (not judged: 64 clients, closed"
            f" loop; {rows['gridlb']['cps64']:.0f} conn/s through one saturated worker,"
            f" {rows['gridlb-2w']['cps64']:.0f} through two half-loaded ones)"
        )
        kv["us_conn_2w"] = f"{rows['gridlb-2w']['us_conn']:.0f}"
        # where the difference goes (docs/proxy.md, Workers): each process's CPU per connection of
        # the round (user/system; p0 the director, p1.. its processes) and the context switches
        for name in ("gridlb", "gridlb-2w"):
            per = rounds[name].values()
            parts = []
            for i in range(4):
                users = [f[f"us_user_p{i}"] for f in per if f"us_user_p{i}" in f]
                sy = [f[f"us_sys_p{i}"] for f in per if f"us_sys_p{i}" in f]
                if users and max(users) + max(sy) >= 0.5:
                    parts.append(f"p{i} {spread(users)[0]:.1f}/{spread(sy)[0]:.1f}")
            cs = spread([f["cs_conn"] for f in per if "cs_conn" in f])[0]
            cs_rate = spread([f["cs_rate"] for f in per if "cs_rate" in f])[0]
            us_rate = spread([f["us_rate"] for f in per if "us_rate" in f])[0]
            print(
                f"    {name:<10} 64 clients: user/sys µs per conn by process: {', '.join(parts)};"
                f" ctx switches/conn {cs:.2f}; same rate: {us_rate:.0f} µs/conn,"
                f" ctx switches/conn {cs_rate:.2f}"
            )
            kv[f"cs_conn_{'2w' if name.endswith('2w') else '1w'}"] = f"{cs:.2f}"
        kv["us_conn_2w_vs_1w"] = f"{med:.2f}"
        kv["us_conn_2w_vs_1w_range"] = f"{lo:.2f}..{hi:.2f}"
    kv["goals_met"] = "yes" if ok else "no"
    print("RESULT proxy " + " ".join(f"{k}={v}" for k, v in kv.items()))
    return 0


#: The open-loop rate at which both gridlb rows are compared, as a share of what gridlb-2w reaches
#: with 64 clients in the same round: below both systems' capacity, so neither loop is saturated.
SAME_RATE_SHARE = 0.5

#: Per-round figures of every system; their medians make the table.
FIGURES = (
    *("us_conn", "cps1", "cps64", "p50", "p99", "mb1", "mb8", "gb1", "gb8", "user_share"),
    *("load1", "load8"),  # the load side's CPU-s per GB, 1 and 8 streams
)
#: (figure, label, format) shown with their min–max under the table.
SPREAD_COLUMNS = (
    ("us_conn", "µs/conn", ".0f"),
    ("p50", "p50 c1", ".0f"),
    ("p99", "p99 c1", ".0f"),
    ("mb1", "MB/s 1", ".0f"),
    ("mb8", "MB/s 8", ".0f"),
    ("gb1", "CPU-s/GB 1", ".2f"),
    ("gb8", "CPU-s/GB 8", ".2f"),
    ("load1", "load CPU-s/GB 1", ".2f"),
    ("load8", "load CPU-s/GB 8", ".2f"),
)


if __name__ == "__main__":
    raise SystemExit(main())
