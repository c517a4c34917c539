"""`pip install gridlb` from a wheel built by `python -m build` (not `-e`): a fresh venv gets a working
`gridlb` with the dashboard's files and the systemd unit, and `gridlb demo --dashboard` serves the page.

The demo runs in a fresh network namespace with only `lo`, so its fixed loopback ports meet no other
test's, and the page is fetched from inside it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import lab, need_root, need_tool, pip_install

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = (
    "gridlb/dashboard/static/index.html",
    "gridlb/dashboard/static/dashboard.js",
    "gridlb/dashboard/static/dashboard.css",
    "gridlb/systemd/gridlb-director.service",
    "gridlb/examples/nebraska-red-gridftp.yaml",
    "gridlb/py.typed",
)
FETCH = """\
import json, sys, time, urllib.request
base = "http://127.0.0.1:8080"
for _ in range(100):
    try:
        urllib.request.urlopen(base + "/", timeout=2)
        break
    except OSError:
        time.sleep(0.2)
out = {}
for path in ("/", "/static/dashboard.js", "/static/dashboard.css", "/api/status"):
    with urllib.request.urlopen(base + path, timeout=10) as r:
        out[path] = [r.status, r.headers["Content-Type"], r.read().decode()]
print(json.dumps(out))
"""


@pytest.fixture
def lo_ns() -> Iterator[str]:
    need_root()
    need_tool("ip")
    with lab("P", realservers=0, directors=0, start="none") as built:
        built.exec("client", ["ip", "link", "del", "eth0"])  # the lab's client, cut off: loopback only
        yield built.node("client").ns


@pytest.mark.privileged
def test_wheel_installs_into_a_fresh_venv_and_serves_the_dashboard(lo_ns: str, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = dist.glob("gridlb-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(SHIPPED) <= names
    assert not any(n.startswith(("tests/", "docs/", "bench/")) for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
    pip_install(pip, str(wheel))
    gridlb = str(venv / "bin" / "gridlb")
    py = str(venv / "bin" / "python")
    where = subprocess.run(
        [py, "-c", "import gridlb, sys; print(gridlb.__file__)"], capture_output=True, text=True, check=True
    ).stdout
    assert where.startswith(str(venv)) and str(ROOT) not in where  # the wheel's copy, not this tree

    unit = subprocess.run(
        [gridlb, "director", "unit"], capture_output=True, text=True, timeout=60, check=True
    )
    assert f"ExecStart={gridlb} director run /etc/gridlb/director.yaml" in unit.stdout

    ns = ["ip", "netns", "exec", lo_ns]
    demo = subprocess.Popen(
        [*ns, gridlb, "demo", "--dashboard", "127.0.0.1:8080", "--duration", "30", "--no-tui"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
    )
    try:
        got = subprocess.run([*ns, py, "-c", FETCH], capture_output=True, text=True, timeout=60)
        assert got.returncode == 0, got.stderr
        pages = json.loads(got.stdout)
        assert all(status == 200 for status, _, _ in pages.values())
        assert pages["/"][1].startswith("text/html") and "/static/dashboard.js" in pages["/"][2]
        assert pages["/static/dashboard.js"][1] == "text/javascript"
        status = json.loads(pages["/api/status"][2])["status"]
        assert [r["real"] for r in status["services"][0]["reals"]] == [
            "127.0.0.2:2811",
            "127.0.0.3:2811",
            "127.0.0.4:2811",
        ]
        demo.terminate()
        out, err = demo.communicate(timeout=30)
        assert "dashboard     http://127.0.0.1:8080/" in out and "Traceback" not in err
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
