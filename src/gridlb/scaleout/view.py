"""The scale-out part of `gridlb status`: announced VIPs with reasons, and the BGP sessions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def scaleout_lines(data: Mapping[str, Any] | None) -> list[str]:
    """Return the lines `gridlb status` prints for a scaled-out director (none without scale-out)."""
    if not data:
        return []
    head = f"scale-out: speaker {data.get('speaker', '?')}"
    head += "" if data.get("running") else " NOT RUNNING"
    head += f", hold time {data.get('hold_time_s', '?')} s"
    if data.get("drained"):
        head += ", DRAINED (gridlb director undrain to announce again)"
    out = [head]
    if data.get("speaker_error"):
        out.append(f"  speaker failing: {data['speaker_error']}")
    for v in data.get("vips", ()):
        verb = "announced" if v.get("announced") else "withdrawn"
        out.append(f"  {v.get('vip')}: {verb} ({v.get('reason', '')})")
    for p in data.get("peers", ()):
        out.append(f"  peer {p.get('address')}: {p.get('info') or p.get('state')} since {p.get('since')}")
    return out
