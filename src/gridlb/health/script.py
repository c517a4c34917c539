"""The `script` checker: keepalived's MISC_CHECK, a command whose exit status is the verdict.

Exit 0 is UP and 1 is DOWN. With `dynamic` (keepalived `misc_dynamic`), exit 2..255 is UP with weight
= status - 2 (so 2 drains the server with weight 0); without it any status but 0 is DOWN, as is death by
a signal. The command (option `path`, keepalived `misc_path`) is split like a shell word list but run
without a shell; it runs in its own process group, and when it outlives the check's timeout (keepalived
`misc_timeout`) the whole group gets SIGTERM, then SIGKILL after `kill_grace_s`. The real server is passed
in the environment as GRIDLB_REAL (ADDR:PORT), GRIDLB_REAL_ADDR and GRIDLB_REAL_PORT. The last line the
command printed (stdout and stderr, first 4 KiB) is put in the reason.

Option `user` is keepalived's MISC_CHECK `user USER [GROUP]`: the command runs with that uid, that group
(default: the user's primary group) and the user's supplementary groups; the site's default is
`gridlb.script_user` (keepalived's global `script_user`). None runs it as the director itself. Switching
to another user needs a root director.

keepalived's `enable_script_security` rules apply always (gridlb renders that keyword in every
keepalived.conf): `script_problem` refuses a command that cannot be found, that the user may not
execute, or that runs with uid or gid 0 (or is set-uid/set-gid root) while any part of its path is
owned by a non-root user or writable by one (group-writable with a non-root group, or
world-writable; a directory with the sticky bit, like /tmp, is exempt). Both the path as written and
the path with symbolic links resolved are walked, as keepalived does. The director refuses such a
check at start-up and lint reports it; a check whose script became unsafe later is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import shlex
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

from gridlb.health.base import Checker, CheckResult, Verdict, register_checker
from gridlb.table import RealKey

OUTPUT_LIMIT = 4096


def _last_line(output: bytes) -> str:
    lines = [ln.strip() for ln in output.decode("utf-8", "replace").splitlines() if ln.strip()]
    if not lines:
        return ""
    text = "".join(ch if ch.isprintable() else "?" for ch in lines[-1])
    return text if len(text) <= 160 else text[:157] + "..."


@dataclass(frozen=True, slots=True)
class ScriptUser:
    """Who a script runs as: keepalived's `user USER [GROUP]` resolved to ids."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]  # supplementary groups

    @classmethod
    def parse(cls, text: str) -> ScriptUser:
        """Resolve `USER [GROUP]` (names or numeric ids); ValueError names what does not exist."""
        words = text.split()
        if not 1 <= len(words) <= 2:
            raise ValueError(f"user {text!r}: expected 'USER [GROUP]'")
        try:
            pw = pwd.getpwuid(int(words[0])) if words[0].isdigit() else pwd.getpwnam(words[0])
        except KeyError:
            raise ValueError(f"user {words[0]!r} does not exist on this host") from None
        gid = pw.pw_gid
        if len(words) == 2:
            try:
                gid = (
                    grp.getgrgid(int(words[1])).gr_gid
                    if words[1].isdigit()
                    else grp.getgrnam(words[1]).gr_gid
                )
            except KeyError:
                raise ValueError(f"group {words[1]!r} does not exist on this host") from None
        groups = tuple(g for g in os.getgrouplist(pw.pw_name, gid) if g != gid)
        return cls(pw.pw_name, pw.pw_uid, gid, groups)

    def __str__(self) -> str:
        return f"{self.name} ({self.uid}:{self.gid})"


def _executable_by(st: os.stat_result, uid: int, gid: int) -> bool:
    """keepalived's is_executable(): may `uid`:`gid` execute a file with this mode."""
    mode = st.st_mode
    if uid == 0:
        return bool(mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH))
    if uid == st.st_uid:
        return bool(mode & stat.S_IXUSR)
    return bool(mode & (stat.S_IXGRP if gid == st.st_gid else stat.S_IXOTH))


def _unsafe_part(path: str) -> str | None:
    """Return the first component of `path` (from /) a non-root user may change, or None."""
    parts = [p for p in path.split("/") if p]
    prefixes = ["/"] + ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]
    for i, prefix in enumerate(prefixes):
        try:
            st = os.lstat(prefix)
        except OSError as exc:
            return f"{prefix}: {exc.strerror}"
        last = i == len(prefixes) - 1
        if not last and not (stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            return f"{prefix} is not a directory"  # a link (/bin -> usr/bin) is walked resolved too
        if st.st_uid != 0:
            return f"{prefix} is owned by uid {st.st_uid}"
        if last and not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            return f"{prefix} is not a file"
        # a symbolic link's own mode means nothing; a sticky directory (/tmp) protects its entries
        guarded = (stat.S_ISDIR(st.st_mode) and not st.st_mode & stat.S_ISVTX) or stat.S_ISREG(st.st_mode)
        if guarded and ((st.st_gid != 0 and st.st_mode & stat.S_IWGRP) or st.st_mode & stat.S_IWOTH):
            who = "everyone" if st.st_mode & stat.S_IWOTH else f"group {st.st_gid}"
            return f"{prefix} is writable by {who}"
    return None


def script_problem(argv0: str, user: ScriptUser | None) -> str | None:
    """Return why keepalived's script security would refuse to run `argv0` as `user`, or None."""
    uid, gid = (user.uid, user.gid) if user is not None else (os.geteuid(), os.getegid())
    path = argv0
    if "/" not in argv0:
        found = shutil.which(argv0)
        if found is None:
            return f"{argv0}: not found in PATH"
        path = found
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError as exc:
        return f"{argv0}: {exc.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return f"{argv0}: not a regular file"
    if not _executable_by(st, uid, gid):
        return f"{argv0}: not executable by uid {uid} gid {gid}"
    as_root = (
        uid == 0
        or gid == 0
        or (st.st_uid == 0 and st.st_mode & stat.S_IXUSR and st.st_mode & stat.S_ISUID)
        or (st.st_gid == 0 and st.st_mode & stat.S_IXGRP and st.st_mode & stat.S_ISGID)
    )
    if not as_root:
        return None
    for walked in dict.fromkeys((os.path.abspath(path), real)):
        unsafe = _unsafe_part(walked)
        if unsafe is not None:
            return (
                f"{argv0}: runs as root but {unsafe} (keepalived enable_script_security refuses it; "
                "run it as another user or make its path root-only)"
            )
    return None


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
        self.user: ScriptUser | None = ScriptUser.parse(user) if user else None
        self.argv = argv
        self.dynamic = bool(dynamic)
        self.kill_grace_s = float(kill_grace_s)

    def problem(self) -> str | None:
        """Return why keepalived's script security refuses this command (see the module docstring)."""
        return script_problem(self.argv[0], self.user)

    async def check(self, target: RealKey, *, timeout_s: float) -> CheckResult:
        """Run the command once within `timeout_s` and report its exit status."""
        env = dict(os.environ)
        env.update(
            GRIDLB_REAL=str(target), GRIDLB_REAL_ADDR=str(target.addr), GRIDLB_REAL_PORT=str(target.port)
        )
        start = time.monotonic()
        name = os.path.basename(self.argv[0])
        problem = self.problem()
        if problem is not None:
            return CheckResult(Verdict.DOWN, f"{name}: refused: {problem}", 0.0)
        u = self.user
        switch = u is not None and (u.uid, u.gid) != (os.geteuid(), os.getegid())
        if u is not None and switch:
            env.update(USER=u.name, LOGNAME=u.name, HOME=pwd.getpwuid(u.uid).pw_dir)
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
                    user=u.uid if u is not None and switch else None,
                    group=u.gid if u is not None and switch else None,
                    extra_groups=list(u.groups) if u is not None and switch else None,
                )
            except OSError as exc:
                why = exc.strerror or str(exc)
                if switch and isinstance(exc, PermissionError):
                    why += f" (running as {self.user} needs a root director)"
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
