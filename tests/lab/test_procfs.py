"""Tests of reading /proc/PID/stat: a live process, a zombie, a gone one, threads, an awkward name."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from gridlb.lab import procfs
from tests.support import sleeping_threads, wait_for


def test_this_process_runs_under_its_parent_and_spends_cpu() -> None:
    me = os.getpid()
    assert procfs.state(me) == "R"  # it is reading its own stat
    assert procfs.exists(me)
    assert procfs.parent(me) == os.getppid()
    started = procfs.start_time(me)
    boot_ticks = time.clock_gettime(time.CLOCK_BOOTTIME) * procfs.TICKS_PER_S
    assert started is not None and 0 < started <= boot_ticks
    before = sum(procfs.cpu_times(me))
    end = time.process_time() + 0.05
    while time.process_time() < end:
        pass
    assert sum(procfs.cpu_times(me)) > before


def test_a_zombie_does_not_exist_and_a_reaped_child_is_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    wait_for(lambda: procfs.state(child.pid) == "Z", 10, "the child to exit (a zombie: not yet reaped)")
    assert not procfs.exists(child.pid)
    assert procfs.parent(child.pid) == os.getpid()
    child.wait()
    assert procfs.fields(child.pid) is None
    assert procfs.state(child.pid) is None and procfs.parent(child.pid) is None
    assert procfs.start_time(child.pid) is None
    assert procfs.cpu_times(child.pid) == (0.0, 0.0)
    assert procfs.thread_states(child.pid) == []


def test_every_thread_is_listed() -> None:
    with sleeping_threads(4) as pid:
        states = procfs.thread_states(pid)
        assert len(states) == 4 and set(states) <= {"S", "R"}, states
        tid = next(t for t in map(int, os.listdir(f"/proc/{pid}/task")) if t != pid)
        assert procfs.state(pid, tid) in ("S", "R")


def test_a_command_name_with_a_parenthesis_and_spaces(tmp_path: Path) -> None:
    # The name ends at the last ")" of the line, not the first: "x) 1 (2" would shift every field.
    odd = tmp_path / "x) 1 (2"
    odd.symlink_to(sys.executable)
    child = subprocess.Popen([str(odd), "-c", "import time; time.sleep(60)"])
    try:
        stat = Path(f"/proc/{child.pid}/stat")
        wait_for(lambda: "(x) 1 (2)" in stat.read_text(), 10, "the child to exec under its odd name")
        assert procfs.parent(child.pid) == os.getpid()
        assert procfs.state(child.pid) in ("S", "R")
    finally:
        child.kill()
        child.wait(10)
