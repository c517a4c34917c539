"""The dashboard's HTTP listener (asyncio, no framework): the page, its files, status JSON and a live stream.

Routes: ``GET /`` the page; ``GET /static/NAME`` its files (shipped in the package, nothing from the
internet); ``GET /api/status`` one JSON document — the director's typed status exactly as
`status_to_json` writes it, plus the in-memory history, recent VRRP transitions and whether actions are
on; ``GET /api/events`` the same document as server-sent events every `push_interval_s`;
``POST /api/drain?real=RS`` and ``POST /api/enable?real=RS`` go through the director's queue like the
control socket's requests, and only with ``Authorization: Bearer TOKEN`` when the site set
`gridlb.dashboard_token_file` (403 otherwise). Request heads are bounded as the metrics listener's are.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

from gridlb.api.messages import ApiError, DrainRequest, EnableRequest, ErrorCode, EventsRequest, Request
from gridlb.dashboard.history import History
from gridlb.director.records import CheckReport, DirectorInput, Intent, PassiveFailure, Reload, RoleChange
from gridlb.errors import ConfigError
from gridlb.metrics import HTTP_HEAD_TIMEOUT_S, MAX_HTTP_LINE, RequestHead, linger, read_request, respond
from gridlb.status import DirectorStatus, status_to_json

log = logging.getLogger(__name__)

#: How often the live stream sends the status.
PUSH_INTERVAL_S = 1.0
#: How often the history takes a snapshot when nobody watches.
SAMPLE_INTERVAL_S = 10.0
#: How many VRRP transitions the page shows.
TRANSITIONS_SHOWN = 20
#: Longest body an action request may carry (they need none).
MAX_ACTION_BODY = 4096
#: Most live streams served at once (each costs a status snapshot per push, shared).
MAX_STREAMS = 64
#: A document younger than this is shared between concurrent requests.
SHARE_S = 0.25

CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css"}
SECURITY_HEADERS = (
    "Content-Security-Policy: default-src 'self'; img-src 'self' data:; frame-ancestors 'none'\r\n"
    "X-Content-Type-Options: nosniff\r\n"
    "Referrer-Policy: no-referrer\r\n"
    "Cache-Control: no-store\r\n"
)

StatusSource = Callable[[], Awaitable[DirectorStatus]]
Caller = Callable[[Request], Awaitable[Any]]
EventsSource = Callable[[], Awaitable[list[dict[str, Any]]]]


def static_files() -> dict[str, bytes]:
    """Return the page's files by name, read from the installed package."""
    root = resources.files("gridlb.dashboard") / "static"
    return {f.name: f.read_bytes() for f in root.iterdir() if f.is_file() and not f.name.startswith(".")}


def read_token(path: str) -> str:
    """Return the token in `path` (its first line); ConfigError when it cannot be read or is too short."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", key="gridlb.dashboard_token_file") from None
    token = text.splitlines()[0].strip() if text.strip() else ""
    if len(token) < 16:
        raise ConfigError(
            f"{path}: the token must be at least 16 characters", key="gridlb.dashboard_token_file"
        )
    return token


class Dashboard:
    """Serves the dashboard of one director, reading only its typed status."""

    def __init__(
        self,
        status: StatusSource,
        call: Caller,
        *,
        events: EventsSource | None = None,
        token: str | None = None,
        clock: Callable[[], float] = time.time,
        push_interval_s: float = PUSH_INTERVAL_S,
        history: History | None = None,
    ) -> None:
        self.status_source = status
        self.call = call
        self.events_source = events
        self.token = token
        self.clock = clock
        self.push_interval_s = push_interval_s
        self.history = history or History()
        self.files = static_files()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._streams: set[asyncio.StreamWriter] = set()
        self._doc: tuple[float, bytes] | None = None
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()  # replaced after each change; streams wait on the one they saw

    @classmethod
    def for_daemon(cls, daemon: Any) -> Dashboard:
        """Return the dashboard of a `DirectorDaemon` (its status, its director's queue, its VRRP journal)."""
        token_file = daemon.config.settings.dashboard_token_file
        token = read_token(token_file) if token_file else None
        events: EventsSource | None = None
        if daemon.ha is not None:
            ha = daemon.ha

            async def events() -> list[dict[str, Any]]:
                found: dict[str, Any] = await ha.handle(EventsRequest(since=0))
                return list(found["events"])

        dashboard = cls(daemon.status, daemon.director.call, events=events, token=token)
        daemon.director.listeners.append(dashboard.observe)
        return dashboard

    def observe(self, item: DirectorInput) -> None:
        """Take one director input (a listener): a change wakes the live streams at once."""
        if isinstance(item, Intent | Reload | RoleChange | PassiveFailure) or (
            isinstance(item, CheckReport) and item.state is not None
        ):
            self.changed()

    def changed(self) -> None:
        """Send the next document now (its status waits for the change to be applied)."""
        self._doc = None
        self._changed.set()
        self._changed = asyncio.Event()

    # --- the document --------------------------------------------------------------------------

    async def document(self) -> bytes:
        """Return the status document (JSON), shared with requests made within `SHARE_S`."""
        async with self._lock:
            mono = time.monotonic()
            if self._doc is not None and mono - self._doc[0] < SHARE_S:
                return self._doc[1]
            status = await self.status_source()
            now = self.clock()
            self.history.observe(now, status)
            transitions: list[dict[str, Any]] = []
            if self.events_source is not None:
                found = await self.events_source()
                transitions = [e for e in found if e.get("kind") == "state"][-TRANSITIONS_SHOWN:]
            doc = {
                "now": round(now, 3),
                "status": status_to_json(status),
                "history": self.history.to_json(now),
                "transitions": transitions,
                "actions": self.token is not None,
            }
            data = json.dumps(doc, separators=(",", ":")).encode()
            self._doc = (time.monotonic(), data)
            return data

    # --- serving -------------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen on host:port and start the history sampler; return the bound address."""
        self._server = await asyncio.start_server(
            self._serve, host, port, reuse_address=True, limit=MAX_HTTP_LINE
        )
        self._spawn(self._sampler())
        sockname: Any = self._server.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    async def close(self) -> None:
        """Stop listening, end the live streams and the sampler."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._streams):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sampler(self) -> None:
        while True:
            try:
                await self.document()
            except Exception:
                log.exception("dashboard: status snapshot failed")
            await asyncio.sleep(SAMPLE_INTERVAL_S)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            async with asyncio.timeout(HTTP_HEAD_TIMEOUT_S):
                head = await read_request(reader)
            if isinstance(head, str):
                await respond(writer, head, "text/plain", head.encode() + b"\n", with_body=True)
                await linger(writer, reader)
                return
            await self._route(head, reader, writer)
        except (TimeoutError, ConnectionError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("dashboard request failed")
        finally:
            if task is not None:
                self._tasks.discard(task)
            self._streams.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _route(
        self, head: RequestHead, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        parts = head.line.decode("latin-1").split()
        if len(parts) < 2:
            await self._text(writer, "400 Bad Request", "bad request line")
            return
        method, target = parts[0], parts[1]
        url = urllib.parse.urlsplit(target)
        path, query = url.path, urllib.parse.parse_qs(url.query)
        if method == "POST" and path in ("/api/drain", "/api/enable"):
            await self._action(head, path, query, reader, writer)
            return
        if method not in ("GET", "HEAD"):
            await self._text(writer, "405 Method Not Allowed", "the dashboard is read-only: GET")
            return
        body_wanted = method == "GET"
        if path in ("/", "/index.html"):
            await self._file(writer, "index.html", body_wanted)
        elif path.startswith("/static/") and path[len("/static/") :] in self.files:
            await self._file(writer, path[len("/static/") :], body_wanted)
        elif path == "/api/status":
            await respond(
                writer,
                "200 OK",
                "application/json",
                await self.document(),
                with_body=body_wanted,
                extra=SECURITY_HEADERS,
            )
        elif path == "/api/events" and body_wanted:
            await self._stream(writer)
        else:
            await self._text(writer, "404 Not Found", "not found; the dashboard is at /")

    async def _text(self, writer: asyncio.StreamWriter, status: str, text: str) -> None:
        await respond(writer, status, "text/plain; charset=utf-8", text.encode() + b"\n", with_body=True)

    async def _file(self, writer: asyncio.StreamWriter, name: str, body_wanted: bool) -> None:
        ctype = CONTENT_TYPES.get(Path(name).suffix, "application/octet-stream")
        await respond(
            writer, "200 OK", ctype, self.files[name], with_body=body_wanted, extra=SECURITY_HEADERS
        )

    async def _stream(self, writer: asyncio.StreamWriter) -> None:
        if len(self._streams) >= MAX_STREAMS:
            await self._text(writer, "503 Service Unavailable", "too many live views; try again later")
            return
        self._streams.add(writer)
        writer.write(
            (
                "HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n"
                f"{SECURITY_HEADERS}\r\nretry: 2000\n\n"
            ).encode()
        )
        while not writer.is_closing():
            changed = self._changed
            writer.write(b"event: status\ndata: " + await self.document() + b"\n\n")
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), self.push_interval_s)

    async def _action(
        self,
        head: RequestHead,
        path: str,
        query: dict[str, list[str]],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        length = head.headers.get("content-length", "0")
        if not length.isdigit() or int(length) > MAX_ACTION_BODY:
            await self._text(writer, "413 Content Too Large", "actions take no body")
            return
        if int(length):
            await reader.readexactly(int(length))
        if self.token is None:
            await self._json(
                writer,
                "403 Forbidden",
                {"error": "actions are off: the site sets no gridlb.dashboard_token_file"},
            )
            return
        auth = head.headers.get("authorization", "")
        given = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            await self._json(writer, "403 Forbidden", {"error": "wrong or missing token"})
            return
        real = query.get("real", [""])[0]
        if not real:
            await self._json(writer, "400 Bad Request", {"error": "missing ?real=ADDR[:PORT]"})
            return
        request: Request = DrainRequest(real=real) if path == "/api/drain" else EnableRequest(real=real)
        try:
            result = await self.call(request)
        except ApiError as exc:
            status = "404 Not Found" if exc.code is ErrorCode.NOT_FOUND else "400 Bad Request"
            await self._json(writer, status, {"error": exc.message})
            return
        log.info("dashboard: %s %s", request.op, real)
        await self._json(writer, "200 OK", result)

    async def _json(self, writer: asyncio.StreamWriter, status: str, value: Any) -> None:
        await respond(writer, status, "application/json", json.dumps(value).encode(), with_body=True)
