"""Frozen value types shared by capture and (read-only) by the pipeline."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

PositionSource = Literal["fix", "interpolated", "none"]
POSITION_SOURCES: tuple[str, ...] = ("fix", "interpolated", "none")
# As in schemas/frame.schema.json: ids become published file names; files stay in frames/.
FRAME_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
FRAME_FILE_RE = re.compile(r"^frames/(?!\.\.?$)[A-Za-z0-9._-]+$")


def _check_latlon(lat: float, lon: float) -> None:
    if not (math.isfinite(lat) and math.isfinite(lon)):
        raise ValueError(f"position must be finite, got lat={lat} lon={lon}")
    if not -90.0 <= lat <= 90.0:
        raise ValueError(f"latitude {lat} outside [-90, 90]")
    if not -180.0 <= lon <= 180.0:
        raise ValueError(f"longitude {lon} outside [-180, 180]")


def _check_utc(t: datetime, name: str) -> None:
    if t.tzinfo is None or t.utcoffset() != UTC.utcoffset(None):
        raise ValueError(f"{name} must be a timezone-aware UTC datetime, got {t!r}")


def format_time(t: datetime) -> str:
    """UTC ISO 8601 with milliseconds and a 'Z' suffix: 2026-11-26T05:35:47.123Z."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def parse_time(s: str) -> datetime:
    """Parse an ISO 8601 timestamp; naive times are rejected (we never guess a zone)."""
    t = datetime.fromisoformat(s.replace("Z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError(f"timestamp {s!r} has no time zone")
    return t.astimezone(UTC)


def gpx_time(t: datetime | None) -> datetime | None:
    """A GPX time as UTC. GPX times are UTC by the format's definition, so one written without
    a zone is UTC, never the local time of whichever machine reads it."""
    if t is None:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class GeoPoint:
    """A WGS84 position (degrees), optional ellipsoidal/MSL altitude in metres."""

    lat: float
    lon: float
    alt: float | None = None

    def __post_init__(self) -> None:
        _check_latlon(self.lat, self.lon)


@dataclass(frozen=True, slots=True)
class Fix:
    """One GPS fix, as any GPS source yields it.

    ``fix_quality`` follows the NMEA GGA indicator (0 invalid, 1 GPS, 2 DGPS, 4 RTK fixed,
    5 RTK float, 6 dead reckoning); sources without one map their own notion onto it.
    ``speed`` is m/s over ground, ``course`` degrees true (0..360).
    """

    time: datetime
    lat: float
    lon: float
    alt: float | None = None
    speed: float | None = None
    course: float | None = None
    fix_quality: int | None = None
    hdop: float | None = None
    satellites: int | None = None

    def __post_init__(self) -> None:
        _check_utc(self.time, "fix time")
        _check_latlon(self.lat, self.lon)
        if self.course is not None and not 0.0 <= self.course <= 360.0:
            raise ValueError(f"course {self.course} outside [0, 360]")
        if self.speed is not None and (not math.isfinite(self.speed) or self.speed < 0):
            raise ValueError(f"speed {self.speed} must be finite and >= 0")

    @property
    def point(self) -> GeoPoint:
        return GeoPoint(self.lat, self.lon, self.alt)


@dataclass(frozen=True, slots=True)
class FrameRecord:
    """One kept frame: a line of ``frames.jsonl`` (see docs/session-format.md)."""

    frame_id: str
    time: datetime
    file: str
    sha256: str
    position_source: PositionSource
    lat: float | None = None
    lon: float | None = None
    altitude: float | None = None
    heading: float | None = None
    speed: float | None = None
    fix_quality: int | None = None
    hdop: float | None = None
    satellites: int | None = None
    width: int | None = None
    height: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_utc(self.time, "frame time")
        if self.position_source not in POSITION_SOURCES:
            raise ValueError(f"position_source must be one of {POSITION_SOURCES}")
        has_pos = self.lat is not None and self.lon is not None
        if (self.position_source == "none") == has_pos:
            raise ValueError("lat/lon must be set exactly when position_source is not 'none'")
        if self.lat is not None and self.lon is not None:
            _check_latlon(self.lat, self.lon)
        if self.heading is not None and not 0.0 <= self.heading <= 360.0:
            raise ValueError(f"heading {self.heading} outside [0, 360]")
        if len(self.sha256) != 64:
            raise ValueError("sha256 must be 64 hex characters")
        # Readers unlink and publish by these (purge, takedowns): never a path out of the session.
        if not FRAME_ID_RE.match(self.frame_id):
            raise ValueError(f"frame_id {self.frame_id!r} is not a safe id (letters, digits, ._-)")
        if not FRAME_FILE_RE.match(self.file):
            raise ValueError(f"file {self.file!r} is not a file in frames/")

    @property
    def point(self) -> GeoPoint | None:
        if self.lat is None or self.lon is None:
            return None
        return GeoPoint(self.lat, self.lon, self.altitude)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["time"] = format_time(self.time)
        if not d["extra"]:
            del d["extra"]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FrameRecord:
        d = dict(d)
        d["time"] = parse_time(d["time"])
        return cls(**d)
