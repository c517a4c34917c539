"""gridlb's schedulers against a real IPVS kernel: the picks recorded by golden/capture.sh.

The fixtures were recorded inside a qemu VM booting Debian 12's stock kernel (6.1.0-57-amd64; it has
no twos) by sending one SYN per client address to one service per scheduler,
all with the destinations 10.0.2.11..14 (weights 1, 2, 1, 3) added in that order:

    GRIDLB_VM_OUT=tests/sched/golden/out tests/vm/run.sh tests/sched/golden/capture.sh

The replay adds the destinations one by one (each add is a scheduler update, as in the kernel) and
counts each connection on its destination between picks, so the counter-driven schedulers see what
the kernel saw. Observed on this kernel: a DR connection in SYN_RECV counts as *active*
(`ipvsadm -Ln` after the run shows ActiveConn 10 / InActConn 0 per lc destination), so the replay
increments `active`. ovf has room for 11 connections (active <= weight); the kernel made no
connection for the other 29 SYNs, and the replay must find no destination for them either.
"""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path

import pytest

from gridlb.sched import DestView, Flow, create_scheduler
from gridlb.table import RealKey

OUT = Path(__file__).resolve().parent / "golden" / "out"
SERVICES = {
    int(port): spec.split()
    for port, _, spec in (line.partition(" ") for line in (OUT / "services").read_text().splitlines())
}


@pytest.mark.parametrize("port", sorted(SERVICES))
def test_picks_match_the_kernel(port: int) -> None:
    spec = SERVICES[port]
    name, flags = spec[0], frozenset(spec[2:3])
    picked = {}
    for line in (OUT / f"conns-{port}").read_text().splitlines()[2:]:
        _proto, _expire, _state, client, virtual, dest = line.split()
        if virtual == f"10.0.0.1:{port}":  # the dump also lists earlier services' connections
            picked[client] = dest
    order = [tuple(line.split()) for line in (OUT / f"order-{port}").read_text().splitlines()]
    assert len(order) == 40 and len(picked) == (11 if name == "ovf" else 40)  # ovf: full after 11
    weights = {11: 1, 12: 2, 13: 1, 14: 3}
    active = dict.fromkeys(weights, 0)
    sched = create_scheduler(name, flags)
    added: list[int] = []

    def views() -> list[DestView]:  # kernel order: newest first
        return [
            DestView(RealKey(ip_address(f"10.0.2.{n}"), port), weights[n], active=active[n]) for n in added
        ]

    for n in (11, 12, 13, 14):  # ipvsadm -a in this order: each lands at the head of the list
        added.insert(0, n)
        sched.update(views())
    agree = 0
    for addr, sport in order:
        got = sched.pick(views(), Flow(ip_address(addr), int(sport), ip_address("10.0.0.1"), port), 0.0)
        want = picked.get(f"{addr}:{sport}")  # no connection: the kernel found no destination
        assert (str(got) if got else None) == want, f"{name} {sorted(flags)}: connection {agree + 1}"
        if got is not None:
            active[int(str(got.addr).rsplit(".", 1)[1])] += 1
        agree += 1
    assert agree == 40
