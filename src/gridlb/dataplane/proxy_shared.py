"""One scheduling table for several worker processes: shared counters, and a replica per worker kept by a log.

Least-connection services (wlc, lc, sed, nq; no persistence, no GridFTP data ports) keep each
destination's active and inactive counts in shared memory (`SharedCounters`), one slot per worker:
a worker writes only its own slot (one writer: no lock, no log) and a pick sums the slots, so it
sees every worker's connections as they are at that instant. That is how the kernel's IPVS table
works on several CPUs: wlc reads its counters without a lock, so two workers picking at the same
instant may both choose the same server; picks one after the other decide exactly as one table
does. The OVERLOAD flag (thresholds) is shared the same way, any worker setting or clearing it.

Every other change of the table (an op; in the other services a pick and bind, a failed connect, a
close, an expiry; the loss of a worker; a passive failure anywhere) is appended to one log in shared
memory under one process-shared lock; a worker that takes the lock first replays what the others
appended since it last held it. So before any pick a worker's replica has seen every op, and in
the logged services every connection of every worker, in one order: rr's cursor, persistence
templates, GridFTP data-port owners and lblc's tables move as in one kernel table.
Replay re-runs the same pure `ProxyState` methods with the values the writer used (its `now`, the
client); a pick replays to the destination the writer bound (a random scheduler such as `twos`
draws once, in the writer). Traffic bytes stay per worker (they decide nothing): `dump` sums them.

The lock is a record lock the kernel frees when its holder dies (`RobustLock`): a worker killed
while holding it blocks nobody. The log is a ring of length-prefixed `marshal` records; a reader
that falls more than a ring behind cannot catch up and raises `LogOverrun` (its worker is then
restarted from a live worker's snapshot, as a dataplane fault).
"""

from __future__ import annotations

import fcntl
import marshal
import os
import pickle
import platform
import struct
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from ipaddress import ip_address
from multiprocessing import shared_memory
from typing import Any, Protocol

from gridlb.dataplane.proxy_state import (
    ClosedConn,
    DestState,
    ProxyState,
    ServiceState,
    Traffic,
    fin_wait_entries,
    queue_closed,
)
from gridlb.sched.base import DestView, Flow
from gridlb.table import (
    AddDest,
    AddService,
    ConnEntry,
    DestSpec,
    EditService,
    IPAddress,
    Op,
    RealKey,
    ServiceKey,
    ServiceSpec,
    Timeouts,
)

#: Ring size of the log: several seconds of records at tens of thousands of connections a second.
RING_BYTES = 64 << 20
_HEADER = 64  # u64 write position
#: Read the log ahead of the lock only where the CPU keeps stores in order (x86's TSO); on other
#: machines (arm64, ppc64le) a reader could see the new end before the record, so it reads under the lock.
READ_AHEAD = platform.machine() in ("x86_64", "AMD64", "i386", "i686")
_LEN = struct.Struct("<I")
#: Tries of a held lock before sleeping on it (a worker holds it for a pick or a close: µs; sleeping
#: and being woken costs more than that in system calls and context switches).
SPIN = 20
#: Schedulers that keep no state between picks (or draw at random): a replica binds the destination
#: the writer picked without running them. The others (rr, wrr, lblc, lblcr: cursors and locality
#: tables) run in every replica so that their state moves as in the writer's.
BIND_AS_LOGGED = frozenset({"wlc", "lc", "sed", "nq", "fo", "ovf", "sh", "dh", "mh", "twos"})
#: Schedulers that read only the counters of live destinations: their services share counters.
SHARED_SCHEDULERS = frozenset({"wlc", "lc", "sed", "nq"})
#: Destinations (service, real server pairs ever seen) the shared counters hold.
COUNTER_ROWS = 16384


def shares_counters(spec: ServiceSpec, tracks_owner: bool) -> bool:
    """Return whether a service with `spec` keeps shared counters (else every change is logged).

    Persistence templates and GridFTP data-port owners are tables the log replicates; the other
    schedulers (rr, wrr, lblc, lblcr, sh, dh, mh, fo, ovf, twos) keep their state through it too.
    """
    return spec.scheduler in SHARED_SCHEDULERS and not spec.persistence_timeout_s and not tracks_owner


class SharedCounters:
    """Per-worker counter slots of every destination, in one shared-memory segment.

    Row r holds [overloaded, active of worker 0, inactive of worker 0, active of worker 1, ...]
    as native 64-bit integers; a worker writes only its own two slots (and the flag).
    """

    def __init__(self, workers: int, name: str | None = None, rows: int = COUNTER_ROWS) -> None:
        self.workers = workers
        self.stride = 1 + 2 * workers
        self.owner = name is None
        if name is None:
            self.shm = shared_memory.SharedMemory(create=True, size=rows * self.stride * 8)
        else:
            self.shm = shared_memory.SharedMemory(name=name)
        self.name = self.shm.name
        self.rows = self.shm.size // (self.stride * 8)
        buf = self.shm.buf
        assert buf is not None
        self.q = buf.cast("q")

    def zero_worker(self, worker: int) -> None:
        """Forget a dead worker's connections (its sockets, open or in FIN_WAIT, died with it)."""
        q, stride = self.q, self.stride
        for base in range(1 + 2 * worker, self.rows * stride, stride):
            q[base] = 0
            q[base + 1] = 0

    def close(self) -> None:
        """Unmap (and, for the creator, remove) the segment."""
        self.q.release()
        self.shm.close()
        if self.owner:
            self.shm.unlink()


class SharedDest(DestState):
    """A destination whose counters are the sum of every worker's slot in `SharedCounters`.

    `active`, `inactive` and `overloaded` read shared memory; the counting methods write only this
    worker's slots. A replica replaying an op (or the director's spec-only copy) never writes the flag.
    """

    __slots__ = ("acts", "flag", "inas", "mine", "q", "replica", "row")

    def __init__(
        self, service: ServiceState, key: RealKey, spec: DestSpec, replica: Replica, row: int
    ) -> None:
        # DestState.__init__ minus the counters (they live in the row, possibly revived)
        self.service = service
        self.key = key
        self.sockaddr = (str(key.addr), key.port)
        self.version = key.addr.version
        self.spec = spec
        self.weight = spec.weight
        self.down = False
        self.traffic = Traffic()
        self.view = None
        self.vpos = -1
        self.replica = replica
        self.row = row
        self.attach()

    def attach(self) -> None:
        """Map this destination's row of the replica's counters (after a start from a snapshot too)."""
        counters = self.replica.counters
        assert counters is not None
        self.q = counters.q
        base = self.flag = self.row * counters.stride
        me = max(self.replica.worker, 0)  # the director's spec-only copy (-1) never counts
        self.mine = base + 1 + 2 * me
        self.acts = tuple(range(base + 1, base + counters.stride, 2))
        self.inas = tuple(range(base + 2, base + counters.stride, 2))

    def __getstate__(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _DEST_FIELDS}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            object.__setattr__(self, k, v)

    @property
    def active(self) -> int:  # type: ignore[override]
        q = self.q
        total = 0
        for i in self.acts:
            total += q[i]
        return total

    @property
    def inactive(self) -> int:  # type: ignore[override]
        q = self.q
        total = 0
        for i in self.inas:
            total += q[i]
        return total

    @property
    def overloaded(self) -> bool:
        return self.q[self.flag] != 0

    @overloaded.setter
    def overloaded(self, value: bool) -> None:
        if not self.replica.replaying and (self.q[self.flag] != 0) != value:
            self.q[self.flag] = int(value)

    def bind(self) -> None:
        """Count a new connection in this worker's slot (kernel ip_vs_bind_dest)."""
        self.q[self.mine] += 1
        self.traffic.conns += 1
        self.service.traffic.conns += 1
        u = self.spec.u_threshold
        if u and self.active + self.inactive >= u:
            self.overloaded = True

    def to_inactive(self) -> None:
        """Active to inactive: inactive raised first, so that no reader sees the total drop meanwhile."""
        q = self.q
        i = self.mine
        q[i + 1] += 1
        q[i] -= 1

    def drop_active(self) -> None:
        self.q[self.mine] -= 1

    def drop_inactive(self) -> None:
        self.q[self.mine + 1] -= 1

    def touch(self) -> None:
        """Nothing cached: every read sums the slots."""

    def unbind_check(self) -> None:
        """Re-evaluate OVERLOAD after a connection went away (kernel ip_vs_unbind_dest)."""
        if self.spec.u_threshold or self.overloaded:
            DestState.unbind_check(self)

    def make_view(self) -> DestView:
        """Return what a scheduler sees of this destination now (never cached: others count too)."""
        return DestView(self.key, self.spec.weight, self.active, self.inactive, self.overloaded)


class SharedDest2(SharedDest):
    """`SharedDest` with two workers (a 2-CPU director, the usual case): the sums written out."""

    __slots__ = ()

    @property
    def active(self) -> int:  # type: ignore[override]
        q = self.q
        i = self.flag
        return q[i + 1] + q[i + 3]

    @property
    def inactive(self) -> int:  # type: ignore[override]
        q = self.q
        i = self.flag
        return q[i + 2] + q[i + 4]


_SHADOWED = frozenset({"active", "inactive", "overloaded", "q", "acts", "inas", "mine", "flag"})
_DEST_FIELDS = tuple(n for n in (*DestState.__slots__, *SharedDest.__slots__) if n not in _SHADOWED)


class LogOverrun(RuntimeError):
    """A replica fell more than a ring behind the log: its state can no longer be brought up to date."""


class ProcessLock(Protocol):
    """A lock shared between processes (multiprocessing.Lock)."""

    def acquire(self, block: bool = ..., timeout: float | None = ...) -> bool: ...

    def release(self) -> None: ...


#: struct flock (x86_64 and the other 64-bit Linux ABIs): l_type, l_whence, l_start, l_len, l_pid.
_FLOCK = struct.Struct("hhqqi4x")
_LOCK = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
_UNLOCK = _FLOCK.pack(fcntl.F_UNLCK, os.SEEK_SET, 0, 0, 0)
_LOCK_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else None


class RobustLock:
    """A lock between processes that the kernel releases when its holder dies.

    An open file description lock (fcntl F_OFD_SETLKW) on an empty file: it belongs to the open
    file, which a dying process closes, so a worker killed while holding the lock (even between
    taking it and anything it records) leaves it free. The creator removes the file's name at once
    (nothing is left behind, however the director ends); every other process opens it again by
    the creator's /proc/PID/fd path (the lock pickles as that path). Threads of one process take a
    thread lock first, as they share their process's open file.
    """

    def __init__(self, path: str | None = None) -> None:
        if path is None:
            self.fd, name = tempfile.mkstemp(prefix="gridlb-proxy-", suffix=".lock", dir=_LOCK_DIR)
            os.unlink(name)
            path = f"/proc/{os.getpid()}/fd/{self.fd}"
        else:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        self.path = path
        self._threads = threading.Lock()

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (RobustLock, (self.path,))

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Take the lock; False when `block` is False or `timeout` (s) ran out and it is held."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not (
            self._threads.acquire(True, timeout)
            if block and timeout is not None
            else self._threads.acquire(block)
        ):
            return False
        try:
            if block and deadline is None:
                fcntl.fcntl(self.fd, fcntl.F_OFD_SETLKW, _LOCK)
                return True
            while True:
                try:
                    fcntl.fcntl(self.fd, fcntl.F_OFD_SETLK, _LOCK)
                    return True
                except BlockingIOError:
                    pass
                except PermissionError:  # EACCES: held (some systems say so)
                    pass
                if not block or (deadline is not None and time.monotonic() >= deadline):
                    self._threads.release()
                    return False
                time.sleep(0.001)
        except BaseException:
            if self._threads.locked():
                self._threads.release()
            raise

    def release(self) -> None:
        """Release the lock."""
        fcntl.fcntl(self.fd, fcntl.F_OFD_SETLK, _UNLOCK)
        self._threads.release()

    def __enter__(self) -> RobustLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def close(self) -> None:
        """Close this process's open file (the creator's closes the last way in for new workers)."""
        os.close(self.fd)


class SharedLog:
    """The ring of records in one shared-memory segment; read and written only under `lock`."""

    def __init__(self, lock: ProcessLock, name: str | None = None, size: int = RING_BYTES) -> None:
        self.lock = lock
        self.owner = name is None
        if name is None:
            self.shm = shared_memory.SharedMemory(create=True, size=_HEADER + size)
        else:
            # (a spawned worker shares the director's resource tracker: the segment stays registered once)
            self.shm = shared_memory.SharedMemory(name=name)
        self.name = self.shm.name
        self.size = self.shm.size - _HEADER
        buf = self.shm.buf
        assert buf is not None
        self.hdr = buf[:8].cast("Q")  # [write position]
        self.ring = buf[_HEADER:]

    @property
    def end(self) -> int:
        """Return the write position (bytes ever written)."""
        return int(self.hdr[0])

    def append(self, record: bytes) -> int:
        """Append one record (lock held); return the new write position."""
        pos = self.hdr[0]
        n = len(record)
        i = pos % self.size
        if i + 4 + n <= self.size:
            ring = self.ring
            _LEN.pack_into(ring, i, n)
            ring[i + 4 : i + 4 + n] = record
        else:  # wraps around
            self._put(pos, _LEN.pack(n) + record)
        end = pos + 4 + n
        self.hdr[0] = end
        return int(end)

    def read(self, pos: int) -> tuple[list[bytes], int]:
        """Return the records from `pos` to the end and the end.

        Without the lock too where `READ_AHEAD` (x86: stores become visible in program order, and
        writers only write past the end, storing the end after the record); a reader lapped while
        it copies is told so after.
        """
        end = int(self.hdr[0])
        if end - pos > self.size:
            raise LogOverrun(f"the proxy state log ran {end - pos - self.size} bytes past this worker")
        out = []
        start = pos
        size = self.size
        ring = self.ring
        unpack = _LEN.unpack_from
        while pos < end:
            i = pos % size
            if i + 4 <= size:
                (n,) = unpack(ring, i)
                if i + 4 + n <= size:
                    out.append(ring[i + 4 : i + 4 + n].tobytes())
                    pos += 4 + n
                    continue
            else:
                (n,) = _LEN.unpack(self._get(pos, 4))
            out.append(self._get(pos + 4, n))
            pos += 4 + n
        if int(self.hdr[0]) - start > self.size:  # lapped while copying: the copies may be torn
            raise LogOverrun("the proxy state log ran a whole ring past this worker while it read")
        return out, pos

    def _put(self, pos: int, data: bytes) -> None:
        i = pos % self.size
        n = len(data)
        first = min(n, self.size - i)
        self.ring[i : i + first] = data[:first]
        if first < n:
            self.ring[: n - first] = data[first:]

    def _get(self, pos: int, n: int) -> bytes:
        i = pos % self.size
        first = min(n, self.size - i)
        if first == n:
            return bytes(self.ring[i : i + n])
        return bytes(self.ring[i:]) + bytes(self.ring[: n - first])

    def close(self) -> None:
        """Unmap (and, for the creator, remove) the segment."""
        self.hdr.release()
        self.ring.release()
        self.shm.close()
        if self.owner:
            self.shm.unlink()


#: A connection bound in the table: (worker, service id, client address as text, client port).
BoundKey = tuple[int, int, str, int]


class Replica(ProxyState):
    """A worker's copy of the shared table: its changes go to the log, the others' come from it."""

    def __init__(
        self,
        worker: int,
        timeouts: Timeouts | None = None,
        *,
        tracks_owner: frozenset[ServiceKey] = frozenset(),
        counters: SharedCounters | None = None,
    ) -> None:
        super().__init__(timeouts)
        self.worker = worker
        self.log: SharedLog | None = None  # None: a spec-only copy (the director's), nothing logged
        #: Shared counters of the least-connection services; None: every service goes through the log.
        self.counters = counters
        #: The row of every (service, destination) ever added: the same in every replica (ops come in
        #: log order), kept after a removal so that a destination added back counts on (the kernel's trash).
        self.rows: dict[tuple[ServiceKey, RealKey], int] = {}
        #: This worker's own inactive connections of shared-counter services (others never see them).
        self.own_closed: deque[ClosedConn] = deque()
        #: True while replaying the log (and always in the director's spec-only copy): a replayed op
        #: changes no shared flag, the writer did.
        self.replaying = False
        self.pos = 0
        self.tracks_owner_keys = tracks_owner  # services with GridFTP data ports
        self.sids: dict[ServiceState, int] = {}  # service -> its id (the same in every replica)
        self.by_sid: dict[int, ServiceState] = {}
        self.next_sid = 1
        self.bound: dict[BoundKey, DestState] = {}
        self._ips: dict[str, IPAddress] = {}
        self._texts: dict[int, tuple[IPAddress, str]] = {}  # id(address) -> (address, text)
        self.replayed = 0
        #: The latest `now` in the log. Workers read their clocks apart and take the lock in another
        #: order: a time older than one already logged is raised to it, so that inactive connections
        #: join their FIN-timeout queue at its end (an insertion in the middle costs O(n)).
        self.last_now = 0.0
        self.contended = 0  # times the shared lock was held by another worker when this one wanted it
        self._depth = 0  # how deep this thread is inside `with replica:` (the lock is taken at 1)
        #: Called when this replica can no longer follow the log (`LogOverrun`); a worker process exits.
        self.on_lost: Callable[[str], None] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["log"] = None
        state["counters"] = None
        state["on_lost"] = None
        state["_depth"] = 0
        return state

    def attach(self, log: SharedLog, pos: int, worker: int, counters: SharedCounters | None = None) -> None:
        """Follow `log` from `pos` as worker `worker`, counting in `counters` (None: keep the current ones).

        A replica copied from another worker forgets that worker's inactive connections (they are
        counted in its slot, not in this one).
        """
        if counters is not None and worker != self.worker:
            self.own_closed.clear()
        self.replaying = False  # (a copy of the director's spec-only replica was always "replaying")
        self.log = log
        self.pos = pos
        self.worker = worker
        if counters is not None:
            self.counters = counters
            for svc in self.services.values():
                for d in (*svc.dests, *svc.trash.values()):
                    if isinstance(d, SharedDest):
                        d.attach()

    def __enter__(self) -> Replica:
        """Take the shared lock (re-entrant within this replica's one thread) and catch up with the log."""
        self._depth += 1
        log = self.log
        if self._depth == 1 and log is not None:
            if READ_AHEAD and log.hdr[0] != self.pos:
                # most of what the others did is replayed before taking the lock: held shorter
                try:
                    self.catch_up()
                except BaseException:
                    self._depth = 0
                    raise
            if not log.lock.acquire(False):
                self._wait(log.lock)
            if log.hdr[0] != self.pos:
                try:
                    self.catch_up()
                except BaseException:
                    self._depth = 0
                    log.lock.release()
                    raise
        return self

    def _wait(self, lock: ProcessLock) -> None:
        """Another worker holds the lock (for a few µs): spin briefly before sleeping on it."""
        self.contended += 1
        try_lock = lock.acquire
        for _ in range(SPIN):
            if try_lock(False):
                return
        lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        log = self.log
        if not self._depth and log is not None:
            log.lock.release()

    # --- log helpers ------------------------------------------------------------------------------

    def _ip(self, text: str) -> IPAddress:
        ip = self._ips.get(text)
        if ip is None:
            if len(self._ips) > 4096:
                self._ips.clear()
            ip = self._ips[text] = ip_address(text)
        return ip

    def _text(self, ip: IPAddress) -> str:
        # by identity (the engine reuses one address object per client host), the object kept alive
        found = self._texts.get(id(ip))
        if found is not None and found[0] is ip:
            return found[1]
        if len(self._texts) > 4096:
            self._texts.clear()
        text = str(ip)
        self._texts[id(ip)] = (ip, text)
        return text

    def _write(self, record: tuple[Any, ...]) -> None:
        log = self.log
        if log is not None:
            self.pos = log.append(marshal.dumps(record))

    def catch_up(self) -> None:
        """Replay what other workers appended since this replica last read the log."""
        log = self.log
        if log is None or log.hdr[0] == self.pos:
            return
        self.replaying = True
        try:
            records, self.pos = log.read(self.pos)
            replay = self._replay
            for record in records:
                replay(marshal.loads(record))
        except LogOverrun as exc:
            if self.on_lost is not None:
                self.on_lost(str(exc))  # a worker process ends here: it is restarted from a live copy
            raise
        finally:
            self.replaying = False
        self.replayed += len(records)

    # --- the changes (each logged by the worker that makes it) -------------------------------------

    def apply(self, op: Op) -> None:
        """Apply a control op and log it; a new service gets the next service id."""
        with self:
            self._apply(op)
            self._write(("a", pickle.dumps(op)))

    def check(self, op: Op) -> None:
        """Raise why `op` cannot be applied (`ProxyState.check`) on the table as it is now."""
        with self:
            super().check(op)

    def _shares(self, key: ServiceKey, spec: ServiceSpec) -> bool:
        return self.counters is not None and shares_counters(spec, key in self.tracks_owner_keys)

    def _check_rows(self, op: Op) -> None:
        """Refuse an op that needs more shared counter rows than the segment holds."""
        counters = self.counters
        if counters is None:
            return
        need: list[tuple[ServiceKey, RealKey]] = []
        if isinstance(op, AddDest):
            svc = self.services.get(op.service)
            if svc is not None and svc.shared:
                need = [(op.service, op.key)]
        elif isinstance(op, EditService):
            svc = self.services.get(op.key)
            if svc is not None and not svc.shared and self._shares(op.key, op.spec):
                need = [(op.key, d.key) for d in svc.dests]
        new = sum(1 for k in need if k not in self.rows)
        if len(self.rows) + new > counters.rows:
            raise ValueError(
                f"the proxy workers' shared counters are full ({counters.rows} destinations ever added)"
            )

    def new_dest(self, svc: ServiceState, key: RealKey, spec: DestSpec) -> DestState:
        """Return a destination with shared counters for a shared-counter service, else a plain one."""
        if not svc.shared:
            return DestState(svc, key, spec)
        row = self.rows.get((svc.key, key))
        if row is None:
            row = self.rows[(svc.key, key)] = len(self.rows)
        assert self.counters is not None
        return (SharedDest2 if self.counters.workers == 2 else SharedDest)(svc, key, spec, self, row)

    def _apply(self, op: Op) -> None:
        self._check_rows(op)
        was_shared = isinstance(op, EditService) and op.key in self.services and self.services[op.key].shared
        super().apply(op)
        if isinstance(op, AddService):
            svc = self.services[op.key]
            sid = self.next_sid
            self.next_sid += 1
            self.sids[svc] = sid
            self.by_sid[sid] = svc
            if op.key in self.tracks_owner_keys:
                svc.tracks_owner = True
            svc.shared = self._shares(op.key, op.spec)
        elif isinstance(op, EditService) and self._shares(op.key, op.spec) != was_shared:
            # The service moves between shared counters and the log: its destinations are made
            # again in the new kind; connections open now count on the old ones until they end.
            svc = self.services[op.key]
            svc.shared = not was_shared
            old = svc.dests
            svc.dests = [self.new_dest(svc, d.key, d.spec) for d in old]
            for d, o in zip(svc.dests, old, strict=True):
                d.down = o.down
            svc.trash.clear()
            svc.notify_scheduler()

    def pick(self, svc: ServiceState, flow: Flow, now: float) -> DestState | None:
        """Schedule and bind (see `ProxyState.pick`): in the shared counters, or logged with the
        destination bound. Either way every op logged before it is applied first."""
        if svc.shared:
            log = self.log
            if log is not None and log.hdr[0] != self.pos:
                with self:  # ops (or other services' changes) to catch up with
                    pass
            if svc.shared:  # (still: an op just replayed may have changed the service)
                return ProxyState.pick(self, svc, flow, now)
        with self:
            now = self.last_now = max(now, self.last_now)
            d = super().pick(svc, flow, now)
            sid = self.sids[svc]
            host = self._text(flow.client)
            if d is not None:
                self.bound[(self.worker, sid, host, flow.client_port)] = d
            self._write(("p", self.worker, sid, host, flow.client_port, flow.vport, now, _index(svc, d)))
        return d

    def pick_owner(self, svc: ServiceState, flow: Flow) -> DestState | None:
        """Bind a data connection to its control connection's server (`ProxyState.pick_owner`), logged."""
        with self:
            d = super().pick_owner(svc, flow)
            sid = self.sids[svc]
            host = self._text(flow.client)
            if d is not None:
                self.bound[(self.worker, sid, host, flow.client_port)] = d
            self._write(("o", self.worker, sid, host, flow.client_port, flow.vport, _dkey(d)))
        return d

    def connect_failed(self, d: DestState, *, mark_down: bool, flow: Flow | None = None) -> bool:
        """Unbind after a failed connect (`ProxyState.connect_failed`), logged."""
        assert flow is not None  # the engine always names the connection
        if isinstance(d, SharedDest):
            if not mark_down:
                return ProxyState.connect_failed(self, d, mark_down=False, flow=flow)
            with self:  # the mark reaches every replica in log order (after any op that clears it)
                svc = d.service
                live = svc.dest(d.key) is d
                newly = ProxyState.connect_failed(self, d, mark_down=True, flow=flow)
                if newly and live:
                    self._write(("d", self.sids[svc], str(d.key.addr), d.key.port))
            return newly
        with self:
            sid = self.sids[d.service]
            host = self._text(flow.client)
            self.bound.pop((self.worker, sid, host, flow.client_port), None)
            newly = super().connect_failed(d, mark_down=mark_down, flow=flow)
            self._write(("f", self.worker, sid, host, flow.client_port, mark_down))
        return newly

    def closed_conn(self, d: DestState, now: float, client_host: str, client_port: int) -> None:
        """Count a finished relay inactive (`ProxyState.closed_conn`): in this worker's slot, or logged."""
        if isinstance(d, SharedDest):
            d.to_inactive()
            queue_closed(self.own_closed, (now + self.timeouts.tcpfin, d, client_host, client_port))
            return
        with self:
            now = self.last_now = max(now, self.last_now)
            sid = self.sids[d.service]
            self.bound.pop((self.worker, sid, client_host, client_port), None)
            super().closed_conn(d, now, client_host, client_port)
            self._write(("c", self.worker, sid, client_host, client_port, now))

    def expire(self, now: float) -> float | None:
        """Expire inactive connections and templates (`ProxyState.expire`); logged if it changes anything.

        This worker's own inactive connections of shared-counter services expire without the lock.
        """
        own = self.own_closed
        while own and own[0][0] <= now:
            _, d, _host, _port = own.popleft()
            d.drop_inactive()
            if d.spec.u_threshold and d.overloaded:  # (no upper threshold: never overloaded)
                d.unbind_check()
            if d.service.trash:
                self._collect(d)
        closed = self.closed
        log = self.log
        if (
            log is None
            or (closed and closed[0][0] <= now)
            or now >= self.next_rate_sample
            or self.persist.live
            or log.hdr[0] != self.pos
        ):
            with self:
                now = self.last_now = max(now, self.last_now)
                if (closed and closed[0][0] <= now) or now >= self.next_rate_sample or self.persist.live:
                    self._write(("e", now))
                nxt = super().expire(now)
        else:
            nxt = self.next_rate_sample if not closed else min(closed[0][0], self.next_rate_sample)
        if own and (nxt is None or own[0][0] < nxt):
            return own[0][0]
        return nxt

    def closed_entries(self, now: float) -> list[ConnEntry]:
        """Return the inactive connections: the logged ones (every replica's) and this worker's own."""
        return [*super().closed_entries(now), *fin_wait_entries(self.own_closed, now)]

    def own_closed_entries(self, now: float) -> list[ConnEntry]:
        """Return this worker's own inactive connections of shared-counter services."""
        return fin_wait_entries(self.own_closed, now)

    def logged_closed_entries(self, now: float) -> list[ConnEntry]:
        """Return the inactive connections every replica holds (services that go through the log)."""
        return ProxyState.closed_entries(self, now)

    def abandon(self, worker: int) -> int:
        """Unbind every connection a dead worker held (its sockets died with it); logged. Return how many."""
        with self:
            n = self._abandon(worker)
            self._write(("x", worker))
        return n

    def _abandon(self, worker: int) -> int:
        keys = [k for k in self.bound if k[0] == worker]
        for k in keys:
            d = self.bound.pop(k)
            super().connect_failed(d, mark_down=False, flow=self._flow(d, k[2], k[3]))
        return len(keys)

    def _flow(self, d: DestState, host: str, port: int) -> Flow:
        vaddr = d.service.key.addr
        assert vaddr is not None
        return Flow(self._ip(host), port, vaddr, d.service.key.port)

    # --- replay -----------------------------------------------------------------------------------

    def _replay(self, r: tuple[Any, ...]) -> None:
        kind = r[0]
        if kind == "p":
            w, sid, host, port, vport, now, index = r[1:]
            self.last_now = now
            svc = self.by_sid[sid]
            assert svc.key.addr is not None
            if svc.spec.persistence_timeout_s or svc.spec.scheduler not in BIND_AS_LOGGED:
                flow = Flow(self._ip(host), port, svc.key.addr, vport)
                d = super().pick(svc, flow, now)  # the scheduler's own state moves as in the writer
                if _index(svc, d) != index:
                    d = self._rebind(svc, d, index)
            elif index < 0:
                d = None
            else:  # the scheduler keeps no state between picks: bind what the writer picked
                d = svc.dests[index]
                d.bind()
                if svc.tracks_owner:
                    self.owners.setdefault((svc.key, self._ip(host)), []).append((d, port))
            if d is not None:
                self.bound[(w, sid, host, port)] = d
        elif kind == "o":
            w, sid, host, port, vport, want = r[1:]
            svc = self.by_sid[sid]
            assert svc.key.addr is not None
            flow = Flow(self._ip(host), port, svc.key.addr, vport)
            d = super().pick_owner(svc, flow)
            if _dkey(d) != want:  # cannot differ: the owners are replicated too
                raise LogOverrun(f"replica differs from the writer's: data connection owner {want}")
            if d is not None:
                self.bound[(w, sid, host, port)] = d
        elif kind == "c":
            w, sid, host, port, now = r[1:]
            self.last_now = now
            found = self.bound.pop((w, sid, host, port), None)
            if found is not None:
                super().closed_conn(found, now, host, port)
        elif kind == "f":
            w, sid, host, port, mark_down = r[1:]
            found = self.bound.pop((w, sid, host, port), None)
            if found is not None:
                super().connect_failed(found, mark_down=mark_down, flow=self._flow(found, host, port))
        elif kind == "e":
            self.last_now = r[1]
            super().expire(r[1])
        elif kind == "a":
            self._apply(pickle.loads(r[1]))
        elif kind == "x":
            self._abandon(r[1])
        elif kind == "d":  # a shared-counter destination failed a connect in another worker
            sid, host, port = r[1:]
            svc = self.by_sid[sid]
            found = svc.dest(RealKey(self._ip(host), port))
            if found is not None and not found.down:
                found.down = True
                svc.notify_scheduler()

    def _rebind(self, svc: ServiceState, got: DestState | None, index: int) -> DestState | None:
        """The writer bound dests[index] where this replica's scheduler chose `got`: follow the writer."""
        if got is not None:
            got.active -= 1
            got.traffic.conns -= 1
            svc.traffic.conns -= 1
            got.unbind_check()
        if index < 0:
            return None
        d = svc.dests[index]
        d.bind()
        return d


def _index(svc: ServiceState, d: DestState | None) -> int:
    return -1 if d is None else svc.dests.index(d)


def _dkey(d: DestState | None) -> str | None:
    return None if d is None else f"{d.key.addr}|{d.key.port}"


class NoLock:
    """The engine's `lock` in a worker process: nothing to take.

    Only the worker's engine thread touches its replica and connections (every control command runs
    in that thread), and each change of the replica takes the shared lock itself (`with replica:`),
    so that counting relayed bytes (local to the worker) never waits for another worker.
    """

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def merge_traffic(tables: list[Any], shared: Callable[[Any], bool] = lambda svc: False) -> Any:
    """Return the first worker's table with every worker's byte counters and byte rates summed.

    Active/inactive counts are the same in every replica (logged, or read from the shared
    counters); connection totals and rates too, except in services with shared counters (`shared`
    says which), where each worker counts its own: they are summed.
    """
    from dataclasses import replace

    from gridlb.table import IpvsTable, Stats

    first: IpvsTable = tables[0]
    if len(tables) == 1:
        return first

    def total(stats: list[Stats], conns: bool) -> Stats:
        return replace(
            stats[0],
            conns=sum(s.conns for s in stats) if conns else stats[0].conns,
            cps=sum(s.cps for s in stats) if conns else stats[0].cps,
            inbytes=sum(s.inbytes for s in stats),
            outbytes=sum(s.outbytes for s in stats),
            inbps=sum(s.inbps for s in stats),
            outbps=sum(s.outbps for s in stats),
        )

    others: list[Mapping[Any, Any]] = [{s.key: s for s in t.services} for t in tables[1:]]
    services = []
    for svc in first.services:
        peers = [o[svc.key] for o in others if svc.key in o]
        each = shared(svc)
        dests = []
        for d in svc.dests:
            same = [pd for p in peers for pd in p.dests if pd.key == d.key]
            stats = total([d.counters.stats, *(pd.counters.stats for pd in same)], each)
            dests.append(replace(d, counters=replace(d.counters, stats=stats)))
        services.append(
            replace(svc, dests=tuple(dests), stats=total([svc.stats, *(p.stats for p in peers)], each))
        )
    return replace(first, services=tuple(services))


__all__ = [
    "RING_BYTES",
    "LogOverrun",
    "NoLock",
    "ProcessLock",
    "Replica",
    "RobustLock",
    "SharedCounters",
    "SharedDest",
    "SharedLog",
    "merge_traffic",
    "shares_counters",
]
