"""End-to-end on loopback: GridFTP downloads through a real director process onto real GridFTP servers.

Covers the director's acceptance lines: the wlc spread of 300 concurrent downloads (expected counts
simulated from the kernel's rule over the table the director reported), a real server killed and
restarted under load, `drain --wait` under 100 running transfers, `add`, `remove --drain` and a reload
under load without a failed transfer or a health flap, who may read and who may drain, and
malformed JSON on the control socket.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from gridlb.api.client import ControlClient
from gridlb.gridftp.client import GridftpClient
from gridlb.table import IpvsTable, ServiceKey
from tests.director.loopback import PORT, Loopback, Transfer, load, metric
from tests.support import need_root, wait_for

_nets = itertools.count(10 + os.getpid() % 100)


#: Every dataplane in the registry (the proxy with one and with two relay workers), and the test-only
#: one that no code in gridlb.director knows.
DATAPLANES = [("proxy", 1), ("proxy", 2), ("asyncio", 1)]


@pytest.fixture(params=DATAPLANES, ids=["proxy", "proxy-2workers", "asyncio"])
def lb(request: pytest.FixtureRequest) -> Iterator[Loopback]:
    dataplane, workers = request.param
    harness = Loopback(next(_nets), dataplane=dataplane, workers=workers)
    try:
        yield harness
    finally:
        harness.close()


def failures(results: list[Transfer]) -> list[str]:
    return [r.error for r in results if not r.ok]


# --- the wlc rule, written from net/netfilter/ipvs/ip_vs_wlc.c independently of gridlb.sched -------


@dataclass
class KernelDest:
    """One destination as ip_vs_wlc_schedule reads it (`active` grows as the simulation binds)."""

    key: str
    weight: int
    active: int
    inactive: int
    overloaded: bool


def kernel_wlc(dests: list[KernelDest]) -> int | None:
    """Index of the destination ip_vs_wlc_schedule picks; `dests` in kernel list order."""

    def overhead(d: KernelDest) -> int:  # ip_vs_dest_conn_overhead
        return d.active * 256 + d.inactive

    least = None
    loh = 0
    for i, d in enumerate(dests):
        if not d.overloaded and d.weight > 0:
            least, loh = i, overhead(d)
            break
    if least is None:
        return None
    for j in range(least + 1, len(dests)):
        d = dests[j]
        if d.overloaded:
            continue
        doh = overhead(d)
        if loh * d.weight > doh * dests[least].weight:
            least, loh = j, doh
    return least


def expected_spread(table: IpvsTable, service: ServiceKey, arrivals: int) -> dict[str, int]:
    """Simulate `arrivals` new connections that all stay open, starting from the table's counters."""
    svc = table.service(service)
    assert svc is not None
    dests = [
        KernelDest(str(d.key), d.spec.weight, d.counters.active, d.counters.inactive, d.counters.overloaded)
        for d in svc.dests
    ]
    picks = {d.key: 0 for d in dests}
    for _ in range(arrivals):
        i = kernel_wlc(dests)
        assert i is not None
        dests[i].active += 1
        picks[dests[i].key] += 1
    return picks


async def test_300_concurrent_downloads_spread_as_wlc_predicts(lb: Loopback) -> None:
    for i in (2, 3, 4):
        lb.start_server(i)
    lb.write_site([(2, 1), (3, 2), (4, 3)])
    lb.start_director()
    service = ServiceKey.tcp(lb.vip, PORT)
    with ControlClient(str(lb.socket)) as c:
        before = c.table()
    expected = expected_spread(before, service, 300)
    before_svc = before.service(service)
    assert before_svc is not None
    before_conns = {str(d.key): d.counters.stats.conns for d in before_svc.dests}

    data = (lb.root / "small.bin").read_bytes()
    out = lb.dir / "out"
    out.mkdir()
    all_connected = asyncio.Event()
    connected = 0
    served_by: dict[str, int] = {}

    async def one(i: int) -> bool:
        nonlocal connected
        client = await GridftpClient.connect(lb.vip, PORT, timeout_s=60)
        try:
            assert client.banner is not None
            server = f"{client.banner.text.split()[0]}:{PORT}"  # each real server greets with its address
            served_by[server] = served_by.get(server, 0) + 1
            connected += 1
            if connected == 300:
                all_connected.set()
            await asyncio.wait_for(all_connected.wait(), 60)  # every control connection is open now
            local = out / f"{i}.bin"
            await client.get("small.bin", str(local), idle_timeout_s=60)
            await client.quit()
            return local.read_bytes() == data
        finally:
            await client.close()

    results = await asyncio.gather(*(one(i) for i in range(300)), return_exceptions=True)
    assert [r for r in results if r is not True] == []
    with ControlClient(str(lb.socket)) as c:
        after = c.table()
    after_svc = after.service(service)
    assert after_svc is not None
    got = {str(d.key): d.counters.stats.conns - before_conns[str(d.key)] for d in after_svc.dests}
    assert got == expected
    assert served_by == expected  # the clients' own view agrees with the director's counters
    assert sum(got.values()) == 300
    assert expected == {lb.servers[lb.addr(i)].key: n for i, n in ((2, 50), (3, 100), (4, 150))}


async def test_real_server_killed_and_restarted_under_load(lb: Loopback) -> None:
    for i in (2, 3, 4):
        lb.start_server(i)
    lb.write_site([(2, 1), (3, 1), (4, 1)])
    lb.start_director("--metrics", f"{lb.vip}:9100")
    victim = lb.servers[lb.addr(3)]

    def scrape() -> str:
        with urllib.request.urlopen(f"http://{lb.vip}:9100/metrics", timeout=10) as resp:
            return str(resp.read().decode())

    stop = asyncio.Event()
    runner = asyncio.ensure_future(load(lb, 20, stop))
    await asyncio.to_thread(
        wait_for, lambda: (r := lb.real(victim.addr)) and r["active"] > 0, 20, "transfers on the victim"
    )
    await asyncio.to_thread(victim.kill)  # SIGKILL, and reaped: from here on its port refuses
    killed_at = time.monotonic()

    def connect_errors(text: str) -> float:
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("gridlb_dataplane_errors_total") and 'reason="connect:' in line
        )

    await asyncio.sleep(0.5)
    marked = await asyncio.to_thread(lb.real, victim.addr)
    assert marked is not None and not marked["in_table"]
    # the first failed connect marked it down at once (connects already under way at that instant
    # may fail too; the director is told once)
    assert marked["passive_failures"] <= 1
    errors_after_mark = connect_errors(await asyncio.to_thread(scrape))
    await asyncio.sleep(2.5)  # the load goes on; the victim is still dead
    down = await asyncio.to_thread(lb.real, victim.addr)
    assert down is not None and down["health"] == "down" and not down["in_table"]
    text = await asyncio.to_thread(scrape)
    assert connect_errors(text) == errors_after_mark, text  # no new connection was sent to it

    ups_before = metric(
        text, "gridlb_health_check_duration_seconds_count", real_server=victim.key, verdict="up"
    )
    await asyncio.to_thread(victim.start)
    back = await asyncio.to_thread(
        wait_for,
        lambda: (r := lb.real(victim.addr)) and r["in_table"] and r["weight"] == 1 and r,
        10,
        "return",
    )
    ups_after = metric(
        await asyncio.to_thread(scrape),
        "gridlb_health_check_duration_seconds_count",
        real_server=victim.key,
        verdict="up",
    )
    assert ups_after - ups_before == 1  # back after its first successful check
    assert back["health"] == "up" and back["passive_failure"] is None
    conns_back = back["connections"]
    await asyncio.sleep(1.5)
    stop.set()
    results = await runner
    victim_now = await asyncio.to_thread(lb.real, victim.addr)
    assert victim_now is not None and victim_now["connections"] > conns_back
    late = [r for r in results if r.started > killed_at]
    # only transfers in flight at the kill may fail (those on the victim do: their server vanished)
    assert all(r.started < killed_at for r in results if not r.ok)
    assert late and [r.error for r in late if not r.ok] == []
    assert len(results) > 50


async def test_no_checker_passive_failure_heals_within_passive_retry_s(lb: Loopback) -> None:
    lb.start_server(2)
    retry_s = 2.0
    lb.write_site([(2, 1), (3, 5)], check=False, passive_retry_s=retry_s)  # 3 is not listening yet
    lb.start_director()

    async def greeted_by() -> str:
        client = await GridftpClient.connect(lb.vip, PORT, timeout_s=10)
        try:
            assert client.banner is not None
            return client.banner.text.split()[0]  # each real server greets with its address
        finally:
            await client.close()

    # wlc prefers the heavier 3: the first connect is refused there and retried on 2, invisibly
    assert await greeted_by() == lb.addr(2)
    marked = await asyncio.to_thread(lb.real, lb.addr(3))
    assert marked is not None and marked["passive_failures"] == 1 and not marked["in_table"]
    lb.start_server(3)
    listening = time.monotonic()
    served = ""
    while time.monotonic() - listening < retry_s + 3:  # retry interval + one resync + slack
        served = await greeted_by()
        if served == lb.addr(3):
            break
        await asyncio.sleep(0.1)
    healed_s = time.monotonic() - listening
    assert served == lb.addr(3), f"still not served by {lb.addr(3)} after {healed_s:.1f} s"
    assert healed_s <= retry_s + 1.5, healed_s


async def test_drain_wait_under_100_running_transfers(lb: Loopback) -> None:
    for i in (2, 3, 4):
        lb.start_server(i)
    lb.write_site([(2, 1), (3, 1), (4, 1)])
    lb.start_director()
    target = lb.servers[lb.addr(3)]
    stop = asyncio.Event()
    runner = asyncio.ensure_future(load(lb, 100, stop))
    await asyncio.sleep(2.0)
    busy = await asyncio.to_thread(lb.real, target.addr)
    assert busy is not None and busy["connections"] > 0
    proc = await asyncio.create_subprocess_exec(
        *lb_cmd(lb, "drain", target.addr, "--wait", "--timeout", "60"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    ack = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert ack.decode().startswith(f"drained {target.key}")
    at_ack = await asyncio.to_thread(lb.real, target.addr)
    assert at_ack is not None and at_ack["weight"] == 0
    rest, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode()
    assert rest.decode().rstrip().endswith(f"{target.key}: no active connection")
    after = await asyncio.to_thread(lb.real, target.addr)
    assert after is not None and after["active"] == 0
    await asyncio.sleep(1.0)
    stop.set()
    results = await runner
    final = await asyncio.to_thread(lb.real, target.addr)
    assert final is not None and final["connections"] == at_ack["connections"]  # nothing new after the ack
    assert failures(results) == []
    assert len(results) >= 100


def lb_cmd(lb: Loopback, *args: str) -> list[str]:
    from tests.director.loopback import GRIDLB

    return [*GRIDLB, *args, "--socket", str(lb.socket)]


async def test_add_remove_drain_and_reload_under_load_without_failures_or_flaps(lb: Loopback) -> None:
    for i in (2, 3, 4, 5, 6):
        lb.start_server(i)
    lb.write_site([(2, 1), (3, 1), (4, 1)])
    lb.start_director()
    stop = asyncio.Event()
    runner = asyncio.ensure_future(load(lb, 20, stop))
    await asyncio.sleep(1.0)

    added = await asyncio.to_thread(lb.ctl, "add", lb.addr(5), "--service", f"{lb.vip}:{PORT}")
    assert added.returncode == 0, added.stderr
    await asyncio.to_thread(
        wait_for, lambda: (r := lb.real(lb.addr(5))) and r["connections"] > 0, 20, "traffic to .5"
    )

    removed = await asyncio.to_thread(lb.ctl, "remove", lb.addr(3), "--drain")
    assert removed.returncode == 0, removed.stderr
    assert (await asyncio.to_thread(lb.real, lb.addr(3)) or {"weight": 0})["weight"] in (0, None)
    await asyncio.to_thread(wait_for, lambda: lb.real(lb.addr(3)) is None, 30, ".3 to leave")

    lb.write_site([(2, 1), (4, 1), (6, 1)])
    reloaded = await asyncio.to_thread(lb.ctl, "reload")
    assert reloaded.returncode == 0, reloaded.stderr
    await asyncio.to_thread(
        wait_for, lambda: (r := lb.real(lb.addr(6))) and r["connections"] > 0, 20, "traffic to .6"
    )
    await asyncio.to_thread(wait_for, lambda: lb.real(lb.addr(5)) is None, 30, ".5 to retire")
    await asyncio.sleep(0.5)
    stop.set()
    results = await runner
    assert failures(results) == []
    assert len(results) > 50

    status = await asyncio.to_thread(lb.status)
    assert sorted(r["real"] for r in status["services"][0]["reals"]) == [
        f"{lb.addr(i)}:{PORT}" for i in (2, 4, 6)
    ]
    log = lb.log()
    for i in (2, 4):  # unchanged servers: never re-added, edited, removed, or changed health
        key = f"{lb.addr(i)}:{PORT}"
        lines = [ln for ln in log.splitlines() if key in ln and "(start)" not in ln]
        assert [ln for ln in lines if "applied" in ln or "health" in ln or "marked down" in ln] == []


async def test_outsider_reads_status_but_is_refused_drain_and_malformed_json_is_answered(
    lb: Loopback,
) -> None:
    need_root()
    for i in (2, 3):
        lb.start_server(i)
    lb.write_site([(2, 1), (3, 1)])
    lb.start_director("--socket-mode", "0666")

    status = await asyncio.to_thread(lb.ctl, "status", user="nobody")
    assert status.returncode == 0, status.stderr
    assert f"{lb.addr(2)}:{PORT}" in status.stdout and "serving" in status.stdout
    drain = await asyncio.to_thread(lb.ctl, "drain", lb.addr(2), user="nobody")
    assert drain.returncode == 1
    assert drain.stderr.startswith("gridlb drain: permission denied: 'drain' changes the director")
    assert "membership in group 'root'" in drain.stderr and "nobody (uid 65534)" in drain.stderr
    real = await asyncio.to_thread(lb.real, lb.addr(2))
    assert real is not None and real["weight"] == 1

    def raw(data: bytes) -> list[bytes]:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(lb.socket))
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            buf = b""
            while chunk := s.recv(65536):
                buf += chunk
        return buf.splitlines()

    replies = await asyncio.to_thread(raw, b"{malformed json\n\xff\n[]\n" + b'{"v":1,"op":"ping"}\n')
    import json

    decoded = [json.loads(r) for r in replies]
    assert [d["ok"] for d in decoded] == [False, False, False, True]
    assert [d.get("error", {}).get("code") for d in decoded[:3]] == ["bad-json", "bad-json", "bad-request"]
    # the director keeps serving: status, and a download through it
    assert (await asyncio.to_thread(lb.status))["services"]
    stop = asyncio.Event()
    stop.set()
    expected = (lb.root / "small.bin").read_bytes()
    from tests.director.loopback import download

    (lb.dir / "out").mkdir()
    result = await download(lb.vip, "small.bin", expected, lb.dir / "out", "x")
    assert result.ok, result.error
