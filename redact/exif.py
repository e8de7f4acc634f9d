"""EXIF hygiene: keep what GIS users need, drop what leaks.

Kept (an allow-list, so unknown or vendor tags are dropped by default): GPS (the whole GPS
IFD), capture time and its time zone / sub-seconds, orientation, image direction, camera make
and model, exposure settings, resolution. Dropped: the IFD1 thumbnail (an unredacted copy
of the image), maker notes (vendor blobs with serial numbers), serial numbers, owner/artist
names, user comments, image unique ids, the interoperability IFD, and everything outside EXIF
(XMP and its edit history, IPTC, JPEG comments): the encoder writes only what this module
returns.

Optionally the GPS position, time and heading of a frame record (``Geotag``) are written,
replacing any GPS tags from the camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

from PIL import Image, TiffImagePlugin
from PIL.ExifTags import IFD

# IFD0 (image) tags kept.
KEEP_IFD0 = {
    0x010F,  # Make
    0x0110,  # Model
    0x0112,  # Orientation
    0x011A,  # XResolution
    0x011B,  # YResolution
    0x0128,  # ResolutionUnit
    0x0131,  # Software
    0x0132,  # DateTime
    0x0213,  # YCbCrPositioning
    0x8298,  # Copyright (the publisher's notice, not a person's)
}
# Exif sub-IFD tags kept: time, exposure, optics, colour. Not kept, on purpose: MakerNote
# 0x927C, UserComment 0x9286, ImageUniqueID 0xA420, CameraOwnerName 0xA430,
# BodySerialNumber 0xA431, LensSerialNumber 0xA435, and anything unknown.
KEEP_EXIF = {
    0x829A, 0x829D, 0x8822, 0x8827, 0x8830, 0x8832,  # exposure time, F-number, program, ISO
    0x9000, 0x9003, 0x9004, 0x9010, 0x9011, 0x9012,  # version, DateTimeOriginal/Digitized, OffsetTime*
    0x9101, 0x9102, 0x9201, 0x9202, 0x9203, 0x9204, 0x9205, 0x9206, 0x9207, 0x9208, 0x9209, 0x920A,
    0x9290, 0x9291, 0x9292,  # SubSecTime, SubSecTimeOriginal, SubSecTimeDigitized
    0xA000, 0xA001, 0xA002, 0xA003,  # FlashpixVersion, ColorSpace, PixelX/YDimension
    0xA215, 0xA217, 0xA300, 0xA301, 0xA401, 0xA402, 0xA403, 0xA404, 0xA405, 0xA406,
    0xA407, 0xA408, 0xA409, 0xA40A, 0xA40C,
    0xA432, 0xA433, 0xA434,  # LensSpecification, LensMake, LensModel
}
# GPS IFD: every tag of the GPS IFD is positional and kept, except free text.
DROP_GPS = {0x001B, 0x001C}  # GPSProcessingMethod, GPSAreaInformation (free-form)

ORIENTATION = 0x0112


@dataclass(frozen=True, slots=True)
class Geotag:
    """Where and when a frame was taken (from a session's frame record)."""

    lat: float
    lon: float
    altitude: float | None
    time: datetime
    heading: float | None = None  # degrees true, direction the camera looks
    speed: float | None = None  # m/s

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lat) and -90 <= self.lat <= 90):
            raise ValueError(f"latitude {self.lat} outside [-90, 90]")
        if not (math.isfinite(self.lon) and -180 <= self.lon <= 180):
            raise ValueError(f"longitude {self.lon} outside [-180, 180]")
        if self.time.tzinfo is None or self.time.utcoffset() != UTC.utcoffset(None):
            raise ValueError(f"time must be a timezone-aware UTC datetime, got {self.time!r}")
        if self.heading is not None and not (math.isfinite(self.heading) and 0 <= self.heading <= 360):
            raise ValueError(f"heading {self.heading} outside [0, 360]")
        if self.speed is not None and not (math.isfinite(self.speed) and self.speed >= 0):
            raise ValueError(f"speed {self.speed} must be finite and >= 0")
        if self.altitude is not None and not math.isfinite(self.altitude):
            raise ValueError("altitude must be finite")


def load_exif(raw: bytes | None) -> Image.Exif:
    """Parse EXIF bytes (with or without the ``Exif\\0\\0`` header); empty for None/garbage."""
    ex = Image.Exif()
    if raw:
        try:
            ex.load(raw)
        except Exception:  # unreadable EXIF is treated as absent, never fatal
            return Image.Exif()
    return ex


def orientation_of(ex: Image.Exif) -> int:
    try:
        o = int(ex.get(ORIENTATION, 1))
    except (TypeError, ValueError):
        return 1
    return o if 1 <= o <= 8 else 1


def _copy(src: dict[int, Any], keep: set[int] | None, drop: set[int] = frozenset()) -> dict[int, Any]:  # type: ignore[assignment]
    return {k: v for k, v in src.items() if (keep is None or k in keep) and k not in drop}


def _rational(v: float, denominator: int) -> TiffImagePlugin.IFDRational:
    return TiffImagePlugin.IFDRational(Fraction(round(v * denominator), denominator))


def _dms(deg: float) -> tuple[TiffImagePlugin.IFDRational, ...]:
    deg = abs(deg)
    d = math.floor(deg)
    m = math.floor((deg - d) * 60)
    s = (deg - d - m / 60) * 3600
    return (_rational(d, 1), _rational(m, 1), _rational(s, 10000))


def geotag_ifd(g: Geotag) -> dict[int, Any]:
    """The GPS IFD for a geotag (EXIF 2.32 GPS tags, WGS-84)."""
    t = g.time.astimezone(UTC)
    gps: dict[int, Any] = {
        0x0000: b"\x02\x03\x00\x00",  # GPSVersionID 2.3
        0x0001: "N" if g.lat >= 0 else "S",
        0x0002: _dms(g.lat),
        0x0003: "E" if g.lon >= 0 else "W",
        0x0004: _dms(g.lon),
        0x0007: (_rational(t.hour, 1), _rational(t.minute, 1), _rational(t.second + t.microsecond / 1e6, 1000)),
        0x0012: "WGS-84",
        0x001D: t.strftime("%Y:%m:%d"),
    }
    if g.altitude is not None:
        gps[0x0005] = b"\x00" if g.altitude >= 0 else b"\x01"
        gps[0x0006] = _rational(abs(g.altitude), 100)
    if g.speed is not None:
        gps[0x000C] = "K"
        gps[0x000D] = _rational(g.speed * 3.6, 100)
    if g.heading is not None:
        for ref, val in ((0x000E, 0x000F), (0x0010, 0x0011)):  # GPSTrack, GPSImgDirection
            gps[ref] = "T"
            gps[val] = _rational(g.heading % 360, 100)
    return gps


def clean_exif(raw: bytes | None, *, geotag: Geotag | None = None, size: tuple[int, int] | None = None) -> bytes:
    """EXIF bytes to write with a redacted image: the allow-list above, no thumbnail.

    ``geotag`` replaces the GPS IFD and the capture time; ``size`` (w, h) updates the pixel
    dimension tags. Returns b"" when nothing is left to write.
    """
    src = load_exif(raw)
    out = Image.Exif()
    for k, v in _copy(dict(src), KEEP_IFD0).items():
        out[k] = v
    exif_ifd = _copy(_safe_ifd(src, IFD.Exif), KEEP_EXIF)
    gps_ifd = _copy(_safe_ifd(src, IFD.GPSInfo), None, DROP_GPS)
    if geotag is not None:
        gps_ifd = geotag_ifd(geotag)
        t = geotag.time.astimezone(UTC)
        exif_ifd[0x9003] = t.strftime("%Y:%m:%d %H:%M:%S")  # DateTimeOriginal
        exif_ifd[0x9011] = "+00:00"  # OffsetTimeOriginal: the stamp above is UTC
        exif_ifd[0x9291] = f"{t.microsecond // 1000:03d}"  # SubSecTimeOriginal
    if size is not None and exif_ifd:
        exif_ifd[0xA002], exif_ifd[0xA003] = int(size[0]), int(size[1])
    if exif_ifd:
        out.get_ifd(IFD.Exif).update(exif_ifd)
    if gps_ifd:
        out.get_ifd(IFD.GPSInfo).update(gps_ifd)
    if not len(out) and not exif_ifd and not gps_ifd:
        return b""
    return bytes(out.tobytes())


def _safe_ifd(ex: Image.Exif, tag: int) -> dict[int, Any]:
    try:
        return dict(ex.get_ifd(tag))
    except Exception:  # a broken sub-IFD is dropped, the rest is kept
        return {}


def read_geotag(raw: bytes | None) -> Geotag | None:
    """The GPS position/time/heading/speed stored in EXIF, or None when there is no fix."""
    ex = load_exif(raw)
    gps = _safe_ifd(ex, IFD.GPSInfo)
    try:
        lat = _from_dms(gps[0x0002]) * (-1 if gps.get(0x0001) == "S" else 1)
        lon = _from_dms(gps[0x0004]) * (-1 if gps.get(0x0003) == "W" else 1)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    alt = None
    if 0x0006 in gps:
        alt = float(gps[0x0006]) * (-1 if gps.get(0x0005) in (b"\x01", 1) else 1)
    t = _gps_time(gps) or _original_time(ex)
    if t is None:
        return None
    heading = gps.get(0x0011, gps.get(0x000F))
    speed = None
    if 0x000D in gps:
        unit = {"K": 1 / 3.6, "M": 0.44704, "N": 0.514444}.get(str(gps.get(0x000C, "K")), 1 / 3.6)
        speed = float(gps[0x000D]) * unit
    return Geotag(lat, lon, alt, t, float(heading) % 360 if heading is not None else None, speed)


def _from_dms(v: Any) -> float:
    d, m, s = (float(x) for x in v)
    return d + m / 60 + s / 3600


def _original_time(ex: Image.Exif) -> datetime | None:
    """DateTimeOriginal with its OffsetTimeOriginal; None without a zone (never guessed)."""
    e = _safe_ifd(ex, IFD.Exif)
    stamp, offset = e.get(0x9003), e.get(0x9011)
    if not stamp or not offset:
        return None
    try:
        return datetime.fromisoformat(
            str(stamp).strip("\x00").replace(":", "-", 2).replace(" ", "T") + str(offset).strip("\x00")
        ).astimezone(UTC)
    except ValueError:
        return None


def _gps_time(gps: dict[int, Any]) -> datetime | None:
    try:
        h, m, s = (float(x) for x in gps[0x0007])
        day = datetime.strptime(str(gps[0x001D]).strip("\x00"), "%Y:%m:%d").replace(tzinfo=UTC)
    except (KeyError, TypeError, ValueError):
        return None
    sec = h * 3600 + m * 60 + s
    return day.fromtimestamp(day.timestamp() + sec, UTC)
