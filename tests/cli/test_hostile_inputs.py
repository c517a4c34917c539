"""The hostile-input probe as tests: every command that reads a user file, fed what broke it before.

Each input (the 478-byte alias bomb, 10,000-deep YAML, /dev/zero, a non-UTF-8 keepalived.conf, deep
JSON, surrogate escapes) must give exit 2 and exactly one `file:line: error: ...` line, no traceback,
nothing on stdout, and leave an existing output file as it was. Commands run as real `gridlb`
processes; their CPU time is taken from wait4() for that process alone, and their peak memory from
the kernel's high-water mark of the process's own address space (VmHWM, read at exit): wait4's
ru_maxrss would count the test runner's memory too, which the child shares between fork and exec.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.config.test_load_hostile import alias_bomb

#: `gridlb` run as `python -m gridlb`, writing its own VmHWM (KiB) at exit to the file named first.
HWM_WRAPPER = """
import atexit, runpy, sys
out = sys.argv.pop(1)
def hwm():
    with open("/proc/self/status") as status, open(out, "w") as o:
        o.write(next(line for line in status if line.startswith("VmHWM:")).split()[1])
atexit.register(hwm)
sys.argv[0] = "gridlb"
runpy.run_module("gridlb", run_name="__main__", alter_sys=True)
"""
ONE_ERROR = re.compile(r"^(gridlb( ipvsadm)?: )?\S+:\d+: error: \S.*$")

#: The acceptance bounds: within 2 s (of CPU, so that a loaded test machine does not decide) and 200 MB.
MAX_CPU_S = 2.0
MAX_RSS_KB = 200 * 1024


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str
    cpu_s: float
    maxrss_kb: int


def run(args: list[str], tmp: Path, stdin: Path | None = None, timeout_s: float = 30) -> Run:
    """Run `gridlb ARGS` and return its exit code, output and its own rusage (wait4)."""
    out, err = tmp / "stdout", tmp / "stderr"
    with (
        out.open("wb") as o,
        err.open("wb") as e,
        stdin.open("rb") if stdin else open(os.devnull, "rb") as i,
    ):
        hwm = tmp / "vmhwm"
        hwm.unlink(missing_ok=True)
        proc = subprocess.Popen(
            [sys.executable, "-c", HWM_WRAPPER, str(hwm), *args], stdin=i, stdout=o, stderr=e, cwd=tmp
        )
    deadline = time.monotonic() + timeout_s
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            os.kill(proc.pid, signal.SIGKILL)
            os.wait4(proc.pid, 0)
            proc.returncode = -9
            raise AssertionError(f"gridlb {' '.join(args)} still running after {timeout_s} s")
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Run(
        proc.returncode,
        out.read_text(errors="replace"),
        err.read_text(errors="replace"),
        usage.ru_utime + usage.ru_stime,
        int(hwm.read_text()) if hwm.exists() else usage.ru_maxrss,
    )


def assert_one_error(r: Run, *words: str) -> None:
    assert r.code == 2, r
    assert "Traceback" not in r.err, r.err
    lines = r.err.splitlines()
    assert len(lines) == 1 and ONE_ERROR.match(lines[0]), r.err
    assert r.out == ""
    for word in words:
        assert word in lines[0]
    assert r.cpu_s < MAX_CPU_S, f"{r.cpu_s:.2f} s of CPU"
    assert r.maxrss_kb < MAX_RSS_KB, f"{r.maxrss_kb} KB"


def case(args: list[str], words: list[str]) -> object:
    return pytest.param(args, words, id=" ".join(args))


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    (tmp_path / "bomb.yaml").write_text(alias_bomb())
    (tmp_path / "deep.yaml").write_text("x: " + "[" * 10_000 + "]" * 10_000 + "\n")
    (tmp_path / "deep.json").write_text("[" * 10_000 + "]" * 10_000 + "\n")
    (tmp_path / "surrogate.yaml").write_text(
        "keepalived::vrrp_instances:\n"
        "  VI_1:\n"
        "    interface: eth0\n"
        "    state: MASTER\n"
        "    virtual_router_id: 51\n"
        "    priority: 100\n"
        "    virtual_ipaddress: [10.0.0.1]\n"
        'gridlb:\n  director_name: "dir\\udce9ctor1"\n'
    )
    (tmp_path / "latin1.conf").write_bytes(
        b"global_defs {\n    router_id dir\xe9ctor1\n}\n"
        b"vrrp_instance VI_1 {\n    state MASTER\n    interface eth0\n    virtual_router_id 51\n"
        b"    priority 100\n    virtual_ipaddress {\n        10.0.0.1\n    }\n}\n"
    )
    (tmp_path / "latin1.restore").write_bytes(b"-A -t 10.0.0.1:21 -s rr\n-a -t 10.0.0.1:21 -r h\xf4te:21\n")
    return tmp_path


@pytest.mark.parametrize(
    ("args", "words"),
    [
        case(["lint", "bomb.yaml"], ["bomb.yaml:5: error: YAML: aliases stand for more than"]),
        case(["render", "keepalived", "bomb.yaml"], ["bomb.yaml:5:"]),
        case(["director", "run", "bomb.yaml", "--no-vrrp"], ["bomb.yaml:5:"]),
        case(["lint", "deep.yaml"], ["deep.yaml:1: error: YAML: nested deeper than 32 levels"]),
        case(["render", "keepalived", "deep.yaml"], ["nested deeper"]),
        case(["director", "run", "deep.yaml", "--no-vrrp"], ["nested deeper"]),
        case(["lint", "/dev/zero"], ["/dev/zero:1: error: input is larger than the 1 MiB limit"]),
        case(["render", "keepalived", "/dev/zero"], ["1 MiB limit"]),
        case(["director", "run", "/dev/zero", "--no-vrrp"], ["1 MiB limit"]),
        case(["import", "/dev/zero"], ["1 MiB limit"]),
        case(["ipvsadm", "-Ln", "--table", "/dev/zero"], ["8 MiB limit"]),
        case(["import", "latin1.conf"], ["latin1.conf:2: error: byte 0xe9 is not UTF-8 text"]),
        case(["lint", "surrogate.yaml"], ["surrogate.yaml:9: error: gridlb.director_name: holds '\\udce9'"]),
        case(["ipvsadm", "-Ln", "--table", "deep.json"], ["deep.json:1: error:", "nested deeper than 16"]),
    ],
)
def test_one_line_and_exit_2(inputs: Path, args: list[str], words: list[str]) -> None:
    assert_one_error(run(args, inputs), *words)


@pytest.mark.parametrize(
    ("stdin", "words"),
    [
        ("/dev/zero", ["<stdin>:1: error: input is larger than the 8 MiB limit"]),
        ("latin1.restore", ["<stdin>:2: error: not UTF-8 text (byte 0xf4"]),
    ],
)
def test_ipvsadm_restore_input_is_read_as_every_user_file(inputs: Path, stdin: str, words: list[str]) -> None:
    table = inputs / "table.json"
    r = run(["ipvsadm", "-R", "--table", str(table)], inputs, stdin=inputs / stdin)
    assert_one_error(r, *words)
    assert not table.exists()


def test_a_refused_render_leaves_existing_output_as_it_was(inputs: Path) -> None:
    out = inputs / "out"
    out.mkdir()
    kept = {"director1.conf": "running config 1\n", "dirXctor1.conf": "running config 2\n"}
    for name, text in kept.items():
        (out / name).write_text(text)
    r = run(["render", "keepalived", "surrogate.yaml", "--output-dir", str(out)], inputs)
    assert_one_error(r, "not a character")
    r = run(["render", "keepalived", "bomb.yaml", "-o", str(out / "director1.conf")], inputs)
    assert_one_error(r, "aliases stand for more than")
    assert {p.name: p.read_text() for p in out.iterdir()} == kept


def test_a_refused_import_leaves_existing_output_as_it_was(inputs: Path) -> None:
    site = inputs / "site.yaml"
    site.write_text("the site as it was\n")
    r = run(["import", "latin1.conf", "-o", str(site)], inputs)
    assert_one_error(r, "byte 0xe9")
    assert site.read_text() == "the site as it was\n"
    assert sorted(p.name for p in inputs.iterdir() if p.name.startswith(".site.yaml")) == []


def test_render_writes_through_a_renamed_temporary_file(inputs: Path) -> None:
    """A good render replaces the file (new inode, old mode kept) and leaves no temporary file."""
    site = inputs / "site.yaml"
    site.write_text(inputs.joinpath("surrogate.yaml").read_text().replace("dir\\udce9ctor1", "director1"))
    out = inputs / "out"
    out.mkdir()
    old = out / "director1.conf"
    old.write_text("old\n")
    old.chmod(0o640)
    inode = old.stat().st_ino
    r = run(["render", "keepalived", "site.yaml", "--output-dir", str(out)], inputs)
    assert r.code == 0, r.err
    assert "vrrp_instance VI_1 {" in old.read_text()
    assert old.stat().st_ino != inode and old.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in out.iterdir()) == ["director1-peer.conf", "director1.conf"]
