"""Tests of the journal's native protocol sender: encoding, fields, and a director's lines as received."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridlb.api.messages import DrainRequest
from gridlb.director.daemon import DaemonOptions, DirectorDaemon
from gridlb.director.director import DirectorConfig, log_health_change
from gridlb.systemd.journal import JournalHandler, encode, fields, keepalived_address, under_journal
from gridlb.table import RealKey, ServiceKey
from tests.director.fakes import FakeDataplane


def decode(data: bytes) -> dict[str, str]:
    """Parse a native-protocol datagram the way journald does."""
    out: dict[str, str] = {}
    while data:
        line, _, rest = data.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            out[key.decode()] = value.decode()
            data = rest
        else:
            (n,) = struct.unpack("<Q", rest[:8])
            out[line.decode()] = rest[8 : 8 + n].decode()
            assert rest[8 + n : 9 + n] == b"\n"
            data = rest[9 + n :]
    return out


@pytest.fixture
def journal() -> Iterator[tuple[socket.socket, JournalHandler]]:
    d = Path(tempfile.mkdtemp(prefix="glbS-j-"))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(d / "socket"))
    sock.settimeout(5)
    handler = JournalHandler(str(d / "socket"))
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("gridlb")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    yield sock, handler
    logger.removeHandler(handler)
    logger.setLevel(old)
    handler.close()
    sock.close()
    shutil.rmtree(d, ignore_errors=True)


def test_encoding_is_binary_safe_for_multi_line_values() -> None:
    data = encode({"MESSAGE": "two\nlines", "PRIORITY": "6"})
    assert data.startswith(b"MESSAGE\n" + struct.pack("<Q", 9) + b"two\nlines\n")
    assert decode(data) == {"MESSAGE": "two\nlines", "PRIORITY": "6"}


def test_fields_and_keepalived_addresses() -> None:
    assert fields(service="TCP 10.0.0.1:2811", real="10.0.1.1:2811", reason="") == {
        "journal_fields": {"GRIDLB_SERVICE": "TCP 10.0.0.1:2811", "GRIDLB_REAL_SERVER": "10.0.1.1:2811"}
    }
    assert keepalived_address("TCP 10.0.0.1:2811") == "[10.0.0.1]:tcp:2811"
    assert keepalived_address("[fd00::11]:2811") == "[fd00::11]:tcp:2811"


def test_under_journal_compares_the_stream_with_stderr() -> None:
    with tempfile.TemporaryFile() as f:
        st = os.fstat(f.fileno())
        assert under_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, f.fileno())
        assert not under_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}, f.fileno())
        assert not under_journal({}, f.fileno())


def test_a_health_transition_reads_like_keepalived_and_carries_fields(
    journal: tuple[socket.socket, JournalHandler],
) -> None:
    sock, _ = journal
    pair = (ServiceKey.tcp("10.0.0.1", 2811), RealKey.parse("10.0.1.1:2811"))
    log_health_change(pair, "tcp", "up", "down", "connect: connection refused")
    got = decode(sock.recv(65536))
    assert got["MESSAGE"] == (
        "TCP_CHECK on service [10.0.1.1]:tcp:2811 of VS [10.0.0.1]:tcp:2811 failed: "
        "connect: connection refused (health up -> down: TCP 10.0.0.1:2811 -> 10.0.1.1:2811)"
    )
    assert got["GRIDLB_REAL_SERVER"] == "10.0.1.1:2811" and got["GRIDLB_SERVICE"] == "TCP 10.0.0.1:2811"
    assert got["GRIDLB_TRANSITION"] == "up->down" and got["GRIDLB_REASON"] == "connect: connection refused"
    assert got["PRIORITY"] == "6" and got["SYSLOG_IDENTIFIER"] == "gridlb"


async def test_a_running_directors_drain_reaches_the_journal(
    journal: tuple[socket.socket, JournalHandler],
) -> None:
    sock, handler = journal
    d = Path(tempfile.mkdtemp(prefix="glbS-jd-"))
    (d / "site.yaml").write_text(
        "virtual_servers:\n  g:\n    ip_address: 127.47.0.1\n    port: 2811\n"
        "    lb_algo: rr\n    lb_kind: NAT\n"
        "    real_servers:\n      - ip_address: 127.47.0.2\n"
    )
    daemon = DirectorDaemon(
        DirectorConfig.load([str(d / "site.yaml")]),
        DaemonOptions(socket_path=str(d / "c.sock"), metrics_listen="", install_signals=False, vrrp=False),
        dataplane=FakeDataplane(),
    )
    await daemon.start()
    try:
        assert daemon.director is not None
        sock.settimeout(0)
        while True:  # start-up lines
            try:
                sock.recv(65536)
            except BlockingIOError:
                break
        await daemon.director.call(DrainRequest(real="127.47.0.2"))
        sock.settimeout(5)
        messages: list[dict[str, str]] = []
        while not any("Operator drain" in m.get("MESSAGE", "") for m in messages):
            messages.append(decode(sock.recv(65536)))
        got = next(m for m in messages if "Operator drain" in m["MESSAGE"])
        assert got["MESSAGE"].startswith(
            "Operator drain: service [127.47.0.2]:tcp:2811 of VS [127.47.0.1]:tcp:2811"
        )
        assert (got["GRIDLB_REAL_SERVER"], got["GRIDLB_TRANSITION"]) == ("127.47.0.2:2811", "drain")
        assert handler.dropped == 0
    finally:
        await daemon.stop()
        shutil.rmtree(d, ignore_errors=True)
