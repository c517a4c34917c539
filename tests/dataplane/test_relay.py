"""Relay engine pieces: the splice probe, the pipe pool and the listening socket options."""

from __future__ import annotations

import fcntl
import socket

from gridlb.dataplane.relay import PipePool, listen_socket, splice_available
from gridlb.table import ServiceKey
from tests.dataplane.servers import free_port


def test_splice_probe_and_pipe_pool_grow_pipes() -> None:
    assert splice_available()  # Linux >= 2.6.17 with os.splice (Python 3.10+)
    pool = PipePool(1 << 20, keep=1)
    r, w, cap = pool.get()
    assert cap == fcntl.fcntl(w, fcntl.F_GETPIPE_SZ) and cap >= 65536
    r2, w2, cap2 = pool.get()
    pool.put(r, w, cap)
    pool.put(r2, w2, cap2)  # over `keep`: closed
    assert pool.idle == [(r, w, cap)] and pool.created == 2
    assert pool.get() == (r, w, cap)  # reused, not created
    pool.put(r, w, cap)
    pool.close()
    assert pool.idle == []


def test_listen_socket_binds_addresses_not_held_and_is_v6only() -> None:
    # 192.0.2.1 (TEST-NET-1) is on no interface here: IP_FREEBIND lets a backup director listen anyway
    s = listen_socket(ServiceKey.tcp("192.0.2.1", free_port()), 16)
    try:
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
        assert s.getsockopt(socket.IPPROTO_IP, 15) == 1  # IP_FREEBIND
    finally:
        s.close()
    s6 = listen_socket(ServiceKey.tcp("::1", free_port("::1")), 16)
    try:
        assert s6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    finally:
        s6.close()
