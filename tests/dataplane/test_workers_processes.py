"""Worker processes of the proxy: a dead one is restarted and counted; none outlives close or the director."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gridlb.dataplane.proxy import ProxyDataplane, ProxyOptions
from gridlb.lab import procfs
from gridlb.table import AddDest, AddService, DestSpec, Op, ServiceKey, ServiceSpec, Timeouts
from tests.dataplane.servers import free_port
from tests.dataplane.test_workers import HOST, NameServers, figure, greet, totals


@pytest.fixture
def servers() -> Iterator[NameServers]:
    s = NameServers(["a", "b"])
    yield s
    s.stop()


@pytest.fixture
async def dp() -> AsyncIterator[ProxyDataplane]:
    d = ProxyDataplane(timeouts=Timeouts(tcpfin=3600), options=ProxyOptions(workers=2))
    yield d
    await d.close()


async def test_a_killed_worker_is_restarted_counted_and_its_connections_unbound(
    dp: ProxyDataplane, servers: NameServers
) -> None:
    key = ServiceKey.tcp(HOST, free_port())
    ops: list[Op] = [AddService(key, ServiceSpec(scheduler="wlc"))]
    ops += [AddDest(key, servers.key(n), DestSpec()) for n in ("a", "b")]
    assert all(r.ok for r in await dp.apply(ops))
    held = [greet(key.port) for _ in range(20)]
    opened = await figure(dp, "open")
    assert sum(opened) == 20 and all(opened), opened  # the kernel gave both workers some
    pids = await figure(dp, "pid")
    os.kill(pids[0], signal.SIGKILL)
    for _ in range(600):  # a new interpreter starts and copies the table from worker 1
        await asyncio.sleep(0.05)
        try:
            now = await figure(dp, "pid")
        except RuntimeError:
            continue  # restarting: the dataplane says so instead of answering for one worker
        if now[0] != pids[0]:
            break
    else:
        pytest.fail("worker 0 was not restarted")
    assert now[1] == pids[1] and not procfs.exists(pids[0])
    assert (await dp.counters()).errors.get("worker exited: signal 9") == 1
    # the dead worker's connections died with it: only worker 1's still count, all of them active
    active = sum(a for a, _ in totals(await dp.dump(), key, servers).values())
    assert active == opened[1]
    for _ in range(60):  # the new worker takes its share of new connections and schedules on the table
        sock, _ = greet(key.port)
        sock.close()
    assert all(await figure(dp, "relayed"))
    for sock, _ in held:
        sock.close()


async def test_close_ends_every_worker_process(servers: NameServers) -> None:
    d = ProxyDataplane(options=ProxyOptions(workers=2))
    pids = await figure(d, "pid")
    assert all(procfs.exists(p) for p in pids)
    await d.close(0.0)
    assert all(not procfs.exists(p) for p in pids)


def test_no_worker_outlives_a_killed_director(tmp_path: Path) -> None:
    script = tmp_path / "director.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, sys
            from gridlb.dataplane.proxy import ProxyDataplane, ProxyOptions

            async def main():
                dp = ProxyDataplane(options=ProxyOptions(workers=2))
                print(" ".join(str(s["pid"]) for s in await dp._pool.stats()), flush=True)
                await asyncio.sleep(60)

            if __name__ == "__main__":
                asyncio.run(main())
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2 and all(procfs.exists(p) for p in pids)
    finally:
        proc.kill()  # no chance to close anything
        proc.wait(10)
    deadline = time.monotonic() + 10
    while any(procfs.exists(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [p for p in pids if procfs.exists(p)]
    for p in left:  # do not leave them behind if the test fails
        os.kill(p, signal.SIGKILL)
    assert not left, f"worker processes {left} outlived their director"


def test_a_pool_whose_workers_cannot_start_raises_that_error_and_frees_its_shared_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The monitor thread's start failure reaches the caller: no pool half up, no /dev/shm left."""
    from gridlb.dataplane import workers as workers_mod

    def refuse(self: workers_mod.ProcessPool, spec: workers_mod.WorkerSpec) -> workers_mod._Worker:
        raise OSError(24, "Too many open files (test)")

    shm = Path("/dev/shm")
    before = set(shm.iterdir()) if shm.is_dir() else set()
    monkeypatch.setattr(workers_mod.ProcessPool, "_spawn", refuse)
    with pytest.raises(OSError, match="Too many open files"):
        workers_mod.ProcessPool(2)
    after = set(shm.iterdir()) if shm.is_dir() else set()
    assert after <= before
