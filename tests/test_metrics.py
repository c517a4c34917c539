"""Tests of the Prometheus metrics: names, labels and values from the director's view, and the listener."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from gridlb.director.director import Director
from gridlb.director.reconcile import HealthState
from gridlb.health.base import CheckResult, Verdict
from gridlb.metrics import Metrics
from gridlb.table import DestCounters, EditDest, RealKey, Stats
from tests.director.fakes import FakeDataplane
from tests.director.loopback import metric
from tests.director.test_director import SVC, A, B, C, site_config

LABELS = {"service": str(SVC)}


@pytest.fixture
async def setup() -> AsyncIterator[tuple[Director, FakeDataplane, Metrics]]:
    dp = FakeDataplane()
    director = Director(site_config(A, B, C), dp, resync_interval_s=3600)
    metrics = Metrics(director)
    await director.start()
    yield director, dp, metrics
    await director.stop()


def set_counters(dp: FakeDataplane, real: RealKey, counters: DestCounters) -> None:
    svc = dp.table.service(SVC)
    assert svc is not None
    dests = tuple(replace(d, counters=counters) if d.key == real else d for d in svc.dests)
    dp.table = dp.table.with_service(
        replace(svc, dests=dests, stats=Stats(conns=12, inbytes=5, outbytes=700))
    )


async def test_counters_come_from_the_dataplane(setup: tuple[Director, FakeDataplane, Metrics]) -> None:
    _, dp, metrics = setup
    set_counters(dp, A, DestCounters(3, 4, 0, True, Stats(conns=9, inbytes=100, outbytes=2000)))
    text = (await metrics.scrape()).decode()
    rs = {**LABELS, "real_server": str(A)}
    assert metric(text, "gridlb_real_server_active_connections", **rs) == 3
    assert metric(text, "gridlb_real_server_inactive_connections", **rs) == 4
    assert metric(text, "gridlb_real_server_connections_total", **rs) == 9
    assert metric(text, "gridlb_scheduler_decisions_total", **rs) == 9
    assert metric(text, "gridlb_real_server_bytes_in_total", **rs) == 100
    assert metric(text, "gridlb_real_server_bytes_out_total", **rs) == 2000
    assert metric(text, "gridlb_real_server_overloaded", **rs) == 1
    assert metric(text, "gridlb_real_server_weight", **rs) == 1
    assert metric(text, "gridlb_service_active_connections", **LABELS) == 3
    assert metric(text, "gridlb_service_connections_total", **LABELS) == 12
    assert metric(text, "gridlb_service_bytes_out_total", **LABELS) == 700
    assert metric(text, "gridlb_service_quorum_up", **LABELS) == 1
    assert metric(text, "gridlb_director_info", dataplane="fake") == 1
    assert "# TYPE gridlb_real_server_connections_total counter" in text
    assert "# HELP gridlb_real_server_active_connections Established connections" in text


async def test_health_checks_and_errors(setup: tuple[Director, FakeDataplane, Metrics]) -> None:
    director, dp, metrics = setup
    director.report_check((SVC, B), CheckResult(Verdict.UP, "220", 0.003), kind="gridftp")
    director.report_check(
        (SVC, B), CheckResult(Verdict.DOWN, "refused", 0.0004), HealthState.DOWN, kind="gridftp"
    )
    director.passive_failure(C, SVC, "connect: refused")
    dp.fail[EditDest] = "Operation not permitted"
    dp.events["midflow_adopted"] = 3
    director.report_check((SVC, A), CheckResult(Verdict.REFUSING, "421 busy", 0.001), HealthState.REFUSING)
    for _ in range(20):
        await asyncio.sleep(0)  # let the director's loop take the reports
    await director.resync()
    text = (await metrics.scrape()).decode()
    b = {**LABELS, "real_server": str(B)}
    assert metric(text, "gridlb_real_server_health", **b, state="down") == 1
    assert metric(text, "gridlb_real_server_health", **b, state="up") == 0
    assert metric(text, "gridlb_real_server_passive_failures_total", **LABELS, real_server=str(C)) == 1
    h = {"real_server": str(B), "kind": "gridftp"}
    assert metric(text, "gridlb_health_check_duration_seconds_count", **h, verdict="up") == 1
    assert metric(text, "gridlb_health_check_duration_seconds_bucket", **h, verdict="up", le="0.0025") == 0
    assert metric(text, "gridlb_health_check_duration_seconds_bucket", **h, verdict="up", le="0.005") == 1
    assert metric(text, "gridlb_dataplane_errors_total", dataplane="fake", reason="op EditDest") >= 1
    assert metric(text, "gridlb_dataplane_events_total", dataplane="fake", event="midflow_adopted") == 3
    assert (await director.status()).counters.dataplane_events == {"midflow_adopted": 3}
    assert metric(text, "gridlb_real_server_weight", **LABELS, real_server=str(B)) == 0  # absent
    assert f'real_server="{B}"' not in "\n".join(
        ln for ln in text.splitlines() if ln.startswith("gridlb_real_server_weight")
    )


async def test_http_listener(setup: tuple[Director, FakeDataplane, Metrics]) -> None:
    _, _, metrics = setup
    host, port = await metrics.start("127.0.0.1", 0)

    async def get(path: str) -> tuple[str, bytes]:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        data = await reader.read()
        writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        return head.decode().splitlines()[0], body

    try:
        status, body = await get("/metrics")
        assert status == "HTTP/1.0 200 OK" and b"gridlb_real_server_active_connections{" in body
        status, _ = await get("/nope")
        assert status == "HTTP/1.0 404 Not Found"
    finally:
        await metrics.close()


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        (
            b"GET /metrics HTTP/1.0\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n",
            "431 Request Header Fields Too Large",
        ),
        (
            b"GET /metrics HTTP/1.0\r\n" + b"X-Many: header\r\n" * 4000 + b"\r\n",
            "431 Request Header Fields Too Large",
        ),
        (b"GET /" + b"a" * (1 << 20) + b" HTTP/1.0\r\n\r\n", "414 URI Too Long"),
        (b"GET\r\n\r\n", "400 Bad Request"),
        (b"GET /metri", "400 Bad Request"),  # the request line cut off by EOF
    ],
    ids=["1MB-header", "many-headers", "1MB-URL", "no-path", "cut-off"],
)
async def test_oversized_or_malformed_requests_get_4xx_and_no_traceback(
    setup: tuple[Director, FakeDataplane, Metrics],
    caplog: pytest.LogCaptureFixture,
    request_head: bytes,
    status: str,
) -> None:
    _, _, metrics = setup
    host, port = await metrics.start("127.0.0.1", 0)

    def exchange(data: bytes) -> bytes:
        with socket.create_connection((host, port), timeout=10) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
            return reply

    try:
        with caplog.at_level("DEBUG"):
            reply = await asyncio.to_thread(exchange, request_head)
            good = await asyncio.to_thread(exchange, b"GET /metrics HTTP/1.0\r\n\r\n")
    finally:
        await metrics.close()
    assert reply.split(b"\r\n", 1)[0].decode() == f"HTTP/1.0 {status}"
    assert good.startswith(b"HTTP/1.0 200 OK\r\n") and b"gridlb_director_info" in good
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]


async def test_certificate_days_left_reach_status_and_metrics(
    setup: tuple[Director, FakeDataplane, Metrics],
) -> None:
    director, _, metrics = setup
    director.report_check(
        (SVC, B), CheckResult(Verdict.UP, "certificate expires in 12 days", cert_days_left=12.5)
    )
    for _ in range(100):  # the director's loop takes the report from its queue
        status = await director.status()
        (real,) = [r for _, r in status.reals() if r.real == str(B)]
        if real.last_check is not None:
            break
        await asyncio.sleep(0.01)
    assert real.last_check is not None and real.last_check.cert_days_left == 12.5
    text = (await metrics.scrape()).decode()
    rs = {**LABELS, "real_server": str(B)}
    assert metric(text, "gridlb_real_server_certificate_days_left", **rs) == 12.5
    assert "gridlb_real_server_certificate_days_left{" + f'real_server="{A}"' not in text
