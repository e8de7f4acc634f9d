"""Pure geodesy on WGS84 positions: distance, bearing, interpolation. No I/O.

Distances use the haversine formula on the mean Earth radius: at the few-metre spacing of
capture frames its error (< 0.5 %) is far below GPS noise, and it is cheap on the vehicle.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

EARTH_RADIUS_M = 6_371_008.8  # IUGG mean radius


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Initial bearing from point 1 to point 2, degrees clockwise from true north, [0, 360)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lon2 - lon1)
    y = math.sin(dl) * math.cos(p2)
    x = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return math.degrees(math.atan2(y, x)) % 360.0


def interpolate(lat1: float, lon1: float, lat2: float, lon2: float, f: float) -> tuple[float, float]:
    """Linear interpolation at fraction ``f`` in [0, 1]; handles the antimeridian."""
    dlon = lon2 - lon1
    if dlon > 180:
        dlon -= 360
    elif dlon < -180:
        dlon += 360
    lon = lon1 + f * dlon
    lon = (lon + 180.0) % 360.0 - 180.0
    return lat1 + f * (lat2 - lat1), lon


def interpolate_angle(a: float, b: float, f: float) -> float:
    """Interpolate between two headings along the shorter arc, result in [0, 360)."""
    d = (b - a + 540.0) % 360.0 - 180.0
    return (a + f * d) % 360.0


def path_length_m(points: Iterable[tuple[float, float]]) -> float:
    """Total length of a polyline of (lat, lon) points."""
    total = 0.0
    prev: tuple[float, float] | None = None
    for p in points:
        if prev is not None:
            total += distance_m(prev[0], prev[1], p[0], p[1])
        prev = p
    return total


def offset_m(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    """Move a point by small north/east offsets (metres); flat-Earth, fine below ~10 km."""
    dlat = math.degrees(north_m / EARTH_RADIUS_M)
    dlon = math.degrees(east_m / (EARTH_RADIUS_M * math.cos(math.radians(lat))))
    return lat + dlat, lon + dlon


def valid_wgs84(lat: float | None, lon: float | None) -> bool:
    return (
        lat is not None
        and lon is not None
        and math.isfinite(lat)
        and math.isfinite(lon)
        and -90 <= lat <= 90
        and -180 <= lon <= 180
    )
