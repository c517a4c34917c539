"""What Linux's /proc/PID/stat says about a process or thread: its state, parent, CPU times, start time.

The command name (field 2) is in parentheses and may hold spaces and ")", so the fields are split after
its last ")". Field numbers below are those of proc(5); `fields()` returns field 3 (state) onwards, so
field N is at index N - 3.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Clock ticks per second (USER_HZ), the unit of the CPU and start times.
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def fields(pid: int, tid: int | None = None) -> list[str] | None:
    """Fields 3 onwards of /proc/PID/stat (or /proc/PID/task/TID/stat), or None once it is gone."""
    path = Path(f"/proc/{pid}/stat") if tid is None else Path(f"/proc/{pid}/task/{tid}/stat")
    try:
        text = path.read_text()
    except OSError:  # gone (ENOENT, or ESRCH while it exits)
        return None
    return text.rsplit(")", 1)[1].split()


def state(pid: int, tid: int | None = None) -> str | None:
    """The scheduler state (R, S, D, T, Z, ...; field 3), or None once it is gone."""
    got = fields(pid, tid)
    return None if got is None else got[0]


def exists(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    return state(pid) not in (None, "Z")


def parent(pid: int) -> int | None:
    """The parent's PID (field 4), or None once it is gone."""
    got = fields(pid)
    return None if got is None else int(got[1])


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds (fields 14, 15) of every thread of `pid`; (0, 0) once it is gone.

    They count in clock ticks (`TICKS_PER_S`), so they are exact to a tick only.
    """
    got = fields(pid)
    return (0.0, 0.0) if got is None else (int(got[11]) / TICKS_PER_S, int(got[12]) / TICKS_PER_S)


def start_time(pid: int) -> int | None:
    """When the process started, in ticks since boot (field 22), or None once it is gone."""
    got = fields(pid)
    return None if got is None else int(got[19])


def thread_states(pid: int) -> list[str]:
    """The state of every thread of `pid` that still runs when read ([] once the process is gone)."""
    try:
        tids = [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return []
    return [s for tid in tids if (s := state(pid, tid)) is not None]
