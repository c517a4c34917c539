"""Acceptance: headless Chromium (Debian's) against `gridlb demo --dashboard`, with no network but `lo`.

The demo and the browser both run in a fresh network namespace that has only the loopback interface,
so the page can load nothing from the internet; the browser is driven over the DevTools pipe from
outside. Checks: the page lists the three real servers, renders completely (stylesheet applied,
script ran, live stream connected, every resource from the director), shows a drain made with
`gridlb drain 127.0.0.3` within 2 s without a reload, offers no actions without a token (and the
director refuses one with 403); a screenshot is saved in the test's tmp dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dashboard.cdp import Browser
from tests.support import need_root, need_tool

pytestmark = pytest.mark.privileged

PORT = 8080
URL = f"http://127.0.0.1:{PORT}/"
GRIDLB = str(Path(sys.executable).with_name("gridlb"))


@pytest.fixture
def lo_only_ns() -> Iterator[str]:
    """A new network namespace with only `lo` (up); every process left in it is killed, then it goes."""
    need_root()
    need_tool("ip", "chromium")
    name = f"glbW-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), 9)
        subprocess.run(["ip", "netns", "del", name], check=False)


def in_ns(ns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def test_dashboard_in_chromium_offline(lo_only_ns: str, tmp_path: Path) -> None:
    ns = lo_only_ns
    links = json.loads(subprocess.run(["ip", "-j", "-n", ns, "link"], capture_output=True, text=True).stdout)
    assert [link["ifname"] for link in links] == ["lo"]  # no way out but loopback
    run_dir = tmp_path / "run"
    demo = subprocess.Popen(
        in_ns(
            ns,
            GRIDLB,
            "demo",
            "--dashboard",
            f"127.0.0.1:{PORT}",
            "--metrics",
            "",
            "--duration",
            "120",
            "--no-tui",
            "--dir",
            str(run_dir),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    browser: Browser | None = None
    try:
        assert demo.stdout is not None
        seen = []
        for line in demo.stdout:
            seen.append(line)
            if line.startswith("Stop with Ctrl-C"):
                break
        assert f"dashboard     {URL}" in "".join(seen), "".join(seen)
        profile = tmp_path / "profile"
        profile.mkdir()
        browser = Browser(in_ns(ns), str(profile))
        browser.navigate(URL)
        rows = browser.wait_for(
            "document.querySelectorAll('tr[data-real]').length === 3 && "
            "[...document.querySelectorAll('tr[data-real]')].map(r => r.dataset.real)",
            15,
        )
        assert rows == ["127.0.0.2:2811", "127.0.0.3:2811", "127.0.0.4:2811"]
        # rendered completely: the stylesheet applies, the script ran, the live stream is connected,
        # every resource came from the director, sparklines are drawn
        browser.wait_for("document.getElementById('live').className === 'live on'", 10)
        assert browser.eval("getComputedStyle(document.querySelector('header')).display") == "flex"
        assert browser.eval(
            "document.styleSheets.length === 1 && document.styleSheets[0].cssRules.length > 10"
        )
        resources = browser.eval("performance.getEntriesByType('resource').map(e => e.name)")
        assert {f"{URL}static/dashboard.css", f"{URL}static/dashboard.js"} <= set(resources)
        assert all(r.startswith(URL) for r in resources), resources
        assert browser.eval("document.querySelectorAll('svg.spark polyline').length") == 6
        assert (
            browser.eval(
                "document.querySelector('tr[data-real=\"127.0.0.3:2811\"] [data-field=health]').textContent"
            )
            == "up"
        )
        # read-only without a token: no buttons, and the director refuses an action
        assert browser.eval("document.querySelectorAll('button').length") == 0
        assert browser.eval("fetch('/api/drain?real=127.0.0.2', {method: 'POST'}).then(r => r.status)") == 403

        browser.eval("window.loadedOnce = 'yes'")  # gone if the page reloaded
        t0 = time.monotonic()
        drain = subprocess.run(
            in_ns(ns, GRIDLB, "drain", "127.0.0.3", "--socket", str(run_dir / "control.sock")),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert drain.returncode == 0, drain.stderr
        done = time.monotonic()  # the drain is in the dataplane: the page has 2 s from here
        browser.wait_for(
            "document.querySelector('tr[data-real=\"127.0.0.3:2811\"] [data-field=state]').textContent "
            "=== 'draining'",
            2.0,
        )
        shown = time.monotonic()
        assert shown - done < 2.0
        print(f"drain shown {shown - done:.2f} s after `gridlb drain` returned ({done - t0:.2f} s to run it)")
        assert browser.eval("window.loadedOnce") == "yes"
        assert (
            browser.eval(
                "document.querySelector('tr[data-real=\"127.0.0.2:2811\"] [data-field=state]').textContent"
            )
            == "serving"
        )
        shot = tmp_path / "dashboard.png"
        shot.write_bytes(browser.screenshot())
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
        out = os.environ.get("GRIDLB_TEST_ARTIFACTS")
        if out:
            shutil.copy(shot, Path(out) / "dashboard.png")
    finally:
        if browser is not None:
            browser.close()
        demo.terminate()
        demo.wait(timeout=30)
