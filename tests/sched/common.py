"""Small helpers for the scheduler unit tests."""

from __future__ import annotations

from ipaddress import ip_address

from gridlb.sched import DestView, Flow
from gridlb.table import RealKey
from tests.sched.harness import Counts, Setup, run_scenario


def rk(last: int, port: int = 2811) -> RealKey:
    return RealKey(ip_address(f"10.0.1.{last}"), port)


def view(
    last: int, weight: int = 1, active: int = 0, inactive: int = 0, overloaded: bool = False
) -> DestView:
    return DestView(rk(last), weight, active, inactive, overloaded)


def flow(client: str = "192.0.2.1", port: int = 40000, vaddr: str = "10.0.0.1") -> Flow:
    return Flow(ip_address(client), port, ip_address(vaddr), 2811)


PICKS_REQUIRED = 10_000


def scripted(name: str, seq: list[tuple[object, ...]], **setup: int) -> list[RealKey | None]:
    """Run a hand-written operation sequence through the kernel comparison; return gridlb's picks."""
    counts = Counts(keep=True)
    run_scenario(name, 4, frozenset(), seq, counts, Setup(**setup))
    return counts.picked
