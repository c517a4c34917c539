"""Relay stress: sessions reset at every phase through a real director, then clean sessions byte for byte.

A `gridlb director run` process with the proxy dataplane over three `gridlb gridftp-server` processes
on loopback (127.44.N.x). Poisoning sessions are reset (SO_LINGER 0) before the banner, mid-command,
mid-reply, with the relay's pipe full, mid-transfer on the data channel, and after the server itself
reset the relay's backend connection (see tests/dataplane/probe.py). Afterwards every clean session
must receive exactly one real server's banner and `221 Goodbye.`, ActiveConn must be back to 0 on
every real server, no socket on the test's addresses may stay in CLOSE-WAIT, no real server may
have been taken out for a passive failure, and globus-url-copy downloads through the VIP must
succeed. The full-size run (10 rounds of 700 + 700 sessions, 50 globus-url-copy transfers) is
`python -m tests.dataplane.probe`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Iterator

import pytest

from tests.dataplane.probe import Phase, run_round, wait_no_close_wait
from tests.director.loopback import PORT, Loopback
from tests.gridftp.helpers import guc
from tests.support import need_tool, wait_for

_nets = itertools.count(150 + os.getpid() % 80)

#: Sessions per phase: enough to poison pipes on a relay that pools them dirty (about one clean
#: session in six read foreign bytes before the fix), small enough for a CI run of a few seconds.
POISON_PER_PHASE = 100
CLEAN = 400
GUC = 5


@pytest.fixture(params=[1, 2], ids=["1worker", "2workers"])
def lb(request: pytest.FixtureRequest) -> Iterator[Loopback]:
    harness = Loopback(next(_nets), workers=request.param)
    try:
        yield harness
    finally:
        harness.close()


def active(lb: Loopback) -> dict[str, int]:
    return {r["real"]: r["active"] for s in lb.status()["services"] for r in s["reals"]}


async def test_resets_at_every_phase_leave_no_byte_no_count_and_no_socket_behind(lb: Loopback) -> None:
    need_tool("ss", "globus-url-copy")
    for i in (2, 3, 4):
        lb.start_server(i)
    lb.write_site([(2, 1), (3, 1), (4, 1)])
    lb.start_director()
    addrs = [lb.addr(i) for i in (2, 3, 4)]
    phases = list(Phase)
    res = await run_round(
        lb.vip,
        PORT,
        addrs,
        poison_n=POISON_PER_PHASE * len(phases),
        clean_n=CLEAN,
        phases=phases,
        seed=1,
    )
    assert res.corrupted == [], (
        f"{len(res.corrupted)} of {res.clean} clean sessions received bytes other than one banner + 221: "
        f"{[g[:120] for g in res.corrupted[:5]]}"
    )
    # Every session of both kinds has ended on the client side: the relay must have closed them all.
    await asyncio.to_thread(
        wait_for, lambda: not any(active(lb).values()), 10, "ActiveConn 0 on every real server"
    )
    left = await asyncio.to_thread(wait_no_close_wait, f"127.44.{lb.net}.", 5)
    assert left == [], f"sockets left in CLOSE-WAIT: {left[:5]}"
    # The real servers never refuse: a passive failure here is a reset of one connection taken for
    # a failed connect of another (a descriptor reused within one batch of events).
    reals = [r for svc in lb.status()["services"] for r in svc["reals"]]
    assert [r["passive_failures"] for r in reals] == [0, 0, 0], reals

    expected = (lb.root / "file.bin").read_bytes()
    for i in range(GUC):
        out = lb.dir / f"guc-{i}.bin"
        proc = await asyncio.to_thread(guc, f"ftp://{lb.vip}:{PORT}/file.bin", f"file://{out}", timeout_s=30)
        assert proc.returncode == 0, f"globus-url-copy {i} after poisoning: {proc.stderr[-500:]}"
        assert out.read_bytes() == expected
    await asyncio.to_thread(
        wait_for, lambda: not any(active(lb).values()), 10, "ActiveConn 0 after the transfers"
    )
