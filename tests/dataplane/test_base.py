"""The dataplane registry: `auto` resolution, and why the ipvs dataplane cannot run where it cannot."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gridlb.config.schema import VrrpInstance
from gridlb.dataplane import base, ipvs
from gridlb.dataplane.base import Capabilities, register, resolve_factory, unregister
from gridlb.director.daemon import sync_daemon_spec
from gridlb.ipvsadm.model import KERNEL_SCHEDULERS
from tests.support import kernel_has_ipvs

NO_CAPABILITIES = Capabilities(forwarding=frozenset(), schedulers=frozenset())


@dataclass
class FakeFactory:
    name: str
    why: str
    capabilities: Capabilities = NO_CAPABILITIES

    def unavailable(self) -> str:
        return self.why

    def create(self, settings: Any, hooks: Any) -> Any:
        raise NotImplementedError


def test_auto_takes_the_first_that_can_run_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    register(FakeFactory("glb-kernel", "no kernel support"))
    register(FakeFactory("glb-user", ""))
    try:
        monkeypatch.setattr(base, "AUTO_ORDER", ("glb-kernel", "glb-user"))
        factory, why = resolve_factory("auto")
        assert factory.name == "glb-user"
        assert why == "dataplane auto: glb-user (not glb-kernel: no kernel support)"
        assert resolve_factory("glb-kernel") == (base.get_factory("glb-kernel"), "")
        monkeypatch.setattr(base, "AUTO_ORDER", ("glb-kernel",))
        with pytest.raises(KeyError, match="no dataplane can run here"):
            resolve_factory("auto")
    finally:
        unregister("glb-kernel")
        unregister("glb-user")
    with pytest.raises(KeyError, match="no dataplane 'xdp' in this build"):
        resolve_factory("xdp")


def test_auto_on_this_machine() -> None:
    factory, why = resolve_factory("auto")
    if kernel_has_ipvs() and ipvs.unavailable() == "":
        assert (factory.name, why) == ("ipvs", "dataplane auto: ipvs")
    else:
        assert factory.name == "proxy" and why.startswith("dataplane auto: proxy (not ipvs: ")


def test_ipvs_unavailable_says_precisely_why(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert ipvs.unavailable() == "it needs root (gridlb runs as uid 1000)"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(ipvs, "PROC_IPVS", str(tmp_path / "ip_vs"))
    calls: list[list[str]] = []

    def failing_run(argv: list[str], **_kw: object) -> subprocess.CompletedProcess[bytes]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 1)

    monkeypatch.setattr(subprocess, "run", failing_run)
    assert ipvs.unavailable().startswith("the kernel has no IPVS (")
    assert calls == [["modprobe", "-q", "ip_vs"]]


def test_ipvs_capabilities_are_the_kernels() -> None:
    caps = ipvs.CAPABILITIES
    assert caps.follows_role and caps.connection_sync and caps.fwmark and caps.persistence and caps.needs_root
    assert {"wlc", "rr", "sh", "mh"} <= caps.schedulers
    assert ipvs.kernel_schedulers("no-such-release") == KERNEL_SCHEDULERS


def test_sync_daemon_spec_from_the_vrrp_instance() -> None:
    plain = VrrpInstance(interface="em1", virtual_router_id=9)
    synced = VrrpInstance(interface="em1", virtual_router_id=9, lvs_sync_daemon_interface="em2")
    assert sync_daemon_spec({"A": plain}) is None
    spec = sync_daemon_spec({"A": plain, "B": synced})
    assert spec is not None and (spec.interface, spec.sync_id, spec.instance) == ("em2", 9, "B")
    with_id = synced.model_copy(update={"lvs_sync_daemon_id": 42})
    spec = sync_daemon_spec({"B": with_id})
    assert spec is not None and spec.sync_id == 42
