"""The `ipvs` dataplane: the kernel's IP Virtual Server, programmed over generic netlink.

Packets never reach Python: the kernel schedules and forwards (DR, NAT, TUN) with its own
schedulers, and this module only reads and changes its table. The messages are built and read by
`gridlb.dataplane.ipvs_msg` (pure, golden-tested); `IpvsSocket` is the blocking I/O, and
`IpvsDataplane` runs it on one worker thread so the asyncio loop never blocks on the kernel.

pyroute2's `IPVS` class is not used for the I/O: it has no requests for the sync daemon, the
timeouts or the version, drops the counters from dumps, encodes the IPv6 persistence netmask as
an IPv4 address, maps its "update" verb to a delete, and waits for each answer before sending the
next request, which makes programming thousands of destinations slower than `ipvsadm -R`.
Here every request is the one ipvsadm sends, and `apply` sends them in windows and then collects
the answers (each op still gets its own answer and error).

A dump costs one GET_DEST round trip per service, so it reuses what it already knows: the previous
dump plus the ops the kernel accepted since. One read of /proc/net/ip_vs (every destination's
address, port, method, weight, active and inactive connections) and the GET_SERVICE dump (each
service's spec and counters) show which services differ from that; only those are dumped again.
What the listing does not show (thresholds, tunnel options, persistent-connection counts) is
caught by a full dump at least every `full_dump_s` (the director's resync period, 5 s by default).

What the kernel has is adopted, never flushed: start-up dumps, diffs and applies; `close` leaves
the table and the sync daemons running, so a restart or an upgrade drops no connection.
The connection-sync daemon follows the VRRP role as keepalived's `lvs_sync_daemon` does: MASTER
runs the master (sending) daemon, BACKUP and FAULT the backup (receiving) one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import functools
import math
import os
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from gridlb.dataplane import ipvs_msg as m
from gridlb.dataplane.base import (
    Capabilities,
    DataplaneCounters,
    DataplaneHooks,
    OpResult,
    Role,
    SyncDaemonSpec,
)
from gridlb.ipvsadm.model import KERNEL_SCHEDULERS
from gridlb.table import (
    AddService,
    ConnEntry,
    Dest,
    ForwardMethod,
    IpvsTable,
    Op,
    Proto,
    Service,
    ServiceKey,
    apply_ops,
)

if TYPE_CHECKING:
    from gridlb.config.schema import GridlbSettings

T = TypeVar("T")

#: Requests sent before their answers are collected (bounded so the answers fit the receive buffer).
WINDOW = 512
#: Socket buffers asked for (SO_RCVBUFFORCE as root): a window of answers, or a large dump.
BUFFER_BYTES = 8 << 20
#: The largest datagram read (netlink dump parts are at most 32 KiB).
RECV_BYTES = 256 << 10
#: A kernel that does not answer within this long is treated as a failed call.
RECV_TIMEOUT_S = 10.0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
CLONE_NEWNET = 0x40000000
PROC_IPVS = "/proc/net/ip_vs"
#: The listing of the calling thread's namespace (the worker thread may have entered another one).
PROC_IPVS_THREAD = "/proc/thread-self/net/ip_vs"
#: A dump asks the kernel for every service's destinations at least this often (see the module doc).
FULL_DUMP_S = 5.0
MODULE_DIR = "/lib/modules"


def kernel_schedulers(release: str | None = None) -> frozenset[str]:
    """Return the IPVS schedulers the running kernel ships (`ip_vs_NAME.ko*`), else every known one."""
    release = release or os.uname().release
    ipvs_dir = Path(MODULE_DIR, release, "kernel/net/netfilter/ipvs")
    try:
        names = {p.name.split(".", 1)[0].removeprefix("ip_vs_") for p in ipvs_dir.iterdir()}
    except OSError:
        return KERNEL_SCHEDULERS
    found = KERNEL_SCHEDULERS & names
    return frozenset(found) if found else KERNEL_SCHEDULERS


#: What kernel IPVS does: every forwarding method, the kernel's schedulers, TCP/UDP/SCTP and
#: firewall marks, IPv4 and IPv6, persistence, and connection sync by VRRP role.
CAPABILITIES = Capabilities(
    forwarding=frozenset({ForwardMethod.ROUTE, ForwardMethod.MASQ, ForwardMethod.TUNNEL}),
    schedulers=kernel_schedulers(),
    protocols=frozenset({Proto.TCP, Proto.UDP, Proto.SCTP}),
    families=frozenset({4, 6}),
    fwmark=True,
    persistence=True,
    connection_sync=True,
    follows_role=True,
    needs_root=True,
)


def enter_netns(name_or_path: str) -> None:
    """Move the calling thread into a network namespace (a name under /run/netns, or a path)."""
    path = name_or_path if "/" in name_or_path else f"/run/netns/{name_or_path}"
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"setns {path}: {os.strerror(code)}")
    finally:
        os.close(fd)


class IpvsSocket:
    """A blocking generic-netlink socket bound to the IPVS family of the calling thread's namespace."""

    def __init__(self, full_dump_s: float = FULL_DUMP_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.full_dump_s = full_dump_s
        self._clock = clock
        self._known: IpvsTable | None = None  # the last dump plus the ops applied since
        self._swept_at = -math.inf  # when the last full dump began
        # Per known service: its destinations and what /proc/net/ip_vs shows for them (id, lines).
        self._expected: dict[ServiceKey, tuple[tuple[Dest, ...], str, str]] = {}
        self.dumped_services = 0  # GET_DEST dumps made (tests and the benchmark read it)
        self._sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, m.NETLINK_GENERIC
        )
        try:
            for force, plain in ((33, socket.SO_RCVBUF), (32, socket.SO_SNDBUF)):  # SO_*BUFFORCE
                try:
                    self._sock.setsockopt(socket.SOL_SOCKET, force, BUFFER_BYTES)
                except OSError:
                    self._sock.setsockopt(socket.SOL_SOCKET, plain, BUFFER_BYTES)
            for opt in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
                with contextlib.suppress(OSError):
                    self._sock.setsockopt(SOL_NETLINK, opt, 1)
            # A kernel-side receive timeout: blocking calls without a poll() before each one.
            timeval = struct.pack("=qq", int(RECV_TIMEOUT_S), 0)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
            self._buf = bytearray(RECV_BYTES)  # one datagram: a dump part or an answer
            self._services: dict[bytes, Service | None] = {}  # the last dump's replies, decoded
            self._dests: dict[tuple[int, bytes], Dest | None] = {}
            self._parts = m.ServiceParts.empty()  # keys, specs and counters of replies, decoded
            self._dest_requests: dict[ServiceKey, bytes] = {}  # GET_DEST per service, sequence 0
            self._view = memoryview(self._buf)
            self._sock.bind((0, 0))
            self._seq = 0
            replies = self._exchange([m.getfamily_request(m.IPVS_GENL_NAME, self._next())])
            if not replies or replies[0].type == m.NLMSG_ERROR:
                code = replies[0].error if replies else errno.ENOENT
                raise OSError(code, "the generic netlink family IPVS is missing (no ip_vs module loaded)")
            self.family = m.family_id(replies[0])
        except BaseException:
            self._sock.close()
            raise

    def close(self) -> None:
        self._sock.close()

    def _next(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        return self._seq

    def _recv(self) -> list[m.Reply]:
        try:
            n = self._sock.recv_into(self._buf)
        except BlockingIOError:
            raise TimeoutError(f"the kernel did not answer within {RECV_TIMEOUT_S:g} s") from None
        return list(m.split_replies(self._view[:n]))

    def _exchange(self, requests: Sequence[bytes]) -> list[m.Reply]:
        """Send one request and return its answers (until the ACK/error, DONE, or a single reply)."""
        self._sock.sendall(b"".join(requests))
        out: list[m.Reply] = []
        while True:
            for reply in self._recv():
                if reply.seq != self._seq:
                    continue  # a late answer to an abandoned request
                if reply.type in (m.NLMSG_ERROR, m.NLMSG_DONE):
                    if reply.type == m.NLMSG_ERROR and reply.error == 0:
                        return out
                    if reply.type == m.NLMSG_ERROR and not out:
                        return [reply]
                    return out
                out.append(reply)
                if not reply.flags & m.NLM_F_MULTI:
                    return out

    def request(self, build: Callable[[int], bytes]) -> list[m.Reply]:
        """Send one request built for a fresh sequence number; raise NetlinkError on a kernel error."""
        replies = self._exchange([build(self._next())])
        if replies and replies[0].type == m.NLMSG_ERROR:
            code = replies[0].error
            raise m.NetlinkError(code, os.strerror(code))
        return replies

    def dump(self) -> IpvsTable:
        """Return the kernel's table: timeouts, services in kernel order, their destinations, counters.

        A service whose spec, counters and /proc/net/ip_vs lines are what this socket already knows
        keeps its known destinations; the others are dumped (GET_DEST), and all of them when the
        last full dump is `full_dump_s` old. A service or destination whose reply is byte-identical
        to the previous dump's is not decoded again.
        """
        now = self._clock()
        known = self._known
        listing = None if known is None or now - self._swept_at >= self.full_dump_s else self._listing()
        config = self.request(lambda seq: m.simple_request(self.family, m.Cmd.GET_CONFIG, seq))
        timeouts = m.decode_timeouts(config[0].genl_attrs()) if config else IpvsTable().timeouts
        seen_services: dict[bytes, Service | None] = {}
        services: list[Service] = []
        for reply in self.request(lambda seq: m.dump_services_request(self.family, seq)):
            svc = self._services.get(reply.payload)
            if svc is None:
                raw = reply.genl_attrs().get(m.CMD_ATTR_SERVICE)
                svc = m.decode_service(raw, self._parts) if raw is not None else None
            seen_services[reply.payload] = svc
            if svc is not None:
                services.append(svc)
        by_key = {s.key: s for s in known.services} if known is not None and listing is not None else {}
        seen_dests: dict[tuple[int, bytes], Dest | None] = {}
        out = []
        for svc in services:
            have = by_key.get(svc.key)
            if have is not None and listing is not None and self._unchanged(have, svc, listing):
                out.append(have)
            else:
                out.append(replace(svc, dests=self._dump_dests(svc.key, seen_dests)))
        self._services = seen_services
        if len(self._parts.stats) > 2 * len(services) + 64 or len(self._parts.keys) > 2 * len(services) + 64:
            self._parts.clear()  # counters move and services come and go: keep it bounded
        if listing is None:
            self._dests = seen_dests
            self._swept_at = now
        else:
            self._dests.update(seen_dests)
        if len(self._dest_requests) > 2 * len(services) + 64:  # services come and go: keep it bounded
            self._dest_requests = {
                s.key: self._dest_requests[s.key] for s in services if s.key in self._dest_requests
            }
        table = IpvsTable(services=tuple(out), timeouts=timeouts)
        self._remember(table)
        return table

    def _unchanged(self, have: Service, svc: Service, listing: Mapping[str, str | None]) -> bool:
        """Return True when the kernel's `svc` and its listing lines are what `have` says."""
        if (have.spec is not svc.spec and have.spec != svc.spec) or (
            have.stats is not svc.stats and have.stats != svc.stats  # counters moved: traffic, dump it
        ):
            return False
        expected = self._expected.get(svc.key)
        return expected is not None and expected[0] is have.dests and listing.get(expected[1]) == expected[2]

    def _dump_dests(self, key: ServiceKey, seen: dict[tuple[int, bytes], Dest | None]) -> tuple[Dest, ...]:
        """Return the destinations of service `key` (one GET_DEST dump)."""
        self.dumped_services += 1
        template = self._dest_requests.get(key)
        if template is None:
            template = self._dest_requests[key] = m.dump_dests_request(self.family, key, 0)
        dests = []
        for reply in self.request(functools.partial(m.with_seq, template)):
            cache_key = (key.af, reply.payload)
            dest = self._dests.get(cache_key)
            if dest is None:
                raw = reply.genl_attrs().get(m.CMD_ATTR_DEST)
                dest = m.decode_dest(raw, key.af) if raw is not None else None
            seen[cache_key] = dest
            if dest is not None:
                dests.append(dest)
        return tuple(dests)

    def _listing(self) -> dict[str, str | None] | None:
        """Return /proc/net/ip_vs by service id, or None when it cannot be read (then: a full dump)."""
        try:
            with open(PROC_IPVS_THREAD, encoding="ascii", errors="replace") as f:
                return m.parse_proc_services(f.read())
        except OSError:
            return None

    def _remember(self, table: IpvsTable | None) -> None:
        """Keep `table` as what the kernel holds, with the listing lines each service should show."""
        self._known = table
        if table is None:
            self._expected.clear()
            return
        expected = self._expected
        for svc in table.services:
            entry = expected.get(svc.key)
            if entry is None or entry[0] is not svc.dests:
                expected[svc.key] = (svc.dests, m.proc_service_id(svc.key), m.proc_dest_lines(svc.dests))
        if len(expected) > len(table.services):
            keys = {s.key for s in table.services}
            for key in [k for k in expected if k not in keys]:
                del expected[key]

    def apply(self, ops: Sequence[Op]) -> list[int]:
        """Apply `ops` in order; return each one's errno (0 = applied). Requests go out in windows."""
        codes: list[int] = []
        for start in range(0, len(ops), WINDOW):
            window = ops[start : start + WINDOW]
            first = self._seq + 1
            seqs = [self._next() for _ in window]
            self._sock.sendall(
                b"".join(m.op_request(self.family, op, seq) for op, seq in zip(window, seqs, strict=True))
            )
            answers: dict[int, int] = {}
            while len(answers) < len(window):
                for reply in self._recv():
                    index = (reply.seq - first) & 0xFFFFFFFF
                    if reply.type == m.NLMSG_ERROR and index < len(window):
                        answers[index] = reply.error
            codes.extend(answers[i] for i in range(len(window)))
        accepted = [op for op, code in zip(ops, codes, strict=True) if not code]
        keys = self._parts.keys
        for op in accepted:  # the next dump's replies for new services: their keys are known
            if isinstance(op, AddService):
                keys.setdefault(m.service_key_raw(op.key), op.key)
        known = self._known
        if known is not None:
            try:  # what the kernel holds now: the last dump plus the ops it accepted
                known = apply_ops(known, accepted)
            except (KeyError, ValueError):  # the table changed behind our back: dump it all next time
                known = None
            self._remember(known)
        return codes

    def daemons(self) -> list[m.SyncDaemon]:
        """Return the running connection-sync daemons."""
        replies = self.request(lambda seq: m.simple_request(self.family, m.Cmd.GET_DAEMON, seq, dump=True))
        return [
            m.decode_daemon(raw)
            for raw in (r.genl_attrs().get(m.CMD_ATTR_DAEMON) for r in replies)
            if raw is not None
        ]

    def version(self) -> tuple[str, int]:
        """Return the kernel's IPVS version and connection-table size."""
        replies = self.request(lambda seq: m.simple_request(self.family, m.Cmd.GET_INFO, seq))
        return m.decode_version(replies[0].genl_attrs()) if replies else ("", 0)


@dataclass(frozen=True, slots=True)
class IpvsOptions:
    """How the ipvs dataplane runs."""

    netns: str | None = None  # a namespace name or path; None = the director's own
    sync: SyncDaemonSpec | None = None  # the connection-sync daemon (None = leave sync daemons alone)
    full_dump_s: float = FULL_DUMP_S  # a dump asks for every service's destinations at least this often


class IpvsDataplane:
    """A `Dataplane` over kernel IPVS; all kernel I/O happens on one worker thread."""

    name = "ipvs"
    capabilities = CAPABILITIES

    def __init__(self, options: IpvsOptions | None = None) -> None:
        self.options = opts = options or IpvsOptions()
        self._executor = ThreadPoolExecutor(1, "gridlb-ipvs", initializer=self._init_thread)
        self._sock: IpvsSocket | None = None
        self._errors: dict[str, int] = {}
        self._lock = threading.Lock()
        self._role: Role | None = None
        self.sync = opts.sync
        self._closed = False

    def _init_thread(self) -> None:
        if self.options.netns:
            enter_netns(self.options.netns)

    def _socket(self) -> IpvsSocket:
        if self._sock is None:
            self._sock = IpvsSocket(self.options.full_dump_s)
        return self._sock

    def _count(self, reason: str) -> None:
        with self._lock:
            self._errors[reason] = self._errors.get(reason, 0) + 1

    async def _run(self, fn: Callable[[IpvsSocket], T]) -> T:
        def call() -> T:
            try:
                return fn(self._socket())
            except OSError:
                self._count("netlink")
                if self._sock is not None:  # a broken socket is replaced on the next call
                    self._sock.close()
                    self._sock = None
                raise

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    @property
    def services_dumped(self) -> int:
        """Return how many services' destinations were dumped (GET_DEST) so far on this socket."""
        sock = self._sock
        return sock.dumped_services if sock is not None else 0

    # --- Dataplane protocol -----------------------------------------------------------------------

    async def dump(self) -> IpvsTable:
        """Return the kernel's table with counters and timeouts."""
        return await self._run(lambda s: s.dump())

    async def apply(self, ops: Sequence[Op]) -> list[OpResult]:
        """Apply `ops` in order; a refused op carries ipvsadm's words for the kernel's error."""
        ops = list(ops)
        codes = await self._run(lambda s: s.apply(ops))
        out = []
        for op, code in zip(ops, codes, strict=True):
            if code:
                self._count(f"refused {errno.errorcode.get(code, code)}")
                out.append(OpResult(op, m.op_error_text(op, code)))
            else:
                out.append(OpResult(op))
        return out

    async def connections(self) -> list[ConnEntry]:
        """Return the kernel's connection table (/proc/net/ip_vs_conn of the dataplane's namespace)."""

        def read(_: IpvsSocket) -> list[ConnEntry]:
            return m.parse_conn_table(Path("/proc/thread-self/net/ip_vs_conn").read_text())

        return await self._run(read)

    async def counters(self) -> DataplaneCounters:
        """Return failed netlink calls and refused ops by errno."""
        with self._lock:
            return DataplaneCounters(dict(self._errors))

    async def set_role(self, role: Role) -> None:
        """Run the sync daemon of `role`: MASTER sends, BACKUP and FAULT receive; STANDALONE leaves them."""
        sync = self.sync
        if sync is None or role is Role.STANDALONE:
            self._role = role
            return
        want = m.SyncState.MASTER if role is Role.MASTER else m.SyncState.BACKUP
        await self._run(lambda s: _switch_daemon(s, want, sync))
        self._role = role

    async def sync_daemons(self) -> list[m.SyncDaemon]:
        """Return the kernel's running sync daemons (for status and tests)."""
        return await self._run(lambda s: s.daemons())

    async def version(self) -> tuple[str, int]:
        """Return the kernel's IPVS version and connection-table size."""
        return await self._run(lambda s: s.version())

    async def close(self, grace_s: float = 0.0) -> None:
        """Stop the I/O; leave the kernel table and the sync daemons as they are.

        The kernel goes on forwarding established and new connections without gridlb, so `grace_s`
        is not needed; `gridlb director run --flush-on-exit` deletes the services before this.
        """
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            await self._run(lambda s: s.close())
        self._executor.shutdown(wait=False)


def _switch_daemon(sock: IpvsSocket, want: m.SyncState, spec: SyncDaemonSpec) -> None:
    """Stop the daemon of the other state, then start `want` unless it already runs as `spec` says."""
    other = m.SyncState.BACKUP if want is m.SyncState.MASTER else m.SyncState.MASTER
    running = {d.state: d for d in sock.daemons()}
    if other in running:
        sock.request(lambda seq: m.del_daemon_request(sock.family, other, seq))
    have = running.get(want)
    if have is not None and (have.interface, have.sync_id) == (spec.interface, spec.sync_id):
        return
    if have is not None:
        sock.request(lambda seq: m.del_daemon_request(sock.family, want, seq))
    sock.request(lambda seq: m.new_daemon_request(sock.family, want, spec.interface, spec.sync_id, seq))


def unavailable() -> str:
    """Return why kernel IPVS cannot be driven here ("" = it can): not root, no ip_vs, no genl family."""
    if os.geteuid() != 0:
        return f"it needs root (gridlb runs as uid {os.geteuid()})"
    if not os.path.exists(PROC_IPVS):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["modprobe", "-q", "ip_vs"], capture_output=True, timeout=10, check=False)
    if not os.path.exists(PROC_IPVS):
        return f"the kernel has no IPVS ({PROC_IPVS} is missing and `modprobe ip_vs` did not load it)"
    try:
        IpvsSocket().close()
    except OSError as exc:
        return f"the generic netlink family IPVS is missing ({exc.strerror or exc})"
    return ""


class _Factory:
    """The registry's view of the ipvs dataplane."""

    name = "ipvs"
    capabilities = CAPABILITIES

    def unavailable(self) -> str:
        """Return why this machine cannot run kernel IPVS ("" = it can)."""
        return unavailable()

    def create(self, settings: GridlbSettings, hooks: DataplaneHooks) -> IpvsDataplane:
        """Return an ipvs dataplane; the sync daemon comes from the site's VRRP instance (hooks), and a
        dump is a full one at least once per resync period."""
        return IpvsDataplane(IpvsOptions(sync=hooks.sync_daemon, full_dump_s=hooks.resync_interval_s))


FACTORY = _Factory()

__all__ = [
    "CAPABILITIES",
    "FACTORY",
    "IpvsDataplane",
    "IpvsOptions",
    "IpvsSocket",
    "enter_netns",
    "kernel_schedulers",
    "unavailable",
]
