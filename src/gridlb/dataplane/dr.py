"""The `dr` dataplane: direct routing on one L2 segment with nftables, for kernels without IPVS.

The kernel forwards every packet of an established connection (netdev ingress: flow map lookup, MAC
rewrite, `fwd`; see dr_rules). Python decides: a new connection's SYN arrives on a packet socket with
a BPF filter (nfqueue is not available in the netdev family), is scheduled with `gridlb.sched`, its
flow goes into the kernel map in one nft transaction, and Python sends that first frame on itself.
Replies go from the real servers straight to the clients; they never pass the director.

A poll (every `POLL_S`) reads the table back over nfnetlink (nft_read: a libnftables listing fetches
the whole ruleset, far too slow with many flows): per-destination counters, and, by one get request
per element, the packet counts (map element counters) and FIN-set elements of only the flows that
can change now (`DrState.due`): so a poll costs what the new, busy and just-expiring flows cost,
never a walk of every tracked flow. It moves flows along (active/inactive counts as the kernel
keeps them), expires them, and refreshes the real servers' MACs from the kernel neighbour table
(pyroute2), probing a missing one. Forwarding follows the VRRP role: a BACKUP keeps its flows
and ruleset but its ingress chains are empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from gridlb.dataplane.base import Capabilities, DataplaneCounters, DataplaneHooks, OpResult, Role
from gridlb.dataplane.dr_frames import (
    MIDFLOW_FILTER,
    filter_bytes,
    mac_bytes,
    parse_syn,
    parse_tcp,
    readdress,
)
from gridlb.dataplane.dr_rules import (
    MIDFLOW_DEVICE,
    TABLE,
    FlowKey,
    Ruleset,
    encode_key,
    teardown,
    transaction,
)
from gridlb.dataplane.dr_state import DrState, FlowRec, Link, TcpState
from gridlb.dataplane.nft import Nft, NftError, find_library
from gridlb.dataplane.nft_read import NftReader, NftReadError
from gridlb.sched import scheduler_names
from gridlb.sync.transport import SyncReceiver, SyncSender
from gridlb.sync.wire import (
    F_DROUTE,
    F_INACTIVE,
    TCP_ESTABLISHED,
    TCP_FIN_WAIT,
    SyncConn,
    SyncMessage,
    encode_all,
)
from gridlb.table import ConnEntry, ForwardMethod, IPAddress, IpvsTable, Op, RealKey, Timeouts

if TYPE_CHECKING:
    from gridlb.config.schema import GridlbSettings

log = logging.getLogger(__name__)

#: How often the kernel's counters and flow states are read back (active/inactive lag at most this).
POLL_S = 0.5
#: Consecutive failed transactions after which the table is rebuilt from the director's state.
REBUILD_AFTER = 3
#: How often the master sends an unchanged flow to the peer again (the peer holds it for its timeout).
SYNC_REFRESH_S = 60.0

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
SO_ATTACH_FILTER = 26
TP_STATUS_CSUMNOTREADY = 1 << 3
_AUX = struct.Struct("IIIHHHH")  # struct tpacket_auxdata

CAPABILITIES = Capabilities(
    forwarding=frozenset({ForwardMethod.ROUTE}),
    schedulers=frozenset(scheduler_names()),
    follows_role=True,
    needs_root=True,
    connection_sync=True,
)

#: Resolves a real server's address to where it is on the wire (a `Link`), or says why it cannot.
Resolver = Callable[[IPAddress], "Link | str"]


class NeighbourResolver:
    """Real server MACs from the kernel's routes and neighbour table (pyroute2); probes missing ones."""

    _USABLE = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80  # REACHABLE STALE DELAY PROBE NOARP PERMANENT

    def __init__(self) -> None:
        self._ipr: Any = None  # pyroute2's blocking IPRoute refuses a thread with a running loop:
        self._links: dict[int, tuple[str, str]] = {}  # it is made and used in the dataplane's worker

    def __call__(self, addr: IPAddress) -> Link | str:
        if self._ipr is None:
            from pyroute2 import IPRoute

            self._ipr = IPRoute()
        try:
            routes = self._ipr.route("get", dst=str(addr))
        except Exception as exc:
            return f"no route to {addr}: {exc}"
        route = routes[0]
        if route.get("type") == 2:  # RTN_LOCAL
            return f"{addr} is an address of this director"
        gateway = route.get_attr("RTA_GATEWAY")
        if gateway:
            return (
                f"{addr} is reached through gateway {gateway}; "
                "direct routing needs it on a directly connected segment"
            )
        oif = route.get_attr("RTA_OIF")
        device, director_mac = self._link(oif)
        for n in self._ipr.get_neighbours(dst=str(addr), ifindex=oif):
            mac = n.get_attr("NDA_LLADDR")
            if mac and n.get("state", 0) & self._USABLE:
                return Link(device, director_mac, mac)
        self._probe(addr, device)
        return f"the MAC of {addr} on {device} is not known yet (probing)"

    def _link(self, index: int) -> tuple[str, str]:
        link = self._links.get(index)
        if link is None:
            msg = self._ipr.get_links(index)[0]
            link = self._links[index] = (msg.get_attr("IFLA_IFNAME"), msg.get_attr("IFLA_ADDRESS"))
        return link

    @staticmethod
    def _probe(addr: IPAddress, device: str) -> None:
        """Make the kernel resolve `addr` (ARP or neighbour solicitation): one empty datagram to discard."""
        family = socket.AF_INET if addr.version == 4 else socket.AF_INET6
        with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
            s.setblocking(False)
            s.sendto(b"", (str(addr), 9))

    def close(self) -> None:
        """Close the netlink socket."""
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None


def _syn_socket(device: str, program: tuple[tuple[int, int, int, int], ...] | None = None) -> socket.socket:
    """Return a non-blocking packet socket on `device` that receives TCP SYNs only (with aux data), or
    what `program` passes."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: nothing until bound
    try:
        code = filter_bytes() if program is None else filter_bytes(program)
        buf = ctypes.create_string_buffer(code)
        prog = struct.pack("HL", len(code) // 8, ctypes.addressof(buf))
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, prog)
        sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        sock.bind((device, ETH_P_ALL))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class DrDataplane:
    """A `Dataplane` forwarding by MAC rewrite in nftables; Python schedules new connections."""

    name = "dr"
    capabilities = CAPABILITIES

    def __init__(
        self,
        *,
        timeouts: Timeouts | None = None,
        nft: Nft | None = None,
        resolver: Resolver | None = None,
        clock: Callable[[], float] = time.monotonic,
        poll_s: float = POLL_S,
        sync_interface: str | None = None,
        syncid: int = 0,
    ) -> None:
        self.state = DrState(timeouts)
        self._sync_interface = sync_interface
        self._syncid = syncid
        self._sync_sender: SyncSender | None = None
        self._sync_receiver: SyncReceiver | None = None
        self.sync_counts: Counter[str] = Counter()
        self._nft = nft or Nft()
        self._reader = NftReader(TABLE)
        self._resolver = resolver or NeighbourResolver()
        self._clock = clock
        self._poll_s = poll_s
        self._applied: Ruleset | None = None
        self._pending_del: list[FlowKey] = []
        self._pending_fin: list[FlowKey] = []  # to clear from the FIN sets (reused ports)
        self._failures = 0
        self._hold_until = 0.0  # no expiry before this (the flow counters and FIN sets were just rebuilt)
        self.errors: Counter[str] = Counter()
        self.link_errors: dict[IPAddress, str] = {}
        self._sockets: dict[str, socket.socket] = {}
        self._midflow: socket.socket | None = None  # on MIDFLOW_DEVICE, while an `mh` service forwards
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="gridlb-dr-netlink")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poller: asyncio.Task[None] | None = None
        self._closed = False
        self._next_rate = 0.0
        self._program()  # a fresh table: nothing forwarded until a role says so

    # --- Dataplane protocol -----------------------------------------------------------------------

    async def dump(self) -> IpvsTable:
        """Return services, destinations, counters (read from the kernel now) and timeouts."""
        self._ensure_started()
        self._poll_once()
        return self.state.snapshot()

    async def apply(self, ops: Sequence[Op]) -> list[OpResult]:
        """Apply `ops` in order, then program the kernel in one transaction."""
        self._ensure_started()
        results = []
        for op in ops:
            try:
                self.state.apply(op)
                results.append(OpResult(op))
            except (KeyError, ValueError) as exc:
                results.append(OpResult(op, str(exc.args[0]) if exc.args else type(exc).__name__))
        await self._resolve(self.state.addresses())
        for addr, why in self.link_errors.items():
            log.warning("dr: real server %s cannot be scheduled yet: %s", addr, why)
        error = self._program()
        if error:
            results = [OpResult(r.op, r.error or f"nft: {error}") for r in results]
        return results

    async def connections(self) -> list[ConnEntry]:
        """Return the flows (`ipvsadm -Lc`) with their observed TCP states."""
        self._poll_once()
        return self.state.connections(self._clock())

    async def counters(self) -> DataplaneCounters:
        """Return error counts: nft transactions, SYNs without a destination, send failures, unknown MACs."""
        errors = dict(self.errors)
        receiver = self._sync_receiver
        if receiver is not None:
            errors.update({f"sync {k}": v for k, v in receiver.drops.items()})
        if self.link_errors:
            errors["unresolved_real_servers"] = len(self.link_errors)
        return DataplaneCounters(errors, self.events())

    def events(self) -> dict[str, int]:
        """Return counts of what happened that is no error: flows adopted mid-connection (`mh`, from
        another director) and ports reused within the FIN timeout, scheduled anew."""
        return {"midflow_adopted": self.state.adopted, "reused_ports": self.state.reused}

    async def set_role(self, role: Role) -> None:
        """Forward as MASTER or STANDALONE; as BACKUP or FAULT keep the state and forward nothing."""
        self._ensure_started()
        self.state.set_forwarding(role in (Role.MASTER, Role.STANDALONE))
        error = self._program()
        if error:
            raise RuntimeError(f"nft: {error}")

    async def close(self, grace_s: float = 0.0) -> None:
        """Stop scheduling new connections; forward established ones for up to `grace_s`; remove the table."""
        if self._closed:
            return
        self._closed = True
        for dev in list(self._sockets):
            self._close_socket(dev)
        self._sync_midflow(False)
        deadline = self._clock() + grace_s
        while self.state.forwarding and self._clock() < deadline:
            self._poll_once()
            if not any(r.state.value == "ESTABLISHED" for r in self.state.flows.values()):
                break
            await asyncio.sleep(min(self._poll_s, max(0.0, deadline - self._clock())))
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._sync_receiver is not None:
            self._sync_receiver.close()
        if self._sync_sender is not None:
            self._sync_sender.close()
        with contextlib.suppress(NftError):
            self._nft.run(teardown())
        self._nft.close()
        self._reader.close()
        close = getattr(self._resolver, "close", None)
        if close is not None:
            await asyncio.get_running_loop().run_in_executor(self._worker, close)
        self._worker.shutdown(wait=False)

    # --- kernel programming -----------------------------------------------------------------------

    def _program(self, add_flows: Iterable[FlowRec] = ()) -> str:
        """Bring the kernel to the state's ruleset (plus flow changes); return nft's error or ""."""
        new = self.state.ruleset()
        dropped, self.state.dropped_flows = self.state.dropped_flows, []
        dels = self._pending_del + dropped
        # a dropped flow leaves the FIN set too: a new connection on its port must not look closing
        fins, self._pending_fin = self._pending_fin + dropped, []
        adds = [(rec.key, rec.chain) for rec in add_flows]
        script = transaction(self._applied, new, add_flows=adds, del_flows=dels, clear_fin=fins)
        try:
            if script:
                self._nft.run(script)
        except NftError as exc:
            self.errors["nft"] += 1
            self._failures += 1
            self._pending_del = dels
            self._pending_fin = fins
            log.error("dr: nft transaction failed: %s", exc)
            if self._failures >= REBUILD_AFTER and self._applied is not None:
                return self._rebuild(str(exc))
            return str(exc)
        self._pending_del = []
        self._failures = 0
        self._applied = new
        self._sync_sockets(new.devices if new.forwarding else ())
        return ""

    def _rebuild(self, why: str) -> str:
        """Recreate the table with every known flow (after repeated failures)."""
        log.error("dr: rebuilding table %s after %d failed transactions (%s)", TABLE, self._failures, why)
        self._applied = None
        self._pending_del = []
        self._pending_fin = []
        self._hold_until = self._clock() + self.state.timeouts.tcpfin
        new = self.state.ruleset()
        chains = {d.chain for d in new.dests}
        adds = [(r.key, r.chain) for r in self.state.flows.values() if r.chain in chains]
        try:
            self._nft.run(transaction(None, new, add_flows=adds))
        except NftError as exc:
            return str(exc)
        self._failures = 0
        self._applied = new
        return ""

    async def _resolve(self, addrs: Iterable[IPAddress]) -> bool:
        """Look the real servers' MACs up (netlink, in the worker thread); True when one changed."""
        changed = False
        loop = asyncio.get_running_loop()
        for addr in addrs:
            got = await loop.run_in_executor(self._worker, self._resolver, addr)
            if isinstance(got, Link):
                self.link_errors.pop(addr, None)
                changed |= self.state.set_link(addr, got)
            else:
                self.link_errors[addr] = got
        for addr in [a for a in self.link_errors if a not in set(self.state.addresses())]:
            del self.link_errors[addr]
        return changed

    # --- polling ----------------------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._poller is None and not self._closed:
            self._loop = asyncio.get_running_loop()
            self._poller = self._loop.create_task(self._poll_forever())
            if self._sync_interface:
                self._loop.create_task(self._open_sync(self._sync_interface))

    # --- connection sync (IPVS sync protocol v1, gridlb.sync) --------------------------------------

    async def _open_sync(self, ifname: str) -> None:
        """Start sending and receiving sync datagrams on `ifname` (errors are logged and counted)."""
        try:
            loop = asyncio.get_running_loop()  # SyncSender asks netlink with a blocking IPRoute:
            self._sync_sender = await loop.run_in_executor(self._worker, SyncSender, ifname)  # off-loop
            receiver = SyncReceiver(ifname, self._on_sync, syncid=self._syncid)
            await receiver.open()
            self._sync_receiver = receiver
        except OSError as exc:
            self.errors["sync_socket"] += 1
            log.error("dr: connection sync on %s failed: %s", ifname, exc)

    def _send_sync(self, now: float) -> None:
        """As the forwarding director, send new, changed and due flows to the peer."""
        sender = self._sync_sender
        if sender is None or not self.state.forwarding:
            return
        conns = []
        for rec in self.state.to_sync(now, SYNC_REFRESH_S):
            k, real = rec.key, rec.dest.key
            established = rec.state is TcpState.ESTABLISHED
            conns.append(
                SyncConn(
                    protocol=6,
                    caddr=k.client,
                    cport=k.client_port,
                    vaddr=k.vaddr,
                    vport=k.vport,
                    daddr=real.addr,
                    dport=real.port,
                    flags=F_DROUTE | (0 if established else F_INACTIVE),
                    state=TCP_ESTABLISHED if established else TCP_FIN_WAIT,
                    timeout_s=max(1, int(rec.expires - now)),
                )
            )
        for datagram in encode_all(self._syncid, conns):
            if sender.send(datagram):
                self.sync_counts["sent"] += 1

    def _on_sync(self, message: SyncMessage, peer: str) -> None:
        """As a backup, install the flows the master reports, so they keep their real server."""
        if self.state.forwarding:
            self.sync_counts["ignored as master"] += len(message.conns)
            return
        now = self._clock()
        adds: list[FlowRec] = []
        for conn in message.conns:
            if conn.protocol != 6 or conn.state not in (TCP_ESTABLISHED, TCP_FIN_WAIT):
                self.sync_counts["skipped"] += 1
                continue
            state = TcpState.ESTABLISHED if conn.state == TCP_ESTABLISHED else TcpState.FIN_WAIT
            default = self.state.timeouts.tcp if state is TcpState.ESTABLISHED else self.state.timeouts.tcpfin
            key = FlowKey(conn.caddr, conn.cport, conn.vaddr, conn.vport)
            before = self.state.flows.get(key)
            rec = self.state.learn(
                key, RealKey(conn.daddr, conn.dport), state, conn.timeout_s or default, now
            )
            if rec is not None:
                if before is not None:  # moved to another destination: replace the map element
                    self._pending_del.append(key)
                adds.append(rec)
            self.sync_counts["learned"] += 1
        if adds:
            error = self._program(adds)
            if error:
                for rec in adds:
                    self.state.forget(rec.key)

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                self._poll_once()
                await self._resolve(self.state.addresses())
                self._program()
                self._send_sync(self._clock())
            except Exception:
                self.errors["poll"] += 1
                log.exception("dr: poll failed")

    def _poll_once(self) -> None:
        """Read counters back, and the flows that can change now (packet counts, FIN-set elements);
        move them along, expire them and delete them from the map."""
        now = self._clock()
        try:
            counters = self._reader.counters()
            counts: dict[FlowKey, int] = {}
            fin: dict[FlowKey, float] = {}
            if now >= self._hold_until:  # not right after a rebuild (fresh counters and FIN sets)
                opened, closing = self.state.due(now)
                counts = self._lookup_counts(opened)
                fin = self._lookup_fin(self.state.moved(counts) + [rec.key for rec in closing])
        except (NftReadError, OSError) as exc:
            self.errors["nft_read"] += 1
            log.error("dr: cannot read table %s: %s", TABLE, exc)
            return
        self.state.counters = counters
        if now >= self._hold_until:
            expired = self.state.observe(now, counts, fin)
            if expired:
                self._pending_del.extend(expired)
                self._program()
        if now >= self._next_rate:
            if self._next_rate:
                self.state.rate_tick(now)
            self._next_rate = now + 2.0

    def _lookup(self, prefix: str, keys: Iterable[FlowKey]) -> Iterator[tuple[FlowKey, int, int | None]]:
        """Yield (key, ms until expiry, packets or None) of the elements of `keys` that the sets or
        maps `<prefix>4` / `<prefix>6` hold (one get request per key)."""
        for af in (4, 6):
            by_raw = {encode_key(k): k for k in keys if k.af == af}
            if by_raw:
                for raw, (expires_ms, packets) in self._reader.lookup(f"{prefix}{af}", list(by_raw)).items():
                    key = by_raw.get(raw)
                    if key is not None:
                        yield key, expires_ms, packets

    def _lookup_counts(self, recs: Sequence[FlowRec]) -> dict[FlowKey, int]:
        """Return the packet counts of the map elements of `recs` (a missing element: the count last
        read, so the flow runs down its timeout as an idle one)."""
        out = {r.key: r.count for r in recs}
        for key, _, packets in self._lookup("flows", list(out)):
            if packets is not None:
                out[key] = packets
        return out

    def _lookup_fin(self, keys: Sequence[FlowKey]) -> dict[FlowKey, float]:
        """Return seconds left of the FIN-set elements of `keys` that exist."""
        return {key: expires_ms / 1000 for key, expires_ms, _ in self._lookup("fin", keys)}

    # --- new connections --------------------------------------------------------------------------

    def _sync_sockets(self, devices: Iterable[str]) -> None:
        want = set(devices) if not self._closed else set()
        self._sync_midflow(bool(want) and bool(self._applied and self._applied.mh_services))
        for dev in [d for d in self._sockets if d not in want]:
            self._close_socket(dev)
        for dev in want - set(self._sockets):
            try:
                sock = _syn_socket(dev)
            except OSError as exc:
                self.errors["packet_socket"] += 1
                log.error("dr: cannot read SYNs on %s: %s", dev, exc)
                continue
            self._sockets[dev] = sock
            loop = self._loop
            if loop is not None:
                loop.add_reader(sock.fileno(), self._on_frames, sock)

    def _sync_midflow(self, want: bool) -> None:
        """Open (or close) the packet socket on MIDFLOW_DEVICE that adopts flows met mid-connection."""
        sock = self._midflow
        if want and sock is None:
            try:
                sock = _syn_socket(MIDFLOW_DEVICE, MIDFLOW_FILTER)
            except OSError as exc:
                self.errors["packet_socket"] += 1
                log.error("dr: cannot read mid-flow packets on %s: %s", MIDFLOW_DEVICE, exc)
                return
            self._midflow = sock
            if self._loop is not None:
                self._loop.add_reader(sock.fileno(), self._on_midflow, sock)
        elif not want and sock is not None:
            self._midflow = None
            if self._loop is not None:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(sock.fileno())
            sock.close()

    def _on_midflow(self, sock: socket.socket) -> None:
        """Adopt the flows of packets without SYN that the map did not know (`mh` services): bind each
        by the Maglev table, program the batch in one transaction, then send each packet on."""
        now = self._clock()
        batch: list[tuple[FlowRec, bytes, bool]] = []
        pending: set[FlowKey] = set()
        # fwd to lo: seen leaving (OUTGOING) and arriving (OTHERHOST: not lo's MAC); take one
        for data, partial in self._read_frames(sock, socket.PACKET_OTHERHOST):
            got = parse_tcp(data)
            if got is None:
                self.errors["malformed"] += 1
                continue
            key = got[0]
            rec = self.state.flows.get(key)  # adopted by an earlier packet (kept in order below)
            if rec is None:
                rec = self.state.adopt(key, now)
                if rec is None:
                    self.errors["midflow_unscheduled"] += 1
                    continue
                pending.add(key)
            if key in pending:
                batch.append((rec, data, partial))
            else:
                self._send_on(rec, data, partial)
        if not batch:
            return
        error = self._program(self.state.flows[key] for key in pending)
        if error:
            for key in pending:
                self.state.forget(key)
            return
        for rec, data, partial in batch:
            self._send_on(rec, data, partial)

    def _send_on(self, rec: FlowRec, data: bytes, partial: bool) -> None:
        """Send a frame the director read itself to its flow's real server."""
        link = self.state.links.get(rec.dest.key.addr)
        out = self._sockets.get(link.device) if link is not None else None
        if link is None or out is None:
            self.errors["send"] += 1
            return
        frame = readdress(data, mac_bytes(link.real_mac), mac_bytes(link.director_mac), fix_checksum=partial)
        try:
            out.send(frame)
        except OSError:
            self.errors["send"] += 1

    def _close_socket(self, dev: str) -> None:
        sock = self._sockets.pop(dev)
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(sock.fileno())
        sock.close()

    def _on_frames(self, sock: socket.socket) -> None:
        """Schedule the SYNs waiting on `sock`: one nft transaction for the batch, then send each one on."""
        now = self._clock()
        batch: list[tuple[FlowRec, bytes, bool]] = []
        taken: set[FlowKey] = set()
        for data, partial in self._read_frames(sock, socket.PACKET_HOST):
            key = parse_syn(data)
            if key is None:
                self.errors["malformed"] += 1
                continue
            if key in taken:
                continue  # the same SYN twice in one read: scheduled once
            known = self.state.flows.get(key)
            if known is not None:
                rec = self._reused(known, now)
                if rec is None:
                    continue  # a retransmitted SYN the kernel forwards (or the port's flow is gone)
            elif self.state.service_of(key) is None:
                continue  # not a service of ours
            else:
                rec = self.state.schedule(key, now)
            if rec is None:
                self.errors["no_destination"] += 1
                continue
            taken.add(key)
            batch.append((rec, data, partial))
        if not batch:
            return
        error = self._program(rec for rec, _, _ in batch)
        if error:
            for rec, _, _ in batch:
                self.state.forget(rec.key)
            return
        for rec, data, partial in batch:
            self._send_on(rec, data, partial)

    def _reused(self, known: FlowRec, now: float) -> FlowRec | None:
        """A SYN for a known flow: if that flow is closing (its FIN or RST passed; the kernel drops
        this SYN), the client reused the port: schedule the new connection (IPVS `conn_reuse_mode`)
        and queue the old element's replacement. Else None (a retransmission the kernel forwards)."""
        key = known.key
        if known.state is not TcpState.FIN_WAIT:
            try:  # its FIN or RST may have passed since the last poll
                closing = bool(self._lookup_fin([key]))
            except (NftReadError, OSError):
                closing = False
            if not closing or not self.state.close_now(key, now):
                return None
        rec = self.state.reuse(key, now)
        self._pending_del.append(key)
        self._pending_fin.append(key)
        if rec is None:
            self.errors["no_destination"] += 1
        return rec

    def _read_frames(self, sock: socket.socket, pkttype: int) -> Iterator[tuple[bytes, bool]]:
        """Yield up to 512 waiting frames of `pkttype` from a packet socket while forwarding, each with
        whether its checksum is still to be filled in (offloaded)."""
        for _ in range(512):
            try:
                data, ancdata, _flags, addr = sock.recvmsg(65535, socket.CMSG_SPACE(_AUX.size))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.errors["recv"] += 1
                return
            if addr[2] == pkttype and self.state.forwarding:
                yield data, _csum_not_ready(ancdata)


def _csum_not_ready(ancdata: list[tuple[int, int, bytes]]) -> bool:
    for level, kind, data in ancdata:
        if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= _AUX.size:
            return bool(_AUX.unpack_from(data)[0] & TP_STATUS_CSUMNOTREADY)
    return False


class _Factory:
    """The registry's view of the dr dataplane."""

    name = "dr"
    capabilities = CAPABILITIES

    def unavailable(self) -> str:
        """Return why dr cannot run here: it needs root and nftables (libnftables)."""
        if os.geteuid() != 0:
            return "it needs root (nftables and packet sockets)"
        if find_library() is None:
            return "libnftables is not installed (Debian package nftables)"
        return ""

    def create(self, settings: GridlbSettings, hooks: DataplaneHooks) -> DrDataplane:
        """Return a dr dataplane for a site with `settings`."""
        return DrDataplane(
            timeouts=settings.timeouts.table_timeouts(),
            sync_interface=settings.dr.sync_interface,
            syncid=settings.dr.syncid,
        )


FACTORY = _Factory()

__all__ = ["CAPABILITIES", "FACTORY", "POLL_S", "DrDataplane", "NeighbourResolver"]
