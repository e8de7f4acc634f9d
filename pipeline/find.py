"""Find raw (and published) frames by time and place, and delete the raw ones: for disclosure
and deletion requests ("what did you record in front of my house last Tuesday?") and leak
reports.

The search reads only ``frames.jsonl`` of each session (times and positions; no pixels, no
decryption) and, with a publish folder, each session's ``manifest.json`` and ``frames.geojson``.
A frame matches when its capture time lies in the window (inclusive) and its position lies
within the radius of the point (haversine, ``capture.geodesy``). A frame without a position is
never "near" anything: it is not listed by a place query, but the number of such frames in the
time window is reported, because one of them may still show the place.

Deleting goes through ``capture.session.delete_frames`` (journalled in the session's
``deletions.jsonl`` before the file goes, reason ``request``, the requester's opaque reference)
and is recorded like a retention purge: one ``raw-delete`` record in the hash chain
``SESSIONS_ROOT/audit.jsonl`` (the sessions root has no publish tree of its own: reason,
reference, frame ids, hashes, the time window and the radius, never the point asked about, which
is often the requester's home) and, for each session published in ``--publish-dir``, in that
session's chain (which goes to the GIS team: frame ids, hashes and counts only, naming the full
record by its sha256) and the publish index.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from capture.geodesy import distance_m, valid_wgs84
from capture.types import FrameRecord, format_time, parse_time
from pipeline import audit
from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

ROOT_AUDIT = audit.AUDIT_FILE  # SESSIONS_ROOT/audit.jsonl
_RADIUS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m|km)\s*$", re.IGNORECASE)


def parse_radius(text: str) -> float:
    """``30m``, ``0.5km`` → metres."""
    m = _RADIUS.match(text)
    if not m:
        raise ConfigError(f"--radius {text!r}: expected a number and a unit, e.g. 30m or 0.5km")
    v = float(m.group(1)) * (1000.0 if m.group(2).lower() == "km" else 1.0)
    if v <= 0:
        raise ConfigError(f"--radius {text!r}: must be more than 0")
    return v


def parse_point(text: str) -> tuple[float, float]:
    """``LAT,LON`` in WGS84 degrees."""
    try:
        lat, lon = (float(p) for p in text.split(","))
    except ValueError:
        raise ConfigError(f"--near {text!r}: expected LAT,LON in degrees, e.g. 35.6812,139.7671") from None
    if not valid_wgs84(lat, lon):
        raise ConfigError(f"--near {text!r}: latitude must be in [-90, 90] and longitude in [-180, 180]")
    return lat, lon


def parse_when(text: str, what: str) -> datetime:
    """ISO 8601 with a zone (``Z`` or an offset); a time without one is an error, never guessed."""
    try:
        return parse_time(text)
    except ValueError as e:
        msg = "has no time zone: add Z (UTC) or an offset like +09:00" if "time zone" in str(e) else \
            "is not an ISO 8601 time (e.g. 2026-11-25T10:30:00+09:00)"
        raise ConfigError(f"{what} {text!r} {msg}") from None


@dataclass(frozen=True, slots=True)
class FindQuery:
    """Where and when; at least one of the two. Times are UTC-aware; radius in metres."""

    near: tuple[float, float] | None = None
    radius_m: float | None = None
    start: datetime | None = None
    end: datetime | None = None

    def __post_init__(self) -> None:
        if self.near is None and self.start is None:
            raise ConfigError("say where (--near LAT,LON --radius R) and/or when (--between T1 T2)")
        if (self.near is None) != (self.radius_m is None):
            raise ConfigError("--near and --radius go together")
        if (self.start is None) != (self.end is None):
            raise ConfigError("--between needs two times")
        if self.start is not None and self.end is not None:
            if self.start.tzinfo is None or self.end.tzinfo is None:
                raise ConfigError("--between times need a time zone")
            if self.end < self.start:
                raise ConfigError("--between: the second time is before the first")

    def in_window(self, t: datetime) -> bool:
        return self.start is None or (self.start <= t <= self.end)  # type: ignore[operator]

    def distance(self, lat: float | None, lon: float | None) -> float | None:
        """Metres from the point, or None when there is no point or the frame has no position."""
        if self.near is None or lat is None or lon is None:
            return None
        return distance_m(self.near[0], self.near[1], lat, lon)

    def matches(self, t: datetime, lat: float | None, lon: float | None) -> tuple[bool, float | None]:
        """(match, distance in metres). Without a position a frame never matches a place query."""
        if not self.in_window(t):
            return False, None
        if self.near is None:
            return True, None
        d = self.distance(lat, lon)
        return (d is not None and d <= float(self.radius_m or 0.0)), d


@dataclass(frozen=True, slots=True)
class FoundFrame:
    session_id: str
    frame_id: str
    time: str  # UTC ISO 8601
    lat: float | None
    lon: float | None
    distance_m: float | None
    raw_present: bool
    raw_file: str | None  # absolute path of the raw frame, when present
    published: str | None  # path of the published image, when published

    def to_json(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "frame_id": self.frame_id, "time": self.time, "lat": self.lat,
                "lon": self.lon, "distance_m": None if self.distance_m is None else round(self.distance_m, 2),
                "raw_present": self.raw_present, "raw_file": self.raw_file, "published": self.published}


@dataclass
class FindResult:
    frames: list[FoundFrame] = field(default_factory=list)
    sessions_scanned: int = 0
    no_position_in_window: int = 0  # frames in the time window that a place query cannot place


def _published_index(publish_dir: Path | None, sid: str) -> set[str]:
    if publish_dir is None:
        return set()
    try:
        man = json.loads((publish_dir / sid / "manifest.json").read_bytes())
    except (OSError, ValueError):
        return set()
    return {rel for rel in man.get("files", {}) if rel.startswith("images/")}


def find_frames(sessions_root: Path, query: FindQuery, *, publish_dir: Path | None = None) -> FindResult:
    """Raw frames under ``sessions_root`` matching ``query``, with their published copies; plus
    published frames of sessions no longer under the root (from frames.geojson)."""
    from capture.session import SessionReader, iter_sessions

    root = Path(sessions_root)
    if not root.is_dir():
        raise ConfigError(f"{root}: sessions folder not found")
    if publish_dir is not None and not Path(publish_dir).is_dir():
        raise ConfigError(f"{publish_dir}: publish folder not found")
    res = FindResult()
    seen: set[str] = set()
    for path in iter_sessions(root):
        reader = SessionReader(path)
        sid = reader.session_id
        seen.add(sid)
        res.sessions_scanned += 1
        deleted = reader.deletions().frame_ids
        pub = _published_index(publish_dir, sid)
        for rec in reader.frames():
            ok, d = query.matches(rec.time, rec.lat, rec.lon)
            if not ok:
                if query.near is not None and rec.lat is None and query.in_window(rec.time):
                    res.no_position_in_window += 1
                continue
            present = rec.frame_id not in deleted and (path / rec.file).is_file()
            img = f"images/{rec.frame_id}.jpg"
            res.frames.append(FoundFrame(
                session_id=sid, frame_id=rec.frame_id, time=format_time(rec.time), lat=rec.lat, lon=rec.lon,
                distance_m=d, raw_present=present, raw_file=str(path / rec.file) if present else None,
                published=str(Path(publish_dir) / sid / img) if publish_dir is not None and img in pub else None))
    if publish_dir is not None:
        res.frames += _published_only(Path(publish_dir), query, seen)
    res.frames.sort(key=lambda f: (f.time, f.session_id, f.frame_id))
    return res


def _published_only(publish_dir: Path, query: FindQuery, seen: set[str]) -> list[FoundFrame]:
    from pipeline.publish import published_sessions

    out = []
    for sid in published_sessions(publish_dir):
        if sid in seen:
            continue
        try:
            fc = json.loads((publish_dir / sid / "frames.geojson").read_bytes())
        except (OSError, ValueError):
            continue
        for f in fc.get("features", []):
            p = f.get("properties") or {}
            g = f.get("geometry")
            lat, lon = (g["coordinates"][1], g["coordinates"][0]) if g else (None, None)
            ok, d = query.matches(parse_time(p["time"]), lat, lon)
            if ok:
                out.append(FoundFrame(sid, p["frame_id"], p["time"], lat, lon, d, False, None,
                                      str(publish_dir / sid / p["image"])))
    return out


@dataclass
class DeleteOutcome:
    deleted: int
    sessions: list[str]
    record: dict[str, Any]


def delete_raw(sessions_root: Path, query: FindQuery, found: Sequence[FoundFrame], *, reason: str,
               requester_ref: str | None, publish_dir: Path | None = None) -> DeleteOutcome:
    """Delete the raw files of ``found`` (those still present) and record it."""
    from capture.session import SessionReader, delete_frames, iter_sessions
    from pipeline.publish import append_session_records
    from pipeline.requests import check_reason, check_ref

    reason = check_reason(reason)
    ref = check_ref(requester_ref)
    root = Path(sessions_root)
    want: dict[str, set[str]] = {}
    for f in found:
        if f.raw_present:
            want.setdefault(f.session_id, set()).add(f.frame_id)
    now = audit.now_utc()
    window: dict[str, Any] = {
        "between": [format_time(query.start), format_time(query.end)] if query.start and query.end else None,
        "radius_m": query.radius_m,  # the point itself is not recorded (often the requester's home)
    }
    per_session: dict[str, list[dict[str, str]]] = {}
    paths: dict[str, Path] = {}
    for path in iter_sessions(root):
        reader = SessionReader(path)
        sid = reader.session_id
        if sid not in want:
            continue
        recs: list[FrameRecord] = [r for r in reader.frames() if r.frame_id in want[sid]]
        delete_frames(path, recs, reason="request", ref=ref)
        per_session[sid] = [{"frame_id": r.frame_id, "sha256": r.sha256} for r in recs]
        paths[sid] = path
    n = sum(len(v) for v in per_session.values())
    record = {"type": "raw-delete", "time": now, "who": audit.who(), "reason": reason, "requester_ref": ref,
              "query": window, "frames_deleted": n,
              "sessions": [{"session_id": sid, "frames": v} for sid, v in sorted(per_session.items())],
              "note": "raw frame files deleted and journalled in each session's deletions.jsonl; frames.jsonl "
                      "and track kept (no pixels); published images are not changed by this command"}
    root_state = audit.append_records(root / ROOT_AUDIT, [record])
    if publish_dir is not None:
        for sid, frames in sorted(per_session.items()):
            if (Path(publish_dir) / sid / "manifest.json").is_file():
                # The published chain travels with the session to the GIS team: ids, hashes
                # and counts only; the reason, the reference and the query stay in the
                # sessions root's chain, linked by the sha256 of that record.
                append_session_records(Path(publish_dir), sid, [{
                    "type": "raw-delete", "time": now, "who": record["who"], "frames_deleted": len(frames),
                    "frames": frames, "session_id": sid, "root_record_sha256": root_state.head}])
    log.info("deleted %d raw frames in %d sessions", n, len(per_session))
    return DeleteOutcome(deleted=n, sessions=sorted(per_session), record=record)

