"""`gridlb lab up|status|exec|down` as a product: real transfers through the VIP, then nothing left behind."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridlb.lab import system
from gridlb.lab.netns import ns_pids
from tests.support import need_root, need_tool

SRC = str(Path(__file__).resolve().parents[2] / "src")


def gridlb(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=SRC)
    argv = [sys.executable, "-m", "gridlb", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)


def lab_exec(name: str, node: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return gridlb("lab", "exec", "--name", name, node, "--", *argv)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_unknown_dataplane_is_refused() -> None:
    out = gridlb("lab", "up", "--dataplane", "nosuch")
    assert out.returncode == 2
    assert out.stderr.startswith("gridlb lab: error: --dataplane nosuch: no such dataplane; use proxy or dr")


def test_help_documents_every_action() -> None:
    out = gridlb("lab", "--help").stdout
    for word in ("up", "down", "status", "exec", "--realservers", "/run/gridlb-lab", "globus-url-copy"):
        assert word in out
    assert "--ipv6" in gridlb("lab", "up", "--help").stdout


def _assert_gone(state: system.LabState) -> None:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [line for line in listed.splitlines() if line.startswith(state.options.prefix + "-")]
    assert not any(system.alive(p) for p in state.procs)
    assert not Path(state.workdir).exists() and not system.state_path(state.options.name).exists()
    assert not any((Path("/etc/netns") / ns).exists() for ns in state.namespaces)
    assert state.workdir not in Path("/proc/mounts").read_text()


@pytest.mark.privileged
def test_lab_globus_transfers_through_the_vip_v4_and_v6_then_down_leaves_nothing(tmp_path: Path) -> None:
    need_root()
    need_tool("globus-gridftp-server", "globus-url-copy")
    name = f"g{os.getpid()}"
    up = gridlb("lab", "up", "--name", name, "--realservers", "2", "--ipv6", "--net", "91.7")
    try:
        assert up.returncode == 0, up.stderr
        state = system.load_state(name)
        assert (state.vip4, state.vip6) == ("10.91.7.100", "fd00:5b:7::100")
        vips = [line for line in up.stdout.splitlines() if line.startswith("VIP ")]
        assert vips == [f"VIP {state.vip4}: held by dir1", f"VIP {state.vip6}: held by dir1"]
        status = gridlb("lab", "status", "--name", name)
        assert status.returncode == 0 and status.stdout == up.stdout
        os.chmod(tmp_path, 0o777)

        def copy(*args: str) -> None:
            argv = ["lab", "exec", "--name", name, "client", "--", "timeout", "60", "globus-url-copy", *args]
            out = gridlb(*argv)
            assert out.returncode == 0, out.stdout + out.stderr

        path = state.url_path("random-1MiB.bin")
        copy(f"ftp://{state.vip4}:2811{path}", f"file://{tmp_path}/p1.bin")
        copy("-p", "4", f"ftp://{state.vip4}:2811{path}", f"file://{tmp_path}/p4.bin")
        copy("-ipv6", f"ftp://[{state.vip6}]:2811{path}", f"file://{tmp_path}/v6.bin")
        original = sha(Path(state.workdir) / "rs1" / "random-1MiB.bin")
        for got in ("p1.bin", "p4.bin", "v6.bin"):
            assert sha(tmp_path / got) == original
        copy(
            "-p",
            "4",
            f"file://{tmp_path}/p4.bin",
            f"ftp://{state.vip4}:2811{state.url_path('upload/up4.bin')}",
        )
        copy(
            "-ipv6",
            f"file://{tmp_path}/p1.bin",
            f"ftp://[{state.vip6}]:2811{state.url_path('upload/up6.bin')}",
        )
        uploads = sorted(Path(state.workdir).glob("rs*/upload/*.bin"))
        assert [p.name for p in uploads] == ["up4.bin", "up6.bin"] or sorted(p.name for p in uploads) == [
            "up4.bin",
            "up6.bin",
        ]
        assert all(sha(p) == original for p in uploads)
        # every real server serves its own files on one path: both are reached through the VIP
        served = set()
        for i in range(8):
            copy(f"ftp://{state.vip4}:2811{state.url_path('hello.txt')}", f"file://{tmp_path}/h{i}.txt")
            served.add((tmp_path / f"h{i}.txt").read_text())
        assert served == {"served by rs1\n", "served by rs2\n"}
        # the real servers were set up by `gridlb realserver apply`: VIPs on lo
        lo = gridlb(
            "lab", "exec", "--name", name, "rs1", "--", "ip", "-br", "addr", "show", "dev", "lo"
        ).stdout
        assert f"{state.vip4}/32" in lo and f"{state.vip6}/128" in lo
        rs1 = state.nodes["rs1"]
        site = f"{state.workdir}/realserver.yaml"
        addrs = [f"--address={rs1['ipv4']}", f"--address={rs1['ipv6']}"]
        check = gridlb("lab", "exec", "--name", name, "rs1", "--", sys.executable, "-m", "gridlb",
                       "realserver", "check", site, *addrs)  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr
        assert check.stdout.splitlines() == [
            f"ok: GridFTP on {state.vip4}:2811 advertises {rs1['ipv4']} for data connections",
            f"ok: GridFTP on [{state.vip6}]:2811 advertises {rs1['ipv6']} for data connections",
            f"ok: 2 VIP(s) set up ({state.vip4}, {state.vip6})",
        ]
    finally:
        down = gridlb("lab", "down", "--name", name)
    assert down.returncode == 0, down.stderr
    assert down.stdout.endswith(f"lab {name} removed\n")
    _assert_gone(state)
    assert gridlb("lab", "status", "--name", name).returncode == 2


@pytest.mark.privileged
@pytest.mark.parametrize("dataplane", ["proxy", "dr"])
def test_lab_with_gridlb_servers_and_one_director(tmp_path: Path, dataplane: str) -> None:
    need_root()
    need_tool("globus-url-copy")
    name = f"e{dataplane}{os.getpid()}"
    one = ["--realservers", "1", "--gridftp", "gridlb", "--directors", "1", "--dataplane", dataplane]
    up = gridlb("lab", "up", "--name", name, *one)
    try:
        assert up.returncode == 0, up.stderr
        assert up.stderr.splitlines() == [  # not a terminal: one plain line per step
            f"lab {name}: creating namespaces glbLab-{name}-* and the bridge",
            f"lab {name}: rs1: gridlb realserver apply (VIPs on lo, ARP suppressed)",
            f"lab {name}: starting the GridFTP servers (gridlb)",
            f"lab {name}: starting 1 director(s); waiting for dir1 to hold the VIPs",
        ]
        state = system.load_state(name)
        assert sorted(state.nodes) == ["client", "dir1", "rs1"]
        os.chmod(tmp_path, 0o777)
        argv = ["lab", "exec", "--name", name, "client", "--", "timeout", "60", "globus-url-copy"]
        out = gridlb(*argv, f"ftp://{state.vip4}:2811/hello.txt", f"file://{tmp_path}/h.txt")
        assert out.returncode == 0, out.stderr
        assert (tmp_path / "h.txt").read_text() == "served by rs1\n"
        again = gridlb("lab", "up", "--name", name)
        assert again.returncode == 2 and "exists already" in again.stderr
        # a dead process shows in status
        proc = next(p for p in state.procs if p.role == "gridftp4")
        os.kill(proc.pid, 9)
        st = gridlb("lab", "status", "--name", name)
        assert st.returncode == 1 and f"pid {proc.pid}" in st.stdout and "NOT RUNNING" in st.stdout
        assert json.loads(system.state_path(name).read_text())["options"]["gridftp"] == "gridlb"
    finally:
        down = gridlb("lab", "down", "--name", name)
    assert down.returncode == 0, down.stderr
    _assert_gone(state)


def test_no_realservers_needs_a_start_without_directors() -> None:
    out = gridlb("lab", "up", "--realservers", "0")
    assert out.returncode == 2
    assert out.stderr == (
        "gridlb lab: error: --realservers 0: the directors need a real server; "
        "add --start realservers or --start none\n"
    )


@contextlib.contextmanager
def lab_up(name: str, *args: str) -> Iterator[tuple[subprocess.CompletedProcess[str], system.LabState]]:
    """`gridlb lab up --name NAME ARGS...` (which must work), then `down`, which must leave nothing."""
    up = gridlb("lab", "up", "--name", name, *args)
    assert up.returncode == 0, up.stderr
    state = system.load_state(name)
    try:
        yield up, state
    finally:
        down = gridlb("lab", "down", "--name", name)
    assert down.returncode == 0, down.stderr
    _assert_gone(state)


@pytest.mark.privileged
def test_start_realservers_leaves_the_directors_empty(tmp_path: Path) -> None:
    need_root()
    name = f"r{os.getpid()}"
    start = ["--realservers", "1", "--gridftp", "gridlb", "--start", "realservers"]
    with lab_up(name, *start) as (up, state):
        assert up.stdout.splitlines()[0].endswith("; started: the real servers only")
        assert f"VIP {state.vip4}: held by no director" in up.stdout
        status = gridlb("lab", "status", "--name", name)
        assert status.returncode == 0 and status.stdout == up.stdout  # no director is not a fault here
        assert [(p.node, p.role) for p in state.procs] == [("rs1", "gridftp4")]
        for node in ("dir1", "dir2"):
            assert not ns_pids(state.ns_of(node))
        # the real server is set up (VIP on lo) and serves from its own address
        lo = lab_exec(name, "rs1", "ip", "-br", "addr", "show", "dev", "lo").stdout
        assert f"{state.vip4}/32" in lo
        os.chmod(tmp_path, 0o777)
        url = f"ftp://{state.nodes['rs1']['ipv4']}:2811/hello.txt"
        get = [sys.executable, "-m", "gridlb", "gridftp-client", "get", url, str(tmp_path / "h.txt")]
        out = lab_exec(name, "client", "env", f"PYTHONPATH={SRC}", *get)
        assert out.returncode == 0, out.stdout + out.stderr
        assert (tmp_path / "h.txt").read_text() == "served by rs1\n"


@pytest.mark.privileged
def test_start_none_builds_bare_namespaces() -> None:
    need_root()
    name = f"n{os.getpid()}"
    with lab_up(name, "--realservers", "1", "--start", "none") as (up, state):
        assert sorted(state.nodes) == ["client", "dir1", "dir2", "rs1"] and state.procs == []
        assert up.stdout.splitlines()[0].endswith("; started: nothing")
        assert all(not ns_pids(ns) for ns in state.namespaces)
        # the real server is not set up: no VIP on lo, ARP not suppressed
        lo = lab_exec(name, "rs1", "ip", "-br", "addr", "show", "dev", "lo").stdout
        assert str(state.vip4) not in lo
        arp = lab_exec(name, "rs1", "sysctl", "-n", "net.ipv4.conf.all.arp_ignore")
        assert arp.stdout.strip() == "0"
        assert gridlb("lab", "status", "--name", name).returncode == 0


@pytest.mark.privileged
def test_running_removes_the_lab_and_the_callers_processes_also_on_failure() -> None:
    need_root()
    name = f"c{os.getpid()}"
    options = system.LabOptions(name=name, realservers=1, directors=1, start="none")
    with pytest.raises(RuntimeError, match="the test failed"), system.running(options) as lab:
        state = system.state_of(lab)
        assert sorted(lab.nodes) == ["client", "dir1", "rs1"]
        tracked = lab.spawn("rs1", ["sleep", "300"])
        lab.exec("dir1", ["sh", "-c", "sleep 300 >/dev/null 2>&1 &"])  # not tracked by anyone
        assert ns_pids(lab.node("dir1").ns)
        raise RuntimeError("the test failed")
    assert tracked.poll() is not None
    _assert_gone(state)
