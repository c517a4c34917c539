"""The scale-out lab as acceptance: 3 directors announcing the VIP over BGP to a BIRD router with ECMP.

Everything is real: BIRD on the router and on each director, Linux multipath routes with the L4
hash through a resilient next-hop group, `gridlb director run` with the proxy dataplane and `mh`,
Globus' globus-gridftp-server on 4 real servers, connections and globus-url-copy transfers from a
client behind the router. One lab is built for the module (about 15 s) and removed at the end; the
tests run in file order, the destructive ones (kill, silence, stop) last. Withdrawal times are
printed (`-s` shows them).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gridlb.api.client import ControlClient
from gridlb.lab import scaleout, system
from tests.support import need_root, need_tool, time_until

pytestmark = pytest.mark.privileged

DIRECTORS = 3
REALSERVERS = 4
CONNECTS = 90  # connections per burst (bounded)

CONNECT_SCRIPT = """
import socket, sys
vip, n = sys.argv[1], int(sys.argv[2])
ok = 0
for _ in range(n):
    with socket.create_connection((vip, 2811), timeout=5) as s:
        s.settimeout(5)
        if s.recv(64).startswith(b"220"):
            ok += 1
print(ok)
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[system.LabState]:
    need_root()
    need_tool("bird", "birdc", "ip", "globus-url-copy", "globus-gridftp-server")
    options = system.LabOptions(
        name=f"so{os.getpid() % 100000}",
        realservers=REALSERVERS,
        gridftp="globus",
        directors=DIRECTORS,
        net_a=98,
        net_b=(os.getpid() % 120) * 2,
        scaleout=True,
    )
    state = system.up(options, timeout_s=120)
    try:
        yield state
    finally:
        system.down(state)


def in_node(state: system.LabState, node: str, *argv: str, timeout_s: float = 60) -> str:
    proc = subprocess.run(
        system.exec_argv(state, node, list(argv)),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert proc.returncode == 0, f"{node}: {' '.join(argv)}: {proc.stderr.strip()}"
    return proc.stdout


def status(state: system.LabState, node: str) -> dict[str, Any]:
    with ControlClient(f"{state.workdir}/{node}.sock", timeout_s=10) as client:
        return client.status()


def conns_by_director(state: system.LabState) -> dict[str, int]:
    return {
        f"dir{i + 1}": status(state, f"dir{i + 1}")["services"][0]["connections"] for i in range(DIRECTORS)
    }


def conns_by_real(state: system.LabState, directors: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in directors:
        for r in status(state, d)["services"][0]["reals"]:
            out[r["real"]] = out.get(r["real"], 0) + r["connections"]
    return out


def connect_burst(state: system.LabState, n: int = CONNECTS) -> int:
    return int(in_node(state, "remote", sys.executable, "-c", CONNECT_SCRIPT, state.vip4, str(n)))


def director_addr(state: system.LabState, node: str) -> str:
    return state.nodes[node]["ipv4"]


def test_every_director_announces_and_the_router_installs_ecmp(lab: system.LabState) -> None:
    group = in_node(lab, "router", "ip", "nexthop", "show", "id", "100")
    assert "type resilient" in group and group.count("/") == DIRECTORS - 1
    rib = scaleout.rib(lab)
    for i in range(DIRECTORS):
        assert f"[dir{i + 1} " in rib and f"via {director_addr(lab, f'dir{i + 1}')}" in rib
    assert sorted(scaleout.nexthops(lab)) == sorted(
        director_addr(lab, f"dir{i + 1}") for i in range(DIRECTORS)
    )
    so = status(lab, "dir1")["scaleout"]
    reason = f"TCP {lab.vip4}:2811: {REALSERVERS} real servers up"
    assert so["vips"] == [{"vip": lab.vip4, "announced": True, "reason": reason}]
    assert so["peers"][0]["info"].startswith("Established")


def test_flows_from_many_source_ports_spread_over_all_directors_and_real_servers(
    lab: system.LabState,
) -> None:
    before_d, before_r = conns_by_director(lab), conns_by_real(lab, list(conns_by_director(lab)))
    assert connect_burst(lab) == CONNECTS
    after_d = conns_by_director(lab)
    after_r = conns_by_real(lab, list(after_d))
    per_director = {d: after_d[d] - before_d[d] for d in after_d}
    per_real = {r: after_r[r] - before_r.get(r, 0) for r in after_r}
    print(f"\nflows per director: {per_director}; per real server: {per_real}")
    assert sum(per_director.values()) == CONNECTS
    assert all(n > 0 for n in per_director.values()), per_director
    assert len(per_real) == REALSERVERS and all(n > 0 for n in per_real.values()), per_real


FROM_SCRIPT = """
import socket, sys
vip, sources = sys.argv[1], sys.argv[2].split(",")
for src in sources:
    with socket.create_connection((vip, 2811), timeout=5, source_address=(src, 0)) as s:
        s.settimeout(5)
        print(src, s.getsockname()[0], s.recv(64).startswith(b"220"))
"""


def test_extra_client_addresses_reach_the_vip_through_the_router(lab: system.LabState) -> None:
    added = scaleout.add_client_addresses(lab, 2, 120)
    net = scaleout.remote_net(lab.options)
    assert added == [str(net.network_address + 120), str(net.network_address + 121)]
    out = in_node(lab, "remote", sys.executable, "-c", FROM_SCRIPT, lab.vip4, ",".join(added))
    assert out.splitlines() == [f"{a} {a} True" for a in added]
    with pytest.raises(scaleout.LabStateError, match="outside"):
        scaleout.add_client_addresses(lab, 1, 255)


def test_bucket_shares_are_even_only_when_every_member_has_its_share() -> None:
    assert scaleout.bucket_shares_even([1, 2, 3], [1] * 43 + [2] * 42 + [3] * 43)
    assert not scaleout.bucket_shares_even([1, 2, 3], [1] * 64 + [2] * 21 + [3] * 43)
    assert not scaleout.bucket_shares_even([1, 2], [1] * 64 + [3] * 64)  # a bucket on a former member
    assert not scaleout.bucket_shares_even([], [])


def test_gridftp_transfers_through_the_router_match_checksums(lab: system.LabState, tmp_path: Path) -> None:
    want = hashlib.sha256(Path(lab.workdir, "rs1", "random-1MiB.bin").read_bytes()).hexdigest()
    for i in range(6):
        out = tmp_path / f"r{i}.bin"
        url = f"ftp://{lab.vip4}:2811{lab.url_path('random-1MiB.bin')}"
        in_node(lab, "remote", "globus-url-copy", url, f"file://{out}")
        assert hashlib.sha256(out.read_bytes()).hexdigest() == want


def test_drain_withdraws_and_no_new_flow_reaches_the_drained_director(lab: system.LabState) -> None:
    sock = f"{lab.workdir}/dir2.sock"
    gridlb = [sys.executable, "-m", "gridlb"]
    out = in_node(lab, "dir2", *gridlb, "director", "drain", "--socket", sock)
    assert out.strip() == f"director drained: withdrew {lab.vip4}"
    took = time_until(lambda: director_addr(lab, "dir2") not in scaleout.nexthops(lab), 5)
    assert took is not None
    assert "[dir2 " not in scaleout.rib(lab)
    print(f"\ndrain: gone from the router's FIB {took * 1000:.0f} ms after the reply")
    before = conns_by_director(lab)
    assert connect_burst(lab, 60) == 60
    after = conns_by_director(lab)
    assert after["dir2"] == before["dir2"]  # no new flow reached it
    assert after["dir1"] > before["dir1"] and after["dir3"] > before["dir3"]
    assert status(lab, "dir2")["scaleout"]["drained"] is True
    out = in_node(lab, "dir2", *gridlb, "director", "undrain", "--socket", sock)
    assert out.strip() == f"director undrained: announcing {lab.vip4}"
    assert time_until(lambda: director_addr(lab, "dir2") in scaleout.nexthops(lab), 5) is not None
    assert time_until(lambda: scaleout.balanced(lab), 30) is not None  # buckets back to dir2


PORTS = list(range(62000, 62150))  # above the ephemeral range


def only_through(state: system.LabState, node: str | None) -> None:
    """Let the router use `node` alone (None: every director), by drain/undrain."""
    for i in range(DIRECTORS):
        name = f"dir{i + 1}"
        with ControlClient(f"{state.workdir}/{name}.sock", timeout_s=20) as client:
            if node is None or name == node:
                client.director_undrain()
            else:
                client.director_drain()
    want = sorted(
        director_addr(state, f"dir{i + 1}") for i in range(DIRECTORS) if node in (None, f"dir{i + 1}")
    )
    assert time_until(lambda: sorted(scaleout.nexthops(state)) == want, 10) is not None


def test_every_director_sends_a_flow_to_the_same_real_server(lab: system.LabState) -> None:
    maps = []
    for i in range(DIRECTORS):
        only_through(lab, f"dir{i + 1}")
        maps.append(scaleout.flow_map(lab, PORTS, sys.executable))
    only_through(lab, None)
    assert all(len(m) == len(PORTS) for m in maps)
    assert maps[0] == maps[1] == maps[2]
    assert len(set(maps[0].values())) == REALSERVERS


def test_a_real_server_change_moves_about_the_flows_it_must(lab: system.LabState) -> None:
    rs4 = f"{lab.nodes['rs4']['ipv4']}:2811"
    before = scaleout.flow_map(lab, PORTS, sys.executable)
    for i in range(DIRECTORS):
        with ControlClient(f"{lab.workdir}/dir{i + 1}.sock", timeout_s=20) as client:
            client.drain(rs4)
    try:
        after = scaleout.flow_map(lab, PORTS, sys.executable)
    finally:
        for i in range(DIRECTORS):
            with ControlClient(f"{lab.workdir}/dir{i + 1}.sock", timeout_s=20) as client:
                client.enable(rs4)
    assert len(before) == len(after) == len(PORTS)
    minimum = sum(before[p] == rs4 for p in PORTS) / len(PORTS)  # the flows that were on rs4
    moved = sum(before[p] != after[p] for p in PORTS) / len(PORTS)
    print(f"\nrs4 out: {moved * 100:.1f} % of {len(PORTS)} flows moved, minimum {minimum * 100:.1f} %")
    assert rs4 not in after.values()
    # every flow of rs4 moves; of the others only those on table entries the rebuild changed (the
    # pure tests bound that excess at 1.5 % of the table; 4 flows is 2.7 % of 150 for sampling)
    assert minimum <= moved <= minimum + 4 / len(PORTS)


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def test_a_speaker_that_dies_is_started_again_and_announces_again(lab: system.LabState) -> None:
    director = next(p for p in lab.procs if p.node == "dir1" and p.role == "director")
    birds = [c for c in children(director.pid) if Path(f"/proc/{c}/comm").read_text().strip() == "bird"]
    assert len(birds) == 1
    os.kill(birds[0], signal.SIGKILL)
    gone = time_until(lambda: director_addr(lab, "dir1") not in scaleout.nexthops(lab), 5)
    assert gone is not None
    back = time_until(lambda: director_addr(lab, "dir1") in scaleout.nexthops(lab), 20)
    assert back is not None
    print(f"\nspeaker killed: route gone after {gone * 1000:.0f} ms, back {back:.1f} s later")
    assert status(lab, "dir1")["scaleout"]["restarts"] == 1
    assert "scale-out: bird is not running; starting it again" in Path(director.log).read_text()


def test_director_killed_withdraws_at_once_and_a_silent_one_within_the_hold_time(
    lab: system.LabState,
) -> None:
    assert time_until(lambda: scaleout.balanced(lab), 30) is not None  # after the undrain and restart above
    proc = next(p for p in lab.procs if p.node == "dir3" and p.role == "director")
    with scaleout.HeldFlows(lab, PORTS, sys.executable) as flows:
        places = flows.places()
        assert len(places) == len(PORTS) and flows.probe() == []
        os.kill(proc.pid, signal.SIGKILL)  # its BIRD dies with it (PR_SET_PDEATHSIG) and closes the session
        killed = time_until(
            lambda: director_addr(lab, "dir3") not in scaleout.nexthops(lab), scaleout.HOLD_TIME_S + 2
        )
        assert killed is not None
        lost = set(flows.probe())
    on_dir3 = {p for p, (d, _) in places.items() if d == "dir3"}
    survivors_lost = lost - on_dir3
    print(
        f"\nkill dir3: {len(on_dir3)} of {len(PORTS)} held connections were on it; after: "
        f"{len(lost & on_dir3)} of those and {len(survivors_lost)} of the others' failed"
    )
    assert on_dir3 and lost >= on_dir3  # the proxy terminated them: another director resets them
    assert survivors_lost == set()  # the resilient group left the other directors' flows in place
    # new connections from the same ports reach the same real servers through dir1 and dir2 (mh)
    after = scaleout.flow_map(lab, PORTS, sys.executable)
    assert all(places[p][1] == after[p] for p in PORTS)
    assert connect_burst(lab, 30) == 30  # the others serve every flow
    # a director that goes silent (its link down: no FIN, no keepalive) is dropped by the hold timer
    in_node(lab, "dir1", "ip", "link", "set", "eth0", "down")
    try:
        silent = time_until(
            lambda: director_addr(lab, "dir1") not in scaleout.nexthops(lab), scaleout.HOLD_TIME_S + 2
        )
    finally:
        in_node(lab, "dir1", "ip", "link", "set", "eth0", "up")
    # the router's hold timer runs from the last keepalive it got; 1 s more for its FIB on a loaded host
    assert silent is not None and silent <= scaleout.HOLD_TIME_S + 1.0
    print(
        f"\nwithdrawn: killed director after {killed * 1000:.0f} ms; silent director after "
        f"{silent:.2f} s (hold time {scaleout.HOLD_TIME_S} s)"
    )
    assert connect_burst(lab, 30) == 30
    # it comes back once its link does (BIRD reconnects)
    assert time_until(lambda: director_addr(lab, "dir1") in scaleout.nexthops(lab), 20) is not None


def test_clean_stop_withdraws_before_the_director_exits(lab: system.LabState) -> None:
    proc = next(p for p in lab.procs if p.node == "dir2" and p.role == "director")
    os.kill(proc.pid, signal.SIGTERM)
    assert time_until(lambda: not system.alive(proc), 20) is not None
    assert director_addr(lab, "dir2") not in scaleout.nexthops(lab)
    log = Path(proc.log).read_text()
    assert f"scale-out: withdraw {lab.vip4} (director shutting down)" in log
    assert (
        log.index("scale-out: withdraw")
        < log.index("scale-out: bird stopped")
        < log.index("director stopped")
    )
    assert scaleout.nexthops(lab) == [director_addr(lab, "dir1")]  # dir3 killed, dir2 stopped
