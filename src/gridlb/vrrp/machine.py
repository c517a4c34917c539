"""The sans-IO VRRP instance: RFC 3768 (v2) / RFC 5798 (v3) §6.4 with keepalived's FAULT and tracking.

No sockets, no clock: every input carries `now` (seconds, any monotonic origin), and the caller
collects what to do with `adverts_to_send(now)`, `next_event()` and `get_timer()` (the aioquic
pattern). State changes go only through TRANSITIONS; the rules:

  INIT   --START-------> BACKUP   priority < 255; Master_Down_Timer = Master_Down_Interval
  INIT   --START_OWNER-> MASTER   priority 255; advert now, GARP/NA burst, Adver_Timer
  INIT   --FAULT-------> FAULT    a weight-0 tracked interface/script is down at start
  BACKUP --MASTER_DOWN-> MASTER   Master_Down_Timer fired; advert now, GARP/NA burst, Adver_Timer
  BACKUP --FAULT-------> FAULT
  BACKUP --SHUTDOWN----> INIT
  MASTER --PREEMPTED---> BACKUP   advert with higher priority, or equal priority and a higher
                                  primary address than ours; Master_Down_Timer = Master_Down_Interval
  MASTER --FAULT-------> FAULT    sends a priority-0 advert first (peers take over after Skew_Time)
  MASTER --SHUTDOWN----> INIT     sends a priority-0 advert first
  FAULT  --RECOVER-----> BACKUP   Master_Down_Timer = Master_Down_Interval
  FAULT  --SHUTDOWN----> INIT

Adverts that do not change state:
  BACKUP, priority 0            -> Master_Down_Timer = Skew_Time
  BACKUP, nopreempt or priority >= ours
                                -> (v3: adopt the master's interval) Master_Down_Timer reset
  BACKUP, lower priority, preempt_delay window open (opened by the first such advert)
                                -> Master_Down_Timer reset (we wait before preempting)
  BACKUP, lower priority        -> ignored (the timer runs out and we preempt)
  MASTER, priority 0            -> advert now, Adver_Timer reset
  MASTER, lower priority        -> advert now (keepalived; unless lower_prio_no_advert) + GARP burst

Timers: Master_Down_Interval = down_timer_adverts (3) × Master_Adver_Interval + Skew_Time with
Skew_Time = (256 − priority)/256 s in v2 (independent of the interval) and
(256 − priority) × Master_Adver_Interval / 256 in v3; v2 uses our own interval, v3 the master's.
Effective priority = base + tracked weights, clamped to 1..254 (255 is never changed).
"""

from __future__ import annotations

import collections

from gridlb.vrrp.config import IPAddress, Tracked, VrrpConfig
from gridlb.vrrp.events import Announce, Event, MasterSeen, PriorityChanged, State, StateChanged, Trigger
from gridlb.vrrp.packet import (
    MCAST_V4,
    MCAST_V6,
    VRRP_TTL,
    Advert,
    AuthType,
    DecodeError,
    DropReason,
    decode,
    encode,
    pass_auth_data,
)

PRIO_STOP = 0
PRIO_OWNER = 255

#: (state, trigger) -> next state. Anything not listed is not a transition.
TRANSITIONS: dict[tuple[State, Trigger], State] = {
    (State.INIT, Trigger.START): State.BACKUP,
    (State.INIT, Trigger.START_OWNER): State.MASTER,
    (State.INIT, Trigger.FAULT): State.FAULT,
    (State.BACKUP, Trigger.MASTER_DOWN): State.MASTER,
    (State.BACKUP, Trigger.FAULT): State.FAULT,
    (State.BACKUP, Trigger.SHUTDOWN): State.INIT,
    (State.MASTER, Trigger.PREEMPTED): State.BACKUP,
    (State.MASTER, Trigger.FAULT): State.FAULT,
    (State.MASTER, Trigger.SHUTDOWN): State.INIT,
    (State.FAULT, Trigger.RECOVER): State.BACKUP,
    (State.FAULT, Trigger.SHUTDOWN): State.INIT,
}


class TransitionError(RuntimeError):
    """A trigger that the transition table does not allow in the current state (a caller bug)."""


def skew_time_s(version: int, priority: int, master_adver_int_s: float) -> float:
    """Skew_Time: v2 (256-p)/256 s; v3 (256-p)·Master_Adver_Interval/256."""
    if version == 2:
        return (256 - priority) / 256.0
    return (256 - priority) * master_adver_int_s / 256.0


def master_down_interval_s(version: int, priority: int, master_adver_int_s: float, adverts: int = 3) -> float:
    """Master_Down_Interval = adverts × Master_Adver_Interval + Skew_Time."""
    return adverts * master_adver_int_s + skew_time_s(version, priority, master_adver_int_s)


def _is_multicast(addr: IPAddress | None) -> bool:
    return addr is not None and addr.is_multicast


class VrrpMachine:
    """One VRRP instance. Feed it adverts and timer ticks; read back adverts, events and its timer."""

    def __init__(self, config: VrrpConfig, *, source: IPAddress | None = None) -> None:
        self.config = config
        src = source if source is not None else config.source_address
        if src is None:
            raise ValueError(f"{config.name}: the instance needs a primary (source) address")
        self.source: IPAddress = src
        self.state = State.INIT
        self.base_priority = config.priority
        self._tracked_up: dict[str, bool] = {t.name: True for t in self._tracked()}
        self.priority = self._effective_priority()
        self.master_adver_int_s = config.advert_int_cs / 100.0
        self.master_address: IPAddress | None = None
        self.master_priority: int | None = None
        self.drops: collections.Counter[DropReason] = collections.Counter()
        self.rx_adverts = 0
        self.tx_adverts = 0
        self.last_transition: StateChanged | None = None
        self._adver_deadline: float | None = None
        self._down_deadline: float | None = None
        self._garp_deadlines: list[tuple[float, int, str]] = []
        self._preempt_deadline: float | None = None
        self._out: list[tuple[bytes, IPAddress]] = []
        self._events: collections.deque[Event] = collections.deque()
        self._auth = pass_auth_data(config.auth_pass) if config.auth_type is AuthType.PASS else b""
        self._preempt = config.preempt or config.initial_state == "MASTER"

    # ------------------------------------------------------------------ inputs
    def start(self, now: float) -> None:
        """Startup event (RFC 5798 §6.4.1)."""
        if self.state is not State.INIT:
            return
        if self._faulted():
            self._transition(Trigger.FAULT, now, "a tracked object is down at start")
        elif self.base_priority == PRIO_OWNER:
            self._transition(Trigger.START_OWNER, now, "address owner (priority 255)")
        else:
            self._transition(Trigger.START, now, "startup")

    def shutdown(self, now: float) -> None:
        """Clean stop: a master sends a priority-0 advert so the backup takes over after Skew_Time."""
        if self.state is State.INIT:
            return
        self._transition(Trigger.SHUTDOWN, now, "shutdown")

    def receive_advert(
        self,
        data: bytes,
        src: IPAddress,
        ttl: int,
        now: float,
        *,
        dst: IPAddress | None = None,
    ) -> Advert | None:
        """Handle one received VRRP message (IP payload). Bad or foreign ones are counted and dropped.

        `dst` is the packet's destination (multicast group or our address); v3 checksums need it.
        Returns the accepted advert, or None when it was dropped.
        """
        if dst is None:
            dst = self._default_dst(src)
        try:
            advert = decode(data, src, dst, family=src.version)
            self._validate(advert, src, ttl, dst)
        except DecodeError as exc:
            self.drops[exc.reason] += 1
            return None
        self.rx_adverts += 1
        self._on_advert(advert, src, now)
        return advert

    def handle_timer(self, now: float) -> None:
        """Run every timer that is due at `now`."""
        if self.state is State.BACKUP and self._down_deadline is not None and now >= self._down_deadline:
            self._transition(Trigger.MASTER_DOWN, now, "no advert within the master-down interval")
        if self.state is State.MASTER:
            if self._adver_deadline is not None and now >= self._adver_deadline:
                self._send_advert(self.priority)
                self._adver_deadline = now + self._own_interval_s()
            due = [g for g in self._garp_deadlines if g[0] <= now]
            self._garp_deadlines = [g for g in self._garp_deadlines if g[0] > now]
            for _, repeat, reason in due:
                self._events.append(Announce(self.config.name, repeat, reason, now))
                if reason == "refresh" and self.config.garp_master_refresh_s > 0:
                    self._garp_deadlines.append(
                        (
                            now + self.config.garp_master_refresh_s,
                            self.config.garp_master_refresh_repeat,
                            "refresh",
                        )
                    )

    def set_tracked(self, name: str, up: bool, now: float) -> None:
        """A tracked interface or script changed; adjust the priority or enter/leave FAULT."""
        if name not in self._tracked_up or self._tracked_up[name] == up:
            return
        was_faulted = self._faulted()
        self._tracked_up[name] = up
        old = self.priority
        self.priority = self._effective_priority()
        if old != self.priority:
            self._events.append(PriorityChanged(self.config.name, old, self.priority, now))
            if self.state is State.MASTER:
                self._send_advert(self.priority)
                self._adver_deadline = now + self._own_interval_s()
        faulted = self._faulted()
        if faulted and not was_faulted and self.state in (State.BACKUP, State.MASTER):
            self._transition(Trigger.FAULT, now, f"tracked {name} is down")
        elif was_faulted and not faulted and self.state is State.FAULT:
            self._transition(Trigger.RECOVER, now, f"tracked {name} is up again")

    # ------------------------------------------------------------------ outputs
    def get_timer(self) -> float | None:
        """The earliest time at which handle_timer() has work to do (None: nothing scheduled)."""
        times: list[float] = []
        if self.state is State.BACKUP and self._down_deadline is not None:
            times.append(self._down_deadline)
        if self.state is State.MASTER:
            if self._adver_deadline is not None:
                times.append(self._adver_deadline)
            times.extend(g[0] for g in self._garp_deadlines)
        return min(times) if times else None

    def adverts_to_send(self, now: float) -> list[tuple[bytes, IPAddress]]:
        """VRRP messages (IP payloads) and their destinations, queued since the last call."""
        out, self._out = self._out, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def destinations(self) -> tuple[IPAddress, ...]:
        if self.config.unicast_peers:
            return self.config.unicast_peers
        return (MCAST_V4 if self.source.version == 4 else MCAST_V6,)

    # ------------------------------------------------------------------ internals
    def _tracked(self) -> tuple[Tracked, ...]:
        scripts = tuple(Tracked(s.name, s.weight, s.reverse) for s in self.config.track_scripts)
        return self.config.track_interfaces + scripts

    def _faulted(self) -> bool:
        return any(t.weight == 0 and not (self._tracked_up[t.name] ^ t.reverse) for t in self._tracked())

    def _effective_priority(self) -> int:
        if self.base_priority == PRIO_OWNER:
            return PRIO_OWNER
        prio = self.base_priority
        for t in self._tracked():
            up = self._tracked_up[t.name] ^ t.reverse
            if (t.weight > 0 and up) or (t.weight < 0 and not up):
                prio += t.weight
        return max(1, min(254, prio))

    def _own_interval_s(self) -> float:
        return self.config.advert_int_cs / 100.0

    def _down_interval_s(self) -> float:
        return master_down_interval_s(
            self.config.version, self.priority, self.master_adver_int_s, self.config.down_timer_adverts
        )

    def _default_dst(self, src: IPAddress) -> IPAddress:
        if self.config.unicast_peers:
            return self.source
        return MCAST_V4 if src.version == 4 else MCAST_V6

    def _validate(self, advert: Advert, src: IPAddress, ttl: int, dst: IPAddress) -> None:
        cfg = self.config
        if src.version != self.source.version:
            raise DecodeError(DropReason.FAMILY, f"{src} is not IPv{self.source.version}")
        if advert.version != cfg.version:
            raise DecodeError(DropReason.VERSION, f"version {advert.version}, ours {cfg.version}")
        # RFC 5798 §7.1: TTL/Hop Limit must be 255. keepalived sends IPv6 unicast with hop limit 64,
        # so only multicast and IPv4 adverts are held to it.
        if ttl != VRRP_TTL and (_is_multicast(dst) or src.version == 4):
            raise DecodeError(DropReason.TTL, f"ttl {ttl}")
        if advert.vrid != cfg.vrid:
            raise DecodeError(DropReason.VRID, f"vrid {advert.vrid}, ours {cfg.vrid}")
        if cfg.version == 2 and (
            advert.auth_type != cfg.auth_type or (self._auth and advert.auth_data != self._auth)
        ):
            raise DecodeError(DropReason.AUTH, f"auth type {int(advert.auth_type)}")
        if src == self.source:
            raise DecodeError(DropReason.OWN, "our own advert")
        if cfg.unicast_peers and src not in cfg.unicast_peers:
            raise DecodeError(DropReason.NOT_PEER, f"{src} is not a configured peer")
        if cfg.version == 2 and advert.advert_int_cs != cfg.advert_int_cs:
            raise DecodeError(
                DropReason.INTERVAL, f"{advert.advert_int_s} s, ours {cfg.advert_int_cs / 100} s"
            )

    def _learn_master(self, advert: Advert, src: IPAddress, now: float) -> None:
        if self.config.version == 3:
            self.master_adver_int_s = advert.advert_int_cs / 100.0
        if self.master_address != src:
            self._events.append(MasterSeen(self.config.name, src, advert.priority, now))
        self.master_address = src
        self.master_priority = advert.priority

    def _on_advert(self, advert: Advert, src: IPAddress, now: float) -> None:
        if self.state is State.BACKUP:
            if advert.priority == PRIO_STOP:
                self._down_deadline = now + skew_time_s(
                    self.config.version, self.priority, self.master_adver_int_s
                )
                return
            if not self._preempt or advert.priority >= self.priority:
                self._preempt_deadline = None
                self._learn_master(advert, src, now)
                self._down_deadline = now + self._down_interval_s()
                return
            if self.config.preempt_delay_s > 0:
                if self._preempt_deadline is None:
                    self._preempt_deadline = now + self.config.preempt_delay_s
                if now < self._preempt_deadline:
                    self._learn_master(advert, src, now)
                    self._down_deadline = now + self._down_interval_s()
            return  # lower priority: let the master-down timer run out and preempt
        if self.state is State.MASTER:
            if advert.priority == PRIO_STOP:
                self._send_advert(self.priority)
                self._adver_deadline = now + self._own_interval_s()
                return
            higher = advert.priority > self.priority or (
                advert.priority == self.priority and int(src) > int(self.source)
            )
            if higher:
                self._learn_master(advert, src, now)
                self._transition(
                    Trigger.PREEMPTED,
                    now,
                    f"advert from {src} with priority {advert.priority}, ours {self.priority}",
                )
                return
            if not self.config.lower_prio_no_advert:
                self._send_advert(self.priority)
                self._adver_deadline = now + self._own_interval_s()
            if self.config.garp_lower_prio_repeat > 0:
                self._events.append(
                    Announce(self.config.name, self.config.garp_lower_prio_repeat, "lower_prio", now)
                )

    def _send_advert(self, priority: int) -> None:
        cfg = self.config
        advert = Advert(
            cfg.version,
            cfg.vrid,
            priority,
            cfg.advert_int_cs,
            tuple(v.ip for v in cfg.vips),
            cfg.auth_type,
            self._auth,
        )
        for dst in self.destinations():
            self._out.append((encode(advert, self.source, dst), dst))
        self.tx_adverts += 1

    def _transition(self, trigger: Trigger, now: float, detail: str) -> None:
        old = self.state
        new = TRANSITIONS.get((old, trigger))
        if new is None:
            raise TransitionError(f"{self.config.name}: {trigger.value} is not allowed in {old.value}")
        # Leave the old state.
        if old is State.MASTER:
            if trigger in (Trigger.SHUTDOWN, Trigger.FAULT):
                self._send_advert(PRIO_STOP)
            self._adver_deadline = None
            self._garp_deadlines = []
        self._down_deadline = None
        self._preempt_deadline = None
        self.state = new
        # The role change is published before anything it causes (the VIPs must be added before
        # the Announce that follows is acted on).
        event = StateChanged(self.config.name, old, new, trigger, detail, self.priority, now)
        self.last_transition = event
        self._events.append(event)
        # Enter the new state.
        if new is State.MASTER:
            self.master_address = self.source
            self.master_priority = self.priority
            self.master_adver_int_s = self._own_interval_s()
            self._send_advert(self.priority)
            self._adver_deadline = now + self._own_interval_s()
            self._events.append(Announce(self.config.name, self.config.garp_master_repeat, "master", now))
            if self.config.garp_master_delay_s > 0:
                self._garp_deadlines.append(
                    (now + self.config.garp_master_delay_s, self.config.garp_master_repeat, "master_delay")
                )
            if self.config.garp_master_refresh_s > 0:
                self._garp_deadlines.append(
                    (
                        now + self.config.garp_master_refresh_s,
                        self.config.garp_master_refresh_repeat,
                        "refresh",
                    )
                )
        elif new is State.BACKUP:
            if old is not State.MASTER:
                self.master_adver_int_s = self._own_interval_s()
                self.master_address = None
                self.master_priority = None
            self._down_deadline = now + self._down_interval_s()
        elif new is State.INIT:
            self.master_address = None
