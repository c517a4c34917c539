"""sd_notify in a few lines: READY=1, RELOADING=1, STOPPING=1 and WATCHDOG=1 to $NOTIFY_SOCKET.

The service manager passes the socket's path in NOTIFY_SOCKET (a leading ``@`` names an abstract
socket) and, with WatchdogSec=, the interval in WATCHDOG_USEC (for the process WATCHDOG_PID names, when
set). Without NOTIFY_SOCKET every call does nothing, so the director runs the same outside systemd.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Mapping


class Notifier:
    """Sends state lines to the service manager's notify socket (a no-op without one)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + path[1:] if path.startswith("@") else path
        self.watchdog_s = watchdog_interval_s(env)
        self.sent = 0

    @property
    def enabled(self) -> bool:
        """Return True when a service manager listens."""
        return bool(self.address)

    def send(self, *lines: str) -> bool:
        """Send `lines` (``KEY=VALUE``) as one datagram; return False when nobody listens or it failed."""
        if not self.address:
            return False
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto("\n".join(lines).encode(), self.address)
            self.sent += 1
            return True
        return False

    def ready(self, status: str = "") -> bool:
        """Tell the manager start-up (or a reload) is complete."""
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        """Tell the manager a reload began (with the monotonic time systemd 253+ wants)."""
        return self.send(
            "RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
        )

    def stopping(self) -> bool:
        """Tell the manager the service is stopping."""
        return self.send("STOPPING=1")

    def watchdog(self) -> bool:
        """Keep the watchdog from firing."""
        return self.send("WATCHDOG=1")


def watchdog_interval_s(environ: Mapping[str, str]) -> float | None:
    """Return the watchdog interval asked of this process (WATCHDOG_USEC), or None."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 1e6
