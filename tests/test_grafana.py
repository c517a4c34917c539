"""The Grafana dashboard in docs/grafana/gridlb.json: its JSON model is well formed, and every metric
(and label) it queries exists in /metrics of a running director with VRRP and the proxy dataplane.

The director runs in a fresh network namespace (loopback, plus a veth pair for its VRRP instance);
a TCP listener there is its real server, so every family has samples.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import need_root, need_tool

DASHBOARD = Path(__file__).resolve().parents[1] / "docs" / "grafana" / "gridlb.json"
GRIDLB = str(Path(sys.executable).with_name("gridlb"))
PANEL_TYPES = {"timeseries", "stat", "state-timeline", "table", "bargauge", "gauge", "text", "row"}
#: Labels Prometheus adds at scrape time (the VRRP instance name becomes exported_instance), and `le`.
SCRAPE_LABELS = {"instance", "job", "exported_instance", "le"}
METRIC_RE = re.compile(r"\b(gridlb_[a-z0-9_]+)")
SELECTOR_RE = re.compile(r"\b(gridlb_[a-z0-9_]+)\{([^}]*)\}")
BY_RE = re.compile(r"\bby \(([^)]*)\)")


def model() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def exprs() -> list[str]:
    return [t["expr"] for p in model()["panels"] for t in p.get("targets", [])]


def test_json_model_structure() -> None:
    d = model()
    for key, kind in (
        ("title", str),
        ("uid", str),
        ("schemaVersion", int),
        ("panels", list),
        ("templating", dict),
    ):
        assert isinstance(d[key], kind), key
    assert 1 <= len(d["uid"]) <= 40 and d["schemaVersion"] >= 36
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in d["panels"]:
        assert p["type"] in PANEL_TYPES and p["title"]
        g = p["gridPos"]
        assert all(isinstance(g[k], int) and g[k] >= 0 for k in "xywh") and g["w"] > 0 and g["h"] > 0
        assert g["x"] + g["w"] <= 24
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs))
        for t in p["targets"]:
            assert t["expr"].count("(") == t["expr"].count(")") and t["expr"].count("{") == t["expr"].count(
                "}"
            )
            for var in re.findall(r"\$(\w+)", t["expr"]):
                assert var in variables or var.startswith("__"), var
    titles = " ".join(p["title"].lower() for p in d["panels"])
    for needed in ("connections", "throughput", "health", "vrrp role", "vrrp transitions", "check latency"):
        assert needed in titles


def scrape_families(text: str) -> dict[str, set[str] | None]:
    """Return every sample name in an exposition with the label names it carries (None: declared by its
    TYPE line but without samples yet, e.g. an error counter before the first error)."""
    out: dict[str, set[str] | None] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}.get(kind, ("",))
            for suffix in suffixes:
                out.setdefault(name if name.endswith(suffix) else name + suffix, None)
            continue
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s", line)
        assert m, line
        labels = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(2) or ""))
        out[m.group(1)] = (out.get(m.group(1)) or set()) | labels
    return out


@pytest.fixture
def netns() -> Iterator[str]:
    need_root()
    need_tool("ip")
    name = f"glbG-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for argv in (
            ["link", "set", "lo", "up"],
            ["link", "add", "name", "ga", "type", "veth", "peer", "name", "gb"],
            ["addr", "add", "10.213.0.2/24", "dev", "ga"],
            ["addr", "add", "10.213.0.3/24", "dev", "gb"],
            ["link", "set", "ga", "up"],
            ["link", "set", "gb", "up"],
        ):
            subprocess.run(["ip", "-n", name, *argv], check=True)
        yield name
    finally:
        for pid in subprocess.run(
            ["ip", "netns", "pids", name], capture_output=True, text=True
        ).stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), 9)
        subprocess.run(["ip", "netns", "del", name], check=False)


SITE = """\
vrrp_instances:
  VI_G:
    interface: ga
    state: BACKUP
    virtual_router_id: 62
    priority: 150
    version: 3
    advert_int: 0.2
    virtual_ipaddress: ['10.213.0.100/24']
    unicast_source_ip: 10.213.0.2
    unicast_peers: [10.213.0.3]
virtual_servers:
  gridftp:
    ip_address: 10.213.0.100
    port: 2811
    lb_algo: wlc
    lb_kind: NAT
    delay_loop: 1
    warmup: 0
    tcp_check:
      connect_timeout: 1
    real_servers:
      - ip_address: 127.0.0.2
        port: 2811
gridlb:
  dataplane: proxy
  control_socket: {sock}
  metrics_listen: 127.0.0.1:9100
"""


@pytest.mark.privileged
def test_every_queried_metric_exists_in_a_running_directors_metrics(netns: str, tmp_path: Path) -> None:
    site = tmp_path / "director.yaml"
    site.write_text(SITE.format(sock=tmp_path / "control.sock"))
    ns = ["ip", "netns", "exec", netns]
    log = (tmp_path / "director.log").open("w")  # closed once the director stopped
    procs = [
        subprocess.Popen(
            [*ns, sys.executable, "-m", "http.server", "--bind", "127.0.0.2", "2811"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [*ns, GRIDLB, "director", "run", str(site)],
            stdout=subprocess.DEVNULL,
            stderr=log,
        ),
    ]
    fetch = (
        "import urllib.request; "
        "print(urllib.request.urlopen('http://127.0.0.1:9100/metrics', timeout=5).read().decode())"
    )
    try:
        families: dict[str, set[str] | None] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            got = subprocess.run(
                [*ns, sys.executable, "-c", fetch], capture_output=True, text=True, timeout=20
            )
            if got.returncode == 0:
                families = scrape_families(got.stdout)
                master = 'gridlb_vrrp_role{instance="VI_G",state="MASTER"} 1.0' in got.stdout
                if (
                    master
                    and "gridlb_health_check_duration_seconds_bucket" in families
                    and ("gridlb_vrrp_transitions_total" in families)
                ):
                    break
            time.sleep(0.5)
        else:
            pytest.fail("no complete /metrics in 30 s: " + (tmp_path / "director.log").read_text()[-2000:])
        queried = {m for e in exprs() for m in METRIC_RE.findall(e)}
        assert queried - set(families) == set()
        assert len(queried) >= 15
        with_samples = {m for m in queried if families[m] is not None}
        assert len(with_samples) >= len(queried) - 2, queried - with_samples
        for e in exprs():
            names = set(METRIC_RE.findall(e))
            if any(families[n] is None for n in names):
                continue  # no samples to read labels from (the family is declared)
            for metric, body in SELECTOR_RE.findall(e):
                used = set(re.findall(r"([a-zA-Z_]+)\s*=~?", body))
                assert used - (families[metric] or set()) - SCRAPE_LABELS == set(), (metric, used)
            for group in BY_RE.findall(e):
                have = set().union(*(families[n] or set() for n in names)) | SCRAPE_LABELS
                assert {x.strip() for x in group.split(",")} - have == set(), (e, group)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
