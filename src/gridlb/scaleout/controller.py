"""A scaled-out director's announcer: feeds the director's typed status to the decision and the speaker.

`ScaleoutController` runs next to the director (as the HA controller does for VRRP): it starts the
site's BGP speaker, re-reads the director's status every `check_interval_s` (and at once after a
drain, an undrain or a stop), decides which VIPs to announce (`gridlb.scaleout.decide`) and makes
the speaker announce exactly those. A failing speaker is logged and retried on the next round, and
one that died is started again; it never stops the director. `gridlb director drain` withdraws
every VIP (the router moves the flows to the other directors) until `gridlb director undrain`; the
drain is not kept across restarts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gridlb.config.load import load_site
from gridlb.config.schema import ScaleoutSettings
from gridlb.errors import ConfigError
from gridlb.scaleout.bird import BirdPlan, BirdSpeaker, PeerState, SpeakerError
from gridlb.scaleout.decide import VipDecision, announced, decide
from gridlb.status import DirectorStatus
from gridlb.table import IPAddress

log = logging.getLogger(__name__)

#: Speakers by `gridlb.scaleout.speaker`.
SPEAKERS: dict[str, type[BirdSpeaker]] = {"bird": BirdSpeaker}
#: How long `status` waits for the speaker's session list.
PEERS_WAIT_S = 1.0


def vip_services(plans: Any, vips: tuple[IPAddress, ...]) -> dict[IPAddress, tuple[str, ...]]:
    """Return VIP → names (as the status writes them) of the services on that address."""
    return {v: tuple(str(p.key) for p in plans if p.key.addr == v) for v in vips}


def check_site(paths: tuple[str, ...], so: ScaleoutSettings) -> str:
    """Return this director's name; ConfigError for what start-up refuses (as `gridlb lint` reports it)."""
    site = load_site(list(paths))
    name = site.files[0].director if site.files else "director"
    if so.directors and name not in so.directors:
        raise ConfigError(
            f"this director is {name!r}, not among {', '.join(so.directors)}", key="gridlb.scaleout.directors"
        )
    addresses = [vs.ip_address for vs in site.virtual_servers.values() if vs.ip_address is not None]
    for vip in so.announced(addresses):
        for iname, inst in site.vrrp_instances.items():
            if any(v.address == vip for v in inst.vips):
                raise ConfigError(
                    f"{vip} is announced over BGP and held by VRRP instance {iname}; one mechanism per VIP",
                    key="gridlb.scaleout.announce",
                )
        if vip not in addresses:
            raise ConfigError(
                f"{vip} is announced but no virtual server has it", key="gridlb.scaleout.announce"
            )
        if not any(p.address.version == vip.version for p in so.peers):
            raise ConfigError(
                f"{vip} is IPv{vip.version} but no peer is: BGP sessions here carry their own family only",
                key="gridlb.scaleout.peers",
            )
    return name


class ScaleoutController:
    """Announces this director's VIPs while it can serve them (see the module doc)."""

    def __init__(
        self,
        settings: ScaleoutSettings,
        speaker: BirdSpeaker,
        services: Callable[[], Mapping[IPAddress, tuple[str, ...]]],
        status: Callable[[], Awaitable[DirectorStatus]],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.speaker = speaker
        self.services = services
        self.status_fn = status
        self.clock = clock
        self.drained = False
        self.stopping = False
        self.decisions: tuple[VipDecision, ...] = ()
        self.changes: list[dict[str, Any]] = []  # the latest announce/withdraw events, newest last
        self.speaker_error: str | None = None
        self.restarts = 0  # times the speaker was found dead and started again
        self.counts: collections.Counter[str] = collections.Counter()  # announce / withdraw
        self.collector = ScaleoutCollector(self)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._round = asyncio.Lock()

    @classmethod
    def from_config(
        cls,
        config: Any,
        status: Callable[[], Awaitable[DirectorStatus]],
        plans: Callable[[], Sequence[Any]] | None = None,
    ) -> ScaleoutController | None:
        """Return the controller for `config` (a DirectorConfig), None without `gridlb.scaleout`.

        `plans` returns the director's current service plans (they change on reload); default:
        those of `config`.
        """
        so: ScaleoutSettings | None = config.settings.scaleout
        if so is None:
            return None
        name = check_site(config.paths, so) if config.paths else "director"
        addresses = [p.key.addr for p in config.plans if p.key.addr is not None]
        vips = so.announced(addresses)
        speaker = SPEAKERS[so.speaker](so, BirdPlan.from_settings(name, so, vips))
        why = speaker.unavailable()
        if why:
            raise ConfigError(f"the BGP speaker cannot run: {why}", key="gridlb.scaleout.speaker")

        def services() -> Mapping[IPAddress, tuple[str, ...]]:
            return vip_services(plans() if plans is not None else config.plans, vips)

        return cls(so, speaker, services, status)

    async def start(self) -> None:
        """Start the speaker (announcing nothing) and the loop, which announces once the director serves."""
        await self.speaker.start()
        self._task = asyncio.ensure_future(self._loop())

    async def _loop(self) -> None:
        while True:
            await self.evaluate()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.check_interval_s)

    async def evaluate(self) -> tuple[VipDecision, ...]:
        """Run one round: read the status, decide, make the speaker announce that. Returns the decisions."""
        async with self._round:
            status: DirectorStatus | None = None
            if not (self.stopping or self.drained):
                try:
                    status = await self.status_fn()
                except Exception as exc:  # the director answers status even while its dataplane hangs
                    log.warning("scale-out: no status from the director: %s", exc)
            decisions = decide(status, self.services(), drained=self.drained, stopping=self.stopping)
            before = {d.vip: d.announce for d in self.decisions}
            try:
                if not self.speaker.running and not self.stopping:  # it died: start it again
                    self.restarts += 1
                    log.warning("scale-out: %s is not running; starting it again", self.speaker.name)
                    self.decisions = ()  # what it announced went with it
                    before = {}
                    await self.speaker.start()
                await self.speaker.announce(announced(decisions))
                self.speaker_error = None
            except (SpeakerError, ConfigError) as exc:
                if self.speaker_error != str(exc):
                    log.error("scale-out: %s", exc)
                self.speaker_error = str(exc)
                return self.decisions
            for d in decisions:
                if before.get(d.vip, False) != d.announce:
                    verb = "announce" if d.announce else "withdraw"
                    self.counts[verb] += 1
                    log.info("scale-out: %s %s (%s)", verb, d.vip, d.reason)
                    self.changes.append(
                        {"at": round(self.clock(), 3), "vip": str(d.vip), "action": verb, "reason": d.reason}
                    )
                    del self.changes[:-50]
            self.decisions = decisions
            return decisions

    async def drain(self) -> dict[str, Any]:
        """Withdraw every VIP (returns once the speaker has them withdrawn)."""
        was = self.drained
        self.drained = True
        await self.evaluate()
        self._raise_speaker_error("drain")
        return {"drained": True, "was_drained": was, "withdrawn": sorted(str(d.vip) for d in self.decisions)}

    async def undrain(self) -> dict[str, Any]:
        """Announce again what the director can serve."""
        was = self.drained
        self.drained = False
        await self.evaluate()
        self._raise_speaker_error("undrain")
        return {
            "drained": False,
            "was_drained": was,
            "announced": sorted(str(d.vip) for d in self.decisions if d.announce),
        }

    def _raise_speaker_error(self, op: str) -> None:
        if self.speaker_error is not None:
            from gridlb.api.messages import ApiError, ErrorCode

            raise ApiError(ErrorCode.INTERNAL, f"{op}: the BGP speaker failed: {self.speaker_error}")

    async def stop(self) -> None:
        """Withdraw every VIP and stop the speaker (BIRD closes its sessions)."""
        self.stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.speaker.running:
            await self.evaluate()
            await self.speaker.stop()

    async def peers(self) -> tuple[PeerState, ...]:
        """Return the BGP sessions (empty when the speaker does not answer)."""
        try:
            return await asyncio.wait_for(self.speaker.peers(), PEERS_WAIT_S)
        except (SpeakerError, TimeoutError):
            return ()

    async def status(self) -> dict[str, Any]:
        """Return what `gridlb status` shows: speaker, drain, every VIP's decision, sessions, changes."""
        peers = await self.peers()
        return {
            "speaker": self.speaker.name,
            "running": self.speaker.running,
            "speaker_error": self.speaker_error,
            "drained": self.drained,
            "hold_time_s": self.settings.hold_time_s,
            "restarts": self.restarts,
            "vips": [
                {"vip": str(d.vip), "announced": d.announce, "reason": d.reason} for d in self.decisions
            ],
            "peers": [
                {"name": p.name, "address": p.address, "state": p.state, "info": p.info, "since": p.since}
                for p in peers
            ],
            "changes": list(self.changes[-10:]),
        }


class ScaleoutCollector:
    """Prometheus metrics of the announcer (prometheus_client custom collector)."""

    def __init__(self, controller: ScaleoutController) -> None:
        self.controller = controller

    def collect(self) -> Iterator[Metric]:
        """Return the announced, drained, speaker and change metric families."""
        c = self.controller
        vips = GaugeMetricFamily(
            "gridlb_scaleout_vip_announced",
            "1 while this director announces the VIP over BGP",
            labels=["vip"],
        )
        for d in c.decisions:
            vips.add_metric([str(d.vip)], 1.0 if d.announce else 0.0)
        yield vips
        yield GaugeMetricFamily(
            "gridlb_scaleout_drained", "1 while drained as a director", value=float(c.drained)
        )
        yield GaugeMetricFamily(
            "gridlb_scaleout_speaker_failing",
            "1 while the BGP speaker refuses or does not answer",
            value=float(c.speaker_error is not None),
        )
        changes = CounterMetricFamily(
            "gridlb_scaleout_changes", "announcements and withdrawals made", labels=["action"]
        )
        for action in ("announce", "withdraw"):
            changes.add_metric([action], float(c.counts[action]))
        yield changes
        yield CounterMetricFamily(
            "gridlb_scaleout_speaker_restarts",
            "times the speaker was found dead and started again",
            value=c.restarts,
        )
