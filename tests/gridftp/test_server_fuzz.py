"""Hypothesis fuzz of the command parser through a live server: at least 5,000 random command lines never
crash it and never touch a file outside --root."""

from __future__ import annotations

import hashlib
import os
import re
import socket
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridlb.gridftp.server import COMMANDS
from tests.gridftp.helpers import ThreadedServer

MIN_LINES = 5000
EXAMPLES = int(os.environ.get("GLBE_FUZZ_EXAMPLES", "170"))
LINES_PER_EXAMPLE = (30, 40)

VERBS = [
    *sorted(v for v in COMMANDS if v != "QUIT"),
    "ABOR",
    "XYZ",
    "SITE",
    "SITE NOPE",
    "OPTS",
    "AUTH",
    "ADAT",
    "MIC",
    "ENC",
]
PATH_TOKENS = [
    "..",
    ".",
    "",
    "/",
    "//",
    "...",
    "~",
    "~root",
    "outside",
    "../outside",
    "../../outside/target.txt",
    "/etc/passwd",
    "link_out",
    "file_out",
    "dangling",
    "sub",
    "inside.txt",
    "%2e%2e",
    "a" * 300,
    "\\..\\",
    "\x00",
    "\xff",
    "*",
    "?",
    "-la",
    "P",
    "A",
    "0",
    "-1",
    "99999999999999999999",
    "0-10,20-5",
    "ADLER32",
]
DATA_VERBS = re.compile(rb"^\s*(PORT|EPRT|SPOR|LPRT)\b", re.IGNORECASE)


def path_arg() -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(PATH_TOKENS), min_size=0, max_size=5).map("/".join)


def structured() -> st.SearchStrategy[bytes]:
    arg = st.one_of(path_arg(), path_arg(), st.text(max_size=20), st.integers(-5, 10**12).map(str))
    args = st.lists(arg, min_size=0, max_size=4).map(" ".join)
    verb = st.sampled_from(VERBS)
    case = st.sampled_from([str.upper, str.lower, str.title])
    return st.tuples(verb, case, args).map(
        lambda t: (t[1](t[0]) + (" " + t[2] if t[2] else "")).encode("utf-8", "surrogateescape")
    )


OVERLONG = st.tuples(st.integers(4000, 9000), st.sampled_from([b"a", b"/", b"../", b"\x00", b"\xff"])).map(
    lambda t: b"SIZE " + t[1] * t[0]
)
LINE = st.one_of(structured(), structured(), structured(), st.binary(max_size=120), OVERLONG)


def make_safe(line: bytes) -> bytes:
    """One line per command (no LF inside); data-channel targets only ever point at a closed loopback port."""
    line = line.replace(b"\n", b" ")
    if line.strip().upper().startswith(b"QUIT"):
        return b"NOOP"  # keep the session going; QUIT itself is tested elsewhere
    if DATA_VERBS.match(line):
        line = b"PORT 127,0,0,1,0,9" if line.strip().upper().startswith(b"PORT") else b"EPRT |1|127.0.0.1|9|"
    return line


class Conn:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        assert self.reply()[0] == 220

    def line(self) -> bytes:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.rstrip(b"\r")

    def reply(self) -> tuple[int, list[bytes]]:
        first = self.line()
        assert re.match(rb"^\d{3}[ -]", first), first
        lines = [first]
        if first[3:4] == b"-":
            while not (re.match(rb"^\d{3} ", lines[-1]) and lines[-1][:3] == first[:3]):
                lines.append(self.line())
        return int(first[:3]), lines

    def final(self, raw: bytes) -> int:
        self.sock.sendall(raw + b"\r\n")
        code, _ = self.reply()
        while 100 <= code < 200:
            code, _ = self.reply()
        return code

    def close(self) -> None:
        self.sock.close()


def snapshot(d: Path) -> dict[str, tuple[int, int, str]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(d):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st_ = p.lstat()
            digest = hashlib.md5(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else ""
            out[str(p)] = (st_.st_size, st_.st_mtime_ns, digest)
    return out


def test_fuzz_command_lines(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "target.txt").write_bytes(b"do not touch\n")
    (outside / "dir").mkdir()
    (root / "sub").mkdir()
    (root / "inside.txt").write_bytes(b"inside\n")
    (root / "link_out").symlink_to(outside)
    (root / "file_out").symlink_to(outside / "target.txt")
    (root / "dangling").symlink_to(outside / "new-through-link")
    before = snapshot(outside)
    srv = ThreadedServer(root, data_timeout_s=0.02, data_idle_timeout_s=0.05, max_connections=1000).start()
    sent = 0

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(st.lists(LINE, min_size=LINES_PER_EXAMPLE[0], max_size=LINES_PER_EXAMPLE[1]))
    def run(lines: list[bytes]) -> None:
        nonlocal sent
        c = Conn(srv.port)
        try:
            assert c.final(b"USER anonymous") == 331
            assert c.final(b"PASS fuzz@") == 230
            for raw in lines:
                raw = make_safe(raw)
                try:
                    code = c.final(raw)
                except ConnectionError:
                    # only QUIT may end the session
                    assert raw.strip().upper().startswith(b"QUIT"), raw[:80]
                    return
                assert 200 <= code < 600, (raw[:80], code)
                sent += 1
                if raw.strip().upper().startswith(b"QUIT"):
                    return
            assert c.final(b"NOOP") == 200
        finally:
            c.close()

    try:
        run()
        assert sent >= MIN_LINES, f"only {sent} lines were sent"
        assert srv.server.crashes == 0
        probe = Conn(srv.port)
        assert probe.final(b"USER ftp") == 331
        probe.close()
    finally:
        srv.stop()
    assert snapshot(outside) == before
    assert sorted(os.listdir(tmp_path)) == ["outside", "root"]
