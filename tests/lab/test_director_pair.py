"""The full-director pair of the lab (`DirectorRouter`), IPv4 and IPv6: the VIP's service follows SIGKILL."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gridlb.lab.director_pair import DirectorRouter, start_banner
from gridlb.lab.netns import Lab
from gridlb.lab.vrrp_pair import PROBE, PairSettings, RouterSpec, vip_of
from tests.support import lab as lab_up
from tests.support import time_until

pytestmark = pytest.mark.privileged

PORT = 2811


def probe(lab: Lab, family: int, node: str) -> bool:
    want = lab.node(node).ipv4 if family == 4 else lab.node(node).ipv6
    argv = [sys.executable, "-c", PROBE, str(vip_of(lab, family)), str(PORT), str(want), "10"]
    return lab.exec("client", argv, timeout_s=20, check=False).returncode == 0


def test_director_pair_v4_v6_crash(tmp_path: Path) -> None:
    settings = PairSettings(version=3, advert_int_s=0.1, vrid=62, families=(4, 6), unicast=True)
    with lab_up("q", realservers=1, start="none", net_a=79) as lab:
        start_banner(lab, "rs1", PORT, settings.families)
        d1 = DirectorRouter(lab, settings, RouterSpec("dir1", "director", 150, listen_port=PORT), tmp_path)
        d2 = DirectorRouter(lab, settings, RouterSpec("dir2", "director", 100, listen_port=PORT), tmp_path)
        d1.start()
        d2.start()
        d1.wait_ready()
        d2.wait_ready()
        both = (4, 6)
        assert time_until(lambda: all(d1.holds_vip(f) for f in both), 10) is not None, d1.dump_json()
        states = [i["state"] for i in d1.status()["instances"]]
        assert states == ["MASTER", "MASTER"]
        for fam in both:
            assert probe(lab, fam, "dir1"), d1.log.read_text()[-2000:]
        d1.kill_hard()
        assert time_until(lambda: all(d2.holds_vip(f) for f in both), 10) is not None, d2.dump_json()
        for fam in both:
            assert probe(lab, fam, "dir2"), d2.log.read_text()[-2000:]
        assert [i["state"] for i in d2.status()["instances"]] == ["MASTER", "MASTER"]
        d2.stop_clean()
        assert d2.proc is not None and d2.proc.returncode == 0, d2.log.read_text()[-4000:]
        assert not any(d2.holds_vip(f) for f in both)
