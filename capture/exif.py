"""Capture time and GPS position from a photo's EXIF: the one reader of EXIF GPS in streetveil
(``capture import --images``; ``redact`` only writes EXIF, and capture must not import it).

Pure functions over a Pillow ``Image.Exif``; ``read_exif`` opens the file. The time zone is
never guessed: a capture time is UTC only when the file says which zone its clock was in
(``OffsetTimeOriginal``, else ``OffsetTime``) or carries GPS date and time stamps (UTC by
definition); otherwise the time is returned as the camera's wall clock (``utc`` None) and the
caller must be told the zone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from capture.types import Fix

log = logging.getLogger(__name__)

# Tags (EXIF 2.32).
DATETIME = 0x0132  # IFD0 DateTime (last change; a camera writes the capture time here too)
DATETIME_ORIGINAL = 0x9003
OFFSET_TIME = 0x9010
OFFSET_TIME_ORIGINAL = 0x9011
SUBSEC_TIME = 0x9290
SUBSEC_TIME_ORIGINAL = 0x9291
IFD_EXIF = 0x8769
IFD_GPS = 0x8825
GPS_TIME_STAMP = 0x0007
GPS_DATE_STAMP = 0x001D


@dataclass(frozen=True, slots=True)
class ExifTime:
    """When a photo was taken. ``wall``: the camera clock as written (naive); ``utc``: the same
    instant in UTC when the file says its zone, else None; ``source``: ``offset`` (an EXIF
    offset tag), ``gps`` (GPS date/time stamps) or ``none``."""

    wall: datetime | None
    utc: datetime | None
    source: str

    def __post_init__(self) -> None:
        if self.wall is not None and self.wall.tzinfo is not None:
            raise ValueError("wall must be a naive datetime (the camera clock)")
        if self.utc is not None and self.utc.utcoffset() != timedelta(0):
            raise ValueError("utc must be an aware UTC datetime")
        if self.source not in ("offset", "gps", "none") or (self.utc is None) != (self.source == "none"):
            raise ValueError(f"inconsistent source {self.source!r}")


@dataclass(frozen=True, slots=True)
class ExifInfo:
    time: ExifTime | None  # None: no capture time at all
    utc: datetime | None  # the capture time in UTC: from the file, else from the zone the caller gave
    fix: Fix | None  # the EXIF GPS position at ``utc``


def _ifd(ex: Any, tag: int) -> dict[int, Any]:
    try:
        return dict(ex.get_ifd(tag))
    except Exception:  # a broken sub-IFD counts as absent
        return {}


def _text(v: Any) -> str:
    if isinstance(v, bytes):
        v = v.decode("ascii", "replace")
    return str(v or "").strip().strip("\x00").strip()


def parse_offset(text: Any) -> timedelta | None:
    """``+09:00`` / ``-07:00`` (EXIF OffsetTime*) → timedelta; None when absent or malformed
    (``   :  `` is how cameras write 'unknown')."""
    s = _text(text)
    if len(s) != 6 or s[0] not in "+-" or s[3] != ":" or not (s[1:3] + s[4:6]).isdigit():
        return None
    h, m = int(s[1:3]), int(s[4:6])
    if h > 14 or m > 59:
        return None
    d = timedelta(hours=h, minutes=m)
    return -d if s[0] == "-" else d


def _wall(stamp: Any, subsec: Any) -> datetime | None:
    s = _text(stamp)
    try:
        t = datetime.strptime(s[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    frac = s[19:].lstrip(".") or _text(subsec)
    if frac.isdigit():
        t += timedelta(seconds=float("0." + frac))
    return t


def gps_time(gps: dict[int, Any]) -> datetime | None:
    """GPSDateStamp + GPSTimeStamp as UTC, or None."""
    try:
        day = datetime.strptime(_text(gps[GPS_DATE_STAMP]), "%Y:%m:%d").replace(tzinfo=UTC)
        h, m, s = (float(x) for x in gps[GPS_TIME_STAMP])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    if not (0 <= h < 24 and 0 <= m < 60 and 0 <= s < 61):
        return None
    return day + timedelta(hours=h, minutes=m, seconds=s)


def capture_time(ex: Any, *, name: str = "image") -> ExifTime | None:
    """The capture time of an ``Image.Exif``: DateTimeOriginal (+ SubSecTimeOriginal), else
    DateTime (+ SubSecTime); its zone from OffsetTimeOriginal, else OffsetTime; without one,
    the GPS date/time stamps (UTC) are the time; without those, no UTC time (``source`` none)."""
    sub = _ifd(ex, IFD_EXIF)
    gps = _ifd(ex, IFD_GPS)
    wall = _wall(sub.get(DATETIME_ORIGINAL), sub.get(SUBSEC_TIME_ORIGINAL))
    offsets: tuple[Any, ...] = (sub.get(OFFSET_TIME_ORIGINAL), sub.get(OFFSET_TIME))
    if wall is None:
        wall = _wall(ex.get(DATETIME), sub.get(SUBSEC_TIME))
        offsets = (sub.get(OFFSET_TIME),)
    for o in offsets:
        off = parse_offset(o)
        if wall is not None and off is not None:
            return ExifTime(wall, (wall - off).replace(tzinfo=UTC), "offset")
    g = gps_time(gps)
    if g is not None:
        if wall is not None:
            # The GPS stamp is UTC; the camera clock should differ from it by a whole time zone
            # (quarter hours) give or take a few seconds. Said when it does not: one of the two
            # clocks is wrong, and the GPS time is used.
            diff = (wall.replace(tzinfo=UTC) - g).total_seconds()
            if abs(diff - round(diff / 900) * 900) > 120 or abs(diff) > 14 * 3600:
                log.warning("%s: GPS time %s and camera time %s are not a time zone apart; using the GPS time",
                            name, g.isoformat(), wall.isoformat())
        return ExifTime(wall, g, "gps")
    if wall is None:
        return None
    return ExifTime(wall, None, "none")


def _rational(v: Any) -> float:
    return float(v)


def _dms(v: Any, ref: str) -> float:
    d, m, s = (_rational(x) for x in v)
    deg = d + m / 60.0 + s / 3600.0
    return -deg if ref in ("S", "W") else deg


def gps_fix(ex: Any, time: datetime) -> Fix | None:
    """The EXIF GPS position (with altitude, speed, direction of travel, DOP when present) as a
    Fix at ``time``, or None without a usable position."""
    gps = _ifd(ex, IFD_GPS)
    if not gps.get(2) or not gps.get(4):
        return None
    try:
        alt = _rational(gps[6]) if 6 in gps else None
        if alt is not None and gps.get(5) in (b"\x01", 1):
            alt = -alt
        speed = None
        if 13 in gps:
            k = {"K": 1000 / 3600, "M": 1609.344 / 3600, "N": 1852 / 3600}.get(_text(gps.get(12, "K")), 1000 / 3600)
            speed = _rational(gps[13]) * k
        course = _rational(gps[15]) % 360.0 if 15 in gps else None
        return Fix(time=time, lat=_dms(gps[2], _text(gps.get(1, "N"))), lon=_dms(gps[4], _text(gps.get(3, "E"))),
                   alt=alt, speed=speed, course=course, fix_quality=1,
                   hdop=_rational(gps[11]) if 11 in gps else None)
    except (ValueError, TypeError, KeyError, ZeroDivisionError):
        return None


def to_utc(t: ExifTime, *, zone: tzinfo | None = None, naive_is_utc: bool = False) -> datetime | None:
    """``t`` in UTC: as the file says; else the camera clock read in ``zone`` (an IANA zone:
    daylight saving time included), or as UTC when the caller says so; else None."""
    if t.utc is not None:
        return t.utc
    if t.wall is None:
        return None
    if zone is not None:
        return t.wall.replace(tzinfo=zone).astimezone(UTC)
    return t.wall.replace(tzinfo=UTC) if naive_is_utc else None


def read_exif(path: Path, *, zone: tzinfo | None = None, naive_is_utc: bool = False) -> ExifInfo:
    """Capture time and (when it is known in UTC: ``to_utc``) the EXIF GPS position of a photo."""
    from PIL import Image

    with Image.open(path) as im:
        ex = im.getexif()
        t = capture_time(ex, name=str(path))
        utc = to_utc(t, zone=zone, naive_is_utc=naive_is_utc) if t is not None else None
        fix = gps_fix(ex, utc) if utc is not None else None
    return ExifInfo(t, utc, fix)
