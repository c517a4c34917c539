"""State-machine tests over a fake link: every RFC 5798 §6.4 rule, v2 and v3, no sockets, no sleeps."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import pytest

from gridlb.vrrp.config import Tracked, VrrpConfig
from gridlb.vrrp.events import Announce, MasterSeen, PriorityChanged, State, StateChanged, Trigger
from gridlb.vrrp.machine import TRANSITIONS, TransitionError, VrrpMachine
from gridlb.vrrp.packet import MCAST_V4, Advert, AuthType, DropReason, decode, encode, pass_auth_data

ME = ipaddress.IPv4Address("10.0.0.2")
PEER_HI = ipaddress.IPv4Address("10.0.0.3")  # higher address than ME
PEER_LO = ipaddress.IPv4Address("10.0.0.1")  # lower address than ME
VIP = ipaddress.IPv4Interface("10.0.0.100/24")

# advert_int 2 s, priority 100. Master_Down_Interval and Skew_Time, worked out by hand:
#   v2: skew = (256-100)/256 = 0.609375 s (independent of the interval); down = 3*2 + 0.609375
#   v3: skew = (256-100)*2/256 = 1.21875 s; down = 3*2 + 1.21875
DOWN = {2: 6.609375, 3: 7.21875}
SKEW = {2: 0.609375, 3: 1.21875}


def cfg(version: int, **kw: Any) -> VrrpConfig:
    base = VrrpConfig(
        name="VI_1",
        interface="eth0",
        vrid=51,
        priority=100,
        advert_int_s=2.0,
        version=version,
        vips=(VIP,),
        source_address=ME,
        garp_master_delay_s=0.0,
        garp_master_repeat=3,
    )
    return replace(base, **kw)


def advert(
    version: int, priority: int, *, src: ipaddress.IPv4Address = PEER_HI, interval_cs: int = 200
) -> bytes:
    return encode(Advert(version, 51, priority, interval_cs, (VIP.ip,)), src, MCAST_V4)


def drain(m: VrrpMachine) -> list[Any]:
    out = []
    while (e := m.next_event()) is not None:
        out.append(e)
    return out


def state_now(m: VrrpMachine) -> State:
    """The machine's state, read again after an input moved it."""
    return m.state


def sent_priorities(m: VrrpMachine, now: float) -> list[int]:
    return [decode(b, m.source, dst).priority for b, dst in m.adverts_to_send(now)]


def in_state(version: int, state: State, **kw: Any) -> VrrpMachine:
    """A machine brought into `state` at t=10 through real inputs only; outputs drained."""
    m = VrrpMachine(cfg(version, **kw))
    if state is State.INIT:
        return m
    m.start(0.0)
    if state is State.MASTER:
        m.handle_timer(m.get_timer() or 0.0)
    if state is State.FAULT:
        m.set_tracked("eth1", False, 1.0)
    drain(m)
    m.adverts_to_send(0.0)
    if state is State.MASTER:
        # Make t=10 a clean point: deliver the adverts due until then.
        while (t := m.get_timer()) is not None and t <= 10.0:
            m.handle_timer(t)
        m.adverts_to_send(10.0)
        drain(m)
    assert m.state is state
    return m


@dataclass(frozen=True)
class Row:
    """One rule: from `state`, apply `action` at t=10 and check state, timer and adverts sent."""

    rule: str
    state: State
    action: str
    arg: Any
    expect_state: State
    expect_timer: Mapping[int, float | None]  # per version, seconds after t=10 (None: no timer)
    expect_sent: list[int]  # priorities of the adverts sent
    config: tuple[tuple[str, Any], ...] = ()


T = 10.0
UNCHANGED: dict[int, float | None] = {2: -1.0, 3: -1.0}  # the timer is left as it was
ROWS = [
    # §6.4.1 Initialize
    Row("init: startup, priority < 255 -> Backup, Master_Down_Timer", State.INIT, "start", None, State.BACKUP,
        DOWN, []),
    Row("init: startup, priority 255 -> Master, advert, Adver_Timer", State.INIT, "start", None, State.MASTER,
        {2: 2.0, 3: 2.0}, [255], (("priority", 255),)),
    # §6.4.2 Backup
    Row("backup: Master_Down_Timer fires -> Master, advert", State.BACKUP, "timer", DOWN, State.MASTER,
        {2: 2.0, 3: 2.0}, [100]),
    Row("backup: priority 0 advert -> Master_Down_Timer = Skew_Time", State.BACKUP, "advert", 0, State.BACKUP,
        SKEW, []),
    Row("backup: higher priority -> reset Master_Down_Timer", State.BACKUP, "advert", 150, State.BACKUP,
        DOWN, []),
    Row("backup: equal priority advert -> reset Master_Down_Timer", State.BACKUP, "advert", 100, State.BACKUP,
        DOWN, []),
    Row("backup: lower priority, preempt -> discard (timer keeps running)", State.BACKUP, "advert", 50,
        State.BACKUP, UNCHANGED, []),
    Row("backup: lower priority, nopreempt -> reset timer", State.BACKUP, "advert", 50, State.BACKUP,
        DOWN, [], (("preempt", False),)),
    Row("backup: shutdown -> Initialize", State.BACKUP, "shutdown", None, State.INIT, {2: None, 3: None}, []),
    # §6.4.3 Master
    Row("master: Adver_Timer fires -> advert, reset Adver_Timer", State.MASTER, "timer", {2: 2.0, 3: 2.0},
        State.MASTER, {2: 2.0, 3: 2.0}, [100]),
    Row("master: priority 0 advert -> advert now, reset Adver_Timer", State.MASTER, "advert", 0, State.MASTER,
        {2: 2.0, 3: 2.0}, [100]),
    Row("master: higher priority advert -> Backup", State.MASTER, "advert", 150, State.BACKUP, DOWN, []),
    Row("master: equal priority, higher sender address -> Backup", State.MASTER, "advert", 100, State.BACKUP,
        DOWN, []),
    Row("master: equal priority, lower sender address -> stay (advert now)", State.MASTER, "advert_lo", 100,
        State.MASTER, {2: 2.0, 3: 2.0}, [100]),
    Row("master: lower priority -> stay, advert now (keepalived)", State.MASTER, "advert", 50, State.MASTER,
        {2: 2.0, 3: 2.0}, [100]),
    Row("master: lower priority, lower_prio_no_advert -> discard", State.MASTER, "advert", 50, State.MASTER,
        UNCHANGED, [], (("lower_prio_no_advert", True),)),
    Row("master: shutdown -> priority-0 advert, Initialize", State.MASTER, "shutdown", None, State.INIT,
        {2: None, 3: None}, [0]),
    # keepalived FAULT (track_interface eth1, weight 0)
    Row("backup: tracked interface down -> Fault", State.BACKUP, "track_down", None, State.FAULT,
        {2: None, 3: None}, []),
    Row("master: tracked interface down -> priority-0 advert, Fault", State.MASTER, "track_down", None,
        State.FAULT, {2: None, 3: None}, [0]),
    Row("fault: tracked interface up -> Backup", State.FAULT, "track_up", None, State.BACKUP,
        DOWN, []),
    Row("fault: shutdown -> Initialize", State.FAULT, "shutdown", None, State.INIT, {2: None, 3: None}, []),
    Row("init: startup, tracked interface down -> Fault", State.INIT, "start_faulted", None, State.FAULT,
        {2: None, 3: None}, []),
]  # fmt: skip


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("row", ROWS, ids=[r.rule for r in ROWS])
def test_rfc5798_section_6_4(row: Row, version: int) -> None:
    extra = dict(row.config)
    extra.setdefault("track_interfaces", (Tracked("eth1"),))
    m = in_state(version, row.state, **extra)
    now = T
    timer_before = m.get_timer()
    if row.action == "start":
        m.start(now)
    elif row.action == "start_faulted":
        m.set_tracked("eth1", False, now)
        m.start(now)
    elif row.action == "timer":
        due = m.get_timer()
        assert due is not None
        if row.state is State.BACKUP:
            assert due == pytest.approx(row.arg[version])  # started at t=0
        now = due
        m.handle_timer(now)
    elif row.action in ("advert", "advert_lo"):
        src = PEER_LO if row.action == "advert_lo" else PEER_HI
        assert m.receive_advert(advert(version, row.arg, src=src), src, 255, now) is not None
    elif row.action == "shutdown":
        m.shutdown(now)
    elif row.action == "track_down":
        m.set_tracked("eth1", False, now)
    elif row.action == "track_up":
        m.set_tracked("eth1", True, now)
    assert m.state is row.expect_state
    expected = row.expect_timer[version]
    timer = m.get_timer()
    if expected is None:
        assert timer is None
    elif expected < 0:
        assert timer == timer_before
    else:
        assert timer == pytest.approx(now + expected)
    assert sent_priorities(m, now) == row.expect_sent
    if row.expect_state is not row.state:
        changes = [e for e in drain(m) if isinstance(e, StateChanged)]
        assert [(c.old, c.new) for c in changes] == [(row.state, row.expect_state)]
        assert TRANSITIONS[(row.state, changes[0].trigger)] is row.expect_state


def test_every_table_transition_is_exercised() -> None:
    seen = set()
    for row in ROWS:
        if row.state is not row.expect_state:
            seen.add((row.state, row.expect_state))
    assert seen == {(s, n) for (s, _), n in TRANSITIONS.items()}


def test_disallowed_trigger_is_a_caller_bug() -> None:
    m = in_state(2, State.BACKUP)
    with pytest.raises(TransitionError):
        m._transition(Trigger.PREEMPTED, 1.0, "not from backup")


def test_v3_backup_adopts_master_interval() -> None:
    m = in_state(3, State.BACKUP)
    m.receive_advert(advert(3, 150, interval_cs=50), PEER_HI, 255, T)
    # 3 * 0.5 + (256-100) * 0.5 / 256
    assert m.get_timer() == pytest.approx(T + 1.5 + 0.3046875)


def test_v2_interval_mismatch_is_dropped() -> None:
    m = in_state(2, State.BACKUP)
    assert m.receive_advert(advert(2, 150, interval_cs=100), PEER_HI, 255, T) is None
    assert m.drops[DropReason.INTERVAL] == 1


# ----------------------------------------------------------------------------- fake link
class Pair:
    """Two machines joined by a lossless link with an explicit clock (h11 ConnectionPair style)."""

    def __init__(self, a: VrrpMachine, b: VrrpMachine) -> None:
        self.nodes = {"a": a, "b": b}
        self.alive = {"a": True, "b": True}
        self.now = 0.0
        self.log: list[tuple[float, str, State, State]] = []

    def pump(self) -> None:
        moved = True
        while moved:
            moved = False
            for name, m in self.nodes.items():
                other = self.nodes["b" if name == "a" else "a"]
                out = m.adverts_to_send(self.now)
                if not self.alive[name]:
                    continue
                for data, _ in out:
                    moved = True
                    if self.alive["b" if name == "a" else "a"]:
                        other.receive_advert(data, m.source, 255, self.now, dst=MCAST_V4)
                while (e := m.next_event()) is not None:
                    if isinstance(e, StateChanged):
                        self.log.append((self.now, name, e.old, e.new))

    def run_until(self, t_end: float) -> None:
        self.pump()
        while True:
            timers = [
                (m.get_timer(), n)
                for n, m in self.nodes.items()
                if self.alive[n] and m.get_timer() is not None
            ]
            if not timers:
                break
            t, name = min(timers, key=lambda x: x[0] or 0.0)
            assert t is not None
            if t > t_end:
                break
            self.now = max(self.now, t)
            self.nodes[name].handle_timer(self.now)
            self.pump()
        self.now = t_end

    def state(self, name: str) -> State:
        return self.nodes[name].state


def make_pair(version: int, *, a_prio: int = 150, b_prio: int = 100, **kw: Any) -> Pair:
    a = VrrpMachine(cfg(version, priority=a_prio, source_address=PEER_HI, **kw))
    b = VrrpMachine(cfg(version, priority=b_prio, source_address=ME, **kw))
    pair = Pair(a, b)
    a.start(0.0)
    b.start(0.0)
    return pair


@pytest.mark.parametrize("version", [2, 3])
def test_pair_elects_higher_priority_and_backup_takes_over_on_crash(version: int) -> None:
    p = make_pair(version)
    p.run_until(30.0)
    assert (p.state("a"), p.state("b")) == (State.MASTER, State.BACKUP)
    # a dies silently at t=30.5 (no priority-0 advert)
    p.run_until(30.5)
    p.alive["a"] = False
    last_rx = 30.0  # a's last advert (a became master at 3*2+skew(150) and sends every 2 s)
    a_master_at = next(t for t, n, o, new in p.log if n == "a" and new is State.MASTER)
    k = int((30.5 - a_master_at) // 2.0)
    last_rx = a_master_at + 2.0 * k
    p.run_until(60.0)
    takeover = [t for t, n, o, new in p.log if n == "b" and new is State.MASTER][-1]
    assert takeover == pytest.approx(last_rx + DOWN[version])


@pytest.mark.parametrize("version", [2, 3])
def test_clean_stop_hands_over_after_skew(version: int) -> None:
    p = make_pair(version)
    p.run_until(30.0)
    p.nodes["a"].shutdown(30.0)
    p.pump()
    p.alive["a"] = False
    p.run_until(40.0)
    takeover = [t for t, n, o, new in p.log if n == "b" and new is State.MASTER][-1]
    assert takeover == pytest.approx(30.0 + SKEW[version])


@pytest.mark.parametrize("version", [2, 3])
def test_preempt_and_nopreempt(version: int) -> None:
    # b (lower) is master alone; a (higher) comes up later.
    for preempt, expect_master in ((True, "a"), (False, "b")):
        a = VrrpMachine(cfg(version, priority=150, source_address=PEER_HI, preempt=preempt))
        b = VrrpMachine(cfg(version, priority=100, source_address=ME, preempt=preempt))
        p = Pair(a, b)
        b.start(0.0)
        p.alive["a"] = False
        p.run_until(20.0)
        assert p.state("b") is State.MASTER
        p.alive["a"] = True
        a.start(20.0)
        p.run_until(60.0)
        master = "a" if p.state("a") is State.MASTER else "b"
        assert master == expect_master
        assert {p.state("a"), p.state("b")} == {State.MASTER, State.BACKUP}


@pytest.mark.parametrize("version", [2, 3])
def test_preempt_delay_postpones_takeover(version: int) -> None:
    a = VrrpMachine(cfg(version, priority=150, source_address=PEER_HI, preempt_delay_s=20.0))
    b = VrrpMachine(cfg(version, priority=100, source_address=ME))
    p = Pair(a, b)
    b.start(0.0)
    p.alive["a"] = False
    p.run_until(20.0)
    p.alive["a"] = True
    a.start(20.0)
    p.run_until(35.0)
    assert p.state("a") is State.BACKUP  # first lower advert at ~20-22 opened a 20 s window
    p.run_until(60.0)
    assert p.state("a") is State.MASTER and p.state("b") is State.BACKUP
    took = next(t for t, n, o, new in p.log if n == "a" and new is State.MASTER)
    assert took >= 40.0


@pytest.mark.parametrize("version", [2, 3])
def test_equal_priority_higher_address_wins(version: int) -> None:
    p = make_pair(version, a_prio=100, b_prio=100)
    p.run_until(30.0)
    assert p.state("a") is State.MASTER  # PEER_HI > ME
    assert p.state("b") is State.BACKUP


def test_tracking_weight_changes_priority_and_hands_over() -> None:
    a = VrrpMachine(cfg(3, priority=150, source_address=PEER_HI, track_interfaces=(Tracked("eth1", -60),)))
    b = VrrpMachine(cfg(3, priority=100, source_address=ME))
    p = Pair(a, b)
    a.start(0.0)
    b.start(0.0)
    p.run_until(20.0)
    assert p.state("a") is State.MASTER
    a.set_tracked("eth1", False, 20.0)
    assert a.priority == 90
    assert any(isinstance(e, PriorityChanged) and e.new == 90 for e in list(a._events))
    p.run_until(40.0)
    assert (p.state("a"), p.state("b")) == (State.BACKUP, State.MASTER)
    a.set_tracked("eth1", True, 40.0)
    p.run_until(60.0)
    assert (p.state("a"), p.state("b")) == (State.MASTER, State.BACKUP)


def test_positive_weight_and_reverse() -> None:
    m = VrrpMachine(cfg(2, track_interfaces=(Tracked("a", 10), Tracked("b", 0, reverse=True))))
    assert m.priority == 110
    m.start(0.0)
    assert state_now(m) is State.FAULT  # b is "up", reversed -> down -> weight 0 -> fault
    m.set_tracked("b", False, 1.0)
    assert state_now(m) is State.BACKUP
    m.set_tracked("a", False, 2.0)
    assert m.priority == 100


def test_priority_255_is_never_changed() -> None:
    m = VrrpMachine(cfg(2, priority=255, track_interfaces=(Tracked("a", -50),)))
    m.set_tracked("a", False, 0.0)
    assert m.priority == 255


def test_garp_schedule_on_master() -> None:
    m = in_state(2, State.INIT, garp_master_delay_s=5.0, garp_master_repeat=3, garp_master_refresh_s=30.0)
    m.start(0.0)
    m.handle_timer(DOWN[2])
    events = drain(m)
    assert [e.repeat for e in events if isinstance(e, Announce)] == [3]
    announces: list[tuple[float, int, str]] = []
    t = DOWN[2]
    while t < DOWN[2] + 65:
        nt = m.get_timer()
        assert nt is not None
        t = nt
        m.handle_timer(t)
        announces += [(e.at - DOWN[2], e.repeat, e.reason) for e in drain(m) if isinstance(e, Announce)]
    assert [at for at, _, _ in announces] == pytest.approx([5.0, 30.0, 60.0])
    assert [(repeat, why) for _, repeat, why in announces] == [
        (3, "master_delay"),
        (1, "refresh"),
        (1, "refresh"),
    ]


def test_master_seen_event() -> None:
    m = in_state(2, State.BACKUP)
    m.receive_advert(advert(2, 150), PEER_HI, 255, T)
    assert [e.address for e in drain(m) if isinstance(e, MasterSeen)] == [PEER_HI]
    assert m.master_address == PEER_HI and m.master_priority == 150


# ----------------------------------------------------------------------------- drops
def _with(data: bytes, index: int, value: int) -> bytes:
    return data[:index] + bytes([value]) + data[index + 1 :]


@pytest.mark.parametrize(
    ("name", "kw", "data_fn", "src", "ttl", "reason"),
    [
        ("wrong version", {}, lambda: advert(3, 150), PEER_HI, 255, DropReason.VERSION),
        ("wrong vrid", {}, lambda: encode(Advert(2, 52, 150, 200, (VIP.ip,))), PEER_HI, 255, DropReason.VRID),
        ("bad checksum", {}, lambda: _with(advert(2, 150), 7, 0), PEER_HI, 255, DropReason.CHECKSUM),
        ("ttl 64", {}, lambda: advert(2, 150), PEER_HI, 64, DropReason.TTL),
        ("no auth, PASS configured", {"auth_type": AuthType.PASS, "auth_pass": "secret"},
         lambda: advert(2, 150), PEER_HI, 255, DropReason.AUTH),
        ("wrong password", {"auth_type": AuthType.PASS, "auth_pass": "secret"},
         lambda: encode(Advert(2, 51, 150, 200, (VIP.ip,), AuthType.PASS, pass_auth_data("guess"))),
         PEER_HI, 255, DropReason.AUTH),
        ("not a peer", {"unicast_peers": (PEER_HI,)}, lambda: advert(2, 150, src=PEER_LO), PEER_LO, 255,
         DropReason.NOT_PEER),
        ("truncated", {}, lambda: advert(2, 150)[:10], PEER_HI, 255, DropReason.TRUNCATED),
        ("own advert", {}, lambda: advert(2, 150, src=ME), ME, 255, DropReason.OWN),
    ],
)  # fmt: skip
def test_foreign_or_malformed_adverts_are_counted_and_dropped(
    name: str, kw: dict[str, Any], data_fn: Any, src: ipaddress.IPv4Address, ttl: int, reason: DropReason
) -> None:
    m = in_state(2, State.MASTER, **kw)
    before = m.get_timer()
    assert m.receive_advert(data_fn(), src, ttl, T, dst=MCAST_V4) is None
    assert m.drops[reason] == 1 and sum(m.drops.values()) == 1
    assert m.state is State.MASTER and m.get_timer() == before
    assert m.adverts_to_send(T) == []


def test_pass_auth_accepted() -> None:
    m = in_state(2, State.MASTER, auth_type=AuthType.PASS, auth_pass="secret-long")
    data = encode(Advert(2, 51, 150, 200, (VIP.ip,), AuthType.PASS, pass_auth_data("secret-long")))
    assert m.receive_advert(data, PEER_HI, 255, T) is not None
    assert m.state is State.BACKUP


def test_state_change_is_published_before_the_announce_it_causes() -> None:
    """The daemon adds the VIPs on StateChanged and announces on Announce: that order matters."""
    m = in_state(2, State.BACKUP)
    m.handle_timer(DOWN[2])
    kinds = [type(e).__name__ for e in drain(m)]
    assert kinds == ["StateChanged", "Announce"]
