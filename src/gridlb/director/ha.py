"""High availability of a director: runs the site's VRRP instances next to the director and moves the VIPs.

Both directors of a pair keep the same table; only the virtual addresses follow the VRRP role. With
the proxy dataplane every listener is bound with IP_FREEBIND, so the backup already listens on the
VIP and serves the moment the address arrives. `HaController` owns one `HaInstance` per
`vrrp_instances` entry of the site (the VRRP engineer's `InstanceRunner`: at start it removes VIPs
left from an earlier crash, then joins as BACKUP; MASTER adds the VIPs and sends gratuitous ARP /
unsolicited NA), records every VRRP event in an `HaJournal` (served by the control API's `events`
and shown by `gridlb status`), tells the director its role, and exports Prometheus metrics.

`gridlb failover` hands mastership over cleanly: the MASTER instance sends a priority-0 advert
(the backup takes over after Skew_Time), removes its VIPs and rejoins as BACKUP without preemption,
so it stays BACKUP until this director restarts (run `gridlb failover` on the other director to move
the VIPs back) or the new master disappears.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gridlb.api.messages import ApiError, ErrorCode, EventsRequest, FailoverRequest
from gridlb.config.load import load_site
from gridlb.errors import ConfigError
from gridlb.vrrp.config import VrrpConfig
from gridlb.vrrp.daemon import InstanceRunner
from gridlb.vrrp.events import Announce, Event, MasterSeen, PriorityChanged, State, StateChanged, Trigger
from gridlb.vrrp.machine import VrrpMachine
from gridlb.vrrp.site import configs_from_site
from gridlb.vrrp.transport import VrrpTransport

log = logging.getLogger(__name__)

#: How many VRRP events the journal keeps for `gridlb events`.
JOURNAL_SIZE = 500
#: Longest wait a client may ask of `events` (seconds).
MAX_EVENTS_WAIT_S = 20.0
#: Longest wait a client may ask of `failover` for the peer's first advert (seconds).
MAX_FAILOVER_WAIT_S = 60.0
#: Reason shown for the hand-over transition (the machine itself only knows "shutdown").
FAILOVER_REASON = "operator failover: priority-0 advert sent, VIPs removed"
#: Reason shown when the instance rejoins after a hand-over.
REJOIN_REASON = "operator failover: rejoined as BACKUP, no preemption until restart"


# --- the journal (pure) ---------------------------------------------------------------------------


def aggregate_role(states: Mapping[str, State]) -> str | None:
    """Return the director's role: the common state of its instances, or MIXED; None without any."""
    values = {s.value for s in states.values()}
    if not values:
        return None
    if len(values) == 1:
        return values.pop()
    return "MIXED"


def transition_reason(event: StateChanged, handover: bool = False) -> str:
    """Return why the instance changed state, in words (the trigger and the machine's detail)."""
    if handover and event.trigger is Trigger.SHUTDOWN:
        return FAILOVER_REASON
    if handover and event.trigger is Trigger.START:
        return REJOIN_REASON
    return f"{event.trigger.value}: {event.detail}"


@dataclass(frozen=True, slots=True)
class HaEvent:
    """One journal entry: a sequence number, the wall-clock time, the instance, a kind and details."""

    seq: int
    at: float
    instance: str
    kind: str
    data: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        """Return the entry as the control API sends it."""
        return {
            "seq": self.seq,
            "at": round(self.at, 6),
            "instance": self.instance,
            "kind": self.kind,
        } | dict(self.data)


@dataclass
class HaJournal:
    """VRRP events of every instance: a bounded log with sequence numbers, states and counters."""

    maxlen: int = JOURNAL_SIZE
    seq: int = 0
    entries: collections.deque[HaEvent] = field(default_factory=collections.deque)
    states: dict[str, State] = field(default_factory=dict)
    last_transition: dict[str, dict[str, Any]] = field(default_factory=dict)
    transitions: collections.Counter[tuple[str, str, str, str]] = field(default_factory=collections.Counter)
    handovers: collections.Counter[str] = field(default_factory=collections.Counter)

    def add(self, instance: str, kind: str, at: float, **data: Any) -> HaEvent:
        """Append one entry and return it."""
        self.seq += 1
        entry = HaEvent(self.seq, at, instance, kind, data)
        self.entries.append(entry)
        while len(self.entries) > self.maxlen:
            self.entries.popleft()
        return entry

    def record(self, event: Event, at: float, *, handover: bool = False) -> HaEvent:
        """Record a VRRP event seen at wall-clock time `at` (`handover`: the instance is handing over)."""
        if isinstance(event, StateChanged):
            reason = transition_reason(event, handover)
            handed = handover and event.trigger in (Trigger.SHUTDOWN, Trigger.START)
            trigger = "failover" if handed else event.trigger.value
            self.states[event.instance] = event.new
            self.transitions[(event.instance, event.old.value, event.new.value, trigger)] += 1
            info = {
                "from": event.old.value,
                "to": event.new.value,
                "trigger": trigger,
                "reason": reason,
                "priority": event.priority,
                "at": round(at, 6),
            }
            self.last_transition[event.instance] = info
            return self.add(event.instance, "state", at, **{k: v for k, v in info.items() if k != "at"})
        if isinstance(event, Announce):
            return self.add(event.instance, "announce", at, repeat=event.repeat, reason=event.reason)
        if isinstance(event, PriorityChanged):
            return self.add(event.instance, "priority", at, old=event.old, new=event.new)
        return self.add(event.instance, "master", at, address=str(event.address), priority=event.priority)

    def since(self, seq: int) -> list[HaEvent]:
        """Return the entries after sequence number `seq` (oldest first)."""
        return [e for e in self.entries if e.seq > seq]

    @property
    def role(self) -> str | None:
        """Return the aggregate role of the instances seen so far."""
        return aggregate_role(self.states)


# --- one instance -------------------------------------------------------------------------------------


class HaInstance(InstanceRunner):
    """The VRRP engineer's instance runner, plus a clean hand-over and counters that survive it."""

    def __init__(self, config: VrrpConfig, out: asyncio.Queue[Event]) -> None:
        super().__init__(config, out)
        self.handing_over = False
        self.handed_over = 0
        self._retired_rx = 0
        self._retired_tx = 0
        self._retired_drops: collections.Counter[str] = collections.Counter()

    @property
    def state(self) -> State:
        """Return the instance's state (INIT before start)."""
        return self.machine.state if self.machine is not None else State.INIT

    async def hand_over(self) -> None:
        """Priority-0 advert, VIPs off, rejoin as BACKUP without preemption (the caller checked MASTER)."""
        old, transport = self.machine, self.transport
        assert old is not None and transport is not None
        self.handing_over = True
        self.handed_over += 1
        self._retired_rx += old.rx_adverts
        self._retired_tx += old.tx_adverts
        self._retired_drops.update(transport.drop_counts())
        transport.stop()  # MASTER --SHUTDOWN--> INIT: the priority-0 advert leaves now
        await self.vips.remove()  # the consumer would too; the reply means "the VIPs are gone"
        machine = VrrpMachine(replace(self.config, preempt=False, initial_state="BACKUP"), source=old.source)
        tracked_up: Mapping[str, bool] = getattr(old, "_tracked_up", {})
        for name, up in tracked_up.items():
            if not up:
                machine.set_tracked(name, False, transport.now())
        self.machine = machine
        self.transport = VrrpTransport(machine, events=self._queue)
        self.transport.open()  # INIT --START--> BACKUP

    def counters(self) -> tuple[int, int, dict[str, int]]:
        """Return adverts received, sent, and dropped by reason, over every machine this instance ran."""
        rx, tx = self._retired_rx, self._retired_tx
        drops = collections.Counter(self._retired_drops)
        if self.machine is not None:
            rx += self.machine.rx_adverts
            tx += self.machine.tx_adverts
        if self.transport is not None:
            drops.update(self.transport.drop_counts())
        return rx, tx, dict(drops)

    def status(self) -> dict[str, Any]:
        """Return the runner's status with counters over hand-overs, the peers and the VIPs."""
        out = super().status()
        rx, tx, drops = self.counters()
        out.update(rx_adverts=rx, tx_adverts=tx, drops=drops)
        out["peers"] = [str(p) for p in self.config.unicast_peers] or ["multicast"]
        out["vips"] = [str(v) for v in self.config.vips]
        out["preempt"] = self.machine is not None and self.machine.config.preempt
        out["handed_over"] = self.handed_over
        out["announced"] = self.vips.announced
        return out


# --- the controller -----------------------------------------------------------------------------------


class HaController:
    """Runs a director's VRRP instances, journals their events and reports the role to the director."""

    def __init__(
        self,
        configs: Sequence[VrrpConfig],
        *,
        on_role: Callable[[str, str], None] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.out: asyncio.Queue[Event] = asyncio.Queue()
        self.instances = {c.name: HaInstance(c, self.out) for c in configs}
        self.journal = HaJournal()
        self.on_role = on_role
        self.wall_clock = wall_clock
        self.collector = HaCollector(self)
        self._consumer: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._started: list[HaInstance] = []

    @classmethod
    def from_paths(
        cls, paths: Sequence[str], *, on_role: Callable[[str, str], None] | None = None
    ) -> HaController | None:
        """Return a controller for the VRRP instances of the site files, or None when they have none."""
        if not paths:
            return None
        configs = configs_from_site(load_site(list(paths)))
        return cls(configs, on_role=on_role) if configs else None

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every instance: drop VIPs left from a crash, then join as BACKUP."""
        self._consumer = asyncio.create_task(self._consume())
        for inst in self.instances.values():
            try:
                await inst.start()
            except OSError as exc:
                await inst.vips.close()
                cfg = inst.config
                raise ConfigError(
                    f"cannot run on interface {cfg.interface}: {exc.strerror or exc}",
                    key=f"vrrp_instances.{cfg.name}.interface",
                ) from None
            self._started.append(inst)
            if inst.stale_vips_removed:
                self._note(inst.config.name, "stale_vips_removed", vips=list(inst.stale_vips_removed))

    async def stop(self) -> None:
        """Stop cleanly: a MASTER sends its priority-0 advert; every VIP is removed."""
        for inst in self._started:
            try:
                await inst.stop()
            except Exception:
                log.exception("%s: stopping", inst.config.name)
        self._started.clear()
        while not self.out.empty():
            self._on_event(self.out.get_nowait())
        if self._consumer is not None:
            self._consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer
            self._consumer = None

    async def _consume(self) -> None:
        while True:
            event = await self.out.get()
            try:
                self._on_event(event)
            except Exception:
                log.exception("ha: recording %s", event)

    def _note(self, instance: str, kind: str, **data: Any) -> None:
        self.journal.add(instance, kind, self.wall_clock(), **data)
        self._changed.set()

    def _on_event(self, event: Event) -> None:
        inst = self.instances.get(event.instance)
        handover = inst is not None and inst.handing_over
        entry = self.journal.record(event, self.wall_clock(), handover=handover)
        self._changed.set()
        if isinstance(event, StateChanged):
            if inst is not None and event.new is not State.INIT:
                inst.handing_over = False
            role = self.journal.role
            if self.on_role is not None and role is not None:
                self.on_role(
                    role, f"{event.instance}: {event.old.value} -> {event.new.value} ({entry.data['reason']})"
                )
        elif isinstance(event, MasterSeen):
            log.info("%s: following master %s", event.instance, event.address)

    # --- operator requests -----------------------------------------------------------------------

    async def handle(self, request: FailoverRequest | EventsRequest) -> dict[str, Any]:
        """Answer `failover` and `events`."""
        if isinstance(request, FailoverRequest):
            return await self.failover(request.instance, request.timeout_s)
        return await self.events(request.since, request.wait_s)

    async def failover(self, instance: str = "", timeout_s: float = 5.0) -> dict[str, Any]:
        """Hand every MASTER instance (or `instance`) over; wait up to `timeout_s` for the new master."""
        if instance:
            if instance not in self.instances:
                known = ", ".join(sorted(self.instances))
                raise ApiError(ErrorCode.NOT_FOUND, f"no VRRP instance {instance!r} (instances: {known})")
            chosen = [self.instances[instance]]
        else:
            chosen = list(self.instances.values())
        masters = [i for i in chosen if i.state is State.MASTER]
        if not masters:
            states = ", ".join(f"{i.config.name} {i.state.value}" for i in chosen)
            raise ApiError(
                ErrorCode.INVALID_ARGUMENT,
                f"nothing to hand over: this director is not MASTER ({states}); run failover on the master",
            )
        for inst in masters:
            log.warning("%s: operator failover: handing mastership to the peer", inst.config.name)
            self._note(inst.config.name, "failover", requested=True)
            await inst.hand_over()
        wait = max(0.0, min(timeout_s, MAX_FAILOVER_WAIT_S))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        results: dict[str, dict[str, Any]] = {}
        while True:
            for inst in masters:
                m = inst.machine
                assert m is not None
                if m.state is State.MASTER:
                    results[inst.config.name] = {"outcome": "master again: no peer took over"}
                elif m.master_address is not None and m.master_address != m.source:
                    results[inst.config.name] = {
                        "outcome": "handed over",
                        "new_master": str(m.master_address),
                        "new_master_priority": m.master_priority,
                    }
            if len(results) == len(masters) or loop.time() >= deadline:
                break
            await asyncio.sleep(0.02)
        for inst in masters:
            results.setdefault(
                inst.config.name, {"outcome": f"no advert from a new master within {wait:g} s"}
            )
            results[inst.config.name]["state"] = inst.state.value
        return {"instances": results}

    async def events(self, since: int = 0, wait_s: float = 0.0) -> dict[str, Any]:
        """Return the journal entries after `since`, waiting up to `wait_s` for a first one."""
        wait = max(0.0, min(wait_s, MAX_EVENTS_WAIT_S))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            found = self.journal.since(since)
            left = deadline - loop.time()
            if found or left <= 0:
                break
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return {"events": [e.to_json() for e in found], "last": self.journal.seq}

    # --- views -----------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Return the VRRP part of `gridlb status`: role, and per instance state, master, last transition."""
        instances = []
        for name, inst in self.instances.items():
            st = inst.status()
            st["last_transition"] = self.journal.last_transition.get(name)
            instances.append(st)
        return {"role": self.journal.role, "instances": instances}


class HaCollector:
    """Prometheus metrics of the VRRP instances (prometheus_client custom collector)."""

    def __init__(self, controller: HaController) -> None:
        self.controller = controller

    def describe(self) -> list[Metric]:
        """Return nothing (the label sets depend on the instances)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Return the role, priority, transition and advert metric families."""
        c = self.controller
        role = GaugeMetricFamily(
            "gridlb_vrrp_role",
            "VRRP state of the instance (1 for the current one).",
            labels=["instance", "state"],
        )
        prio = GaugeMetricFamily("gridlb_vrrp_priority", "Effective VRRP priority.", labels=["instance"])
        rx = CounterMetricFamily("gridlb_vrrp_adverts_received", "Adverts accepted.", labels=["instance"])
        tx = CounterMetricFamily("gridlb_vrrp_adverts_sent", "Adverts sent.", labels=["instance"])
        dropped = CounterMetricFamily(
            "gridlb_vrrp_adverts_dropped",
            "Received packets dropped, by reason (malformed, foreign, not a peer, ...).",
            labels=["instance", "reason"],
        )
        garp = CounterMetricFamily(
            "gridlb_vrrp_announcements", "Gratuitous ARPs / unsolicited NAs sent.", labels=["instance"]
        )
        handovers = CounterMetricFamily(
            "gridlb_vrrp_failovers", "Operator hand-overs (gridlb failover).", labels=["instance"]
        )
        for name, inst in c.instances.items():
            for st in State:
                role.add_metric([name, st.value], 1 if st is inst.state else 0)
            if inst.machine is not None:
                prio.add_metric([name], inst.machine.priority)
            n_rx, n_tx, drops = inst.counters()
            rx.add_metric([name], n_rx)
            tx.add_metric([name], n_tx)
            for reason, n in sorted(drops.items()):
                dropped.add_metric([name, reason], n)
            garp.add_metric([name], inst.vips.announced)
            handovers.add_metric([name], inst.handed_over)
        transitions = CounterMetricFamily(
            "gridlb_vrrp_transitions",
            "VRRP state changes by old state, new state and trigger.",
            labels=["instance", "from", "to", "trigger"],
        )
        for (name, old, new, trigger), n in sorted(c.journal.transitions.items()):
            transitions.add_metric([name, old, new, trigger], n)
        yield from (role, prio, transitions, rx, tx, dropped, garp, handovers)
