"""Tests of the scale-out lines of `gridlb status` and of the status field carrying them."""

from __future__ import annotations

from gridlb.scaleout.view import scaleout_lines
from gridlb.status import DirectorStatus, status_from_json, status_to_json

DATA = {
    "speaker": "bird",
    "running": True,
    "speaker_error": None,
    "drained": True,
    "hold_time_s": 9,
    "vips": [{"vip": "10.0.9.1", "announced": False, "reason": "director drained (gridlb director drain)"}],
    "peers": [
        {"name": "peer1", "address": "10.0.0.1", "state": "up", "info": "Established", "since": "12:00"}
    ],
    "changes": [],
}


def test_lines_say_what_is_announced_why_and_the_sessions() -> None:
    assert scaleout_lines(None) == []
    assert scaleout_lines(DATA) == [
        "scale-out: speaker bird, hold time 9 s, DRAINED (gridlb director undrain to announce again)",
        "  10.0.9.1: withdrawn (director drained (gridlb director drain))",
        "  peer 10.0.0.1: Established since 12:00",
    ]
    stopped = dict(DATA, running=False, drained=False, speaker_error="birdc configure: syntax error")
    assert scaleout_lines(stopped)[:2] == [
        "scale-out: speaker bird NOT RUNNING, hold time 9 s",
        "  speaker failing: birdc configure: syntax error",
    ]


def test_status_carries_the_scaleout_part_through_json() -> None:
    status = DirectorStatus("0", "proxy", ("d.yaml",), 1, 1.0, None, "", False, scaleout=DATA)
    assert status_from_json(status_to_json(status)).scaleout == DATA
