"""What the dr dataplane declares: where it cannot run, and what a service may ask of it."""

from __future__ import annotations

import os

import pytest

from gridlb.dataplane import dr
from gridlb.dataplane.base import Severity, get_factory
from gridlb.table import ForwardMethod, ServiceKey, ServiceSpec


def test_the_registry_knows_dr() -> None:
    assert get_factory("dr") is dr.FACTORY


def test_it_needs_root_and_libnftables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "root" in dr.FACTORY.unavailable()
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(dr, "find_library", lambda: None)
    assert "libnftables" in dr.FACTORY.unavailable()


def test_dr_services_pass_and_nat_or_persistence_are_refused() -> None:
    caps = dr.CAPABILITIES
    key = ServiceKey.tcp("10.0.0.100", 2811)
    assert caps.assess(key, ServiceSpec("wlc"), [ForwardMethod.ROUTE]) == []
    nat = caps.assess(key, ServiceSpec("wlc"), [ForwardMethod.MASQ])
    assert [(m.severity, m.message) for m in nat] == [(Severity.ERROR, "lb_kind NAT is not supported")]
    sticky = caps.assess(key, ServiceSpec("wlc", persistence_timeout_s=300), [ForwardMethod.ROUTE])
    assert [m.severity for m in sticky] == [Severity.ERROR]
    assert caps.follows_role and caps.connection_sync
