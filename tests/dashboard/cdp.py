"""A minimal Chrome DevTools Protocol client over `--remote-debugging-pipe` (fds 3 and 4), for tests.

Pipes cross network namespaces, so the browser can run inside a namespace that has only `lo` while
the test drives it from outside. Messages are JSON objects separated by NUL bytes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--remote-debugging-pipe",
    "--window-size=1400,700",
)


def _high(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class CdpError(RuntimeError):
    """The browser answered a command with an error, or did not answer in time."""


class Browser:
    """Headless Chromium started with `prefix` (e.g. `ip netns exec NS`), one page attached."""

    def __init__(self, prefix: Sequence[str], profile: str, chromium: str = "/usr/bin/chromium") -> None:
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # the child's ends above 9, so that moving them to 3 and 4 cannot clobber one another
        to_child_r, from_child_w = (_high(fd) for fd in (to_child_r, from_child_w))
        trampoline = (
            f"import os, sys; os.dup2({to_child_r}, 3); os.dup2({from_child_w}, 4); "
            f"os.close({to_child_r}); os.close({from_child_w}); os.execv(sys.argv[1], sys.argv[1:])"
        )
        argv = [chromium, *FLAGS, f"--user-data-dir={profile}", "about:blank"]
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-c", trampoline, *argv],
            pass_fds=(to_child_r, from_child_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._next_id = 0
        self._replies: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable", session=self.session)
        self.call("Runtime.enable", session=self.session)

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_child, 1 << 16)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._lock:
                        box = self._replies.get(msg["id"])
                    if box is not None:
                        box.put(msg)

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: str | None = None,
        timeout_s: float = 20,
    ) -> dict[str, Any]:
        """Send one command and return its result."""
        with self._lock:
            self._next_id += 1
            mid = self._next_id
            box: queue.Queue[dict[str, Any]] = queue.Queue()
            self._replies[mid] = box
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        try:
            reply = box.get(timeout=timeout_s)
        except queue.Empty:
            raise CdpError(f"{method}: no answer in {timeout_s} s") from None
        finally:
            with self._lock:
                self._replies.pop(mid, None)
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    def navigate(self, url: str) -> None:
        """Load `url` in the page."""
        self.call("Page.navigate", {"url": url}, session=self.session)

    def eval(self, expression: str) -> Any:
        """Return the value of a JavaScript expression in the page (promises are awaited)."""
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session=self.session,
        )
        if "exceptionDetails" in result:
            raise CdpError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float) -> Any:
        """Return the first truthy value of `expression`, polled every 50 ms; CdpError after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.eval(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise CdpError(f"still false after {timeout_s} s: {expression}")
            time.sleep(0.05)

    def screenshot(self) -> bytes:
        """Return a PNG of the page."""
        import base64

        data = self.call("Page.captureScreenshot", {"format": "png"}, session=self.session)["data"]
        return base64.b64decode(data)

    def close(self) -> None:
        """Close the browser (Browser.close, then by PID if it lingers)."""
        with contextlib.suppress(CdpError, OSError):
            self.call("Browser.close", timeout_s=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for fd in (self._to_child, self._from_child):
            with contextlib.suppress(OSError):
                os.close(fd)
