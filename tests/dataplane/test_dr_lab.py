"""The dr dataplane in `gridlb lab`: 3 Globus real servers, 2 directors with VRRP and connection sync.

Acceptance of issue 11 for the dr dataplane: 60 globus-url-copy transfers through the VIP (downloads
and uploads, stream and -p 4, IPv4 and IPv6) with matching checksums; no server-to-client segment
and no data channel reaches a director; the master killed while 20 transfers run, with zero failed
transfers and new transfers served by the new master.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gridlb.api.client import ControlClient
from gridlb.lab import system
from tests.support import need_root, need_tool

pytestmark = pytest.mark.privileged

SRC = str(Path(__file__).resolve().parents[2] / "src")


def gridlb(*args: str, timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=SRC)
    argv = [sys.executable, "-m", "gridlb", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def lab() -> Iterator[system.LabState]:
    need_root()
    need_tool("nft", "globus-gridftp-server", "globus-url-copy")
    name = f"dr{os.getpid()}"
    up = gridlb(
        "lab", "up", "--name", name, "--dataplane", "dr", "--realservers", "3", "--ipv6", "--net", "93.5"
    )
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield system.load_state(name)
    finally:
        gridlb("lab", "down", "--name", name)


def in_node(
    state: system.LabState, node: str, *argv: str, timeout_s: float = 90
) -> subprocess.CompletedProcess[str]:
    """Run `argv` inside a lab node (as `gridlb lab exec` does, without a Python start per command)."""
    ns = f"{state.options.prefix}-{node}"
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout_s, check=False
    )


def pace(state: system.LabState, rate: str = "100mbit") -> None:
    """Cap each real server's sending rate (tbf), so that transfer sessions last long enough to span
    the changes a test makes, on a quiet machine as on a loaded one."""
    for node in ("rs1", "rs2", "rs3"):
        tbf = ["tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", rate]
        r = in_node(state, node, *tbf, "burst", "256kb", "latency", "200ms", timeout_s=30)
        assert r.returncode == 0, r.stderr


def probe(state: system.LabState, node: str) -> None:
    """Count, at a director: TCP from a VIP (a reply) and TCP to a VIP on another port (a data channel)."""
    rules = "\n".join(
        [
            "table netdev probe {",
            "  chain in {",
            '    type filter hook ingress device "eth0" priority -500; policy accept;',
            f"    ip saddr {state.vip4} meta l4proto tcp counter",
            f"    ip6 saddr {state.vip6} meta l4proto tcp counter",
            f"    ip daddr {state.vip4} tcp dport != 2811 counter",
            f"    ip6 daddr {state.vip6} tcp dport != 2811 counter",
            "  }",
            "}",
        ]
    )
    ns = f"{state.options.prefix}-{node}"
    subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "-f", "-"], input=rules, text=True, check=True, timeout=10
    )


def probe_counts(state: system.LabState, node: str) -> list[int]:
    ns = f"{state.options.prefix}-{node}"
    out = subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "list", "chain", "netdev", "probe", "in"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    return [int(line.split("packets ")[1].split()[0]) for line in out.splitlines() if "packets " in line]


def test_60_globus_transfers_through_the_vip_and_replies_bypass_the_directors(
    lab: system.LabState, tmp_path: Path
) -> None:
    state = lab
    os.chmod(tmp_path, 0o777)
    for node in ("dir1", "dir2"):
        probe(state, node)
    original = sha(Path(state.workdir) / "rs1" / "random-1MiB.bin")
    urls = {4: f"ftp://{state.vip4}:2811", 6: f"ftp://[{state.vip6}]:2811"}
    jobs = []
    for i in range(60):
        fam, parallel, upload = (4, 6)[i % 2], (i // 2) % 2 == 1, (i // 4) % 2 == 1
        opts = [*(["-ipv6"] if fam == 6 else []), *(["-p", "4"] if parallel else [])]
        if upload:
            src, dst = (
                f"file://{state.workdir}/rs1/random-1MiB.bin",
                f"{urls[fam]}{state.url_path(f'upload/u{i}.bin')}",
            )
        else:
            src, dst = f"{urls[fam]}{state.url_path('random-1MiB.bin')}", f"file://{tmp_path}/d{i}.bin"
        jobs.append((i, upload, ["timeout", "60", "globus-url-copy", *opts, src, dst]))

    def run(job: tuple[int, bool, list[str]]) -> tuple[int, bool, int, str]:
        i, upload, argv = job
        r = in_node(state, "client", *argv)
        return i, upload, r.returncode, r.stderr[-300:]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, jobs))
    assert [r for r in results if r[2] != 0] == []
    for i, upload, _, _ in results:
        if upload:
            copies = list(Path(state.workdir).glob(f"rs*/upload/u{i}.bin"))
            assert len(copies) == 1 and sha(copies[0]) == original, i
        else:
            assert sha(tmp_path / f"d{i}.bin") == original, i
    # Nothing from a VIP and no data channel reached either director.
    assert probe_counts(state, "dir1") == [0, 0, 0, 0]
    assert probe_counts(state, "dir2") == [0, 0, 0, 0]
    # The control connections went through dir1: it scheduled them and counted their packets.
    stats = gridlb("ipvsadm", "--socket", f"{state.workdir}/dir1.sock", "-Ln", "--stats", timeout_s=30)
    assert stats.returncode == 0, stats.stderr
    rows = [x.split() for x in stats.stdout.splitlines() if x.startswith("TCP")]
    assert sum(int(r[2]) for r in rows) >= 60 and all(int(r[3]) > 0 for r in rows), stats.stdout


def test_master_killed_while_20_transfers_run(lab: system.LabState, tmp_path: Path) -> None:
    state = lab
    os.chmod(tmp_path, 0o777)
    pace(state)  # 600 MiB at 3 x 100 Mbit/s: the sessions last about 16 s
    original = sha(Path(state.workdir) / "rs1" / "random-1MiB.bin")
    # Each transfer is one globus-url-copy session of 30 files over one control connection: it
    # lasts across the failover, so its control connection must survive it.
    lists = []
    for n in range(20):
        fam = 4 if n % 2 == 0 else 6
        url = f"ftp://{state.vip4}:2811" if fam == 4 else f"ftp://[{state.vip6}]:2811"
        lines = [
            f"{url}{state.url_path('random-1MiB.bin')} file://{tmp_path}/s{n}-{k}.bin" for k in range(30)
        ]
        path = tmp_path / f"list{n}.txt"
        path.write_text("\n".join(lines) + "\n")
        lists.append((fam, path))
    results: dict[int, subprocess.CompletedProcess[str]] = {}

    def session(n: int, fam: int, path: Path) -> None:
        opts = ["-ipv6"] if fam == 6 else []
        argv = ["timeout", "120", "globus-url-copy", "-cd", *opts, "-p", "2", "-f", str(path)]
        results[n] = in_node(state, "client", *argv, timeout_s=150)

    threads = [threading.Thread(target=session, args=(n, fam, path)) for n, (fam, path) in enumerate(lists)]
    for th in threads:
        th.start()
    time.sleep(2.0)  # control connections established and synced to dir2
    director = next(p for p in state.procs if p.node == "dir1" and p.role == "director")
    os.kill(director.pid, 9)
    in_node(state, "dir1", "ip", "link", "set", "eth0", "down", timeout_s=30)  # a dead director
    running = sum(th.is_alive() for th in threads)
    assert running >= 15, f"only {running} sessions still ran at the failover: make them longer"
    deadline = time.monotonic() + 20
    while f"{state.vip4}/" not in in_node(state, "dir2", "ip", "-br", "addr").stdout:
        assert time.monotonic() < deadline, "dir2 did not take the VIP"
        time.sleep(0.1)
    for th in threads:
        th.join(timeout=200)
    failed = {n: r.stderr[-300:] for n, r in results.items() if r.returncode != 0}
    assert len(results) == 20 and failed == {}
    for n in range(20):
        for k in range(30):
            assert sha(tmp_path / f"s{n}-{k}.bin") == original
    # New transfers are served by the new master.
    for fam, url in ((4, f"ftp://{state.vip4}:2811"), (6, f"ftp://[{state.vip6}]:2811")):
        opts = ["-ipv6"] if fam == 6 else []
        r = in_node(
            state,
            "client",
            "timeout",
            "60",
            "globus-url-copy",
            *opts,
            f"{url}{state.url_path('random-1MiB.bin')}",
            f"file://{tmp_path}/after{fam}.bin",
        )
        assert r.returncode == 0, r.stderr
        assert sha(tmp_path / f"after{fam}.bin") == original


def test_drain_remove_and_add_under_load_fail_no_transfer(lab: system.LabState, tmp_path: Path) -> None:
    state = lab
    os.chmod(tmp_path, 0o777)
    pace(state)  # the sessions span the drain, the removal and the additions on any machine
    original = sha(Path(state.workdir) / "rs1" / "random-1MiB.bin")
    url = f"ftp://{state.vip4}:2811{state.url_path('random-1MiB.bin')}"
    results: dict[int, subprocess.CompletedProcess[str]] = {}

    def session(n: int, files: int) -> None:
        path = tmp_path / f"list{n}.txt"
        path.write_text("".join(f"{url} file://{tmp_path}/s{n}-{k}.bin\n" for k in range(files)))
        argv = ["timeout", "120", "globus-url-copy", "-cd", "-p", "2", "-f", str(path)]
        results[n] = in_node(state, "client", *argv, timeout_s=150)

    def ctl(op: str, *args: str) -> None:
        """Tell both directors (each keeps its own table) through the control API, in this process:
        a CLI process would take seconds to start on a machine this loaded."""
        for node in ("dir1", "dir2"):
            with ControlClient(f"{state.workdir}/{node}.sock", timeout_s=30) as client:
                getattr(client, op)(*args)

    rs1, rs2 = state.nodes["rs1"]["ipv4"], state.nodes["rs2"]["ipv4"]
    service = f"{state.vip4}:2811"
    threads = [threading.Thread(target=session, args=(n, 50)) for n in range(8)]
    for th in threads:
        th.start()
    time.sleep(0.7)  # the sessions' control connections are established
    ctl("drain", rs1)
    time.sleep(0.3)
    ctl("remove", rs2, service)
    running = sum(th.is_alive() for th in threads)
    conns = gridlb("ipvsadm", "--socket", f"{state.workdir}/dir1.sock", "-Lnc", timeout_s=30).stdout
    assert any(f"{rs2}:2811" in line for line in conns.splitlines()), "removed rs2 lost its flows"
    # New sessions while rs1 is drained and rs2 removed, then both come back under that load.
    late = [threading.Thread(target=session, args=(100 + n, 20)) for n in range(6)]
    for th in late:
        th.start()
    time.sleep(0.5)
    ctl("add", rs2, service)
    ctl("enable", rs1)
    late_running = sum(th.is_alive() for th in late)
    for th in [*threads, *late]:
        th.join(timeout=200)
    failed = {n: r.stderr[-300:] for n, r in results.items() if r.returncode != 0}
    assert len(results) == 14 and failed == {}
    assert running > 0 and late_running > 0, ("sessions ended before the changes", running, late_running)
    for n, files in [*((n, 50) for n in range(8)), *((100 + n, 20) for n in range(6))]:
        for k in range(files):
            assert sha(tmp_path / f"s{n}-{k}.bin") == original


def test_only_the_master_director_answers_arp_and_nd_for_the_vip(lab: system.LabState) -> None:
    """From the client: the VIP's MAC is the master director's; no backup or real server answers."""
    state = lab
    neighbours = str(Path(__file__).resolve().parents[1] / "realserver" / "neighbours.py")

    def mac_of(node: str) -> str:
        return in_node(state, node, "cat", "/sys/class/net/eth0/address").stdout.strip()

    deadline = time.monotonic() + 20
    masters: list[str] = []
    while time.monotonic() < deadline:
        masters = [
            n
            for n in ("dir1", "dir2")
            if f"{state.vip4}/" in in_node(state, n, "ip", "-br", "addr", "show", "eth0").stdout
        ]
        if len(masters) == 1:
            break
        time.sleep(0.2)
    assert len(masters) == 1, f"directors holding the VIP: {masters}"
    others = {mac_of(n) for n in ("dir1", "dir2", "rs1", "rs2", "rs3") if n != masters[0]}
    for vip in (state.vip4, state.vip6):
        answered = in_node(state, "client", sys.executable, neighbours, "eth0", vip, "3").stdout.split()
        assert set(answered) == {mac_of(masters[0])}, (vip, answered, masters)
        assert not set(answered) & others
