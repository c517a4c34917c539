"""A relay that runs out of local ports toward a real server counts it and never marks the server down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import need_root, need_tool

ROOT = Path(__file__).resolve().parents[2]

#: Runs inside a fresh network namespace whose ephemeral range is 2 ports: three clients (bound to
#: ports outside it) through an rr service with one real server; the third connect has no local port.
SCRIPT = r"""
import json, socket, time
from gridlb.dataplane.relay import RelayEngine, RelayMode
from gridlb.table import AddDest, AddService, DestSpec, RealKey, ServiceKey, ServiceSpec
backend = socket.socket(); backend.bind(("127.0.0.1", 5000)); backend.listen(16)
failures = []
engine = RelayEngine(mode=RelayMode.SPLICE, on_failure=lambda *a: failures.append([str(x) for x in a]))
key, real = ServiceKey.tcp("127.0.0.1", 2811), RealKey.parse("127.0.0.1:5000")
def setup():
    engine.state.apply(AddService(key, ServiceSpec(scheduler="rr")))
    engine.state.apply(AddDest(key, real, DestSpec(weight=1)))
    engine.open_listener(engine.state.services[key])
engine.call(setup).result(5)
clients, served = [], []
for i in range(3):
    c = socket.socket(); c.bind(("127.0.0.1", 50000 + i)); c.connect(("127.0.0.1", 2811)); clients.append(c)
    c.settimeout(2)
    try:
        c.sendall(b"x")
        backend.settimeout(1)
        s, _ = backend.accept(); served.append(s)
    except OSError:
        pass
time.sleep(0.3)
down = engine.call(lambda: engine.state.services[key].dest(real).down).result(5)
errors = dict(engine.errors)
engine.call(lambda: engine.stop(0)).result(5); engine.join(5)
print(json.dumps({"served": len(served), "down": down, "failures": failures, "errors": errors}))
"""


@pytest.mark.privileged
def test_no_local_port_left_is_counted_and_the_real_server_stays_up() -> None:
    need_root()
    need_tool("ip")
    ns = f"glbLport{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        run = ["ip", "netns", "exec", ns]
        subprocess.run([*run, "ip", "link", "set", "lo", "up"], check=True)
        subprocess.run([*run, "sysctl", "-qw", "net.ipv4.ip_local_port_range=40000 40001"], check=True)
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
        out = subprocess.run(
            [*run, sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, env=env
        )
        assert out.returncode == 0, out.stderr
        got = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert got["served"] == 2  # the two local ports
    assert got["errors"].get("connect: eaddrnotavail (this director)", 0) >= 1, got["errors"]
    assert got["down"] is False and got["failures"] == []
