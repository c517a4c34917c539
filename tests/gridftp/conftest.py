"""Fixtures of the GridFTP tests: test files, our server, a real globus-gridftp-server (all on loopback)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gridftp.helpers import SIZES, GlobusServer, ThreadedServer, make_files, rmtree, shared_dir
from tests.support import need_root, need_tool


@pytest.fixture(scope="session")
def files() -> Iterator[dict[str, Path]]:
    """Random files of 0 B, 1 B, 1 MiB + 1 B and 64 MiB, readable by `nobody`."""
    d = shared_dir("files")
    try:
        yield make_files(d, tuple(SIZES))
    finally:
        rmtree(d)


@pytest.fixture
def ours() -> Iterator[ThreadedServer]:
    """Our server on 127.0.0.1 (free port), serving an empty world-writable root."""
    root = shared_dir("ours")
    srv = ThreadedServer(root, data_timeout_s=10.0, data_idle_timeout_s=20.0).start()
    try:
        yield srv
    finally:
        srv.stop()
        rmtree(root)


#: Where the real globus-gridftp-server takes data connections: not the clients' 127.0.0.1, so a copy
#: from our server to it is a genuine third-party transfer (our server must be told to allow it).
GLOBUS_DATA_ADDRESS = "127.0.0.9"


@pytest.fixture
def relay(globus: GlobusServer) -> Iterator[ThreadedServer]:
    """Our server on 127.0.0.1 that may send data to the Globus server (`allow_third_party`)."""
    root = shared_dir("relay")
    allowed = (f"{globus.data_interface}/32",)
    srv = ThreadedServer(root, data_timeout_s=10.0, data_idle_timeout_s=20.0, allow_third_party=allowed)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        rmtree(root)


@pytest.fixture(scope="module")
def globus() -> Iterator[GlobusServer]:
    """A real globus-gridftp-server, control on 127.0.0.1, data on 127.0.0.9 (anonymous, runs as `nobody`)."""
    need_tool("globus-gridftp-server", "globus-url-copy")
    need_root()
    home = shared_dir("globus")
    srv = GlobusServer(home, data_interface=GLOBUS_DATA_ADDRESS).start()
    try:
        yield srv
    finally:
        srv.stop()
        rmtree(home)
