"""The script checker (keepalived MISC_CHECK): exit statuses, misc_dynamic weights, timeouts, cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import pytest

from gridlb.health.base import Verdict, create_checker
from gridlb.health.script import ScriptChecker, ScriptUser, script_problem, verdict_for_status
from gridlb.lab import procfs
from gridlb.table import RealKey
from tests.support import need_root, time_until

RS = RealKey.parse("127.0.0.61:2811")


def wait_gone(pid: int) -> bool:
    return time_until(lambda: not procfs.exists(pid), 5, interval_s=0.02) is not None


def kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize(
    ("status", "dynamic", "verdict", "weight"),
    [
        (0, False, Verdict.UP, None),
        (1, False, Verdict.DOWN, None),
        (2, False, Verdict.DOWN, None),  # without misc_dynamic only 0 is up
        (0, True, Verdict.UP, None),  # keepalived: 0 keeps the configured weight
        (1, True, Verdict.DOWN, None),
        (2, True, Verdict.UP, 0),  # weight 0: drain
        (12, True, Verdict.UP, 10),
        (255, True, Verdict.UP, 253),
        (-9, True, Verdict.DOWN, None),  # killed by a signal
    ],
)
def test_verdict_for_status(status: int, dynamic: bool, verdict: Verdict, weight: int | None) -> None:
    assert verdict_for_status(status, dynamic=dynamic) == (verdict, weight)


@pytest.mark.parametrize(
    ("script", "dynamic", "verdict", "weight", "reason"),
    [
        ("exit 0", False, Verdict.UP, None, "sh: exit 0"),
        ("echo all good; exit 0", False, Verdict.UP, None, "sh: exit 0: all good"),
        ("echo 'disk full' >&2; exit 1", False, Verdict.DOWN, None, "sh: exit 1: disk full"),
        ("exit 7", False, Verdict.DOWN, None, "sh: exit 7"),
        ("exit 7", True, Verdict.UP, 5, "sh: exit 7: weight 5 (misc_dynamic)"),
        ("exit 2", True, Verdict.UP, 0, "sh: exit 2: weight 0 (misc_dynamic)"),
        ("kill -9 $$", False, Verdict.DOWN, None, "sh: killed by signal 9 (SIGKILL)"),
        (
            'echo "$GRIDLB_REAL $GRIDLB_REAL_ADDR $GRIDLB_REAL_PORT"',
            False,
            Verdict.UP,
            None,
            "127.0.0.61:2811 127.0.0.61 2811",
        ),
    ],
)
async def test_exit_status(
    script: str, dynamic: bool, verdict: Verdict, weight: int | None, reason: str
) -> None:
    result = await create_checker("script", path=["sh", "-c", script], dynamic=dynamic).check(RS, timeout_s=5)
    assert (result.verdict, result.weight) == (verdict, weight)
    assert result.reason == reason or result.reason.endswith(reason), result.reason


async def test_path_is_split_like_misc_path() -> None:
    result = await ScriptChecker(path="sh -c 'exit 3'", dynamic=True).check(RS, timeout_s=5)
    assert (result.verdict, result.weight) == (Verdict.UP, 1)


async def test_missing_command() -> None:
    result = await ScriptChecker(path="/nonexistent/glbH-check").check(RS, timeout_s=5)
    assert result.verdict is Verdict.DOWN
    assert result.reason == "glbH-check: refused: /nonexistent/glbH-check: No such file or directory"
    with pytest.raises(ValueError, match="empty"):
        ScriptChecker(path="  ")


async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f"sleep 30 & echo $! > {pids}; echo $$ >> {pids}; sleep 30"
    result = await ScriptChecker(path=["sh", "-c", script]).check(RS, timeout_s=0.5)
    assert result.verdict is Verdict.DOWN
    assert result.reason == "sh: timed out after 0.5 s; process group killed"
    background, shell = (int(p) for p in pids.read_text().split())
    try:
        assert wait_gone(shell) and wait_gone(background)
    finally:
        kill_quietly(background)


async def test_sigterm_ignored_gets_sigkill(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f"trap '' TERM; echo $$ > {pids}; sleep 30 & wait; sleep 30"
    checker = ScriptChecker(path=["sh", "-c", script], kill_grace_s=0.2)
    result = await checker.check(RS, timeout_s=0.3)
    assert result.verdict is Verdict.DOWN and "timed out" in result.reason
    shell = int(pids.read_text())
    try:
        assert wait_gone(shell)
    finally:
        kill_quietly(shell)


async def test_background_child_does_not_hold_the_check(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f"sleep 30 & echo $! > {pids}; echo started; exit 0"
    try:
        result = await ScriptChecker(path=["sh", "-c", script]).check(RS, timeout_s=3)
        assert (result.verdict, result.reason) == (Verdict.UP, "sh: exit 0: started")
    finally:
        kill_quietly(int(pids.read_text()))


async def test_cancelled_check_kills_the_script(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f"echo $$ > {pids}; sleep 30"
    task = asyncio.ensure_future(ScriptChecker(path=["sh", "-c", script]).check(RS, timeout_s=30))
    for _ in range(250):
        if pids.exists() and pids.read_text().strip():
            break
        await asyncio.sleep(0.02)
    shell = int(pids.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    try:
        assert wait_gone(shell)
    finally:
        kill_quietly(shell)


async def test_user_nobody_runs_as_uid_65534() -> None:
    """keepalived MISC_CHECK `user nobody`: the script's real and effective ids are nobody's."""
    need_root()
    script = 'echo "$(id -u) $(id -ru) $(id -g) $USER groups: $(id -G)"'
    result = await ScriptChecker(path=["sh", "-c", script], user="nobody").check(RS, timeout_s=5)
    assert result.verdict is Verdict.UP, result
    ids, groups = result.reason.removeprefix("sh: exit 0: ").split(" groups: ")
    assert ids == "65534 65534 65534 nobody"
    assert "0" not in groups.split()  # root's supplementary groups are dropped


async def test_user_with_group() -> None:
    need_root()
    result = await ScriptChecker(path="id -gn", user="nobody daemon").check(RS, timeout_s=5)
    assert (result.verdict, result.reason) == (Verdict.UP, "id: exit 0: daemon")


def test_unknown_user_or_group_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="user 'glbH-no-such-user' does not exist"):
        ScriptChecker(path="id -un", user="glbH-no-such-user")
    with pytest.raises(ValueError, match="group 'glbH-no-such-group' does not exist"):
        ScriptChecker(path="id -un", user="nobody glbH-no-such-group")
    with pytest.raises(ValueError, match="expected 'USER \\[GROUP\\]'"):
        ScriptChecker(path="id -un", user="a b c")
    assert ScriptUser.parse("65534").name == "nobody"


def _script(directory: Path, mode: int = 0o755) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "check.sh"
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(mode)
    return path


async def test_script_security_as_root(tmp_path: Path) -> None:
    """keepalived enable_script_security: a root script on a path a non-root user can change is refused."""
    need_root()
    root = ScriptUser.parse("root")
    safe = _script(tmp_path / "safe")
    assert script_problem(str(safe), root) is None  # pytest's tmp dirs: root-owned, 0700, /tmp sticky
    world = _script(tmp_path / "world", 0o757)
    assert "check.sh is writable by everyone" in (script_problem(str(world), root) or "")
    open_dir = tmp_path / "opendir"
    _script(open_dir)
    open_dir.chmod(0o777)
    problem = script_problem(str(open_dir / "check.sh"), root)
    assert problem is not None and "opendir is writable by everyone" in problem
    owned = _script(tmp_path / "owned")
    os.chown(owned, 65534, 65534)
    assert "check.sh is owned by uid 65534" in (script_problem(str(owned), root) or "")
    group = _script(tmp_path / "group", 0o775)
    os.chown(group, 0, 65534)
    assert "check.sh is writable by group 65534" in (script_problem(str(group), root) or "")
    # a symbolic link to a safe script is safe; the link's own 0777 means nothing (keepalived's rule)
    link = tmp_path / "safe" / "link.sh"
    link.symlink_to(safe)
    assert script_problem(str(link), root) is None
    # the same unsafe script run as nobody needs no protection (keepalived: only uid/gid 0)
    os.chmod(tmp_path, 0o755)
    assert script_problem(str(world), ScriptUser.parse("nobody")) is None
    # not executable by its user
    noexec = _script(tmp_path / "noexec", 0o744)
    assert "not executable by uid 65534" in (script_problem(str(noexec), ScriptUser.parse("nobody")) or "")
    # and a refused script is never run: the check is down and says why
    result = await ScriptChecker(path=str(world), user="root").check(RS, timeout_s=5)
    assert result.verdict is Verdict.DOWN and "refused" in result.reason and "everyone" in result.reason
