"""Runs keepalived-style notify scripts when an instance changes state.

`notify_master`, `notify_backup`, `notify_fault` and `notify_stop` run as written (a command line,
split like a shell would, without a shell); the generic `notify` script gets four more arguments,
as keepalived gives them: "INSTANCE", the instance name, the new state (MASTER, BACKUP, FAULT, STOP)
and the priority. Scripts run in the background, each bounded by a timeout, never blocking VRRP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex

from gridlb.vrrp.config import VrrpConfig
from gridlb.vrrp.events import State, StateChanged

log = logging.getLogger(__name__)


def notify_commands(config: VrrpConfig, event: StateChanged) -> list[list[str]]:
    """The argv lists keepalived would run for `event` (pure, so tests can check them)."""
    word = {State.MASTER: "MASTER", State.BACKUP: "BACKUP", State.FAULT: "FAULT", State.INIT: "STOP"}[
        event.new
    ]
    specific = {
        "MASTER": config.notify_master,
        "BACKUP": config.notify_backup,
        "FAULT": config.notify_fault,
        "STOP": config.notify_stop,
    }[word]
    out = []
    if specific:
        out.append(shlex.split(specific))
    if config.notify:
        out.append([*shlex.split(config.notify), "INSTANCE", config.name, word, str(event.priority)])
    return out


class Notifier:
    """Starts notify scripts for state changes and keeps track of them until they finish."""

    def __init__(self, config: VrrpConfig, *, timeout_s: float = 60.0) -> None:
        self.config = config
        self.timeout_s = timeout_s
        self.tasks: set[asyncio.Task[int | None]] = set()
        self.results: list[tuple[list[str], int | None]] = []

    def on_state_changed(self, event: StateChanged) -> None:
        for argv in notify_commands(self.config, event):
            task = asyncio.get_running_loop().create_task(self._run(argv))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _run(self, argv: list[str]) -> int | None:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL
            )
        except OSError as exc:
            log.warning("%s: notify %s: %s", self.config.name, argv[0], exc)
            self.results.append((argv, None))
            return None
        try:
            rc = await asyncio.wait_for(proc.wait(), self.timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            rc = None
            log.warning("%s: notify %s timed out after %s s", self.config.name, argv[0], self.timeout_s)
        self.results.append((argv, rc))
        return rc

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait for the running scripts (used on shutdown)."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=timeout_s)
