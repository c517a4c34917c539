"""Record the real keepalived 2.2.7 HTTP_GET / SSL_GET verdicts on nginx's answers (needs kernel IPVS).

keepalived's checker process exits at start on a kernel without IPVS, so this runs inside a VM whose
kernel has it (Debian's stock kernel), as root, from the repository root:

    .venv/bin/python -m tests.health.golden.keepalived_http.capture OUTDIR

It starts the test nginx (tests/health/test_http.py), writes one virtual_server per case with
`alpha` (a real server enters the IPVS table only once its check passed) and `retry 0`, runs
keepalived for a while, and records which real servers `ipvsadm -Ln` lists: listed = keepalived says
up. The digests used are keepalived's own (`keepalived --genhash`). OUTDIR/verdicts.json is what
tests/health/test_http.py compares gridlb's checker with.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.health.test_http import _genhash, _make_pki, _start_nginx

PATHS = ("/index.html", "/nope", "/moved", "/chunked", "/dav/canary.txt")
WRONG = "0123456789abcdef0123456789abcdef"


def cases(digests: dict[tuple[str, bool], str]) -> list[dict[str, object]]:
    """Every (path, TLS, url spec) to check; `digests` are keepalived's digests of each answer."""
    out: list[dict[str, object]] = []
    for tls in (False, True):
        for path in PATHS:
            if tls and path == "/chunked":
                continue  # the echo location is on the plain server only
            right = digests[(path, tls)]
            for spec in (
                {},
                {"status_code": ["200"]},
                {"status_code": ["404"]},
                {"status_code": ["300-399"]},
                {"digest": right, "status_code": ["100-599"]},
                {"digest": right},
                {"digest": WRONG, "status_code": ["100-599"]},
            ):
                out.append({"path": path, "tls": tls, "url": {"path": path, **spec}})
    return out


def _conf(all_cases: list[dict[str, object]], ports: dict[str, int]) -> str:
    lines = ["global_defs {", "    router_id golden", "}"]
    for i, case in enumerate(all_cases):
        url = case["url"]
        assert isinstance(url, dict)
        body = [f"path {url['path']}"]
        if "digest" in url:
            body.append(f"digest {url['digest']}")
        if "status_code" in url:
            body.append("status_code " + " ".join(url["status_code"]))
        port = ports["good" if case["tls"] else "http"]
        lines += [
            f"virtual_server 10.9.{i // 200}.{i % 200 + 1} 80 {{",
            "    lvs_sched rr",
            "    lvs_method NAT",
            "    protocol TCP",
            "    alpha",
            "    delay_loop 2",
            f"    real_server 127.0.0.1 {port} {{",
            f"        {'SSL_GET' if case['tls'] else 'HTTP_GET'} {{",
            "            url {",
            *[f"                {b}" for b in body],
            "            }",
            "            connect_timeout 10",
            "            retry 0",
            "        }",
            "    }",
            "}",
        ]
    return "\n".join(lines) + "\n"


def main(outdir: str) -> int:
    """Capture into `outdir` (see the module docstring)."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ka-golden-"))
    (work / "pki").mkdir()
    nginx = _start_nginx(work, _make_pki(work / "pki"))
    try:
        digests = {}
        statuses = {}
        for tls in (False, True):
            for path in PATHS:
                if tls and path == "/chunked":
                    continue
                status, digest = _genhash(nginx.ports["good" if tls else "http"], path, tls)
                digests[(path, tls)] = digest
                statuses[f"{'https' if tls else 'http'}:{path}"] = status
        all_cases = cases(digests)
        conf = work / "keepalived.conf"
        conf.write_text(_conf(all_cases, nginx.ports))
        subprocess.run(["modprobe", "ip_vs"], check=False)
        log = open(work / "keepalived.log", "w")  # noqa: SIM115 - closed below
        ka = subprocess.Popen(
            [
                "keepalived",
                "-n",
                "-l",
                "-D",
                "-C",
                "-f",
                str(conf),
                "-p",
                str(work / "k.pid"),
                "-c",
                str(work / "c.pid"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        listed: str = ""
        stable = 0
        deadline = time.monotonic() + 120
        time.sleep(10)
        while time.monotonic() < deadline and stable < 3:
            time.sleep(3)
            now = subprocess.run(["ipvsadm", "-Ln"], capture_output=True, text=True, check=False).stdout
            stable = stable + 1 if now == listed else 0
            listed = now
        ka.terminate()
        ka.wait(timeout=30)
        log.close()
        up: set[int] = set()
        current = -1
        for line in listed.splitlines():
            if line.startswith("TCP  10.9."):
                a, b = line.split()[1].rsplit(":", 1)[0].split(".")[2:]
                current = int(a) * 200 + int(b) - 1
            elif "-> 127.0.0.1:" in line and current >= 0:
                up.add(current)
        for i, case in enumerate(all_cases):
            case["keepalived"] = "up" if i in up else "down"
        result = {
            "keepalived": subprocess.run(
                ["keepalived", "-v"], capture_output=True, text=True
            ).stderr.splitlines()[0],
            "kernel": subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip(),
            "statuses": statuses,
            "cases": all_cases,
        }
        (out / "verdicts.json").write_text(json.dumps(result, indent=1) + "\n")
        (out / "ipvsadm-Ln.txt").write_text(listed)
        (out / "keepalived.log").write_text(
            "\n".join(
                line.split(": ", 1)[-1]
                for line in (work / "keepalived.log").read_text().splitlines()
                if "success" in line or "error" in line or "Adding" in line
            )
            + "\n"
        )
    finally:
        nginx.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
