"""One scheduling table for several worker processes: a `ProxyState` replica per worker kept equal by a log.

Every change of the table (an op, a pick and bind, a failed connect, a close, an expiry, the loss
of a worker) is appended to one log in shared memory under one process-shared lock; a worker that
takes the lock first replays what the others appended since it last held it. So before any pick a
worker's replica has seen every connection of every worker, in one order, and `wlc` (any scheduler,
persistence templates, GridFTP data-port owners, thresholds) decides as one kernel table would.
Replay re-runs the same pure `ProxyState` methods with the values the writer used (its `now`, the
client); a pick replays to the destination the writer bound (a random scheduler such as `twos`
draws once, in the writer). Traffic bytes stay per worker (they decide nothing): `dump` sums them.

The log is a ring of length-prefixed `marshal` records; a reader that falls more than a ring
behind cannot catch up and raises `LogOverrun` (its worker is then restarted from a live worker's
snapshot, as a dataplane fault).
"""

from __future__ import annotations

import marshal
import os
import pickle
import platform
import struct
from collections.abc import Callable, Mapping
from ipaddress import ip_address
from multiprocessing import shared_memory
from typing import Any, Protocol

from gridlb.dataplane.proxy_state import DestState, ProxyState, ServiceState
from gridlb.sched.base import Flow
from gridlb.table import AddService, IPAddress, Op, ServiceKey, Timeouts

#: Ring size of the log: several seconds of records at tens of thousands of connections a second.
RING_BYTES = 64 << 20
_HEADER = 64  # u64 write position, u64 pid of the lock holder (0 = none)
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


class LogOverrun(RuntimeError):
    """A replica fell more than a ring behind the log: its state can no longer be brought up to date."""


class ProcessLock(Protocol):
    """A lock shared between processes (multiprocessing.Lock)."""

    def acquire(self, block: bool = ..., timeout: float | None = ...) -> bool: ...

    def release(self) -> None: ...


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
        self.hdr = buf[:16].cast("Q")  # [write position, lock holder pid]
        self.ring = buf[_HEADER:]

    @property
    def end(self) -> int:
        """Return the write position (bytes ever written)."""
        return int(self.hdr[0])

    @property
    def holder(self) -> int:
        """Return the pid holding the lock (0: none, or it had not written its pid yet)."""
        return int(self.hdr[1])

    def set_holder(self, pid: int) -> None:
        """Record who holds the lock (so that the lock of a worker that died holding it is freed)."""
        self.hdr[1] = pid

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
    ) -> None:
        super().__init__(timeouts)
        self.worker = worker
        self.log: SharedLog | None = None  # None: a spec-only copy (the director's), nothing logged
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
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["log"] = None
        state["on_lost"] = None
        state["_depth"] = 0
        return state

    def attach(self, log: SharedLog, pos: int, worker: int) -> None:
        """Follow `log` from `pos` as worker `worker`."""
        self.log = log
        self.pos = pos
        self.worker = worker
        self._pid = os.getpid()

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
            hdr = log.hdr
            hdr[1] = self._pid
            if hdr[0] != self.pos:
                try:
                    self.catch_up()
                except BaseException:
                    self._depth = 0
                    hdr[1] = 0
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
            log.hdr[1] = 0
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
        try:
            records, self.pos = log.read(self.pos)
            replay = self._replay
            for record in records:
                replay(marshal.loads(record))
        except LogOverrun as exc:
            if self.on_lost is not None:
                self.on_lost(str(exc))  # a worker process ends here: it is restarted from a live copy
            raise
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

    def _apply(self, op: Op) -> None:
        super().apply(op)
        if isinstance(op, AddService):
            svc = self.services[op.key]
            sid = self.next_sid
            self.next_sid += 1
            self.sids[svc] = sid
            self.by_sid[sid] = svc
            if op.key in self.tracks_owner_keys:
                svc.tracks_owner = True

    def pick(self, svc: ServiceState, flow: Flow, now: float) -> DestState | None:
        """Schedule and bind (see `ProxyState.pick`), logged with the destination bound."""
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
        with self:
            sid = self.sids[d.service]
            host = self._text(flow.client)
            self.bound.pop((self.worker, sid, host, flow.client_port), None)
            newly = super().connect_failed(d, mark_down=mark_down, flow=flow)
            self._write(("f", self.worker, sid, host, flow.client_port, mark_down))
        return newly

    def closed_conn(self, d: DestState, now: float, client_host: str, client_port: int) -> None:
        """Count a finished relay inactive (`ProxyState.closed_conn`), logged."""
        with self:
            now = self.last_now = max(now, self.last_now)
            sid = self.sids[d.service]
            self.bound.pop((self.worker, sid, client_host, client_port), None)
            super().closed_conn(d, now, client_host, client_port)
            self._write(("c", self.worker, sid, client_host, client_port, now))

    def expire(self, now: float) -> float | None:
        """Expire inactive connections and templates (`ProxyState.expire`); logged if it changes anything."""
        with self:
            now = self.last_now = max(now, self.last_now)
            closed = self.closed
            if (closed and closed[0][0] <= now) or now >= self.next_rate_sample or self.persist.live:
                self._write(("e", now))
            return super().expire(now)

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


def merge_traffic(tables: list[Any]) -> Any:
    """Return the first worker's table with every worker's byte counters and byte rates summed.

    Connections, active/inactive counts and rates of connections are the same in every replica.
    """
    from dataclasses import replace

    from gridlb.table import IpvsTable, Stats

    first: IpvsTable = tables[0]
    if len(tables) == 1:
        return first

    def total(stats: list[Stats]) -> Stats:
        return replace(
            stats[0],
            inbytes=sum(s.inbytes for s in stats),
            outbytes=sum(s.outbytes for s in stats),
            inbps=sum(s.inbps for s in stats),
            outbps=sum(s.outbps for s in stats),
        )

    others: list[Mapping[Any, Any]] = [{s.key: s for s in t.services} for t in tables[1:]]
    services = []
    for svc in first.services:
        peers = [o[svc.key] for o in others if svc.key in o]
        dests = []
        for d in svc.dests:
            same = [pd for p in peers for pd in p.dests if pd.key == d.key]
            stats = total([d.counters.stats, *(pd.counters.stats for pd in same)])
            dests.append(replace(d, counters=replace(d.counters, stats=stats)))
        services.append(replace(svc, dests=tuple(dests), stats=total([svc.stats, *(p.stats for p in peers)])))
    return replace(first, services=tuple(services))


__all__ = ["RING_BYTES", "LogOverrun", "NoLock", "ProcessLock", "Replica", "SharedLog", "merge_traffic"]
