"""Tests of the BIRD driver: the configuration it writes and reads back, and a real BIRD pair.

The privileged test runs a real `bird` as the router in one namespace and the director's
`BirdSpeaker` in another, and reads the router's RIB and FIB (`birdc show route`, `ip route`).
"""

from __future__ import annotations

import subprocess
import sys
import time
from ipaddress import IPv4Address, ip_address
from pathlib import Path

import pytest

from gridlb.config.schema import ScaleoutSettings
from gridlb.errors import ConfigError
from gridlb.scaleout.bird import BirdPlan, parse_protocols, render_config
from tests.support import need_root, need_tool, wait_for

VIP4 = ip_address("10.0.9.1")
VIP6 = ip_address("fd00:9::1")


def settings(**kw: object) -> ScaleoutSettings:
    data: dict[str, object] = {
        "local_asn": 65001,
        "router_id": "10.0.0.2",
        "peers": [{"address": "10.0.0.1", "asn": 65000}, {"address": "fd00::1", "asn": 65000}],
        "hold_time_s": 6,
    }
    data.update(kw)
    return ScaleoutSettings.model_validate(data)


def test_config_announces_exactly_the_vips_given_per_family() -> None:
    plan = BirdPlan.from_settings("dir1", settings(), [VIP4, VIP6])
    none = render_config(plan, frozenset())
    assert "route " not in none and "router id 10.0.0.2;" in none
    both = render_config(plan, frozenset({VIP4, VIP6}))
    assert "  route 10.0.9.1/32 blackhole;" in both and "  route fd00:9::1/128 blackhole;" in both
    assert both.count("protocol bgp ") == 2 and "hold time 6;" in both and "keepalive time 2;" in both
    assert 'export where proto = "gridlb_vips4";' in both and "import none;" in both
    with pytest.raises(ValueError, match="not VIPs"):
        render_config(plan, frozenset({ip_address("10.0.9.9")}))


def test_router_id_defaults_to_an_ipv4_local_address_else_is_required() -> None:
    so = settings(router_id=None, peers=[{"address": "10.0.0.1", "asn": 1, "local_address": "10.0.0.7"}])
    assert BirdPlan.from_settings("d", so, [VIP4]).router_id == IPv4Address("10.0.0.7")
    with pytest.raises(ConfigError, match="router_id"):
        BirdPlan.from_settings("d", settings(router_id=None), [VIP4])


def test_protocols_output_is_read_per_peer() -> None:
    plan = BirdPlan.from_settings("dir1", settings(), [VIP4])
    text = (
        "BIRD 2.0.12 ready.\n"
        "Name       Proto      Table      State  Since         Info\n"
        "device1    Device     ---        up     22:55:28.782  \n"
        "peer1      BGP        ---        up     22:55:32.892  Established   \n"
        "peer2      BGP        ---        start  22:55:32.892  Active        Socket: Connection refused\n"
    )
    p1, p2 = parse_protocols(text, plan)
    assert (p1.address, p1.established, p1.since) == ("10.0.0.1", True, "22:55:32.892")
    assert (p2.address, p2.state, p2.established) == ("fd00::1", "start", False)
    assert p2.info.startswith("Active")


# --- a real BIRD router and a director's speaker -----------------------------------------------------


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30).stdout


ROUTER_CONF = """log stderr all;
router id 10.93.1.1;
protocol device {}
protocol kernel { ipv4 { import none; export all; }; merge paths on; }
protocol bgp dir1 { local 10.93.1.1 as 65000; neighbor 10.93.1.2 as 65001; hold time 6;
  ipv4 { import all; export none; }; }
"""


@pytest.mark.privileged
def test_real_bird_router_sees_the_announcement_and_the_withdrawal(tmp_path: Path) -> None:
    need_root()
    need_tool("bird", "birdc", "ip")
    prefix = f"glbSoB{int(time.time() * 1000) % 100000}"
    r, d = f"{prefix}-r", f"{prefix}-d"
    procs: list[subprocess.Popen[bytes] | subprocess.Popen[str]] = []
    try:
        for ns in (r, d):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", "eth0", "netns", r, "type", "veth", "peer", "name", "eth0", "netns", d)
        sh("ip", "-n", r, "addr", "add", "10.93.1.1/24", "dev", "eth0")
        sh("ip", "-n", d, "addr", "add", "10.93.1.2/24", "dev", "eth0")
        for ns in (r, d):
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
        (tmp_path / "router.conf").write_text(ROUTER_CONF)
        rsock = str(tmp_path / "router.ctl")
        cmd = ["ip", "netns", "exec", r, "bird", "-f", "-c", str(tmp_path / "router.conf"), "-s", rsock]
        procs.append(subprocess.Popen(cmd, stderr=subprocess.DEVNULL))

        def rib() -> str:
            return sh("birdc", "-s", rsock, "show", "route", "protocol", "dir1")

        def fib() -> str:
            return sh("ip", "-n", r, "route", "show", str(VIP4))

        # the speaker runs inside the director's namespace: a child process driving BirdSpeaker
        script = tmp_path / "speaker.py"
        script.write_text(SPEAKER_SCRIPT)
        speaker = subprocess.Popen(
            ["ip", "netns", "exec", d, sys.executable, str(script), str(tmp_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={
                "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"),
                "PATH": "/usr/sbin:/usr/bin:/bin",
            },
        )
        procs.append(speaker)
        assert speaker.stdin is not None and speaker.stdout is not None

        def ask(line: str) -> str:
            assert speaker.stdin is not None and speaker.stdout is not None
            speaker.stdin.write(line + "\n")
            speaker.stdin.flush()
            return speaker.stdout.readline().strip()

        assert ask("start") == "started"
        wait_for(
            lambda: "Established" in sh("birdc", "-s", rsock, "show", "protocols", "dir1"),
            20,
            "the BGP session",
        )
        assert "10.0.9.1/32" not in rib()  # nothing announced yet
        assert ask("announce") == "changed"
        wait_for(
            lambda: "10.0.9.1/32" in rib() and "via 10.93.1.2" in fib(),
            10,
            "the route in the RIB and the FIB",
        )
        assert ask("announce") == "same"  # desired state: no second reconfigure
        assert ask("withdraw") == "changed"
        wait_for(
            lambda: "10.0.9.1/32" not in rib() and fib() == "",
            10,
            "the route withdrawn from the RIB and the FIB",
        )
        assert ask("announce") == "changed"
        wait_for(lambda: "10.0.9.1/32" in rib(), 10, "the route announced again")
        assert ask("stop") == "stopped"  # clean stop: withdraw, then BIRD closes the session
        wait_for(lambda: "10.0.9.1/32" not in rib(), 10, "the route withdrawn when the speaker stops")
        assert speaker.wait(timeout=10) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=5)
        for ns in (r, d):
            for pid in subprocess.run(
                ["ip", "netns", "pids", ns], capture_output=True, text=True
            ).stdout.split():
                subprocess.run(["kill", "-9", pid], check=False)
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


SPEAKER_SCRIPT = """
import asyncio, sys
from ipaddress import ip_address
from gridlb.config.schema import ScaleoutSettings
from gridlb.scaleout.bird import BirdPlan, BirdSpeaker
d = sys.argv[1]
so = ScaleoutSettings.model_validate({"local_asn": 65001, "router_id": "10.93.1.2", "hold_time_s": 6,
    "peers": [{"address": "10.93.1.1", "asn": 65000}],
    "bird_config": d + "/d.conf", "bird_socket": d + "/d.ctl"})
vip = ip_address("10.0.9.1")
async def main():
    sp = BirdSpeaker(so, BirdPlan.from_settings("dir1", so, [vip]))
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if line == "start":
            await sp.start(); out = "started"
        elif line in ("announce", "withdraw"):
            want = frozenset({vip}) if line == "announce" else frozenset()
            out = "changed" if await sp.announce(want) else "same"
        else:
            await sp.stop(); print("stopped", flush=True); return
        print(out, flush=True)
asyncio.run(main())
"""
