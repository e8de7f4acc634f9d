"""GeoJSON (RFC 7946) for the GIS team: one point per published frame, the drive's track.

Pure functions from records to JSON-ready dicts; no I/O. Coordinates are WGS84
``[longitude, latitude]`` rounded to 7 decimals (about 1 cm; GPS is far coarser).
See docs/publish-format.md for the properties.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from capture.geodesy import path_length_m
from capture.types import Fix, FrameRecord, format_time

COORD_DECIMALS = 7


def _pos(lon: float, lat: float) -> list[float]:
    return [round(lon, COORD_DECIMALS), round(lat, COORD_DECIMALS)]


def frame_feature(
    rec: FrameRecord,
    *,
    session_id: str,
    image: str,
    sha256: str,
    faces: int,
    plates: int,
    width: int | None,
    height: int | None,
) -> dict[str, Any]:
    """The Feature of one published frame. Frames without a position (``position_source``
    "none") get a null geometry: RFC 7946 3.2 allows unlocated features, and GDAL reads them."""
    geometry = None
    if rec.lat is not None and rec.lon is not None:
        geometry = {"type": "Point", "coordinates": _pos(rec.lon, rec.lat)}
    props: dict[str, Any] = {
        "frame_id": rec.frame_id,
        "session_id": session_id,
        "time": format_time(rec.time),
        "heading": None if rec.heading is None else round(rec.heading, 2),
        "speed": None if rec.speed is None else round(rec.speed, 3),
        "altitude": None if rec.altitude is None else round(rec.altitude, 2),
        "position_source": rec.position_source,
        "image": image,
        "width": width,
        "height": height,
        "faces": int(faces),
        "plates": int(plates),
        "sha256": sha256,
    }
    return {"type": "Feature", "id": rec.frame_id, "geometry": geometry, "properties": props}


def feature_collection(features: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Features sorted by capture time then frame id, so the file is deterministic."""
    feats = sorted(features, key=lambda f: (f["properties"]["time"], f["properties"]["frame_id"]))
    return {"type": "FeatureCollection", "features": feats}


P = TypeVar("P")


def split_at(points: Iterable[P], drop: Callable[[P], bool]) -> list[list[P]]:
    """The runs of consecutive points between dropped ones (exclusion zones), keeping runs of
    two points or more: a line needs two. Pure."""
    runs: list[list[P]] = [[]]
    for p in points:
        if drop(p):
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append(p)
    return [r for r in runs if len(r) >= 2]


def track_feature(
    fixes: Sequence[Fix],
    *,
    session_id: str,
    frames: Sequence[FrameRecord] = (),
    exclude: Callable[[float, float], bool] | None = None,
) -> dict[str, Any]:
    """The GPS track as one Feature.

    Uses every fix; without fixes (an image import without GPX) the frame positions. Points
    inside publish-time exclusion zones (``exclude(lat, lon)``) are left out and the line is
    split there, giving a MultiLineString; so is a line that crosses the antimeridian (RFC 7946
    3.1.9: cut at ±180, see ``split_antimeridian``). Fewer than two points give a null geometry.
    """
    pts: list[tuple[float, float, str]] = [(f.lat, f.lon, format_time(f.time)) for f in fixes]
    if not pts:
        pts = [(r.lat, r.lon, format_time(r.time)) for r in frames if r.lat is not None and r.lon is not None]
    runs = split_at(pts, lambda p: exclude is not None and exclude(p[0], p[1]))
    kept = [p for run in runs for p in run]
    lines = [line for run in runs for line in split_antimeridian(run)]
    geometry: dict[str, Any] | None
    if not lines:
        geometry = None
    elif len(lines) == 1:
        geometry = {"type": "LineString", "coordinates": [_pos(lo, la) for la, lo, _ in lines[0]]}
    else:
        geometry = {"type": "MultiLineString",
                    "coordinates": [[_pos(lo, la) for la, lo, _ in line] for line in lines]}
    props = {
        "session_id": session_id,
        "start": kept[0][2] if kept else None,
        "end": kept[-1][2] if kept else None,
        "points": len(kept),
        "length_m": round(sum(path_length_m([(la, lo) for la, lo, _ in line]) for line in lines), 1),
        "source": "gps-fixes" if fixes else "frame-positions",
    }
    return {"type": "FeatureCollection",
            "features": [{"type": "Feature", "id": session_id, "geometry": geometry, "properties": props}]}


def split_antimeridian(points: Sequence[tuple[float, float, str]]) -> list[list[tuple[float, float, str]]]:
    """``points`` (lat, lon, time) as one or more lines, cut where a step crosses the
    antimeridian (longitudes more than 180 degrees apart: the short way round is across ±180),
    each side ending on ±180 at the latitude interpolated there (RFC 7946 3.1.9). Pure."""
    lines: list[list[tuple[float, float, str]]] = [[]]
    prev: tuple[float, float, str] | None = None
    for p in points:
        if prev is not None and abs(p[1] - prev[1]) > 180.0:
            edge = 180.0 if prev[1] > 0 else -180.0
            lon_b = p[1] + 360.0 if edge > 0 else p[1] - 360.0  # p continued past the edge
            f = (edge - prev[1]) / (lon_b - prev[1])
            lat = prev[0] + f * (p[0] - prev[0])
            lines[-1].append((lat, edge, prev[2]))
            lines.append([(lat, -edge, p[2])])
        lines[-1].append(p)
        prev = p
    return [line for line in lines if len(line) >= 2]


def dumps(obj: dict[str, Any]) -> bytes:
    """Deterministic UTF-8 JSON (sorted keys, two-space indent, trailing newline)."""
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n").encode()
