"""The dashboard's memory: per real server, connections, health and throughput over the last hour.

Fed with the director's typed status snapshots and the time they were taken (nothing here reads a
clock). Each real server keeps one point per `step_s` in a ring buffer of `window_s`; a point holds the
most connections and the worst health seen during its step, so a short outage still shows. Throughput
is the byte counters' rise between two snapshots at least `MIN_RATE_SPAN_S` apart.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field
from typing import Any

from gridlb.status import DirectorStatus

#: Health as a sparkline level: 1 serving, 0.5 up but refusing, 0 down.
HEALTH_LEVEL = {"up": 1.0, "refusing": 0.5, "down": 0.0}
#: Shortest span over which a throughput is computed (several scrapes a second would jitter).
MIN_RATE_SPAN_S = 1.0


@dataclass(frozen=True, slots=True)
class Point:
    """One step of one real server: when it closed, most connections, worst health."""

    at: float
    active: int
    inactive: int
    health: float


@dataclass(slots=True)
class _Track:
    service: str
    real: str
    points: collections.deque[Point]
    pending: Point | None = None  # peaks since the last point
    counters_at: float | None = None
    inbytes: int = 0
    outbytes: int = 0
    in_bps: float = 0.0
    out_bps: float = 0.0


@dataclass
class History:
    """Ring buffers of the last `window_s` seconds, one point per `step_s`, per (service, real server)."""

    window_s: float = 3600.0
    step_s: float = 10.0
    tracks: dict[tuple[str, str], _Track] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.step_s <= 0 or self.window_s < self.step_s:
            raise ValueError("need 0 < step_s <= window_s")

    @property
    def maxlen(self) -> int:
        """Return how many points a real server keeps."""
        return math.ceil(self.window_s / self.step_s)

    def observe(self, now: float, status: DirectorStatus) -> None:
        """Take one status snapshot taken at `now` (seconds, any epoch, never going back)."""
        seen = set()
        for svc, real in status.reals():
            key = (svc.service, real.real)
            seen.add(key)
            track = self.tracks.get(key)
            if track is None:
                track = self.tracks[key] = _Track(
                    svc.service, real.real, collections.deque(maxlen=self.maxlen)
                )
            health = HEALTH_LEVEL.get(real.health, 0.0)
            p = track.pending
            if p is None:
                track.pending = Point(now, real.active, real.inactive, health)
            else:
                track.pending = Point(
                    p.at, max(p.active, real.active), max(p.inactive, real.inactive), min(p.health, health)
                )
            if not track.points or now - track.points[-1].at >= self.step_s:
                done = track.pending
                track.points.append(Point(now, done.active, done.inactive, done.health))
                track.pending = None
            self._rates(track, now, real.inbytes, real.outbytes)
        for key in [k for k in self.tracks if k not in seen]:
            del self.tracks[key]
        for track in self.tracks.values():
            while track.points and now - track.points[0].at > self.window_s:
                track.points.popleft()

    def _rates(self, track: _Track, now: float, inbytes: int, outbytes: int) -> None:
        if track.counters_at is None or inbytes < track.inbytes or outbytes < track.outbytes:
            track.counters_at, track.inbytes, track.outbytes = now, inbytes, outbytes  # new or reset
            track.in_bps = track.out_bps = 0.0
            return
        span = now - track.counters_at
        if span < MIN_RATE_SPAN_S:
            return
        track.in_bps = (inbytes - track.inbytes) / span
        track.out_bps = (outbytes - track.outbytes) / span
        track.counters_at, track.inbytes, track.outbytes = now, inbytes, outbytes

    def points(self, service: str, real: str) -> list[Point]:
        """Return the points of one real server, oldest first."""
        track = self.tracks.get((service, real))
        return list(track.points) if track is not None else []

    def to_json(self, now: float) -> dict[str, Any]:
        """Return the history as the dashboard sends it: ages in seconds before `now`, oldest first."""
        reals = []
        for track in self.tracks.values():
            reals.append(
                {
                    "service": track.service,
                    "real": track.real,
                    "in_bps": round(track.in_bps, 1),
                    "out_bps": round(track.out_bps, 1),
                    # [age_s, active, inactive, health]
                    "points": [[round(now - p.at, 1), p.active, p.inactive, p.health] for p in track.points],
                }
            )
        return {"window_s": self.window_s, "step_s": self.step_s, "reals": reals}
