"""Frozen values the VRRP state machine emits: role changes, announcements, priority changes."""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass


class State(enum.Enum):
    """VRRP instance states (RFC 5798 §6.4 plus keepalived's FAULT)."""

    INIT = "INIT"
    BACKUP = "BACKUP"
    MASTER = "MASTER"
    FAULT = "FAULT"


class Trigger(enum.Enum):
    """What made the machine change state (the inputs of the transition table)."""

    START = "start"  # startup, not the address owner
    START_OWNER = "start_owner"  # startup with priority 255
    MASTER_DOWN = "master_down"  # the master-down timer fired
    PREEMPTED = "preempted"  # a master heard a better advert
    FAULT = "fault"  # a tracked interface/script without weight failed
    RECOVER = "recover"  # every such tracked object is healthy again
    SHUTDOWN = "shutdown"  # clean stop


@dataclass(frozen=True, slots=True)
class StateChanged:
    """The instance moved from `old` to `new`; `detail` is a human-readable reason."""

    instance: str
    old: State
    new: State
    trigger: Trigger
    detail: str
    priority: int
    at: float


@dataclass(frozen=True, slots=True)
class Announce:
    """Send `repeat` gratuitous ARPs / unsolicited NAs for every VIP now (the instance is MASTER)."""

    instance: str
    repeat: int
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class PriorityChanged:
    """The effective priority changed because a tracked interface or script changed."""

    instance: str
    old: int
    new: int
    at: float


@dataclass(frozen=True, slots=True)
class MasterSeen:
    """A different router is now the master we follow (its address and advertised priority)."""

    instance: str
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    priority: int
    at: float


Event = StateChanged | Announce | PriorityChanged | MasterSeen
