"""Geotagging: the position and heading of a frame from the fixes around its time. Pure.

Linear in time between the fix before and the fix after the frame; heading from the GPS
course (interpolated on the shorter arc), else the bearing of the track; never bridging a gap
between fixes longer than ``max_gap_s`` (such frames get ``position_source`` ``none``).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from capture.geodesy import bearing_deg, distance_m, interpolate, interpolate_angle
from capture.types import Fix, PositionSource

# Below this much movement a bearing between two fixes is GPS noise, not a heading.
MIN_BEARING_MOVE_M = 1.0


@dataclass(frozen=True, slots=True)
class Geotag:
    position_source: PositionSource
    lat: float | None = None
    lon: float | None = None
    altitude: float | None = None
    heading: float | None = None
    speed: float | None = None
    fix_quality: int | None = None
    hdop: float | None = None
    satellites: int | None = None

    def __post_init__(self) -> None:
        if (self.position_source == "none") != (self.lat is None or self.lon is None):
            raise ValueError("lat/lon must be set exactly when position_source is not 'none'")

    @property
    def has_position(self) -> bool:
        return self.position_source != "none"


NO_POSITION = Geotag("none")


def _secs(a: datetime, b: datetime) -> float:
    return (b - a).total_seconds()


def _track_bearing(fixes: Sequence[Fix], i: int, j: int) -> float | None:
    """Bearing from fixes[i] to fixes[j] if they are far enough apart to mean anything."""
    a, b = fixes[i], fixes[j]
    if distance_m(a.lat, a.lon, b.lat, b.lon) < MIN_BEARING_MOVE_M:
        return None
    return bearing_deg(a.lat, a.lon, b.lat, b.lon)


def _lerp(a: float | None, b: float | None, f: float) -> float | None:
    if a is None or b is None:
        return a if b is None else b
    return a + f * (b - a)


def geotag(
    fixes: Sequence[Fix],
    t: datetime,
    *,
    max_gap_s: float,
    match_tolerance_s: float = 0.001,
) -> Geotag:
    """Position of a frame taken at ``t`` (already corrected for the camera clock offset).

    ``fixes`` must be sorted by time. ``fix`` when a fix lies within ``match_tolerance_s`` of
    ``t``; ``interpolated`` between the fixes around ``t`` if they are at most ``max_gap_s``
    apart; else ``none``.
    """
    if not fixes:
        return NO_POSITION
    j = bisect.bisect_left(fixes, t, key=lambda f: f.time)  # first fix at or after t
    # An exact (within tolerance) fix wins.
    for k in (j - 1, j):
        if 0 <= k < len(fixes) and abs(_secs(fixes[k].time, t)) <= match_tolerance_s:
            return _at_fix(fixes, k, max_gap_s)
    if j == 0 or j == len(fixes):
        return NO_POSITION
    i = j - 1
    a, b = fixes[i], fixes[j]
    span = _secs(a.time, b.time)
    if span > max_gap_s:
        return NO_POSITION
    f = _secs(a.time, t) / span
    lat, lon = interpolate(a.lat, a.lon, b.lat, b.lon, f)
    if a.course is not None and b.course is not None:
        heading: float | None = interpolate_angle(a.course, b.course, f)
    else:
        heading = _track_bearing(fixes, i, j)
        if heading is None:
            heading = a.course if a.course is not None else b.course
    speed = _lerp(a.speed, b.speed, f)
    if a.speed is None and b.speed is None:
        speed = distance_m(a.lat, a.lon, b.lat, b.lon) / span
    near = a if f <= 0.5 else b
    return Geotag(
        "interpolated", lat=lat, lon=lon, altitude=_lerp(a.alt, b.alt, f), heading=heading,
        speed=speed, fix_quality=near.fix_quality, hdop=near.hdop, satellites=near.satellites,
    )


def _at_fix(fixes: Sequence[Fix], k: int, max_gap_s: float) -> Geotag:
    fx = fixes[k]
    heading = fx.course
    speed = fx.speed
    if heading is None or speed is None:
        # Track bearing/speed through the neighbours that are within the gap limit.
        lo = k - 1 if k > 0 and _secs(fixes[k - 1].time, fx.time) <= max_gap_s else k
        hi = k + 1 if k + 1 < len(fixes) and _secs(fx.time, fixes[k + 1].time) <= max_gap_s else k
        if lo != hi:
            if heading is None:
                heading = _track_bearing(fixes, lo, hi)
            if speed is None:
                a, b = fixes[lo], fixes[hi]
                speed = distance_m(a.lat, a.lon, b.lat, b.lon) / _secs(a.time, b.time)
    return Geotag(
        "fix", lat=fx.lat, lon=fx.lon, altitude=fx.alt, heading=heading, speed=speed,
        fix_quality=fx.fix_quality, hdop=fx.hdop, satellites=fx.satellites,
    )
