"""``capture import``: build a session from dashcam/action-cam video plus a GPX track, or
from a folder of JPEGs with EXIF times.

Frame times: the container's ``creation_time`` plus each frame's presentation time, plus the
user's ``time_offset_s`` (seconds added to the camera clock to get UTC; many cameras write
local time labelled as UTC). When no frame falls inside the track the import writes nothing
and raises ``ImportTimeMismatch`` with a suggested offset.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from capture.errors import CaptureError, ImportTimeMismatch
from capture.geotag import Geotag, geotag
from capture.gps.gpx import read_gpx_fixes
from capture.session import SessionMeta, SessionWriter
from capture.trigger import Trigger, TriggerSettings, thumb_difference, thumbnail
from capture.types import Fix, format_time, parse_time
from capture.zones import Zones

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg")


@dataclass(frozen=True, slots=True)
class ImportSettings:
    trigger: TriggerSettings = field(default_factory=TriggerSettings)
    time_offset_s: float = 0.0
    max_gap_s: float = 2.0
    keep_frames_without_position: bool = False
    jpeg_quality: int = 92
    fsync_interval_s: float = 1.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.time_offset_s):
            raise ValueError("time_offset_s must be finite")
        if self.max_gap_s <= 0:
            raise ValueError("max_gap_s must be > 0")


@dataclass
class ImportResult:
    session: Path
    frames: int
    counters: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------------------- clock help


def suggest_offset(start: datetime, end: datetime, track: Sequence[Fix]) -> str:
    """Human advice when [start, end] (camera times, offset applied) misses the track."""
    t0, t1 = track[0].time, track[-1].time
    align = (t0 - start).total_seconds()
    hours = round(align / 3600.0)
    lines = [
        f"the media spans {format_time(start)} .. {format_time(end)} but the GPS track spans "
        f"{format_time(t0)} .. {format_time(t1)}: no frame falls inside the track.",
    ]
    if hours:
        shifted_s, shifted_e = start + timedelta(hours=hours), end + timedelta(hours=hours)
        inside = shifted_e >= t0 and shifted_s <= t1
        lines.append(
            f"The camera clock looks {abs(hours)} h off (a time zone?): --time-offset {hours * 3600:+.0f} "
            + ("puts the media inside the track." if inside else
               f"shifts it by whole hours but still misses the track by {_miss(shifted_s, shifted_e, t0, t1):.0f} s.")
        )
    lines.append(f"Aligning the media start with the track start needs --time-offset {align:+.3f} "
                 "(check the result: it assumes recording and track started together).")
    return "\n".join(lines)


def _miss(s: datetime, e: datetime, t0: datetime, t1: datetime) -> float:
    if e < t0:
        return (t0 - e).total_seconds()
    return (s - t1).total_seconds()


def _check_overlap(times: Sequence[datetime], track: Sequence[Fix], what: Path) -> None:
    t0, t1 = track[0].time, track[-1].time
    if not any(t0 <= t <= t1 for t in times):
        raise ImportTimeMismatch(f"{what}: " + suggest_offset(min(times), max(times), track))


# ---------------------------------------------------------------------------- video


def video_start_time(container: Any, path: Path) -> datetime:
    """The container's creation_time (format, else video stream metadata), as UTC."""
    cands = [container.metadata.get("creation_time")]
    if container.streams.video:
        cands.append(container.streams.video[0].metadata.get("creation_time"))
    for c in cands:
        if c:
            try:
                t = parse_time(str(c))
            except ValueError:
                continue
            if t.year > 1980:
                return t
    raise CaptureError(f"{path}: the video has no usable creation_time; cannot time its frames")


def video_frame_times(path: Path, offset_s: float) -> tuple[datetime, list[datetime]]:
    """Start time and every frame's time (start + pts + offset), without decoding pixels."""
    import av

    try:
        container = av.open(str(path))
    except (OSError, av.error.FFmpegError) as e:
        raise CaptureError(f"{path}: cannot open video: {e}") from e
    with container:
        if not container.streams.video:
            raise CaptureError(f"{path}: no video stream")
        start = video_start_time(container, path) + timedelta(seconds=offset_s)
        stream = container.streams.video[0]
        tb = stream.time_base
        if tb is None:
            raise CaptureError(f"{path}: video stream has no time base")
        pts0: int | None = None
        pts: list[int] = []
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            pts.append(packet.pts)
        if not pts:
            raise CaptureError(f"{path}: video has no frames")
        pts.sort()
        pts0 = stream.start_time if stream.start_time is not None else pts[0]
        times = [start + timedelta(seconds=float((p - pts0) * tb)) for p in pts]
    return start, times


def _iter_video(path: Path, start: datetime) -> Iterator[tuple[int, datetime, np.ndarray]]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        pts0 = stream.start_time
        tb = stream.time_base
        assert tb is not None
        for n, frame in enumerate(container.decode(stream)):
            if frame.pts is None:
                continue
            p0 = pts0 if pts0 is not None else frame.pts
            t = start + timedelta(seconds=float((frame.pts - p0) * tb))
            yield n, t, frame.to_ndarray(format="bgr24")


def import_video(
    video: Path,
    gpx: Path,
    out: Path,
    meta: SessionMeta,
    settings: ImportSettings = ImportSettings(),
    *,
    zones: Zones | None = None,
    recipient_public_key: Any | None = None,
) -> ImportResult:
    """Keep frames of ``video`` as the trigger decides, geotagged from ``gpx``."""
    import cv2

    video, gpx = Path(video), Path(gpx)
    if not video.is_file():
        raise CaptureError(f"{video}: video file not found")
    track = read_gpx_fixes(gpx)
    start, times = video_frame_times(video, settings.time_offset_s)
    _check_overlap(times, track, video)
    trig = Trigger(settings.trigger)
    writer = SessionWriter.create(out, meta, start=start, recipient_public_key=recipient_public_key,
                                  fsync_interval_s=settings.fsync_interval_s)
    _journal_track(writer, track, zones)
    last_thumb: np.ndarray | None = None
    last_t: datetime | None = None
    for n, t, bgr in _iter_video(video, start):
        if last_t is not None and t <= last_t:
            writer.count("dropped_time_not_increasing")
            continue
        g = geotag(track, t, max_gap_s=settings.max_gap_s)
        thumb = thumbnail(bgr)
        reason = _gate(g, zones, settings)
        if reason is None:
            diff = thumb_difference(thumb, last_thumb) if last_thumb is not None else None
            d = trig.decide(t, g.lat, g.lon, g.speed, diff)
            if not d.keep:
                if d.reason != "not_due":
                    writer.count(f"dropped_{d.reason}")
                continue
        else:
            writer.count(reason)
            continue
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, settings.jpeg_quality])
        if not ok:
            raise CaptureError(f"{video}: JPEG encoding of frame {n} failed")
        _add(writer, buf.tobytes(), t, g, bgr.shape, {"video_frame": n})
        last_thumb, last_t = thumb, t
    path = writer.close(end=times[-1])
    return ImportResult(path, writer.frame_count, dict(writer.counters))


def _journal_track(writer: SessionWriter, track: Sequence[Fix], zones: Zones | None) -> None:
    """The track into the session as the daemon journals it: a fix inside a privacy zone is
    counted, never stored (the published track.geojson is drawn from the stored fixes)."""
    for f in track:
        if zones and zones.contains(f.lat, f.lon):
            writer.count("fixes_in_privacy_zone")
        else:
            writer.add_fix(f)


def _gate(g: Geotag, zones: Zones | None, s: ImportSettings) -> str | None:
    if g.lat is not None and g.lon is not None and zones and zones.contains(g.lat, g.lon):
        return "dropped_privacy_zone"
    if not g.has_position and not s.keep_frames_without_position:
        return "dropped_no_position"
    return None


def _add(writer: SessionWriter, jpeg: bytes, t: datetime, g: Geotag, shape: tuple[int, ...],
         extra: dict[str, Any]) -> None:
    writer.add_frame(
        jpeg, time=t, position_source=g.position_source, lat=g.lat, lon=g.lon, altitude=g.altitude,
        heading=g.heading, speed=g.speed, fix_quality=g.fix_quality, hdop=g.hdop,
        satellites=g.satellites, width=int(shape[1]), height=int(shape[0]), extra=extra,
    )


# ---------------------------------------------------------------------------- images


@dataclass(frozen=True, slots=True)
class ExifInfo:
    time: datetime | None
    fix: Fix | None


def _rational(v: Any) -> float:
    return float(v)


def _dms(v: Any, ref: str) -> float:
    d, m, s = (_rational(x) for x in v)
    deg = d + m / 60.0 + s / 3600.0
    return -deg if ref in ("S", "W") else deg


def read_exif(path: Path) -> ExifInfo:
    """Capture time (DateTimeOriginal + SubSec + OffsetTimeOriginal; without an offset the
    time is read as UTC) and, when present, the EXIF GPS position as a Fix."""
    from PIL import Image

    with Image.open(path) as im:
        ex = im.getexif()
        sub = ex.get_ifd(0x8769)
        gps = ex.get_ifd(0x8825)
    raw = sub.get(0x9003) or ex.get(0x0132)
    t: datetime | None = None
    if raw:
        try:
            s = str(raw).strip()
            t = datetime.strptime(s[:19], "%Y:%m:%d %H:%M:%S")
            frac = s[19:].lstrip(".") or str(sub.get(0x9291) or "").strip()
            if frac.isdigit():
                t += timedelta(seconds=float("0." + frac))
            off = str(sub.get(0x9011) or "").strip()
            if off and off[0] in "+-" and len(off) >= 6:
                sign = -1 if off[0] == "-" else 1
                delta = timedelta(hours=int(off[1:3]), minutes=int(off[4:6]))
                t = (t - sign * delta).replace(tzinfo=UTC)
            else:
                t = t.replace(tzinfo=UTC)
        except (ValueError, TypeError):
            t = None
    fix: Fix | None = None
    if gps.get(2) and gps.get(4) and t is not None:
        try:
            alt = _rational(gps[6]) if 6 in gps else None
            if alt is not None and gps.get(5) in (b"\x01", 1):
                alt = -alt
            speed = None
            if 13 in gps:
                k = {"K": 1000 / 3600, "M": 1609.344 / 3600, "N": 1852 / 3600}.get(str(gps.get(12, "K")), 1000 / 3600)
                speed = _rational(gps[13]) * k
            course = _rational(gps[15]) % 360.0 if 15 in gps else None
            fix = Fix(time=t, lat=_dms(gps[2], str(gps.get(1, "N"))), lon=_dms(gps[4], str(gps.get(3, "E"))),
                      alt=alt, speed=speed, course=course, fix_quality=1,
                      hdop=_rational(gps[11]) if 11 in gps else None)
        except (ValueError, TypeError, KeyError, ZeroDivisionError):
            fix = None
    return ExifInfo(t, fix)


def import_images(
    folder: Path,
    out: Path,
    meta: SessionMeta,
    settings: ImportSettings = ImportSettings(),
    *,
    gpx: Path | None = None,
    zones: Zones | None = None,
    recipient_public_key: Any | None = None,
) -> ImportResult:
    """Import JPEGs ordered by EXIF time; positions from ``gpx`` (interpolated), else from
    each image's own EXIF GPS. The JPEG bytes are stored unchanged."""
    import cv2

    folder = Path(folder)
    if not folder.is_dir():
        raise CaptureError(f"{folder}: image folder not found")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CaptureError(f"{folder}: no JPEG images")
    items: list[tuple[datetime, Path, ExifInfo]] = []
    skipped = 0
    for p in files:
        try:
            info = read_exif(p)
        except OSError as e:
            log.warning("%s: unreadable image, skipped: %s", p, e)
            skipped += 1
            continue
        if info.time is None:
            log.warning("%s: no EXIF capture time, skipped", p)
            skipped += 1
            continue
        items.append((info.time + timedelta(seconds=settings.time_offset_s), p, info))
    if not items:
        raise CaptureError(f"{folder}: no image has an EXIF capture time")
    items.sort(key=lambda x: x[0])
    track = read_gpx_fixes(gpx) if gpx is not None else None
    if track is not None:
        _check_overlap([t for t, _, _ in items], track, folder)
    trig = Trigger(settings.trigger)
    writer = SessionWriter.create(out, meta, start=items[0][0], recipient_public_key=recipient_public_key,
                                  fsync_interval_s=settings.fsync_interval_s)
    if skipped:
        writer.count("skipped_no_exif_time", skipped)
    if track is not None:
        _journal_track(writer, track, zones)
    last_thumb: np.ndarray | None = None
    last_t: datetime | None = None
    for t, p, info in items:
        if last_t is not None and t <= last_t:
            writer.count("dropped_time_not_increasing")
            continue
        if track is not None:
            g = geotag(track, t, max_gap_s=settings.max_gap_s)
        elif info.fix is not None:
            f = info.fix
            g = Geotag("fix", lat=f.lat, lon=f.lon, altitude=f.alt, heading=f.course, speed=f.speed,
                       fix_quality=f.fix_quality, hdop=f.hdop)
        else:
            g = Geotag("none")
        reason = _gate(g, zones, settings)
        if reason is not None:
            writer.count(reason)
            continue
        data = p.read_bytes()
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_COLOR_4)
        if bgr is None:
            writer.count("skipped_undecodable")
            continue
        thumb = thumbnail(bgr)
        diff = thumb_difference(thumb, last_thumb) if last_thumb is not None else None
        d = trig.decide(t, g.lat, g.lon, g.speed, diff)
        if not d.keep:
            if d.reason != "not_due":
                writer.count(f"dropped_{d.reason}")
            continue
        from PIL import Image

        with Image.open(p) as im:
            w, h = im.size
        _add(writer, data, t, g, (h, w), {"source_file": p.name})
        last_thumb, last_t = thumb, t
    path = writer.close(end=items[-1][0])
    return ImportResult(path, writer.frame_count, dict(writer.counters))
