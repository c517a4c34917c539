"""Tests of sd_notify: datagrams on a socket the test binds (path and abstract), the watchdog interval."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

from gridlb.systemd.notify import Notifier, watchdog_interval_s


def test_lines_reach_a_path_socket_and_an_abstract_one() -> None:
    with tempfile.TemporaryDirectory(prefix="glbS-") as d:
        path = str(Path(d) / "notify")
        for address, env in ((path, path), (f"\0glbS-{os.getpid()}", f"@glbS-{os.getpid()}")):
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.bind(address)
                n = Notifier({"NOTIFY_SOCKET": env})
                assert n.enabled and n.ready("2 services") and n.watchdog() and n.reloading() and n.stopping()
                got = [sock.recv(4096).decode() for _ in range(4)]
                assert got[0] == "READY=1\nSTATUS=2 services"
                assert got[1] == "WATCHDOG=1"
                assert got[2].startswith("RELOADING=1\nMONOTONIC_USEC=") and got[2].split("=")[-1].isdigit()
                assert got[3] == "STOPPING=1"


def test_without_a_manager_nothing_is_sent() -> None:
    n = Notifier({})
    assert not n.enabled and not n.ready() and n.sent == 0
    gone = Notifier({"NOTIFY_SOCKET": "/nonexistent/notify"})
    assert gone.enabled and not gone.watchdog()  # an error is not raised into the director


def test_watchdog_interval() -> None:
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": str(os.getpid())}) == 0.5
    assert watchdog_interval_s({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "1"}) is None  # meant for another
    assert watchdog_interval_s({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "x"}) is None
    assert watchdog_interval_s({}) is None
