"""The `script` checker: keepalived's MISC_CHECK, a command whose exit status is the verdict.

Exit 0 is UP and 1 is DOWN. With `dynamic` (keepalived `misc_dynamic`), exit 2..255 is UP with weight
= status - 2 (so 2 drains the server with weight 0); without it any status but 0 is DOWN, as is death by
a signal. The command (option `path`, keepalived `misc_path`) is split like a shell word list but run
without a shell; it runs in its own process group, and when it outlives the check's timeout (keepalived
`misc_timeout`) the whole group gets SIGTERM, then SIGKILL after `kill_grace_s`. Option `user` (keepalived's
MISC_CHECK `user`) runs it as that user (the director must be root). The real server is passed
in the environment as GRIDLB_REAL (ADDR:PORT), GRIDLB_REAL_ADDR and GRIDLB_REAL_PORT. The last line the
command printed (stdout and stderr, first 4 KiB) is put in the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import tempfile
import time
from collections.abc import Sequence

from gridlb.health.base import Checker, CheckResult, Verdict, register_checker
from gridlb.table import RealKey

OUTPUT_LIMIT = 4096


def _last_line(output: bytes) -> str:
    lines = [ln.strip() for ln in output.decode("utf-8", "replace").splitlines() if ln.strip()]
    if not lines:
        return ""
    text = "".join(ch if ch.isprintable() else "?" for ch in lines[-1])
    return text if len(text) <= 160 else text[:157] + "..."


def verdict_for_status(status: int, *, dynamic: bool) -> tuple[Verdict, int | None]:
    """Return the verdict and dynamic weight for a wait status as asyncio reports it (negative = signal)."""
    if status == 0:
        return Verdict.UP, None
    if dynamic and 2 <= status <= 255:
        return Verdict.UP, status - 2
    return Verdict.DOWN, None


async def kill_process_group(proc: asyncio.subprocess.Process, grace_s: float) -> None:
    """SIGTERM the process group led by `proc`, SIGKILL it after `grace_s`, and reap `proc`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            async with asyncio.timeout(grace_s if sig == signal.SIGTERM else None):
                await proc.wait()
            if sig == signal.SIGTERM:
                # the leader is gone; make sure nothing it started survives
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
            return
        except TimeoutError:
            continue


@register_checker
class ScriptChecker(Checker):
    """keepalived MISC_CHECK: run a command, judge by its exit status (with misc_dynamic weights)."""

    kind = "script"

    def __init__(
        self,
        *,
        path: str | Sequence[str],
        dynamic: bool = False,
        kill_grace_s: float = 1.0,
        user: str | None = None,
    ) -> None:
        argv = shlex.split(path) if isinstance(path, str) else [str(a) for a in path]
        if not argv:
            raise ValueError("path (misc_path) is empty")
        super().__init__(path=tuple(argv), dynamic=dynamic, kill_grace_s=kill_grace_s, user=user)
        self.user = user or None
        self.argv = argv
        self.dynamic = bool(dynamic)
        self.kill_grace_s = float(kill_grace_s)

    async def check(self, target: RealKey, *, timeout_s: float) -> CheckResult:
        """Run the command once within `timeout_s` and report its exit status."""
        env = dict(os.environ)
        env.update(
            GRIDLB_REAL=str(target), GRIDLB_REAL_ADDR=str(target.addr), GRIDLB_REAL_PORT=str(target.port)
        )
        start = time.monotonic()
        name = os.path.basename(self.argv[0])
        # Output goes to a file, not a pipe: a background child holding a pipe open would delay wait().
        with tempfile.TemporaryFile(prefix="gridlb-check-") as out:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *self.argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    start_new_session=True,
                    env=env,
                    user=self.user,
                )
            except (OSError, KeyError) as exc:  # KeyError: no such user
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).strip("'\"")
                return CheckResult(Verdict.DOWN, f"{name}: cannot run: {why}", 0.0)
            try:
                async with asyncio.timeout(timeout_s):
                    status = await proc.wait()
            except TimeoutError:
                await kill_process_group(proc, self.kill_grace_s)
                return CheckResult(
                    Verdict.DOWN,
                    f"{name}: timed out after {timeout_s:g} s; process group killed",
                    time.monotonic() - start,
                )
            except BaseException:  # cancelled: never leave the script behind
                await asyncio.shield(kill_process_group(proc, self.kill_grace_s))
                raise
            out.seek(0)
            output = out.read(OUTPUT_LIMIT)
        latency = time.monotonic() - start
        verdict, weight = verdict_for_status(status, dynamic=self.dynamic)
        if status < 0:
            try:
                what = f"killed by signal {-status} ({signal.Signals(-status).name})"
            except ValueError:
                what = f"killed by signal {-status}"
        else:
            what = f"exit {status}"
        if weight is not None:
            what += f": weight {weight} (misc_dynamic)"
        line = _last_line(output)
        return CheckResult(verdict, f"{name}: {what}" + (f": {line}" if line else ""), latency, weight)
