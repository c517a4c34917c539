"""Prometheus metrics of a running director, collected at scrape time, on an optional HTTP listener.

A custom collector reads the director's typed status (`gridlb.status`, taken just before each
scrape), so the numbers are the dataplane's own (IPVS-like counters), never a second bookkeeping.
Check latencies go into a histogram fed by the director's input stream. Names follow Prometheus
conventions: `gridlb_` prefix, base units, `_total` for counters, labels `service`
(``TCP 10.0.0.1:2811``) and `real_server` (``10.0.1.1:2811``). The listener reads a request head of
bounded size and answers an oversized one with 414 or 431 (a malformed one with 400).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gridlb.director.director import CheckReport, Director, DirectorInput
from gridlb.director.reconcile import HealthState
from gridlb.status import DirectorStatus

log = logging.getLogger(__name__)

#: Check latency buckets (seconds): loopback checks take ~1 ms, WAN ones up to the connect timeout.
CHECK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class DirectorCollector:
    """Yields a director's typed status as metric families (prometheus_client custom collector)."""

    def __init__(self) -> None:
        self.status: DirectorStatus | None = None  # refreshed by `Metrics.scrape`

    def describe(self) -> list[Metric]:
        """Return nothing: the metric set depends on the table (no registration-time collect)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Return every metric family, built from the latest status."""
        st = self.status
        if st is None:
            return
        svc_labels = ["service"]
        rs_labels = ["service", "real_server"]

        info = GaugeMetricFamily(
            "gridlb_director_info", "The director's version and dataplane.", labels=["version", "dataplane"]
        )
        info.add_metric([st.version, st.dataplane], 1)
        yield info
        role = GaugeMetricFamily(
            "gridlb_director_role", "VRRP role of this director (1 for the current one).", labels=["role"]
        )
        role.add_metric([st.role or "none"], 1)
        yield role

        def family(kind: str, name: str, doc: str, labels: list[str]) -> Any:
            return (GaugeMetricFamily if kind == "g" else CounterMetricFamily)(name, doc, labels=labels)

        g, c = "g", "c"
        s_active = family(g, "gridlb_service_active_connections", "Established connections.", svc_labels)
        s_inactive = family(
            g,
            "gridlb_service_inactive_connections",
            "Closing connections (FIN timeout).",
            svc_labels,
        )
        s_conns = family(c, "gridlb_service_connections", "Connections scheduled.", svc_labels)
        s_in = family(c, "gridlb_service_bytes_in", "Bytes received from clients.", svc_labels)
        s_out = family(c, "gridlb_service_bytes_out", "Bytes sent to clients.", svc_labels)
        quorum = family(
            g, "gridlb_service_quorum_up", "1 while the service has quorum (keepalived quorum).", svc_labels
        )
        r_active = family(
            g,
            "gridlb_real_server_active_connections",
            "Established connections.",
            rs_labels,
        )
        r_inactive = family(
            g, "gridlb_real_server_inactive_connections", "Closing connections (FIN timeout).", rs_labels
        )
        r_conns = family(
            c, "gridlb_real_server_connections", "Connections scheduled to the real server.", rs_labels
        )
        r_in = family(
            c, "gridlb_real_server_bytes_in", "Bytes relayed from clients to the real server.", rs_labels
        )
        r_out = family(
            c, "gridlb_real_server_bytes_out", "Bytes relayed from the real server to clients.", rs_labels
        )
        r_weight = family(
            g,
            "gridlb_real_server_weight",
            "Weight in the dataplane (absent when not in it).",
            rs_labels,
        )
        r_overload = family(
            g,
            "gridlb_real_server_overloaded",
            "1 while the upper threshold is reached.",
            rs_labels,
        )
        decisions = family(
            c,
            "gridlb_scheduler_decisions",
            "New connections scheduled to it.",
            rs_labels,
        )
        health = family(
            g,
            "gridlb_real_server_health",
            "Health state of the real server as the director uses it (1 for the current state).",
            [*rs_labels, "state"],
        )
        drained = family(g, "gridlb_real_server_drained", "1 while drained by an operator.", rs_labels)
        cert_days = family(
            g,
            "gridlb_real_server_certificate_days_left",
            "Days until the real server's TLS certificate expires (HTTPS checks).",
            rs_labels,
        )
        passive = family(
            c,
            "gridlb_real_server_passive_failures",
            "Failed dataplane connects to it.",
            rs_labels,
        )
        for svc in st.services:
            quorum.add_metric([svc.service], 1 if svc.quorum_up else 0)
            for real in svc.reals:
                labels = [svc.service, real.real]
                for state in HealthState:
                    health.add_metric([*labels, state.value], 1 if state.value == real.health else 0)
                drained.add_metric(labels, 1 if real.drained else 0)
                if real.last_check is not None and real.last_check.cert_days_left is not None:
                    cert_days.add_metric(labels, real.last_check.cert_days_left)
                passive.add_metric(labels, real.passive_failures)
            if not svc.in_table:
                continue
            s_active.add_metric([svc.service], svc.active)
            s_inactive.add_metric([svc.service], svc.inactive)
            s_conns.add_metric([svc.service], svc.connections)
            s_in.add_metric([svc.service], svc.inbytes)
            s_out.add_metric([svc.service], svc.outbytes)
            for real in svc.reals:
                if not real.in_table:
                    continue
                labels = [svc.service, real.real]
                r_active.add_metric(labels, real.active)
                r_inactive.add_metric(labels, real.inactive)
                r_conns.add_metric(labels, real.connections)
                decisions.add_metric(labels, real.connections)
                r_in.add_metric(labels, real.inbytes)
                r_out.add_metric(labels, real.outbytes)
                r_weight.add_metric(labels, real.weight or 0)
                r_overload.add_metric(labels, 1 if real.overloaded else 0)
        yield from (s_active, s_inactive, s_conns, s_in, s_out, quorum)
        yield from (r_active, r_inactive, r_conns, r_in, r_out, r_weight, r_overload, decisions)
        yield from (health, drained, passive, cert_days)

        counters = st.counters

        def per_dataplane(name: str, doc: str, label: str, counts: Iterable[tuple[str, int]]) -> Any:
            """A counter family of the dataplane's counts by `label`, in the order given."""
            fam = family(c, name, doc, ["dataplane", label])
            for key, n in counts:
                fam.add_metric([st.dataplane, key], n)
            return fam

        yield per_dataplane(
            "gridlb_dataplane_errors",
            "Dataplane errors by reason (refused ops, accept/connect/relay errors).",
            "reason",
            [
                *((f"op {op}", n) for op, n in sorted(counters.op_errors.items())),
                *sorted(counters.dataplane_errors.items()),
            ],
        )
        yield per_dataplane(
            "gridlb_dataplane_events",
            "Dataplane counts that are no error (e.g. dr: flows adopted mid-connection, reused ports).",
            "event",
            sorted(counters.dataplane_events.items()),
        )
        yield per_dataplane(
            "gridlb_dataplane_faults",
            "Dataplane calls that raised, timed out or returned garbage, by method (the director retries).",
            "method",
            sorted(counters.dataplane_faults.items()),
        )
        failing = family(g, "gridlb_dataplane_failing", "1 while the latest call failed.", ["dataplane"])
        failing.add_metric([st.dataplane], 1 if st.dataplane_fault is not None else 0)
        yield failing
        reloads = family(c, "gridlb_reloads", "Config reloads by outcome.", ["outcome"])
        reloads.add_metric(["ok"], counters.reloads)
        reloads.add_metric(["refused"], counters.reload_failures)
        yield reloads
        rec = CounterMetricFamily("gridlb_reconcile_passes", "Desired-versus-dataplane comparisons.")
        rec.add_metric([], counters.reconciles)
        yield rec
        ops = CounterMetricFamily("gridlb_dataplane_ops", "Ops applied to the dataplane.")
        ops.add_metric([], counters.ops_applied)
        yield ops


class Metrics:
    """The metrics registry of one director, and its optional HTTP listener."""

    def __init__(self, director: Director) -> None:
        self.director = director
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = DirectorCollector()
        self.registry.register(self.collector)
        self.check_latency = Histogram(
            "gridlb_health_check_duration_seconds",
            "How long health checks took, by checker kind and verdict.",
            ["real_server", "kind", "verdict"],
            buckets=CHECK_BUCKETS,
            registry=self.registry,
        )
        self._server: asyncio.Server | None = None
        director.listeners.append(self.observe)

    def observe(self, item: DirectorInput) -> None:
        """Take one director input (a listener): check results feed the latency histogram."""
        if isinstance(item, CheckReport) and item.state is None:
            self.check_latency.labels(str(item.real), item.kind or "check", str(item.result.verdict)).observe(
                max(0.0, item.result.latency_s)
            )

    async def scrape(self) -> bytes:
        """Refresh the dataplane view and return the exposition text."""
        await self.director.dataplane_counters()
        self.collector.status = await self.director.status()
        data: bytes = generate_latest(self.registry)
        return data

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen for HTTP scrapes on host:port; return the bound address."""
        self._server = await asyncio.start_server(
            self._serve, host, port, reuse_address=True, limit=MAX_HTTP_LINE
        )
        sockname: Any = self._server.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    async def close(self) -> None:
        """Stop the HTTP listener."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(HTTP_HEAD_TIMEOUT_S):
                head = await read_request_head(reader)
            if isinstance(head, str):  # refused: answer, then let the client finish sending
                await respond(writer, head, "text/plain", head.encode() + b"\n", with_body=True)
                await linger(writer, reader)
                return
            parts = head.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) >= 2 else ""
            if len(parts) < 2:
                status, ctype, body = "400 Bad Request", "text/plain", b"GET /metrics\n"
            elif parts[0] not in ("GET", "HEAD"):
                status, ctype, body = "405 Method Not Allowed", "text/plain", b"GET /metrics\n"
            elif path == "/metrics":
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, await self.scrape()
            elif path == "/":
                status, ctype = "200 OK", "text/html"
                body = b'<html><body><a href="/metrics">gridlb metrics</a></body></html>\n'
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found; try /metrics\n"
            await respond(writer, status, ctype, body, with_body=parts[:1] != ["HEAD"])
        except (TimeoutError, ConnectionError):
            pass
        except Exception:
            log.exception("metrics request failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


#: Longest request line or header line the listener reads (a scrape's are under 200 bytes); it is
#: also the StreamReader limit, so nothing longer is ever buffered whole.
MAX_HTTP_LINE = 8192
#: Most bytes of request line and headers together.
MAX_HTTP_HEAD = 32768
#: Time a client has to send its request head.
HTTP_HEAD_TIMEOUT_S = 10.0
#: After refusing a request, how much of the rest is read and dropped (and for how long) so that the
#: client sees the reply instead of a reset.
LINGER_BYTES = 4 << 20
LINGER_S = 2.0


@dataclass(frozen=True, slots=True)
class RequestHead:
    """A request line and its headers (names lower-cased; a repeated one keeps its last value)."""

    line: bytes
    headers: Mapping[str, str]


async def read_request(reader: asyncio.StreamReader) -> RequestHead | str:
    """Read an HTTP request head; return it, or the status refusing it (414, 431, 400)."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        return "414 URI Too Long"
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            raise ConnectionResetError("closed before a request") from None
        return "400 Bad Request"
    total = len(line)
    headers: dict[str, str] = {}
    while True:
        try:
            header = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            return "431 Request Header Fields Too Large"
        except asyncio.IncompleteReadError:
            break  # the client half-closed after its headers: serve what it asked
        total += len(header)
        if total > MAX_HTTP_HEAD:
            return "431 Request Header Fields Too Large"
        if not header.strip():
            break
        name, sep, value = header.decode("latin-1").partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return RequestHead(line, headers)


async def read_request_head(reader: asyncio.StreamReader) -> bytes | str:
    """Read an HTTP request head; return its request line, or the status refusing it (414, 431, 400)."""
    head = await read_request(reader)
    return head if isinstance(head, str) else head.line


async def respond(
    writer: asyncio.StreamWriter,
    status: str,
    ctype: str,
    body: bytes,
    *,
    with_body: bool,
    extra: str = "",
) -> None:
    """Write one HTTP/1.0 response (`extra`: more header lines, each ending in CRLF)."""
    head = f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    writer.write(head.encode() + (body if with_body else b""))
    await writer.drain()


async def linger(writer: asyncio.StreamWriter, reader: asyncio.StreamReader) -> None:
    """Half-close, then drop what the client still sends (bounded), so our reply is not lost to a reset."""
    if writer.can_write_eof():
        writer.write_eof()
    left = LINGER_BYTES
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(LINGER_S):
            while left > 0:
                chunk = await reader.read(min(left, 1 << 16))
                if not chunk:
                    break
                left -= len(chunk)


def check_listen(text: str, key: str) -> str:
    """Return `text` when it is ``ADDR:PORT`` as the site file's listeners take it; ConfigError otherwise."""
    from gridlb.config.schema import GridlbSettings
    from gridlb.errors import ConfigError

    try:
        GridlbSettings.model_validate({"metrics_listen": text})
    except ValueError:
        raise ConfigError(
            f"{text!r}: expected ADDR:PORT, e.g. 127.0.0.1:9100 or [::1]:9100", key=key
        ) from None
    return text


def parse_listen(text: str) -> tuple[str, int]:
    """Return (host, port) of ``ADDR:PORT`` or ``[V6]:PORT``."""
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)
