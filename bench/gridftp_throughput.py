"""GridFTP throughput on loopback: our server vs globus-gridftp-server, same file, same client, same run.

The client is Debian's globus-url-copy for both servers (so only the server differs). For 1 and 4 streams
(`-p 4` = MODE E) it times downloads to /dev/null and uploads into the server's directory, after one
warm-up, in at least 3 rounds that alternate the servers. Prints a table with the median and the spread
(min-max) of the rounds and, last, `RESULT gridftp_throughput key=value ...`.
Goals (issue 14): ours >= 1.0x Globus's median MB/s for get with 4 streams and with 1 stream, and for
put with 1 and with 4 streams. Needs root (globus-gridftp-server drops to nobody).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_banner(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early: {proc.args!r}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
            s.settimeout(5)
            if s.recv(100).startswith(b"220"):
                return
        time.sleep(0.1)
    raise SystemExit(f"server did not answer: {proc.args!r}")


def guc(args: list[str], timeout_s: int) -> float:
    """Run one globus-url-copy under `timeout` and return its wall time in seconds."""
    env = dict(os.environ, GLOBUS_USAGE_OPTOUT="1")
    t0 = time.perf_counter()
    r = subprocess.run(
        ["timeout", "-k", "5", str(timeout_s), "globus-url-copy", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s + 15,
        check=False,
    )
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(
            f"globus-url-copy {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()[-500:]}"
        )
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller file, fewer repeats (< 1 min)")
    ap.add_argument("--size-mib", type=int, help="file size (default 1024, quick 192)")
    ap.add_argument("--repeats", type=int, help="rounds per case (default 5, quick 3; at least 3)")
    args = ap.parse_args()
    size_mib = args.size_mib or (192 if args.quick else 1024)
    repeats = args.repeats or (3 if args.quick else 5)
    if repeats < 3:
        ap.error("--repeats: at least 3 rounds (the median and spread need them)")
    for tool in ("globus-url-copy", "globus-gridftp-server", "timeout"):
        if shutil.which(tool) is None:
            raise SystemExit(
                f"{tool} is not installed (`make test` installs globus-gass-copy-progs and "
                "globus-gridftp-server-progs)"
            )
    if os.geteuid() != 0:
        raise SystemExit("run as root: globus-gridftp-server -aa needs root to switch to `nobody`")

    work = Path(tempfile.mkdtemp(prefix="glbE-bench-", dir="/tmp"))
    work.chmod(0o755)
    ours_root, globus_root = work / "ours", work / "globus"
    for d in (ours_root, globus_root):
        d.mkdir()
        d.chmod(0o777)
    src = work / "src.bin"
    with open(src, "wb") as f:
        block = os.urandom(1 << 20)
        for i in range(size_mib):
            f.write(block[i % 251 :] + block[: i % 251])
    src.chmod(0o644)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        p_ours, p_globus = free_port(), free_port()
        ours = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gridlb",
                "gridftp-server",
                "--root",
                str(work),
                "--listen",
                f"127.0.0.1:{p_ours}",
                "--data-address",
                "127.0.0.1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        procs.append(ours)
        globus = subprocess.Popen(
            [
                "globus-gridftp-server",
                "-aa",
                "-anonymous-user",
                "nobody",
                "-p",
                str(p_globus),
                "-control-interface",
                "127.0.0.1",
                "-data-interface",
                "127.0.0.1",
                "-d",
                "error",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=dict(os.environ, GLOBUS_USAGE_OPTOUT="1"),
        )
        procs.append(globus)
        wait_banner(p_ours, ours)
        wait_banner(p_globus, globus)
        # Our paths are relative to --root (= work); Globus's are host paths.
        urls = {
            "ours": (f"ftp://127.0.0.1:{p_ours}/src.bin", f"ftp://127.0.0.1:{p_ours}/ours/up.bin"),
            "globus": (f"ftp://127.0.0.1:{p_globus}{src}", f"ftp://127.0.0.1:{p_globus}{globus_root}/up.bin"),
        }
        size_mb = size_mib * (1 << 20) / 1e6
        timeout_s = max(60, size_mib // 10)
        results: dict[tuple[str, str, int], list[float]] = {}
        for direction in ("get", "put"):
            for streams in (1, 4):
                times: dict[str, list[float]] = {"ours": [], "globus": []}
                popt = ["-p", str(streams)] if streams > 1 else []
                # warm-up, then alternate the servers so drift hits both alike
                for rep in range(repeats + 1):
                    for name in ("ours", "globus") if rep % 2 == 0 else ("globus", "ours"):
                        get_url, put_url = urls[name]
                        if direction == "get":
                            dt = guc([*popt, get_url, "file:///dev/null"], timeout_s)
                        else:
                            dt = guc([*popt, f"file://{src}", put_url], timeout_s)
                        if rep > 0:
                            times[name].append(dt)
                for name, ts in times.items():
                    results[(direction, name, streams)] = sorted(size_mb / t for t in ts)
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"GridFTP throughput on loopback, {size_mib} MiB file, globus-url-copy client, "
        f"MB/s median [min-max] of {repeats} rounds"
    )
    print(f"{'direction':<10}{'streams':>8}{'ours MB/s':>22}{'globus MB/s':>22}{'ratio':>8}")
    kv = [f"size_mib={size_mib}", f"repeats={repeats}"]
    goals: dict[str, float] = {}
    for direction in ("get", "put"):
        for streams in (1, 4):
            o, g = results[(direction, "ours", streams)], results[(direction, "globus", streams)]
            om, gm = statistics.median(o), statistics.median(g)
            ratio = om / gm if gm else 0.0
            ocell = f"{om:.0f} [{o[0]:.0f}-{o[-1]:.0f}]"
            gcell = f"{gm:.0f} [{g[0]:.0f}-{g[-1]:.0f}]"
            print(f"{direction:<10}{streams:>8}{ocell:>22}{gcell:>22}{ratio:>8.2f}")
            key = f"{direction}_p{streams}"
            kv += [
                f"ours_{key}_MBps={om:.1f}",
                f"ours_{key}_min={o[0]:.1f}",
                f"ours_{key}_max={o[-1]:.1f}",
                f"globus_{key}_MBps={gm:.1f}",
                f"globus_{key}_min={g[0]:.1f}",
                f"globus_{key}_max={g[-1]:.1f}",
                f"ratio_{key}={ratio:.2f}",
            ]
            goals[key] = ratio
    # Issue 14: get with 4 and with 1 stream >= 1.0x Globus, put >= 1.0x (both stream counts).
    verdicts = {key: "met" if r >= 1.0 else "missed" for key, r in goals.items()}
    overall = "met" if all(v == "met" for v in verdicts.values()) else "missed"
    print(
        "goal (ours >= 1.0x Globus, medians: get 4 streams, get 1 stream, put 1 and 4 streams): "
        f"{overall} ("
        + ", ".join(f"{k.replace('_p', ' p')} {goals[k]:.2f} {verdicts[k]}" for k in goals)
        + ")"
    )
    kv += [f"goal_{key}={v}" for key, v in verdicts.items()]
    kv.append(f"goal={overall}")
    print("RESULT gridftp_throughput " + " ".join(kv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
