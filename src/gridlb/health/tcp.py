"""The `tcp` checker: keepalived's TCP_CHECK, a non-blocking connect that must complete within the timeout.

Success means only that the listener exists (a GridFTP server answering `421` passes; see the `gridftp`
checker). Options, named as keepalived's: `connect_ip`, `connect_port` (check another address or port than
the real server's), `bindto`, `bind_port`, `bind_if` (source address, port and interface; check from the
director's own address, never from the VIP).
"""

from __future__ import annotations

import time

from gridlb.health.base import (
    Checker,
    CheckResult,
    ConnectOptions,
    Verdict,
    describe_os_error,
    register_checker,
)
from gridlb.table import RealKey

__all__ = ["TcpChecker"]


def _fmt_s(seconds: float) -> str:
    return f"{seconds:g} s"


@register_checker
class TcpChecker(Checker):
    """keepalived TCP_CHECK: up when a TCP connection to the server completes within the timeout."""

    kind = "tcp"

    def __init__(
        self,
        *,
        connect_ip: str | None = None,
        connect_port: int | None = None,
        bindto: str | None = None,
        bind_port: int = 0,
        bind_if: str | None = None,
    ) -> None:
        super().__init__(
            connect_ip=connect_ip,
            connect_port=connect_port,
            bindto=bindto,
            bind_port=bind_port,
            bind_if=bind_if,
        )
        self.conn = ConnectOptions(connect_ip, connect_port, bindto, bind_port, bind_if)

    async def check(self, target: RealKey, *, timeout_s: float) -> CheckResult:
        """Connect, close, and report."""
        dest = self.conn.destination(target)
        start = time.monotonic()
        try:
            sock = await self.conn.connect(target, timeout_s)
        except TimeoutError:
            return CheckResult(
                Verdict.DOWN,
                f"TCP connect to {dest}: no answer within {_fmt_s(timeout_s)}",
                time.monotonic() - start,
            )
        except OSError as exc:
            return CheckResult(
                Verdict.DOWN, f"TCP connect to {dest}: {describe_os_error(exc)}", time.monotonic() - start
            )
        latency = time.monotonic() - start
        sock.close()
        return CheckResult(Verdict.UP, f"TCP connect to {dest} in {latency * 1000:.1f} ms", latency)
