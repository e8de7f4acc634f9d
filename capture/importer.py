"""``capture import``: build a session from dashcam/action-cam video plus a GPX track, or
from a folder of JPEGs with EXIF times.

Frame times: the container's ``creation_time`` plus each frame's presentation time, plus the
user's ``time_offset_s`` (seconds added to the camera clock to get UTC; many cameras write
local time labelled as UTC). Photo times come from EXIF (``capture.exif``): in UTC only when
the file says its zone (an offset tag, or GPS date/time stamps); other photos need the zone
from the user (``timezone``, or ``time_offset_s`` from a UTC reading), never a guess. When no
frame falls inside the track the import writes nothing and raises ``ImportTimeMismatch`` with
a suggested offset. Only the part of the track around the media (``TRACK_MARGIN_S``) is stored.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from capture.errors import CaptureError, ImportTimeMismatch
from capture.exif import ExifInfo, read_exif
from capture.geotag import Geotag, geotag
from capture.gps.gpx import read_gpx_fixes
from capture.session import SessionMeta, SessionWriter
from capture.trigger import Trigger, TriggerSettings, thumb_difference, thumbnail
from capture.types import Fix, format_time, parse_time
from capture.zones import Zones

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg")
# Fixes stored with an import: those within the media's time span plus this margin (or the
# geotagging gap limit, if longer: the fixes that bracket the first and last frame). A GPX of
# the whole day must not put the rest of the day's movements into the session.
TRACK_MARGIN_S = 60.0


@dataclass(frozen=True, slots=True)
class ImportSettings:
    trigger: TriggerSettings = field(default_factory=TriggerSettings)
    # Seconds added to the camera clock to get UTC. None: not given (0 for video; photos whose
    # EXIF time has no zone then need ``timezone``).
    time_offset_s: float | None = None
    # IANA zone (e.g. "Asia/Tokyo") of a camera clock whose EXIF times carry no zone: photos only.
    timezone: str | None = None
    max_gap_s: float = 2.0
    keep_frames_without_position: bool = False
    jpeg_quality: int = 92
    fsync_interval_s: float = 1.0

    def __post_init__(self) -> None:
        if self.time_offset_s is not None and not math.isfinite(self.time_offset_s):
            raise ValueError("time_offset_s must be finite")
        if self.max_gap_s <= 0:
            raise ValueError("max_gap_s must be > 0")
        if self.timezone is not None:
            zone_info(self.timezone)

    @property
    def offset_s(self) -> float:
        return self.time_offset_s or 0.0


def zone_info(name: str) -> Any:
    """The IANA time zone ``name`` (ValueError naming it when unknown)."""
    from zoneinfo import ZoneInfo

    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(f"unknown time zone {name!r}: give an IANA name such as Asia/Tokyo or Europe/Paris") from None


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


@dataclass(frozen=True, slots=True)
class VideoTimes:
    """When a video's frames were taken: ``start`` (creation_time + offset) plus each frame's
    pts minus ``pts0`` (the stream's start time, else its first pts), in ``times`` order."""

    start: datetime
    times: tuple[datetime, ...]
    pts0: int
    time_base: Any  # fractions.Fraction

    def at(self, pts: int) -> datetime:
        return self.start + timedelta(seconds=float((pts - self.pts0) * self.time_base))


def video_frame_times(path: Path, offset_s: float) -> VideoTimes:
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
        pts = sorted(packet.pts for packet in container.demux(stream) if packet.pts is not None)
        if not pts:
            raise CaptureError(f"{path}: video has no frames")
        pts0 = stream.start_time if stream.start_time is not None else pts[0]
        timing = VideoTimes(start, (), pts0, tb)
    return VideoTimes(start, tuple(timing.at(p) for p in pts), pts0, tb)


def _iter_video(path: Path, vt: VideoTimes) -> Iterator[tuple[int, datetime, np.ndarray]]:
    """Decoded frames with their times, on the same clock as ``video_frame_times`` (frames
    without a pts were not timed there either, and are skipped)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for n, frame in enumerate(container.decode(stream)):
            if frame.pts is not None:
                yield n, vt.at(frame.pts), frame.to_ndarray(format="bgr24")


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
    vt = video_frame_times(video, settings.offset_s)
    start, times = vt.start, vt.times
    _check_overlap(times, track, video)
    trig = Trigger(settings.trigger)
    writer = SessionWriter.create(out, meta, start=start, recipient_public_key=recipient_public_key,
                                  fsync_interval_s=settings.fsync_interval_s)
    _journal_track(writer, track, zones, span=(min(times), max(times)), max_gap_s=settings.max_gap_s)
    last_thumb: np.ndarray | None = None
    last_t: datetime | None = None
    for n, t, bgr in _iter_video(video, vt):
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


def _journal_track(writer: SessionWriter, track: Sequence[Fix], zones: Zones | None, *,
                   span: tuple[datetime, datetime], max_gap_s: float) -> None:
    """The track into the session as the daemon journals it: a fix inside a privacy zone is
    counted, never stored (the published track.geojson is drawn from the stored fixes); so is
    a fix farther than the margin from the media's time span."""
    margin = timedelta(seconds=max(TRACK_MARGIN_S, max_gap_s))
    lo, hi = span[0] - margin, span[1] + margin
    for f in track:
        if not lo <= f.time <= hi:
            writer.count("fixes_outside_media_span")
        elif zones and zones.contains(f.lat, f.lon):
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
    unzoned: list[tuple[Path, ExifInfo]] = []
    zone = zone_info(settings.timezone) if settings.timezone else None
    for p in files:
        try:
            info = read_exif(p, zone=zone, naive_is_utc=settings.time_offset_s is not None)
        except OSError as e:
            log.warning("%s: unreadable image, skipped: %s", p, e)
            skipped += 1
            continue
        if info.time is None:
            log.warning("%s: no EXIF capture time, skipped", p)
            skipped += 1
            continue
        if info.utc is None:
            unzoned.append((p, info))
            continue
        items.append((info.utc + timedelta(seconds=settings.offset_s), p, info))
    if unzoned:
        p, info = unzoned[0]
        more = f" (and {len(unzoned) - 1} more image(s) like it)" if len(unzoned) > 1 else ""
        wall = info.time.wall if info.time is not None else None
        raise CaptureError(
            f"{p}: EXIF capture time {wall.isoformat(sep=' ') if wall else '?'} has no time zone (no "
            f"OffsetTimeOriginal/OffsetTime, no GPS date and time stamps){more}; the zone is never guessed: "
            "give --timezone ZONE (the camera clock's zone, e.g. Asia/Tokyo) or --time-offset SECONDS (added to "
            "the camera clock to get UTC; 0 if the camera clock is set to UTC)")
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
        _journal_track(writer, track, zones, span=(items[0][0], items[-1][0]), max_gap_s=settings.max_gap_s)
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
