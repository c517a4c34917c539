"""Tests of the announcer's Prometheus metrics (the controller's loop runs for real in the lab tests)."""

from __future__ import annotations

from ipaddress import ip_address

from prometheus_client import CollectorRegistry, generate_latest

from gridlb.config.schema import ScaleoutSettings
from gridlb.scaleout.bird import BirdPlan, BirdSpeaker
from gridlb.scaleout.controller import ScaleoutController
from gridlb.scaleout.decide import VipDecision
from gridlb.status import DirectorStatus

VIP = ip_address("10.0.9.1")


def test_metrics_show_announced_vips_drain_changes_and_restarts() -> None:
    so = ScaleoutSettings.model_validate(
        {"local_asn": 65001, "router_id": "10.0.0.2", "peers": [{"address": "10.0.0.1", "asn": 65000}]}
    )
    speaker = BirdSpeaker(so, BirdPlan.from_settings("dir1", so, [VIP]))

    async def status() -> DirectorStatus:
        raise AssertionError("not called")

    c = ScaleoutController(so, speaker, lambda: {VIP: ()}, status)
    c.decisions = (VipDecision(VIP, True, "up"),)
    c.counts.update({"announce": 2, "withdraw": 1})
    c.drained, c.restarts = True, 3
    registry = CollectorRegistry()
    registry.register(c.collector)
    text = generate_latest(registry).decode()
    for line in (
        'gridlb_scaleout_vip_announced{vip="10.0.9.1"} 1.0',
        "gridlb_scaleout_drained 1.0",
        "gridlb_scaleout_speaker_failing 0.0",
        'gridlb_scaleout_changes_total{action="announce"} 2.0',
        'gridlb_scaleout_changes_total{action="withdraw"} 1.0',
        "gridlb_scaleout_speaker_restarts_total 3.0",
    ):
        assert line in text.splitlines(), line
