"""Benchmark of the `dr` dataplane in network namespaces: packets/s, new connections/s, GridFTP uploads.

Topology (tests/dataplane/dr_lab.py): client, one director running `gridlb director run` with the dr
dataplane, three real servers with the VIP on lo, one bridge. In the same run:

* pps: 60-byte TCP frames of one established flow, blasted from the client through a TPACKET_V2 TX
  ring (the kernel sends the whole ring per `send()`), first at the director's MAC, then straight
  at the flow's real server; counted at the real server's eth0 (and by the director's chain counter);
* new connections/s: connect, read the banner, close, with 32 concurrent clients, through the VIP
  and straight to one real server;
* upload MB/s: globus-url-copy -p 4 of a file through `ftp://VIP:2811` and straight to a real
  server (data channels go to the real server's own address either way).

Every load loop is bounded in count and time; namespaces carry a unique prefix and are deleted with
their processes (by PID) at the end. The machine is shared: figures are indicative.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.dataplane.dr_lab import DrLab  # noqa: E402

PORT = 2811  # GridFTP
BANNER_PORT = 2899  # the name servers (pps and connections/s)

#: Blasts one flow's ACK frames at the director from a TX ring.
#: argv: IFACE DST_MAC SRC_MAC SRC DST SPORT DPORT SECONDS MAX
PKTGEN = r"""
import mmap, socket, struct, sys, time, ipaddress
ifc, dmac, smac, src, dst, sport, dport, secs, maxp = sys.argv[1:10]
secs, maxp, sport, dport = float(secs), int(maxp), int(sport), int(dport)
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b)); s = (s >> 16) + (s & 0xFFFF); s += s >> 16
    return ~s & 0xFFFF
a4 = ipaddress.IPv4Address
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0x4000, 64, 6, 0, a4(src).packed, a4(dst).packed)
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 0x50, 0x10, 65535, 0, 0)
ph = ip[12:20] + struct.pack("!BBH", 0, 6, 20)
tcp = tcp[:16] + struct.pack("!H", csum(ph + tcp)) + tcp[18:]
frame = bytes.fromhex(dmac.replace(":", "")) + bytes.fromhex(smac.replace(":", "")) + b"\x08\x00" + ip + tcp
frame += b"\0" * (60 - len(frame))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
s.setsockopt(263, 10, 1)            # PACKET_VERSION = TPACKET_V2
s.setsockopt(263, 20, 1)            # PACKET_QDISC_BYPASS
FS, BS, BN = 128, 1 << 16, 16
NF = BS // FS * BN
s.setsockopt(263, 13, struct.pack("IIII", BS, BN, FS, NF))   # PACKET_TX_RING
s.bind((ifc, 0))
ring = mmap.mmap(s.fileno(), BS * BN, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
for i in range(NF):
    off = i * FS
    ring[off + 32: off + 32 + len(frame)] = frame
    struct.pack_into("II", ring, off + 4, len(frame), len(frame))
sent, t0 = 0, time.monotonic()
while sent < maxp and time.monotonic() - t0 < secs:
    for i in range(NF):
        struct.pack_into("I", ring, i * FS, 1)   # TP_STATUS_SEND_REQUEST
    s.send(b"")                                   # blocks until the ring went out
    sent += NF
el = time.monotonic() - t0
print('{"sent": %d, "elapsed": %f}' % (sent, el), flush=True)
"""

#: Opens a held connection to VIP:PORT and prints its local port, then waits for stdin to close.
HOLD = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
name = s.recv(64).decode().strip()
print(s.getsockname()[1], name, flush=True)
sys.stdin.read()
"""

#: C concurrent clients for at most SECONDS and MAX connections: connect, read the banner, close.
CPS = r"""
import asyncio, json, sys, time
host, port, conc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
secs, maxc = float(sys.argv[4]), int(sys.argv[5])
done = errors = 0
async def worker(end):
    global done, errors
    while time.monotonic() < end and done + errors < maxc:
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
            await asyncio.wait_for(r.readline(), 5)
            w.close()
            done += 1
        except (OSError, asyncio.TimeoutError):
            errors += 1
async def main():
    t0 = time.monotonic()
    await asyncio.gather(*(worker(t0 + secs) for _ in range(conc)))
    print(json.dumps({"conns": done, "errors": errors, "elapsed": time.monotonic() - t0}))
asyncio.run(main())
"""


def chain_packets(t: DrLab) -> int:
    total = 0
    for item in t.nft_json("dir1", "counters table netdev gridlb_dr"):
        if "counter" in item:
            total += int(item["counter"]["packets"])
    return total


def blast(t: DrLab, dst_mac: str, sport: str, seconds: float, max_packets: int, rs: str) -> dict[str, float]:
    """Send the flow's frames to `dst_mac`; return offered and delivered (at `rs`'s eth0) rates."""
    lab = t.lab
    argv = [sys.executable, "-c", PKTGEN, "eth0", dst_mac, lab.node("client").mac]
    argv += [str(lab.node("client").ipv4), t.vip4, sport, str(BANNER_PORT), str(seconds), str(max_packets)]
    before_rs, before_chain = t.link_stats(rs)["rx"], chain_packets(t)
    out = lab.exec("client", argv, timeout_s=seconds + 60).stdout
    gen = json.loads(out.strip().splitlines()[-1])
    el = float(gen["elapsed"])
    return {
        "offered_pps": gen["sent"] / el,
        "delivered_pps": (t.link_stats(rs)["rx"] - before_rs) / el,
        "forwarded_pps": (chain_packets(t) - before_chain) / el,
    }


def measure_pps(t: DrLab, seconds: float, max_packets: int) -> dict[str, dict[str, float]]:
    """One established flow's frames through the director, then straight to its real server."""
    lab = t.lab
    hold = lab.spawn(
        "client",
        [sys.executable, "-c", HOLD, t.vip4, str(BANNER_PORT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert hold.stdout is not None
    sport, rs = hold.stdout.readline().split()
    time.sleep(1.2)  # the flow is established in the dataplane's bookkeeping
    try:
        via = blast(t, lab.node("dir1").mac, sport, seconds, max_packets, rs)
        direct = blast(t, lab.node(rs).mac, sport, seconds, max_packets, rs)
    finally:
        if hold.stdin is not None:
            hold.stdin.close()
        hold.wait(timeout=10)
    return {"dr": via, "direct": direct}


def measure_cps(t: DrLab, host: str, seconds: float, max_conns: int) -> dict[str, float]:
    argv = [sys.executable, "-c", CPS, host, str(BANNER_PORT), "32", str(seconds), str(max_conns)]
    out = t.lab.exec("client", argv, timeout_s=seconds + 60).stdout
    got = json.loads(out.strip().splitlines()[-1])
    return {"cps": got["conns"] / got["elapsed"], "errors": got["errors"], "conns": got["conns"]}


def measure_upload(t: DrLab, host: str, src: Path, rounds: int) -> float:
    best = 0.0
    for _ in range(rounds):
        argv = [
            "timeout",
            "120",
            "globus-url-copy",
            "-p",
            "4",
            f"file://{src}",
            f"ftp://{host}:{PORT}/dev/null",
        ]
        t0 = time.monotonic()
        r = t.lab.exec("client", argv, timeout_s=150, check=False)
        el = time.monotonic() - t0
        if r.returncode != 0:
            raise RuntimeError(f"globus-url-copy to {host}: {r.stderr[-500:]}")
        best = max(best, src.stat().st_size / el / 1e6)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short runs (under a minute)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/dr.py needs root (network namespaces, nftables)", file=sys.stderr)
        return 2
    q = args.quick
    pps_s, cps_s, up_mib, rounds = (3.0, 3.0, 64, 1) if q else (8.0, 8.0, 256, 3)
    workdir = Path(tempfile.mkdtemp(prefix="gdrb-", dir="/tmp"))
    workdir.chmod(0o755)
    try:
        with DrLab(f"glbBdr-{os.getpid() % 100000}", workdir, net_b=7) as t:
            t.start_name_servers(BANNER_PORT)
            have_globus = shutil.which("globus-gridftp-server") and shutil.which("globus-url-copy")
            if have_globus:
                for rs in t.realservers:
                    node = t.lab.node(rs)
                    argv = ["globus-gridftp-server", "-aa", "-anonymous-user", "nobody", "-p", str(PORT)]
                    argv += ["-data-interface", str(node.ipv4)]
                    t.lab.spawn(rs, argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for rs in t.realservers:
                    t.wait_listening(rs, PORT)
            # Two services: the banner servers (pps, cps) on PORT+1, GridFTP on PORT.
            t.start_director(t.site([(4, PORT), (4, BANNER_PORT)]))
            rows = []
            pps = measure_pps(t, pps_s, 50_000_000)
            via, direct = pps["dr"], pps["direct"]
            pps_ratio = via["delivered_pps"] / max(direct["delivered_pps"], 1)
            rows.append(
                (
                    "pps at the real server (one flow, 60-byte frames)",
                    f"{via['delivered_pps']:,.0f} (director forwarded {via['forwarded_pps']:,.0f})",
                    f"straight to the real server {direct['delivered_pps']:,.0f}",
                    f"{pps_ratio:.2f}",
                )
            )
            vip_cps = measure_cps(t, t.vip4, cps_s, 100_000)
            direct_cps = measure_cps(t, str(t.lab.node("rs1").ipv4), cps_s, 100_000)
            rows.append(
                (
                    "new connections/s (32 concurrent)",
                    f"{vip_cps['cps']:,.0f}",
                    f"direct {direct_cps['cps']:,.0f}",
                    f"{vip_cps['cps'] / max(direct_cps['cps'], 1):.2f}",
                )
            )
            up_vip = up_direct = 0.0
            if have_globus:
                src = workdir / "up.bin"
                with src.open("wb") as f:
                    f.write(os.urandom(1 << 20) * up_mib)
                src.chmod(0o644)
                up_direct = measure_upload(t, str(t.lab.node("rs1").ipv4), src, rounds)
                up_vip = measure_upload(t, t.vip4, src, rounds)
                rows.append(
                    (
                        f"upload MB/s (globus-url-copy -p 4, {up_mib} MiB)",
                        f"{up_vip:,.1f}",
                        f"direct {up_direct:,.1f}",
                        f"{up_vip / max(up_direct, 1e-9):.2f}",
                    )
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("| measure | through dr | peer in the same run | ratio |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} |")
    print(
        "(indicative: a shared 2-core machine; the generator, the veths, the bridge and the real server's"
        " stack share its cores with the director, so pps is the whole path's, not the director's alone)"
    )
    print(
        "RESULT dr "
        f"pps={via['delivered_pps']:.0f} forwarded_pps={via['forwarded_pps']:.0f} "
        f"offered_pps={via['offered_pps']:.0f} pps_direct={direct['delivered_pps']:.0f} "
        f"pps_ratio={pps_ratio:.2f} "
        f"cps_vip={vip_cps['cps']:.0f} cps_direct={direct_cps['cps']:.0f} "
        f"cps_ratio={vip_cps['cps'] / max(direct_cps['cps'], 1):.2f} cps_errors={vip_cps['errors']} "
        f"upload_vip_MBps={up_vip:.1f} upload_direct_MBps={up_direct:.1f} "
        f"upload_ratio={up_vip / max(up_direct, 1e-9):.2f} quick={int(q)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
