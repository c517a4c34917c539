"""Captures VRRP adverts from the real keepalived into goldens.json (run as root).

For each case a namespace lab is built, keepalived (`-P`, VRRP only) runs in dir1 with the case's
keepalived.conf, and an AF_PACKET sniffer in dir2 records the first Ethernet frames carrying IP
protocol 112. The frames, the config text and the settings are written to goldens.json next to this
file. Tests decode these bytes and re-encode them; they never need keepalived.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NotRequired, TypedDict

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "src"))

from gridlb.lab.netns import Lab
from gridlb.lab.system import LabOptions, running

SNIFF = r"""
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)); s.bind(("eth0", 0)); s.settimeout(0.5)
want = int(sys.argv[1]); end = time.monotonic() + float(sys.argv[2]); got = 0
while got < want and time.monotonic() < end:
    try: fr, addr = s.recvfrom(4096)
    except socket.timeout: continue
    et = fr[12:14]
    if (et == b"\x08\x00" and fr[14 + 9] == 112) or (et == b"\x86\xdd" and fr[14 + 6] == 112):
        vrrp = fr[14 + (fr[14] & 15) * 4:] if et == b"\x08\x00" else fr[54:]
        if len(sys.argv) > 3 and vrrp[2] != 0:
            continue  # waiting for the priority-0 advert of a clean stop
        print(fr.hex(), flush=True); got += 1
"""


class Case(TypedDict):
    """One capture: the VRRP instance keepalived runs."""

    name: str
    version: int
    family: int
    vrid: int
    priority: int
    advert_int: float
    unicast: bool
    vips: list[str]
    auth_pass: NotRequired[str]


def conf(case: Case, lab: Lab) -> str:
    d1, d2 = lab.node("dir1"), lab.node("dir2")
    fam6 = case["family"] == 6
    lines = ["global_defs {", "  router_id glb-golden", "  vrrp_garp_master_delay 0", "}"]
    lines += ["vrrp_instance VI_G {", "  state MASTER", "  interface eth0"]
    lines += [f"  virtual_router_id {case['vrid']}", f"  priority {case['priority']}"]
    lines += [f"  advert_int {case['advert_int']}", f"  version {case['version']}"]
    if case.get("auth_pass"):
        lines += ["  authentication {", "    auth_type PASS", f"    auth_pass {case['auth_pass']}", "  }"]
    if case["unicast"]:
        src, peer = (d1.ipv6, d2.ipv6) if fam6 else (d1.ipv4, d2.ipv4)
        lines += [f"  unicast_src_ip {src}", "  unicast_peer {", f"    {peer}", "  }"]
    lines += ["  virtual_ipaddress {"]
    for vip in case["vips"]:
        lines += [f"    {vip} dev eth0"]
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


CASES: list[Case] = [
    Case(
        name="v2-ipv4-multicast",
        version=2,
        family=4,
        vrid=51,
        priority=100,
        advert_int=1,
        unicast=False,
        vips=["10.77.1.100/24"],
    ),
    Case(
        name="v2-ipv4-unicast-pass",
        version=2,
        family=4,
        vrid=7,
        priority=200,
        advert_int=2,
        unicast=True,
        vips=["10.77.1.100/24", "10.77.1.101/24"],
        auth_pass="gridlb-secret",
    ),
    Case(
        name="v3-ipv4-unicast",
        version=3,
        family=4,
        vrid=51,
        priority=150,
        advert_int=0.1,
        unicast=True,
        vips=["10.77.1.100/24"],
    ),
    Case(
        name="v3-ipv4-multicast",
        version=3,
        family=4,
        vrid=9,
        priority=254,
        advert_int=1.5,
        unicast=False,
        vips=["10.77.1.100/24", "10.77.1.101/24", "10.77.1.102/24"],
    ),
    Case(
        name="v3-ipv6-multicast",
        version=3,
        family=6,
        vrid=51,
        priority=100,
        advert_int=1,
        unicast=False,
        vips=["fd00:4d:1::100/64"],
    ),
    Case(
        name="v3-ipv6-unicast",
        version=3,
        family=6,
        vrid=52,
        priority=120,
        advert_int=0.5,
        unicast=True,
        vips=["fd00:4d:1::100/64", "fd00:4d:1::101/64"],
    ),
]


def main() -> None:
    out: list[dict[str, object]] = []
    for case in CASES:
        with (
            running(LabOptions(name=f"g{os.getpid()}", realservers=0, start="none", net_a=77)) as lab,
            tempfile.TemporaryDirectory() as tmp,
        ):
            text = conf(case, lab)
            path = Path(tmp, "keepalived.conf")
            path.write_text(text)
            sniff = lab.spawn(
                "dir2", [sys.executable, "-c", SNIFF, "3", "15"], stdout=subprocess.PIPE, text=True
            )
            time.sleep(0.3)
            ka = lab.spawn(
                "dir1",
                [
                    "keepalived",
                    "-n",
                    "-l",
                    "-G",
                    "-P",
                    "-f",
                    str(path),
                    "-p",
                    f"{tmp}/k.pid",
                    "-r",
                    f"{tmp}/v.pid",
                    "-c",
                    f"{tmp}/c.pid",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            frames, _ = sniff.communicate(timeout=30)
            # A clean stop sends the priority-0 advert: capture it too.
            sniff = lab.spawn(
                "dir2", [sys.executable, "-c", SNIFF, "1", "5", "stop"], stdout=subprocess.PIPE, text=True
            )
            time.sleep(0.3)
            ka.send_signal(signal.SIGTERM)
            stop, _ = sniff.communicate(timeout=30)
            ka.wait(timeout=10)
            d1 = lab.node("dir1")
            record: dict[str, object] = dict(case)
            frame_list, stop_list = frames.split(), stop.split()
            record.update(
                keepalived_conf=text,
                lab=dict(
                    dir1_ipv4=str(d1.ipv4),
                    dir1_ipv6=str(d1.ipv6),
                    dir1_mac=d1.mac,
                    dir2_ipv4=str(lab.node("dir2").ipv4),
                    dir2_ipv6=str(lab.node("dir2").ipv6),
                ),
                frames=frame_list,
                stop_frames=stop_list,
            )
            print(case["name"], len(frame_list), "frames", len(stop_list), "stop", flush=True)
            out.append(record)
    Path(__file__).with_name("goldens.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
