"""Interop with the real keepalived 2.2.7 (`-P`) in network namespaces: failover both ways, v2 and v3."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gridlb.lab.netns import Lab
from gridlb.lab.vrrp_pair import PairSettings, Router, RouterSpec, touch_neighbour, vip_of
from gridlb.vrrp.packet import Advert, AuthType, encode, pass_auth_data
from tests.support import need_tool, time_until

pytestmark = pytest.mark.privileged

#: v2: unicast peers with PASS authentication, IPv4. v3: multicast, IPv4 and IPv6 (link-local sources).
SETTINGS = {
    2: PairSettings(version=2, advert_int_s=1.0, families=(4,), unicast=True, auth_pass="gridlb-pw"),
    3: PairSettings(version=3, advert_int_s=0.2, families=(4, 6), unicast=False),
}


def holds(r: Router) -> bool:
    return all(r.holds_vip(f) for f in r.settings.families)


def holds_none(r: Router) -> bool:
    return not any(r.holds_vip(f) for f in r.settings.families)


def client_sees(lab: Lab, r: Router) -> bool:
    mac = lab.node(r.spec.node).mac
    return all(lab.neigh_mac("client", vip_of(lab, f)) == mac for f in r.settings.families)


def down_s(s: PairSettings, prio: int) -> float:
    skew = (256 - prio) / 256 * (1.0 if s.version == 2 else s.advert_int_s)
    return 3 * s.advert_int_s + skew


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("master_impl", ["keepalived", "gridlb"])
def test_failover_both_ways(lab: Lab, tmp_path: Path, version: int, master_impl: str) -> None:
    need_tool("keepalived")
    s = SETTINGS[version]
    backup_impl = "gridlb" if master_impl == "keepalived" else "keepalived"
    m = Router(lab, s, RouterSpec("dir1", master_impl, 150, "MASTER"), tmp_path)
    b = Router(lab, s, RouterSpec("dir2", backup_impl, 100, "BACKUP"), tmp_path)
    slack = 2.0
    try:
        # 1. Election: the MASTER-configured, higher-priority router takes the VIPs; the backup stays quiet.
        m.start()
        m.wait_ready()
        assert time_until(lambda: holds(m), down_s(s, 150) + slack) is not None, m.log.read_text()
        b.start()
        b.wait_ready()
        assert time_until(lambda: holds(m) and holds_none(b), 0.5) is not None
        assert time_until(lambda: not (holds(m) and holds_none(b)), down_s(s, 100) + 1.0) is None, (
            b.log.read_text()
        )
        for fam in s.families:
            touch_neighbour(lab, vip_of(lab, fam))
        assert client_sees(lab, m)

        # 2. SIGKILL of the master: the backup takes over; GARP / unsolicited NA move the client's entry.
        m.kill_hard()
        assert time_until(lambda: holds(b), down_s(s, 100) + slack) is not None, b.log.read_text()
        assert time_until(lambda: client_sees(lab, b), slack) is not None, lab.exec(
            "client", ["ip", "neigh"]
        ).stdout
        assert holds(m)  # a crash leaves the VIPs behind on the dead director

        # 3. The old master restarts: it drops the stale VIPs first, joins as BACKUP, then preempts back.
        m.start()
        m.wait_ready()
        assert time_until(lambda: holds(m) and holds_none(b), down_s(s, 150) + slack) is not None, (
            m.log.read_text()
        )
        assert time_until(lambda: client_sees(lab, m), slack) is not None
        if master_impl == "gridlb":
            removed = {i["name"]: i["stale_vips_removed"] for i in m.status()["instances"]}
            assert all(removed[f"VI_{f}"] for f in s.families), removed

        # 4. Clean stop of the master (priority-0 advert): the backup takes over after Skew_Time.
        m.stop_clean()
        assert holds_none(m)
        assert time_until(lambda: holds(b), 1.0 + slack) is not None, b.log.read_text()
        assert time_until(lambda: client_sees(lab, b), slack) is not None

        # 5. nopreempt: the higher-priority router comes back with nopreempt and stays BACKUP.
        m2 = Router(lab, s, RouterSpec("dir1", master_impl, 150, "BACKUP", nopreempt=True), tmp_path)
        m2.start()
        m2.wait_ready()
        assert (
            time_until(lambda: holds(m2) or not holds(b), down_s(s, 150) + 2 * s.advert_int_s + 1.0) is None
        )
        # ...until the lower-priority master goes away: then it takes over.
        b.kill_hard()
        assert time_until(lambda: holds(m2), down_s(s, 150) + slack) is not None, m2.log.read_text()
        m2.stop_clean()
    finally:
        for r in (m, b):
            if r.proc is not None and r.proc.poll() is None:
                r.stop_clean()


def test_foreign_and_malformed_adverts_are_counted_and_dropped(lab: Lab, tmp_path: Path) -> None:
    """gridlb alone as MASTER (unicast peer dir2): a stream of bad adverts from the client changes nothing."""
    s = SETTINGS[2]
    m = Router(lab, s, RouterSpec("dir1", "gridlb", 100, "MASTER"), tmp_path)
    m.start()
    m.wait_ready()
    assert time_until(lambda: holds(m), down_s(s, 100) + 2.0) is not None
    me = lab.node("dir1").ipv4
    vip = lab.vip4
    good_auth = pass_auth_data(s.auth_pass)

    def v2(prio: int = 254, vrid: int = 51, auth: bytes = good_auth, version: int = 2) -> bytes:
        if version == 3:
            return encode(Advert(3, vrid, prio, 100, (vip,)), lab.node("client").ipv4, me)
        return encode(Advert(2, vrid, prio, 100, (vip,), AuthType.PASS, auth))

    cases = {
        "version": (v2(version=3), 255),
        "vrid": (v2(vrid=52), 255),
        "checksum": (v2()[:6] + b"\x12\x34" + v2()[8:], 255),
        "ttl": (v2(), 64),
        "auth": (v2(auth=pass_auth_data("wrong")), 255),
        "not_peer": (v2(), 255),
        "truncated": (v2()[:7], 255),
    }
    code = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_RAW,112)\n"
        "s.setsockopt(socket.IPPROTO_IP,socket.IP_TTL,int(sys.argv[3]))\n"
        "for _ in range(int(sys.argv[4])): s.sendto(bytes.fromhex(sys.argv[2]),(sys.argv[1],0))\n"
    )
    n = 3
    for data, ttl in cases.values():
        lab.exec("client", [sys.executable, "-c", code, str(me), data.hex(), str(ttl), str(n)])

    def drops() -> dict[str, int]:
        st = m.status()
        return dict(st["instances"][0]["drops"]) if st else {}

    assert time_until(lambda: all(drops().get(k, 0) >= n for k in cases), 5.0) is not None, drops()
    assert {k: drops()[k] for k in cases} == dict.fromkeys(cases, n)
    assert m.status()["instances"][0]["state"] == "MASTER" and holds(m)
    # Positive control: the same advert from the configured peer is accepted and preempts us.
    lab.exec("dir2", [sys.executable, "-c", code, str(me), v2().hex(), "255", "1"])
    assert time_until(lambda: holds_none(m), 2.0) is not None
    assert m.status()["instances"][0]["state"] == "BACKUP" or time_until(
        lambda: m.status()["instances"][0]["state"] == "BACKUP", 2.0
    )
    m.stop_clean()
