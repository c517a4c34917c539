"""Composition of a running director: dataplane, health runner, director, control API and metrics.

This is the one place that picks real implementations (`gridlb director run` and `gridlb demo` use
it; unit tests build a `Director` with fakes instead). Signals: SIGHUP reloads, SIGTERM and SIGINT
stop cleanly (listeners close at once, established connections get `grace_s` to finish).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from gridlb import __version__
from gridlb.api.messages import (
    ApiError,
    DirectorDrainRequest,
    DirectorUndrainRequest,
    ErrorCode,
    EventsRequest,
    FailoverRequest,
    Ping,
    ReloadRequest,
    Request,
    StatusRequest,
    TableRequest,
    table_to_json,
)
from gridlb.api.server import ApiServer, PeerCred
from gridlb.config.load import load_site
from gridlb.config.schema import VrrpInstance
from gridlb.dataplane.base import AUTO, Dataplane, DataplaneHooks, SyncDaemonSpec, resolve_factory
from gridlb.director.director import Director, DirectorConfig
from gridlb.director.health import RunnerMonitor
from gridlb.metrics import Metrics, parse_listen
from gridlb.status import DirectorStatus, status_to_json
from gridlb.systemd.notify import Notifier
from gridlb.table import DelService, RealKey, ServiceKey

log = logging.getLogger(__name__)

FailureCallback = Callable[[ServiceKey, RealKey, str], None]


@dataclass(frozen=True, slots=True)
class DaemonOptions:
    """Run-time choices that are not part of the site file (or override it)."""

    socket_path: str | None = None  # None = gridlb.control_socket
    socket_mode: int = 0o660
    socket_group: str | None = None  # None = gridlb.control_group
    metrics_listen: str | None = None  # None = gridlb.metrics_listen ("" = off)
    dashboard_listen: str | None = None  # None = gridlb.dashboard_listen ("" = off)
    resync_interval_s: float = 5.0
    grace_s: float = 5.0
    install_signals: bool = True
    vrrp: bool = True  # run the site's VRRP instances (False: the table only, no VIPs)
    flush_on_exit: bool = False  # delete every service of the dataplane at stop (keepalived's lvs_flush)


def sync_daemon_spec(instances: Mapping[str, VrrpInstance]) -> SyncDaemonSpec | None:
    """Return the connection-sync daemon of the first instance with `lvs_sync_daemon_interface`."""
    for name, inst in instances.items():
        if inst.lvs_sync_daemon_interface:
            sync_id = (
                inst.lvs_sync_daemon_id if inst.lvs_sync_daemon_id is not None else inst.virtual_router_id
            )
            return SyncDaemonSpec(inst.lvs_sync_daemon_interface, sync_id, name)
    return None


def make_dataplane(
    config: DirectorConfig, on_failure: FailureCallback, resync_interval_s: float = 5.0
) -> tuple[Dataplane, str]:
    """Return the dataplane the site asks for (`gridlb.dataplane`), found through the registry.

    With `auto` the second value says which one runs and why (logged here); "" otherwise.
    Raises ConfigError (one line, exit 2) when this machine cannot run it, or when a service asks
    what it cannot do; logs a warning for each thing it does differently from what the site says.
    """
    choice = resolve_factory(AUTO)[1] if config.settings.dataplane == AUTO else ""
    factory, warnings = config.check_dataplane()
    if choice:
        log.info("%s", choice)
    for text in warnings:
        log.warning("%s", text)
    sync = sync_daemon_spec(load_site(list(config.paths)).vrrp_instances) if config.paths else None
    hooks = DataplaneHooks(
        on_backend_failure=on_failure, sync_daemon=sync, resync_interval_s=resync_interval_s
    )
    return factory.create(config.settings, hooks), choice


class DirectorDaemon:
    """Everything `gridlb director run` runs, started and stopped together."""

    def __init__(
        self,
        config: DirectorConfig,
        options: DaemonOptions | None = None,
        *,
        dataplane: Dataplane | None = None,
    ) -> None:
        self.config = config
        self.options = opts = options or DaemonOptions()
        self.director: Director | None = None
        #: With `dataplane: auto`, which one runs and why (logged at start, shown in status).
        self.dataplane_choice = ""
        if dataplane is None:
            dataplane, self.dataplane_choice = make_dataplane(
                config, self._on_failure, opts.resync_interval_s
            )
        self.dataplane = dataplane
        vips = tuple(str(p.key.addr) for p in config.plans if p.key.addr is not None)
        self.monitor = RunnerMonitor(self._on_report, vips=vips)
        self.director = Director(
            config, self.dataplane, health=self.monitor, resync_interval_s=opts.resync_interval_s
        )
        self.socket_path = opts.socket_path or config.settings.control_socket
        group = opts.socket_group if opts.socket_group is not None else config.settings.control_group
        self.api = ApiServer(self.socket_path, self.handle, mode=opts.socket_mode, group=group)
        listen = opts.metrics_listen if opts.metrics_listen is not None else config.settings.metrics_listen
        self.metrics_listen = listen or None
        self.metrics = Metrics(self.director)
        self.metrics_address: tuple[str, int] | None = None
        dash = (
            opts.dashboard_listen if opts.dashboard_listen is not None else config.settings.dashboard_listen
        )
        self.dashboard_listen = dash or None
        self.dashboard_address: tuple[str, int] | None = None
        self.dashboard: Any = None  # a gridlb.dashboard.server.Dashboard when one is asked for
        self.notifier = Notifier()
        self._watchdog: asyncio.Task[None] | None = None
        self._reloads: set[asyncio.Task[None]] = set()
        from gridlb.director.ha import HaController  # VRRP: the VIPs follow the role

        self.ha = HaController.from_paths(config.paths, on_role=self.director.set_role) if opts.vrrp else None
        if self.ha is not None:
            self.metrics.registry.register(self.ha.collector)
        from gridlb.scaleout.controller import ScaleoutController  # BGP: the router's ECMP spreads flows

        director = self.director
        self.scaleout = ScaleoutController.from_config(config, director.status, lambda: director.config.plans)
        if self.scaleout is not None:
            self.metrics.registry.register(self.scaleout.collector)
        if config.settings.dashboard_token_file and not self.dashboard_listen:
            log.warning(
                "gridlb.dashboard_token_file is set but the dashboard is off (no gridlb.dashboard_listen "
                "or --dashboard): no dashboard actions"
            )
        if self.dashboard_listen:  # reads the token file now: a bad one stops start-up before anything runs
            from gridlb.dashboard.server import Dashboard

            self.dashboard = Dashboard.for_daemon(self)
        self._stop = asyncio.Event()
        self.started_at = time.time()

    def _on_failure(self, service: ServiceKey, real: RealKey, reason: str) -> None:
        if self.director is not None:
            self.director.passive_failure(real, service, reason)

    def _on_report(self, *args: Any) -> None:
        if self.director is not None:
            self.director.report_check(*args)

    async def handle(self, request: Request, peer: PeerCred) -> Any:
        """Answer one control request (the API server checked who may ask)."""
        director = self.director
        assert director is not None
        if isinstance(request, Ping):
            return {"version": __version__, "uptime_s": round(time.time() - self.started_at, 3)}
        if isinstance(request, StatusRequest):
            return status_to_json(await self.status())
        if isinstance(request, DirectorDrainRequest | DirectorUndrainRequest):
            if self.scaleout is None:
                raise ApiError(ErrorCode.NOT_FOUND, "this director does not scale out (no gridlb.scaleout)")
            if isinstance(request, DirectorDrainRequest):
                return await self.scaleout.drain()
            return await self.scaleout.undrain()
        if isinstance(request, FailoverRequest | EventsRequest):
            if self.ha is None:
                raise ApiError(ErrorCode.NOT_FOUND, "this director runs no VRRP instance (no vrrp_instances)")
            return await self.ha.handle(request)
        if isinstance(request, TableRequest):
            table = await director.refresh()
            if request.connections:
                table = replace(table, connections=tuple(await director.connections()))
            return table_to_json(table)
        return await director.call(request)

    async def status(self) -> DirectorStatus:
        """Return the director's typed status, with the VRRP and scale-out parts when it runs them."""
        assert self.director is not None
        await self.director.dataplane_counters()  # the dataplane's own counts, read now
        status = await self.director.status()
        if self.dataplane_choice:
            status = replace(status, dataplane_choice=self.dataplane_choice)
        if self.ha is not None:
            status = replace(status, vrrp=self.ha.status())
        if self.scaleout is not None:
            status = replace(status, scaleout=await self.scaleout.status())
        return status

    def reload(self) -> None:
        """Reload the site files (SIGHUP), telling systemd when it begins and ends."""
        self.notifier.reloading()
        task = asyncio.ensure_future(self._reload())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _reload(self) -> None:
        assert self.director is not None
        try:
            await self.director.call(ReloadRequest())
            outcome = "reloaded"
        except ApiError:  # the director logged why; the previous config still runs
            outcome = "reload refused, previous config running"
        self.notifier.ready(outcome)

    async def _watchdog_loop(self, interval_s: float) -> None:
        """Ping systemd's watchdog at half its interval while the event loop runs."""
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval_s / 2)

    async def start(self) -> None:
        """Start the director (programs the table), then the checks, the API and metrics."""
        assert self.director is not None
        await self.director.start()
        await self.api.start()
        if self.ha is not None:  # after the table: the proxy already listens on the VIPs (IP_FREEBIND)
            try:
                await self.ha.start()
            except BaseException:
                await self.stop()
                raise
        if self.scaleout is not None:  # announces once the table serves
            try:
                await self.scaleout.start()
            except BaseException:
                await self.stop()
                raise
        if self.metrics_listen:
            host, port = parse_listen(self.metrics_listen)
            self.metrics_address = await self.metrics.start(host, port)
        if self.dashboard is not None and self.dashboard_listen:
            host, port = parse_listen(self.dashboard_listen)
            self.dashboard_address = await self.dashboard.start(host, port)
        if self.options.install_signals:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, self.reload)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stop.set)
        log.info(
            "director running: %d services, dataplane %s, control socket %s%s%s",
            len(self.config.plans),
            self.dataplane.name,
            self.socket_path,
            f", metrics http://{self.metrics_listen}/metrics" if self.metrics_listen else "",
            f", dashboard http://{self.dashboard_listen}/" if self.dashboard_listen else "",
        )
        if self.notifier.enabled:
            self.notifier.ready(f"{len(self.config.plans)} services, dataplane {self.dataplane.name}")
            if self.notifier.watchdog_s:
                self._watchdog = asyncio.ensure_future(self._watchdog_loop(self.notifier.watchdog_s))

    @property
    def stopping(self) -> bool:
        """Return True once a stop was requested."""
        return self._stop.is_set()

    def request_stop(self) -> None:
        """Ask `run` to stop (as SIGTERM does)."""
        self._stop.set()

    async def wait(self) -> None:
        """Return once a stop was requested."""
        await self._stop.wait()

    async def stop(self) -> None:
        """Stop accepting, stop checks and the API, and close the dataplane with the grace period."""
        if self.options.install_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)
        assert self.director is not None
        self.notifier.stopping()
        if self.scaleout is not None:  # withdraw first: the router moves flows while this one still serves
            await self.scaleout.stop()
        if self.dashboard is not None:
            await self.dashboard.close()
        if self.ha is not None:  # priority-0 advert and VIPs off first, while the proxy still serves
            await self.ha.stop()
        await self.director.stop()
        if self.options.flush_on_exit:
            await self._flush()
        await self.api.close()
        await self.metrics.close()
        await self.dataplane.close(grace_s=self.options.grace_s)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        log.info("director stopped")

    async def _flush(self) -> None:
        """Delete every service of the dataplane (`--flush-on-exit`); by default the table stays."""
        try:
            table = await self.dataplane.dump()
            results = await self.dataplane.apply([DelService(s.key) for s in table.services])
        except Exception as exc:  # the dataplane is broken: say so, go on stopping
            log.error("--flush-on-exit: the dataplane failed: %s", exc)
            return
        failed = [r for r in results if not r.ok]
        refused = f", {len(failed)} refused" if failed else ""
        log.info("flushed %d services on exit%s", len(results) - len(failed), refused)

    async def run(self) -> None:
        """Start, run until a stop is requested, and stop."""
        await self.start()
        try:
            await self.wait()
        finally:
            await self.stop()
