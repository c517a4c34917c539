"""Scale-out with the dr dataplane: 3 directors behind the BIRD router, Globus real servers, transfers.

The directors forward frames (nftables netdev ingress, MAC rewrite) and keep per-flow state; the
real servers answer the client straight through the router (direct routing). In GridFTP the
client-to-server half of the control connection is all that crosses a director, so a transfer
whose director dies or is drained finishes: its data connections go straight to the real server,
and the replies never passed the director. The router's route is a resilient next-hop group.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
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
BIG = 8 << 20  # bytes per transfer under load
TRANSFERS = 30
PORTS = list(range(62000, 62120))


@pytest.fixture(scope="module")
def lab() -> Iterator[system.LabState]:
    need_root()
    need_tool("bird", "birdc", "ip", "tc", "nft", "globus-url-copy", "globus-gridftp-server")
    options = system.LabOptions(
        name=f"sd{os.getpid() % 100000}",
        realservers=REALSERVERS,
        gridftp="globus",
        directors=DIRECTORS,
        dataplane="dr",
        net_a=96,
        net_b=(os.getpid() % 120) * 2,
        scaleout=True,
    )
    state = system.up(options, timeout_s=120)
    try:
        data = os.urandom(BIG)
        for i in range(REALSERVERS):
            Path(state.workdir, f"rs{i + 1}", "big.bin").write_bytes(data)
        yield state
    finally:
        system.down(state)


def sock(state: system.LabState, node: str) -> str:
    return f"{state.workdir}/{node}.sock"


def each_director(state: system.LabState, method: str, *args: Any) -> None:
    for i in range(DIRECTORS):
        path = Path(sock(state, f"dir{i + 1}"))
        if path.exists():
            with ControlClient(str(path), timeout_s=20) as client:
                getattr(client, method)(*args)


def conns(state: system.LabState) -> dict[str, int]:
    out = {}
    for i in range(DIRECTORS):
        with ControlClient(sock(state, f"dir{i + 1}"), timeout_s=20) as client:
            out[f"dir{i + 1}"] = client.snapshot().services[0].connections
    return out


def adopted(state: system.LabState, node: str) -> int:
    """Flows the director in `node` met mid-connection and bound by the Maglev table (its status)."""
    with ControlClient(sock(state, node), timeout_s=20) as client:
        return client.snapshot().counters.dataplane_events.get("midflow_adopted", 0)


def addr(state: system.LabState, node: str) -> str:
    return state.nodes[node]["ipv4"]


def start_transfers(state: system.LabState, out: Path, n: int, name: str) -> list[subprocess.Popen[bytes]]:
    url = f"ftp://{state.vip4}:2811{state.url_path(name)}"
    return [
        subprocess.Popen(
            system.exec_argv(state, "remote", ["globus-url-copy", url, f"file://{out}/t{i}.bin"]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i in range(n)
    ]


def finish(procs: list[subprocess.Popen[bytes]], out: Path, want: str) -> tuple[int, int]:
    """Return (failed transfers, files with a wrong checksum)."""
    failed = 0
    for p in procs:
        try:
            failed += p.wait(timeout=180) != 0
        except subprocess.TimeoutExpired:
            p.kill()
            failed += 1
    bad = sum(hashlib.sha256(f.read_bytes()).hexdigest() != want for f in out.glob("t*.bin"))
    for f in out.glob("t*.bin"):
        f.unlink()
    return failed, bad


class Throttle:
    """The client network at `rate` (tbf on the router's eth1), so that transfers last a while."""

    def __init__(self, state: system.LabState, rate: str = "200mbit") -> None:
        self.argv = system.exec_argv(state, "router", ["tc", "qdisc"])
        subprocess.run([*self.argv, "add", "dev", "eth1", "root", "tbf", "rate", rate, "burst", "64kb",
                        "latency", "400ms"], check=True)  # fmt: skip

    def __enter__(self) -> Throttle:
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run([*self.argv, "del", "dev", "eth1", "root"], check=False)


def big_sha(state: system.LabState) -> str:
    return hashlib.sha256(Path(state.workdir, "rs1", "big.bin").read_bytes()).hexdigest()


def test_transfers_through_three_dr_directors_spread_and_match(lab: system.LabState, tmp_path: Path) -> None:
    assert sorted(scaleout.nexthops(lab)) == sorted(addr(lab, f"dir{i + 1}") for i in range(DIRECTORS))
    before = conns(lab)
    procs = start_transfers(lab, tmp_path, 12, "random-1MiB.bin")
    want = hashlib.sha256(Path(lab.workdir, "rs1", "random-1MiB.bin").read_bytes()).hexdigest()
    assert finish(procs, tmp_path, want) == (0, 0)
    after = conns(lab)
    per = {d: after[d] - before[d] for d in after}
    print(f"\ntransfers per director: {per}")
    assert sum(per.values()) >= 12 and sum(1 for n in per.values() if n > 0) >= 2


def test_a_real_server_added_under_load_moves_no_established_flow(lab: system.LabState) -> None:
    rs4 = f"{addr(lab, 'rs4')}:2811"
    service = f"{lab.vip4}:2811"
    each_director(lab, "remove", rs4)
    try:
        with scaleout.HeldFlows(lab, PORTS, sys.executable) as flows:
            before = flows.places()
            assert len(before) == len(PORTS) and rs4 not in {r for _, r in before.values()}
            each_director(lab, "add", rs4, service)
            after = flows.places()
            assert flows.probe() == []  # every established connection still reaches its server
        moved = sum(before[p][1] != after[p][1] for p in PORTS)
        print(f"\nrs4 added: {moved} of {len(PORTS)} established flows changed real server")
        assert moved == 0  # dr keeps per-flow state: the new table applies to new flows only
        # new flows (fresh ports: a reused 5-tuple would meet its old flow entry) follow the new table
        fresh = [p + 200 for p in PORTS]
        new = scaleout.flow_map(lab, fresh, sys.executable)
        share = sum(r == rs4 for r in new.values()) / len(new)
        print(f"new flows: {share * 100:.1f} % on rs4 (its share of the table: about 25 %)")
        assert len(new) == len(fresh) and 0.1 < share < 0.45
    finally:
        each_director(lab, "enable", rs4)


def test_drained_director_withdraws_its_transfers_finish_and_no_new_flow_reaches_it(
    lab: system.LabState, tmp_path: Path
) -> None:
    with Throttle(lab):
        procs = start_transfers(lab, tmp_path, TRANSFERS, "big.bin")
        time.sleep(2)
        with ControlClient(sock(lab, "dir2"), timeout_s=20) as client:
            client.director_drain()
        assert time_until(lambda: addr(lab, "dir2") not in scaleout.nexthops(lab), 5) is not None
        base = conns(lab)["dir2"]
        failed, bad = finish(procs, tmp_path, big_sha(lab))
    assert (failed, bad) == (0, 0)
    procs = start_transfers(lab, tmp_path, 6, "random-1MiB.bin")
    want = hashlib.sha256(Path(lab.workdir, "rs1", "random-1MiB.bin").read_bytes()).hexdigest()
    assert finish(procs, tmp_path, want) == (0, 0)
    assert conns(lab)["dir2"] == base  # no new connection reached the drained director
    with ControlClient(sock(lab, "dir2"), timeout_s=20) as client:
        client.director_undrain()
    assert time_until(lambda: addr(lab, "dir2") in scaleout.nexthops(lab), 10) is not None
    assert time_until(lambda: scaleout.balanced(lab), 30) is not None


def test_director_killed_during_thirty_transfers_fails_none(lab: system.LabState, tmp_path: Path) -> None:
    """dir3 killed mid-transfer: no transfer fails, and the sessions it carried go on (`mh` adoption)."""
    ports = [p + 400 for p in PORTS]  # fresh: a reused 5-tuple would meet its old (closing) flow entry
    with Throttle(lab), scaleout.HeldFlows(lab, ports, sys.executable) as flows:
        places = flows.places()
        on_dir3 = [p for p, (d, _) in places.items() if d == "dir3"]
        assert len(places) == len(ports) and on_dir3
        adopted_before = adopted(lab, "dir1") + adopted(lab, "dir2")
        procs = start_transfers(lab, tmp_path, TRANSFERS, "big.bin")
        time.sleep(2)
        proc = next(p for p in lab.procs if p.node == "dir3" and p.role == "director")
        assert conns(lab)["dir3"] > 0
        os.kill(proc.pid, signal.SIGKILL)
        took = time_until(lambda: addr(lab, "dir3") not in scaleout.nexthops(lab), scaleout.HOLD_TIME_S + 2)
        running = sum(p.poll() is None for p in procs)
        # a further command on every session, those through dir3 too: their packets now reach dir1 or
        # dir2, which know no flow for them and forward them by the same Maglev table
        silent = flows.probe()
        after = flows.places()
        adopted_after = adopted(lab, "dir1") + adopted(lab, "dir2")
        failed, bad = finish(procs, tmp_path, big_sha(lab))
    assert took is not None
    moved = [p for p in ports if p not in after or after[p][1] != places[p][1]]
    print(f"\ndir3 killed with {running} of {TRANSFERS} transfers running: withdrawn after "
          f"{took * 1000:.0f} ms; {failed} failed, {bad} bad checksums; of {len(ports)} held sessions "
          f"({len(on_dir3)} through dir3) {len(silent)} did not answer, "
          f"{len(moved)} changed real server")  # fmt: skip
    assert running > TRANSFERS // 2  # the kill came mid-transfer
    assert (failed, bad) == (0, 0)
    assert silent == [] and moved == []
    assert {after[p][0] for p in on_dir3} <= {"dir1", "dir2"}
    # the held sessions dir3 carried were adopted mid-connection by the others (the transfers' too)
    assert adopted_after - adopted_before >= len(on_dir3)
