"""Tests of `gridlb lint`: findings (exit 1), clean (exit 0), and one line with exit 2 per user error."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from gridlb.cli.main import main

DATA = Path(__file__).resolve().parent.parent / "data"
SEED = DATA / "seed-hiera.yaml"
CONFIG = DATA / "config"

VRRP = "keepalived::vrrp_instances:\n  VI_1:\n    interface: em1\n"
VS = "keepalived::virtual_servers:\n  v:\n    ip_address: 10.0.0.1\n"

#: (name, file content or None for "no such file", line reported, words the message must contain)
USER_ERRORS: list[tuple[str, str | bytes | None, int, str]] = [
    ("bad-syntax", "keepalived::vrrp_instances: [\n  VI_1\n", 3, "YAML"),
    ("tab-indent", VRRP + "\tvirtual_router_id: 1\n", 4, "'\\t'"),
    ("duplicate-key", VRRP + "    virtual_router_id: 1\n    interface: em2\n", 5, "duplicate key"),
    ("unknown-key", VRRP + "    virtual_router_id: 1\n    priorty: 100\n", 5, "did you mean 'priority'"),
    ("unknown-top", "keepalived::virtual_server: {}\n", 1, "did you mean 'keepalived::virtual_servers'"),
    ("unknown-gridlb", "gridlb:\n  dataplan: ipvs\n", 2, "did you mean 'dataplane'"),
    ("wrong-type-int", VRRP + "    virtual_router_id: one\n", 4, "integer"),
    ("wrong-type-list", VS + "    port: 1\n    real_servers: 10.0.0.2\n", 5, "mapping"),
    ("wrong-type-map", "keepalived::vrrp_instances:\n  VI_1: 5\n", 2, "mapping"),
    ("priority-range", VRRP + "    virtual_router_id: 1\n    priority: 300\n", 5, "255"),
    ("vrid-range", VRRP + "    virtual_router_id: 0\n", 4, "0 is out of range 1..255"),
    (
        "weight-range",
        VS + "    port: 1\n    real_servers:\n      - {ip_address: 10.0.0.2, weight: 70000}\n",
        6,
        "65535",
    ),
    ("advert-range", VRRP + "    virtual_router_id: 1\n    advert_int: 0\n", 5, "0.01"),
    ("bad-port", VS + "    port: 99999\n", 4, "65535"),
    ("bad-port-name", VS + "    port: gsiftp\n", 4, "integer"),
    (
        "bad-ip",
        VS + "    port: 1\n    real_servers:\n      - ip_address: 10.0.0.256\n",
        6,
        "not an IP address",
    ),
    ("bad-vip", VRRP + "    virtual_router_id: 1\n    virtual_ipaddress: 10.0.0.1/33\n", 5, "prefix length"),
    ("bad-enum", VS + "    port: 1\n    lb_kind: DRR\n", 5, "'NAT', 'DR' or 'TUN'"),
    ("bad-state", VRRP + "    virtual_router_id: 1\n    state: PRIMARY\n", 5, "MASTER"),
    ("missing-key", VRRP, 2, "virtual_router_id: required key is missing"),
    ("missing-port", VS, 2, "port is required"),
    ("alias-twice", VS + "    port: 1\n    lb_algo: wlc\n    lvs_sched: rr\n", 6, "same setting"),
    ("bad-listen", "gridlb:\n  metrics_listen: localhost\n", 2, "ADDR:PORT"),
    ("empty-file", "", 1, "empty"),
    ("top-level-list", "- a\n- b\n", 1, "mapping"),
    ("top-level-scalar", "just words\n", 1, "mapping"),
    ("not-utf8", b"gridlb:\n  control_group: 'gr\xfcn'\n", 2, "UTF-8"),
    ("missing-file", None, 1, "no such file"),
]


@pytest.mark.parametrize(("name", "content", "line", "words"), USER_ERRORS, ids=[c[0] for c in USER_ERRORS])
def test_user_error_is_one_line_with_file_and_line_and_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: str | bytes | None,
    line: int,
    words: str,
) -> None:
    path = tmp_path / f"{name}.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    assert main(["lint", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{path}:{line}: error: "), lines[0]
    assert words in lines[0]
    assert "Traceback" not in err


def test_at_least_fifteen_user_error_cases() -> None:
    assert len(USER_ERRORS) >= 15


def test_seed_findings_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", str(SEED)]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 2
    dup = [x for x in lines if "listed twice" in x]
    assert dup == [
        f"{SEED}:36: error: keepalived::virtual_servers.red-gridftp-v4.real_servers[4]: "
        "real server 129.93.239.168:2811 is listed twice: line 34 and line 36"
    ]
    seed_lines = SEED.read_text().splitlines()
    assert "129.93.239.168" in seed_lines[33] and "129.93.239.168" in seed_lines[35]
    assert "2 finding(s)" in err


def test_director_pair_both_master_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    a, b = CONFIG / "nebraska-red-lvs1.yaml", CONFIG / "nebraska-red-lvs2.yaml"
    assert main(["lint", "--errors-only", str(a), str(b)]) == 1
    out, _ = capsys.readouterr()
    masters = [x for x in out.splitlines() if "both MASTER at priority 100" in x]
    assert [m.split(": ")[0] for m in masters] == [f"{a}:7", f"{b}:7"]
    assert all(": error: keepalived::vrrp_instances.VI_1.state: " in m for m in masters)


def test_clean_site_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", str(CONFIG / "fixed-lvs1.yaml"), str(CONFIG / "fixed-lvs2.yaml")]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "clean" in err


def test_every_error_of_a_file_is_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "s.yaml"
    p.write_text(VRRP + "    virtual_router_id: 256\n    priorty: 1\n")
    assert main(["lint", "-q", str(p)]) == 2
    _, err = capsys.readouterr()
    assert [x.split(": ")[0] for x in err.splitlines()] == [f"{p}:4", f"{p}:5"]


def test_installed_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "gridlb"
    bad = tmp_path / "bad.yaml"
    bad.write_text(VRRP + "    virtual_router_id: 1\n    priority: '256'\n")
    proc = subprocess.run([str(script), "lint", str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert re.fullmatch(
        rf"{re.escape(str(bad))}:5: error: keepalived::vrrp_instances\.VI_1\.priority: .*\n", proc.stderr
    )
    assert proc.stdout == ""
    seed = subprocess.run([str(script), "lint", str(SEED)], capture_output=True, text=True, timeout=60)
    assert seed.returncode == 1 and "129.93.239.168:2811 is listed twice" in seed.stdout
    missing = subprocess.run(
        [str(script), "lint", str(tmp_path / "nope.yaml")], capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 2 and "Traceback" not in missing.stderr


FWMARK_ON_PROXY = (
    "virtual_servers:\n"
    "  marked:\n"
    "    fwmark: 7\n"
    "    persistence_timeout: 300\n"
    "    real_servers:\n"
    "      - ip_address: 127.0.0.2\n"
    "gridlb:\n"
    "  dataplane: proxy\n"
)


def test_fwmark_service_on_the_proxy_is_an_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "s.yaml"
    p.write_text(FWMARK_ON_PROXY)
    assert main(["lint", str(p)]) == 1
    out, _ = capsys.readouterr()
    (line,) = [x for x in out.splitlines() if "firewall-mark" in x]
    assert line.startswith(f"{p}:2: error: virtual_servers.marked: the proxy dataplane: ")
    # persistence itself is no longer a finding: the proxy keeps IPVS templates
    assert "persistence" not in out
