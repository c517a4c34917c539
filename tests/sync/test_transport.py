"""Sync datagrams over real multicast between two network namespaces (IPv4 default group and IPv6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gridlb.lab.netns import Lab, LabSpec
from tests.support import need_root

pytestmark = pytest.mark.privileged

RECEIVER = r"""
import asyncio, json, sys
from ipaddress import ip_address
from gridlb.sync.transport import SyncReceiver
from gridlb.sync.wire import SYNC_GROUP

async def main() -> None:
    got = []
    group = ip_address(sys.argv[1]) if sys.argv[1] != "default" else SYNC_GROUP
    rx = SyncReceiver("eth0", lambda m, peer: got.append((peer, m)), syncid=int(sys.argv[2]), group=group)
    await rx.open()
    print("ready", flush=True)
    end = asyncio.get_running_loop().time() + 8
    while asyncio.get_running_loop().time() < end and len(got) < int(sys.argv[3]):
        await asyncio.sleep(0.02)
    rx.close()
    print(json.dumps({"peers": sorted({p for p, _ in got}), "conns": [[str(c.caddr), c.cport, str(c.daddr)]
          for _, m in got for c in m.conns], "drops": dict(rx.drops), "received": rx.received}), flush=True)

asyncio.run(main())
"""

SENDER = r"""
import sys, time
from ipaddress import ip_address
from gridlb.sync.transport import SyncSender
from gridlb.sync.wire import SYNC_GROUP, SyncConn, encode_all
group = ip_address(sys.argv[1]) if sys.argv[1] != "default" else SYNC_GROUP
c, v, d = (ip_address(a) for a in sys.argv[2:5])
tx = SyncSender("eth0", group=group)
conns = [SyncConn(6, c, 30000 + i, v, 2811, d, 2811) for i in range(60)]
for syncid in (9, 4):  # syncid 9 is filtered out by the receiver
    for gram in encode_all(syncid, conns):
        tx.send(gram)
tx.send(b"\x00\x04\x00\x09garbage")  # malformed: counted and dropped
print(tx.sent, tx.send_errors)
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2] / "src")
    return env


@pytest.mark.parametrize("family", [4, 6])
def test_sync_between_two_namespaces(family: int) -> None:
    need_root()
    with Lab(LabSpec(prefix=f"glbS{family}-{os.getpid()}", realservers=0, net_a=81)) as lab:
        group = "default" if family == 4 else "ff02::81"
        rx = lab.spawn("dir2", [sys.executable, "-c", RECEIVER, group, "4", "2"],
                       stdout=subprocess.PIPE, text=True, env=_env())  # fmt: skip
        assert rx.stdout is not None
        assert rx.stdout.readline().strip() == "ready"
        src = lab.node("dir1").ipv4 if family == 4 else lab.node("dir1").ipv6
        client = lab.node("client").ipv4 if family == 4 else lab.node("client").ipv6
        vip = lab.vip4 if family == 4 else lab.vip6
        rs = lab.node("dir2").ipv4 if family == 4 else lab.node("dir2").ipv6
        time.sleep(0.1)
        out = lab.exec(
            "dir1", [sys.executable, "-c", SENDER, group, str(client), str(vip), str(rs)], timeout_s=20
        )
        per_syncid = 2 if family == 4 else 3  # 60 entries, at most 40 IPv4 or 20 IPv6 ones per datagram
        assert out.stdout.split() == [str(2 * per_syncid + 1), "0"]  # plus the garbage
        report = json.loads(rx.stdout.read())
        rx.wait(timeout=10)
        assert report["conns"] == [[str(client), 30000 + i, str(rs)] for i in range(60)]
        assert report["drops"] == {"other syncid": per_syncid, "malformed size": 1}
        if family == 4:
            assert report["peers"] == [str(src)]  # sent from the interface's address, as the kernel does
