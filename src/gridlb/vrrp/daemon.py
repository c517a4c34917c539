"""The VRRP-only daemon: runs every instance of a site file, moves the VIPs, runs notify scripts.

Per instance: the VIP manager first removes any VIP still held from an earlier crash, then the
transport joins as BACKUP. Role changes add/remove the VIPs before they are published on
`VrrpDaemon.out` (an asyncio queue of events for the director); Announce events send gratuitous
ARP / unsolicited NA. Tracked interfaces are polled over netlink, tracked scripts run on their
interval with rise/fall. SIGTERM/SIGINT stop cleanly (priority-0 advert, VIPs removed, notify STOP).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import shlex
import signal
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyroute2 import AsyncIPRoute

from gridlb.systemd.journal import fields
from gridlb.vrrp.config import IPAddress, TrackScript, VrrpConfig
from gridlb.vrrp.events import Announce, Event, MasterSeen, PriorityChanged, State, StateChanged
from gridlb.vrrp.machine import VrrpMachine
from gridlb.vrrp.notify import Notifier
from gridlb.vrrp.transport import VrrpTransport
from gridlb.vrrp.vips import VipManager

log = logging.getLogger("gridlb.vrrp")

IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
IFF_RUNNING = 0x40
IFF_UP = 0x1


async def interface_addresses(ifname: str) -> list[tuple[IPAddress, int]]:
    """(address, prefixlen) of every address on `ifname`, in kernel order."""
    async with AsyncIPRoute() as ipr:
        found = await ipr.link_lookup(ifname=ifname)
        if not found:
            raise OSError(f"interface {ifname} does not exist")
        out = []
        async for msg in await ipr.addr("dump", index=found[0]):
            out.append((ipaddress.ip_address(msg.get("IFA_ADDRESS")), int(msg["prefixlen"])))
        return out


async def primary_address(config: VrrpConfig) -> IPAddress:
    """keepalived's choice: unicast_src_ip, else the interface's first IPv4 / its IPv6 link-local."""
    if config.source_address is not None:
        return config.source_address
    vips = {v.ip for v in config.vips}
    for addr, _ in await interface_addresses(config.interface):
        if addr in vips or addr.version != config.family:
            continue
        if addr.version == 4 or addr.is_link_local:
            return addr
    raise OSError(f"{config.name}: interface {config.interface} has no usable IPv{config.family} address")


class InstanceRunner:
    """One instance: machine + transport + VIP manager + notifier + trackers."""

    def __init__(self, config: VrrpConfig, out: asyncio.Queue[Event], status_cb: Any = None) -> None:
        self.config = config
        self.out = out
        self.vips = VipManager(config.interface, config.vips, ipv6_deprecated=config.ipv6_deprecated)
        self.notifier = Notifier(config)
        self.machine: VrrpMachine | None = None
        self.transport: VrrpTransport | None = None
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._status_cb = status_cb
        self.stale_vips_removed: list[str] = []
        self._status_pending = False
        self._early_announce: Announce | None = None

    async def start(self) -> None:
        source = await primary_address(self.config)
        await self.vips.open()
        removed = await self.vips.remove()  # left over from an earlier crash: never hold it as BACKUP
        self.stale_vips_removed = [str(v) for v in removed]
        if removed:
            log.warning(
                "%s: removed VIPs left from an earlier run: %s", self.config.name, self.stale_vips_removed
            )
        self.machine = VrrpMachine(self.config, source=source)
        self.transport = VrrpTransport(self.machine, events=self._queue)
        self._tasks.append(asyncio.create_task(self._consume()))
        if self.config.track_interfaces:
            await self._poll_interfaces(initial=True)
            self._tasks.append(asyncio.create_task(self._interfaces_loop()))
        for script in self.config.track_scripts:
            self._tasks.append(asyncio.create_task(self._script_loop(script)))
        self.transport.open()
        log.info(
            "%s: started on %s as %s (source %s)", self.config.name, self.config.interface, "BACKUP", source
        )

    async def stop(self) -> None:
        """Clean stop: trackers first, then the priority-0 advert, then every resulting event handled."""
        consumer, trackers = self._tasks[:1], self._tasks[1:]
        for task in trackers:
            task.cancel()
        for task in trackers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.transport is not None:
            self.transport.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), 10.0)
        for task in consumer:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self.vips.remove()
        await self.notifier.drain()
        await self.vips.close()

    async def _consume(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._handle(event)
            except Exception:
                log.exception("%s: handling %s", self.config.name, event)
            finally:
                self._queue.task_done()

    async def _handle(self, event: Event) -> None:
        if isinstance(event, StateChanged):
            # The VIPs first (add_now returns once the kernel holds them), logging after: a takeover
            # is only as fast as the path from the timer to the announcement.
            if event.new is State.MASTER:
                self.vips.add_now()
                self._announce_now()
            elif event.old is State.MASTER:
                await self.vips.remove()
            name, old, new = self.config.name, event.old.value, event.new.value
            log.info(  # keepalived: "(VI_1) Entering MASTER STATE"
                "(%s) Entering %s STATE (%s -> %s, %s: %s, priority %d)",
                name,
                new,
                old,
                new,
                event.trigger.value,
                event.detail,
                event.priority,
                extra=fields(
                    instance=name, transition=f"{old}->{new}", reason=f"{event.trigger.value}: {event.detail}"
                ),
            )
            self.notifier.on_state_changed(event)
        elif isinstance(event, Announce):
            if event is self._early_announce:
                self._early_announce = None  # already sent right after the VIPs were added
            else:
                self.vips.announce(event.repeat)
        elif isinstance(event, PriorityChanged):
            log.info("%s: priority %d -> %d", self.config.name, event.old, event.new)
        elif isinstance(event, MasterSeen):
            log.info("%s: master is %s (priority %d)", self.config.name, event.address, event.priority)
        self.out.put_nowait(event)
        if self._status_cb is not None and not self._status_pending:
            # Written after the events queued now are handled (a file write is not on the takeover path).
            self._status_pending = True
            asyncio.get_running_loop().call_soon(self._write_status)

    def _write_status(self) -> None:
        self._status_pending = False
        if self._status_cb is not None:
            self._status_cb()

    def _announce_now(self) -> None:
        """Act on the Announce that the machine queued right behind MASTER, without a loop turn."""
        pending: list[Event] = []
        while not self._queue.empty():
            pending.append(self._queue.get_nowait())
        for event in pending:
            if isinstance(event, Announce) and event.reason == "master" and not self._early_announce:
                self.vips.announce(event.repeat)
                self._early_announce = event
            self._queue.put_nowait(event)
            self._queue.task_done()

    async def _poll_interfaces(self, initial: bool = False) -> None:
        assert self.transport is not None
        async with AsyncIPRoute() as ipr:
            for tracked in self.config.track_interfaces:
                up = False
                found = await ipr.link_lookup(ifname=tracked.name)
                if found:
                    reply = await ipr.link("get", index=found[0])
                    links = list(reply) if isinstance(reply, list | tuple) else [m async for m in reply]
                    flags = int(links[0]["flags"]) if links else 0
                    up = bool(flags & IFF_UP) and bool(flags & IFF_RUNNING)
                if initial:
                    self.transport.machine.set_tracked(tracked.name, up, self.transport.now())
                else:
                    self.transport.set_tracked(tracked.name, up)

    async def _interfaces_loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            try:
                await self._poll_interfaces()
            except OSError as exc:
                log.warning("%s: track_interface poll: %s", self.config.name, exc)

    async def _script_loop(self, script: TrackScript) -> None:
        assert self.transport is not None
        ok_run, bad_run, state = 0, 0, True
        timeout = script.timeout_s or script.interval_s
        while True:
            ok = False
            try:
                proc = await asyncio.create_subprocess_exec(
                    *shlex.split(script.script),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                try:
                    ok = await asyncio.wait_for(proc.wait(), timeout) == 0
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
            except OSError as exc:
                log.warning("%s: vrrp_script %s: %s", self.config.name, script.name, exc)
            ok_run, bad_run = (ok_run + 1, 0) if ok else (0, bad_run + 1)
            if state and bad_run >= script.fall:
                state = False
                self.transport.set_tracked(script.name, False)
            elif not state and ok_run >= script.rise:
                state = True
                self.transport.set_tracked(script.name, True)
            await asyncio.sleep(script.interval_s)

    def status(self) -> dict[str, Any]:
        m = self.machine
        if m is None or self.transport is None:
            return {"name": self.config.name, "state": "INIT"}
        last = m.last_transition
        return {
            "name": self.config.name,
            "state": m.state.value,
            "priority": m.priority,
            "source": str(m.source),
            "master": str(m.master_address) if m.master_address else None,
            "master_priority": m.master_priority,
            "last_transition": None
            if last is None
            else {
                "from": last.old.value,
                "to": last.new.value,
                "trigger": last.trigger.value,
                "detail": last.detail,
            },
            "rx_adverts": m.rx_adverts,
            "tx_adverts": m.tx_adverts,
            "drops": self.transport.drop_counts(),
            "stale_vips_removed": self.stale_vips_removed,
        }


class VrrpDaemon:
    """Runs a set of instances until told to stop; `out` carries every event after it was acted on."""

    def __init__(self, configs: Sequence[VrrpConfig], *, status_file: Path | None = None) -> None:
        self.out: asyncio.Queue[Event] = asyncio.Queue()
        self.status_file = status_file
        self.runners = [InstanceRunner(c, self.out, self.write_status) for c in configs]

    def status(self) -> list[dict[str, Any]]:
        return [r.status() for r in self.runners]

    def write_status(self) -> None:
        if self.status_file is None:
            return
        tmp = self.status_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "instances": self.status()}, indent=1))
        tmp.replace(self.status_file)

    async def run(self, stop: asyncio.Event) -> None:
        started: list[InstanceRunner] = []
        try:
            for runner in self.runners:
                await runner.start()
                started.append(runner)
            self.write_status()
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
                self.write_status()
        finally:
            for runner in started:
                await runner.stop()
            self.write_status()


async def listen_freebind(address: IPAddress, port: int, banner: bytes) -> asyncio.Server:
    """A TCP listener on address:port that may bind before the address exists (IP_FREEBIND)."""
    fam = socket.AF_INET if address.version == 4 else socket.AF_INET6
    sock = socket.socket(fam, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
    sock.bind((str(address), port))
    sock.setblocking(False)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(banner)
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, sock=sock)


async def run_daemon(
    configs: Sequence[VrrpConfig], *, listen_port: int | None = None, status_file: Path | None = None
) -> int:
    daemon = VrrpDaemon(configs, status_file=status_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    servers = []
    if listen_port is not None:
        for cfg in configs:
            banner = f"gridlb {cfg.name} {await primary_address(cfg)} {os.getpid()}\n".encode()
            for vip in cfg.vips:
                servers.append(await listen_freebind(vip.ip, listen_port, banner))
    try:
        await daemon.run(stop)
    finally:
        for server in servers:
            server.close()
    return 0
