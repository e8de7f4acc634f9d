"""Session format v1: the crash-safe writer, the reader, and the checker.

On disk (see docs/session-format.md)::

    <session_id>/session.json   metadata, rewritten atomically at open and close
                 frames.jsonl   one FrameRecord per line, append-only
                 frames/        one file per kept frame (JPEG, or sealed JPEG when encrypted)
                 track.jsonl    journal of every GPS fix, append-only
                 track.gpx      every fix as GPX 1.1, rewritten atomically from the journal
                 session.key    the wrapped data key (encrypted sessions only)

Durability rule: a frame file is fsynced before its record is appended, and the record file
and directory are fsynced at least every ``fsync_interval_s``. After ``kill -9`` nothing
written is lost; after a power cut at most the last interval of records is.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import gpxpy
import gpxpy.gpx

from capture import __version__
from capture.crypto import KEY_FILE, FrameCipher, read_key_file, unwrap_key, wrap_key
from capture.errors import SessionError, SessionInvalid
from capture.fsutil import TMP_PREFIX, atomic_write_bytes, atomic_write_text, fsync_dir
from capture.geodesy import path_length_m, valid_wgs84
from capture.types import Fix, FrameRecord, format_time, gpx_time, parse_time

log = logging.getLogger(__name__)

FORMAT = "streetveil-session"
FORMAT_VERSION = 1
SESSION_JSON = "session.json"
FRAMES_JSONL = "frames.jsonl"
TRACK_JSONL = "track.jsonl"
TRACK_GPX = "track.gpx"
FRAMES_DIR = "frames"
DELETIONS_JSONL = "deletions.jsonl"
# Session files (raw frames included): the capture user writes, its group (the batch user)
# reads, nobody else; the umask can only narrow it.
FILE_MODE = 0o640
_SESSION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


# ---------------------------------------------------------------------------- schemas


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The packaged JSON Schema ``session`` or ``frame``."""
    text = resources.files("capture").joinpath("schemas", f"{name}.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def _validator(name: str) -> Any:
    import jsonschema

    return jsonschema.Draft202012Validator(load_schema(name))


def make_session_id(start: datetime, vehicle_id: str) -> str:
    """``20261126T053547Z-veh01``: sortable, filesystem- and URL-safe."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", vehicle_id).strip("-._") or "vehicle"
    return f"{start.astimezone(UTC):%Y%m%dT%H%M%SZ}-{safe}"[:128]


def fix_to_json(fix: Fix) -> dict[str, Any]:
    return {
        "time": format_time(fix.time),
        "lat": fix.lat,
        "lon": fix.lon,
        "alt": fix.alt,
        "speed": fix.speed,
        "course": fix.course,
        "fix_quality": fix.fix_quality,
        "hdop": fix.hdop,
        "satellites": fix.satellites,
    }


def fix_from_json(d: dict[str, Any]) -> Fix:
    d = dict(d)
    d["time"] = parse_time(d["time"])
    return Fix(**d)


def fixes_to_gpx(fixes: list[Fix], name: str) -> str:
    gpx = gpxpy.gpx.GPX()
    gpx.creator = f"streetveil {__version__}"
    trk = gpxpy.gpx.GPXTrack(name=name)
    gpx.tracks.append(trk)
    seg = gpxpy.gpx.GPXTrackSegment()
    trk.segments.append(seg)
    for f in fixes:
        p = gpxpy.gpx.GPXTrackPoint(f.lat, f.lon, elevation=f.alt, time=f.time, speed=f.speed)
        if f.course is not None:
            p.course = f.course  # type: ignore[assignment]
        if f.hdop is not None:
            p.horizontal_dilution = f.hdop
        if f.satellites is not None:
            p.satellites = f.satellites
        seg.points.append(p)
    return gpx.to_xml(version="1.1")


def read_jsonl(path: Path) -> tuple[list[tuple[int, Any]], list[str], bool]:
    """Parse a JSON Lines file: ([(line_no, obj)], problems, torn_tail).

    A last line without its newline that does not parse is a torn write (power cut): it is
    reported through ``torn_tail`` and skipped. Any other unparsable line is a problem.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], [f"{path.name}: missing"], False
    out: list[tuple[int, Any]] = []
    problems: list[str] = []
    torn = False
    lines = data.split(b"\n")
    last_complete = data.endswith(b"\n")
    for i, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        is_last = i == len(lines)
        try:
            out.append((i, json.loads(raw)))
        except (ValueError, UnicodeDecodeError):
            if is_last and not last_complete:
                torn = True
            else:
                problems.append(f"{path.name} line {i}: not valid JSON: {raw[:60]!r}")
    return out, problems, torn


def _truncate_torn_tail(path: Path) -> bool:
    """Cut a partial last line (no trailing newline) off ``path``; True if it cut anything."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return False
    if not data or data.endswith(b"\n"):
        return False
    keep = data.rfind(b"\n") + 1
    with open(path, "r+b") as f:
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return True


# ---------------------------------------------------------------------------- writer


@dataclass(frozen=True, slots=True)
class SessionMeta:
    """What session.json records about who captured what, why, and with which setup."""

    vehicle_id: str
    operator: str
    purpose: str
    notice_version: str
    camera_model: str = "unknown"
    camera_mount: str = "front"
    vehicle_description: str = ""
    width: int | None = None
    height: int | None = None
    clock_offset_s: float = 0.0
    config_sha256: str | None = None
    source: str = "capture"

    def __post_init__(self) -> None:
        for name in ("vehicle_id", "operator", "purpose", "notice_version"):
            if not getattr(self, name).strip():
                raise ValueError(f"session metadata {name!r} must not be empty")


@dataclass
class _Pending:
    last_sync: float = field(default_factory=time.monotonic)
    dirty: bool = False


class SessionWriter:
    """Appends frames and fixes to a session directory, crash-safely.

    Use ``SessionWriter.create`` for a new session and ``SessionWriter.recover`` after a crash.
    Not thread-safe: one writer per session, driven by one thread.
    """

    def __init__(
        self,
        path: Path,
        doc: dict[str, Any],
        *,
        cipher: FrameCipher | None,
        next_seq: int,
        last_time: datetime | None,
        fsync_interval_s: float = 1.0,
        counters: dict[str, int] | None = None,
    ) -> None:
        self.path = Path(path)
        self._doc = doc
        self._cipher = cipher
        self._seq = next_seq
        self._last_time = last_time
        self._fsync_interval = fsync_interval_s
        self._pending = _Pending()
        self.counters: dict[str, int] = dict(counters or {})
        self.counters.setdefault("frames", next_seq - 1)
        self.counters.setdefault("fixes", 0)
        self._frames_fd = os.open(self.path / FRAMES_JSONL, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        self._track_fd = os.open(self.path / TRACK_JSONL, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        self._closed = False
        self._encrypted_without_key = False

    # -- construction

    @classmethod
    def create(
        cls,
        root: Path,
        meta: SessionMeta,
        *,
        start: datetime | None = None,
        recipient_public_key: Any | None = None,
        fsync_interval_s: float = 1.0,
        session_id: str | None = None,
    ) -> SessionWriter:
        """Create ``root/<session_id>/`` and return a writer for it.

        The folder is built under a temporary name and renamed into place complete, so a
        crash never leaves a half-made session. An automatic id that is taken (a restart
        within the same second) gets a ``-2``, ``-3``... suffix.
        """
        start = start or datetime.now(UTC)
        sid = session_id or make_session_id(start, meta.vehicle_id)
        if not _SESSION_ID_RE.match(sid):
            raise SessionError(f"invalid session id {sid!r}")
        root = Path(root)
        if session_id is None:
            base, n = sid, 1
            while (root / sid).exists():
                n += 1
                sid = f"{base[:120]}-{n}"
        final = root / sid
        if final.exists():
            raise SessionError(f"{final}: session directory already exists")
        try:
            root.mkdir(parents=True, exist_ok=True)
            path = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{sid}-", dir=root))
            path.chmod(0o755)  # mkdtemp's 0700 would hide the session from the batch user
            (path / FRAMES_DIR).mkdir()
        except OSError as e:
            raise SessionError(f"{final}: cannot create session directory: {e}") from e
        cipher = None
        encryption = None
        if recipient_public_key is not None:
            from capture.crypto import public_key_fingerprint

            data_key = os.urandom(32)
            atomic_write_text(path / KEY_FILE, json.dumps(wrap_key(data_key, recipient_public_key), indent=1),
                              mode=FILE_MODE)
            cipher = FrameCipher(data_key)
            encryption = {
                "cipher": "aes-256-gcm",
                "key_file": KEY_FILE,
                "recipient_key_sha256": public_key_fingerprint(recipient_public_key),
            }
        doc: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "session_id": sid,
            "status": "open",
            "created": format_time(start),
            "closed": None,
            "source": meta.source,
            "vehicle": {"id": meta.vehicle_id, "description": meta.vehicle_description},
            "camera": {
                "model": meta.camera_model,
                "mount": meta.camera_mount,
                "width": meta.width,
                "height": meta.height,
                "clock_offset_s": meta.clock_offset_s,
            },
            "operator": meta.operator,
            "purpose": meta.purpose,
            "notice_version": meta.notice_version,
            "software": {"name": "streetveil", "version": __version__},
            "config_sha256": meta.config_sha256,
            "encryption": encryption,
        }
        # The journals exist before session.json, the file that makes the folder a session:
        # a crash at any point leaves either no session or a complete (empty) one.
        for name in (FRAMES_JSONL, TRACK_JSONL):
            atomic_write_bytes(path / name, b"", durable=True, mode=FILE_MODE)
        atomic_write_text(path / SESSION_JSON, json.dumps(doc, indent=2, ensure_ascii=False), mode=FILE_MODE)
        fsync_dir(path / FRAMES_DIR)
        try:
            os.rename(path, final)
        except OSError as e:
            shutil.rmtree(path, ignore_errors=True)
            raise SessionError(f"{final}: cannot create session directory: {e}") from e
        path = final
        fsync_dir(root)
        log.info("session %s opened at %s", sid, path)
        return cls(path, doc, cipher=cipher, next_seq=1, last_time=None, fsync_interval_s=fsync_interval_s)

    @classmethod
    def recover(
        cls,
        path: Path,
        *,
        recipient_private_key: Any | None = None,
        data_key: bytes | None = None,
        fsync_interval_s: float = 1.0,
    ) -> SessionWriter:
        """Repair a session left open by a crash and return a writer that continues it.

        Repairs: a torn last record is cut off; temp files are removed; frame files with no
        record (written just before the crash) are removed; records whose frame file is
        missing are dropped. To keep appending to an encrypted session the data key is
        needed (the vehicle does not keep it), so such sessions can only be closed: call
        ``close()`` on the result without adding frames.
        """
        path = Path(path)
        doc = _read_session_doc(path)
        stats = repair_session(path)
        records = [FrameRecord.from_json(o) for _, o in read_jsonl(path / FRAMES_JSONL)[0]]
        cipher = None
        if doc.get("encryption"):
            if data_key is None and recipient_private_key is not None:
                data_key = unwrap_key(read_key_file(path), recipient_private_key)
            cipher = FrameCipher(data_key) if data_key is not None else None
        seq = 1 + max((_seq_of(r.file) for r in records), default=0)
        counters = dict(doc.get("summary") or {})
        counters["frames"] = len(records)
        for k, v in stats.items():
            counters[k] = counters.get(k, 0) + v
        w = cls(
            path,
            doc,
            cipher=cipher,
            next_seq=seq,
            last_time=records[-1].time if records else None,
            fsync_interval_s=fsync_interval_s,
            counters=counters,
        )
        w._doc["recovered"] = True
        w._encrypted_without_key = bool(doc.get("encryption")) and cipher is None
        w._write_gpx()
        log.warning("session %s recovered after a crash: %s", doc.get("session_id"), stats)
        return w

    # -- writing

    @property
    def session_id(self) -> str:
        return str(self._doc["session_id"])

    @property
    def frame_count(self) -> int:
        return self.counters["frames"]

    @property
    def encrypted(self) -> bool:
        return self._doc.get("encryption") is not None

    def add_frame(
        self,
        jpeg: bytes,
        *,
        time: datetime,
        position_source: str,
        lat: float | None = None,
        lon: float | None = None,
        altitude: float | None = None,
        heading: float | None = None,
        speed: float | None = None,
        fix_quality: int | None = None,
        hdop: float | None = None,
        satellites: int | None = None,
        width: int | None = None,
        height: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> FrameRecord:
        """Store one encoded frame and append its record. Times must strictly increase."""
        self._check_open()
        if self._encrypted_without_key:
            raise SessionError(f"{self.path}: encrypted session recovered without its data key; close it")
        if self._last_time is not None and time <= self._last_time:
            raise SessionError(
                f"{self.path}: frame time {format_time(time)} is not after the previous frame "
                f"({format_time(self._last_time)})"
            )
        frame_id = f"{self._seq:06d}"
        name = f"{frame_id}.jpg.enc" if self._cipher else f"{frame_id}.jpg"
        rel = f"{FRAMES_DIR}/{name}"
        blob = self._cipher.seal(jpeg, name) if self._cipher else jpeg
        # The frame is durable before any record points at it.
        atomic_write_bytes(self.path / rel, blob, durable=True, mode=FILE_MODE)
        rec = FrameRecord(
            frame_id=frame_id,
            time=time,
            file=rel,
            sha256=hashlib.sha256(blob).hexdigest(),
            position_source=position_source,  # type: ignore[arg-type]
            lat=lat,
            lon=lon,
            altitude=altitude,
            heading=heading,
            speed=speed,
            fix_quality=fix_quality,
            hdop=hdop,
            satellites=satellites,
            width=width,
            height=height,
            extra=dict(extra or {}),
        )
        os.write(self._frames_fd, (json.dumps(rec.to_json(), separators=(",", ":")) + "\n").encode())
        self._seq += 1
        self._last_time = time
        self.counters["frames"] += 1
        self._pending.dirty = True
        self.sync_if_due()
        return rec

    def add_fix(self, fix: Fix) -> None:
        """Journal one GPS fix (every fix, kept frame or not)."""
        self._check_open()
        os.write(self._track_fd, (json.dumps(fix_to_json(fix), separators=(",", ":")) + "\n").encode())
        self.counters["fixes"] += 1
        self._pending.dirty = True
        self.sync_if_due()

    def count(self, name: str, n: int = 1) -> None:
        """Bump a summary counter (e.g. ``dropped_privacy_zone``); written at close."""
        self.counters[name] = self.counters.get(name, 0) + n

    def flush(self) -> None:
        """Make everything written so far durable. (track.gpx is derived from the journal at
        close and at recovery only: rewriting it here, from the whole journal, made each flush
        slower as the drive went on, in the capture loop's thread.)"""
        if self._closed:
            return
        os.fsync(self._frames_fd)
        os.fsync(self._track_fd)
        fsync_dir(self.path / FRAMES_DIR)
        fsync_dir(self.path)
        self._pending = _Pending()

    def sync_if_due(self) -> None:
        """Flush when something was written and ``fsync_interval_s`` has passed since the last
        flush. Writes call it; a loop that may go on writing nothing (the daemon while the
        camera is down) calls it too, so the last writes do not wait for the next one."""
        if self._pending.dirty and time.monotonic() - self._pending.last_sync >= self._fsync_interval:
            self.flush()

    def close(self, *, end: datetime | None = None) -> Path:
        """Flush, write track.gpx and the final session.json (status 'closed')."""
        if self._closed:
            return self.path
        self.flush()
        self._write_gpx()
        os.close(self._frames_fd)
        os.close(self._track_fd)
        self._closed = True
        self._doc["status"] = "closed"
        self._doc["closed"] = format_time(end or datetime.now(UTC))
        self._doc["summary"] = dict(sorted(self.counters.items()))
        atomic_write_text(self.path / SESSION_JSON, json.dumps(self._doc, indent=2, ensure_ascii=False),
                          mode=FILE_MODE)
        log.info("session %s closed: %s", self.session_id, self._doc["summary"])
        return self.path

    def __enter__(self) -> SessionWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals

    def _check_open(self) -> None:
        if self._closed:
            raise SessionError(f"{self.path}: session is closed")

    def _write_gpx(self) -> None:
        fixes = [fix_from_json(o) for _, o in read_jsonl(self.path / TRACK_JSONL)[0]]
        atomic_write_text(self.path / TRACK_GPX, fixes_to_gpx(fixes, self.session_id), mode=FILE_MODE)


def _seq_of(rel: str) -> int:
    m = re.match(r"^frames/(\d+)\.", rel)
    return int(m.group(1)) if m else 0


def _read_session_doc(path: Path) -> dict[str, Any]:
    f = Path(path) / SESSION_JSON
    try:
        doc: dict[str, Any] = json.loads(f.read_text())
    except FileNotFoundError as e:
        raise SessionError(f"{path}: not a session (no {SESSION_JSON})") from e
    except (OSError, ValueError) as e:
        raise SessionError(f"{f}: unreadable: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise SessionError(f"{f}: not a streetveil session file")
    if doc.get("format_version") != FORMAT_VERSION:
        raise SessionError(
            f"{f}: session format version {doc.get('format_version')!r}; this streetveil reads {FORMAT_VERSION}"
        )
    return doc


def repair_session(path: Path) -> dict[str, int]:
    """Bring a crashed session back to a consistent state; returns what was repaired."""
    path = Path(path)
    stats = {"recovered_torn_records": 0, "recovered_temp_files": 0, "recovered_orphan_frames": 0,
             "recovered_missing_frames": 0}
    for name in (FRAMES_JSONL, TRACK_JSONL):
        if _truncate_torn_tail(path / name):
            stats["recovered_torn_records"] += 1
    for d in (path, path / FRAMES_DIR):
        for p in d.glob(TMP_PREFIX + "*"):
            with contextlib.suppress(OSError):
                p.unlink()
                stats["recovered_temp_files"] += 1
    rows, problems, _ = read_jsonl(path / FRAMES_JSONL)
    if problems:
        raise SessionError(f"{path}: cannot recover, corrupt records: {problems[:3]}")
    deleted = Deletions.load(path).frame_ids
    keep = [o for _, o in rows if o.get("frame_id") in deleted or (path / o.get("file", "")).is_file()]
    if len(keep) != len(rows):
        stats["recovered_missing_frames"] = len(rows) - len(keep)
        atomic_write_text(path / FRAMES_JSONL, "".join(json.dumps(o, separators=(",", ":")) + "\n" for o in keep),
                          mode=FILE_MODE)
    referenced = {o["file"] for o in keep}
    for p in sorted((path / FRAMES_DIR).glob("*")):
        if f"{FRAMES_DIR}/{p.name}" not in referenced and p.is_file():
            p.unlink()
            stats["recovered_orphan_frames"] += 1
    fsync_dir(path / FRAMES_DIR)
    return stats


# ---------------------------------------------------------------------------- deletions


@dataclass(frozen=True, slots=True)
class Deletions:
    """What was deliberately deleted from a session (retention purge, takedown, leak response).

    ``deletions.jsonl`` is append-only; one line per deleted frame file
    (``"action": "delete-frame"``) or for the destroyed wrapped key (``"shred-key"``, which
    makes every frame of an encrypted session unreadable). Readers skip deleted frames and the
    checker does not count their missing files as damage.
    """

    frame_ids: frozenset[str]
    key_shredded: bool

    @classmethod
    def load(cls, path: Path) -> Deletions:
        rows, _, _ = read_jsonl(Path(path) / DELETIONS_JSONL)
        ids = frozenset(o["frame_id"] for _, o in rows if o.get("action") == "delete-frame")
        return cls(ids, any(o.get("action") == "shred-key" for _, o in rows))


def delete_frames(
    path: Path, records: list[FrameRecord], *, reason: str, ref: str | None = None,
    when: datetime | None = None,
) -> list[dict[str, Any]]:
    """Delete the raw files of ``records`` and journal each deletion (durably, before unlinking).

    Returns the journal entries written. Files already gone are journalled too, so the record
    says what was meant to be removed.
    """
    path = Path(path)
    stamp = format_time(when or datetime.now(UTC))
    entries = [
        {"time": stamp, "action": "delete-frame", "frame_id": r.frame_id, "file": r.file,
         "sha256": r.sha256, "reason": reason, "ref": ref}
        for r in records
    ]
    _append_durable(path / DELETIONS_JSONL, entries)
    for r in records:
        with contextlib.suppress(FileNotFoundError):
            (path / r.file).unlink()
    fsync_dir(path / FRAMES_DIR)
    return entries


def shred_session_key(path: Path, *, reason: str, ref: str | None = None,
                      when: datetime | None = None) -> dict[str, Any]:
    """Crypto-shred an encrypted session: destroy the only wrapped copy of its data key."""
    path = Path(path)
    key = path / KEY_FILE
    if not key.exists():
        raise SessionError(f"{path}: no {KEY_FILE} to shred (not encrypted, or already shredded)")
    entry = {"time": format_time(when or datetime.now(UTC)), "action": "shred-key", "file": KEY_FILE,
             "sha256": hashlib.sha256(key.read_bytes()).hexdigest(), "reason": reason, "ref": ref}
    _append_durable(path / DELETIONS_JSONL, [entry])
    # Overwrite before unlinking: on plain disks this also removes the bytes; on SSDs/COW
    # filesystems it may not, which is why frames are never readable without the cluster key.
    size = key.stat().st_size
    with open(key, "r+b") as f:
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())
    key.unlink()
    fsync_dir(path)
    return entry


def _append_durable(file: Path, entries: list[dict[str, Any]]) -> None:
    with open(file, "a", encoding="utf-8") as f:
        for e in entries:
            f.write(json.dumps(e, separators=(",", ":")) + "\n")
        f.flush()
        os.fsync(f.fileno())


# ---------------------------------------------------------------------------- reader


class SessionReader:
    """Reads a session; decrypts frames transparently when given the recipient private key."""

    def __init__(self, path: Path, *, private_key: Any | None = None) -> None:
        self.path = Path(path)
        self.doc = _read_session_doc(self.path)
        self._private_key = private_key
        self._cipher: FrameCipher | None = None
        self.torn_tail = False

    @property
    def session_id(self) -> str:
        return str(self.doc["session_id"])

    @property
    def encrypted(self) -> bool:
        return self.doc.get("encryption") is not None

    def frames(self) -> list[FrameRecord]:
        """All frame records; a torn last line is skipped (see ``torn_tail``)."""
        rows, problems, torn = read_jsonl(self.path / FRAMES_JSONL)
        self.torn_tail = torn
        if problems:
            raise SessionError(f"{self.path / FRAMES_JSONL}: {problems[0]}")
        out = []
        for line, obj in rows:
            try:
                out.append(FrameRecord.from_json(obj))
            except (TypeError, ValueError, KeyError) as e:
                raise SessionError(f"{self.path / FRAMES_JSONL} line {line}: invalid record: {e}") from e
        return out

    def deletions(self) -> Deletions:
        """Frames deliberately deleted (retention, takedown); their files are gone on purpose."""
        return Deletions.load(self.path)

    def fixes(self) -> list[Fix]:
        rows, _, _ = read_jsonl(self.path / TRACK_JSONL)
        if rows:
            return [fix_from_json(o) for _, o in rows]
        gpx_path = self.path / TRACK_GPX
        if not gpx_path.exists():
            return []
        with open(gpx_path) as f:
            gpx = gpxpy.parse(f)
        out = []
        for trk in gpx.tracks:
            for seg in trk.segments:
                for p in seg.points:
                    t = gpx_time(p.time)
                    if t is not None:
                        out.append(Fix(time=t, lat=p.latitude, lon=p.longitude, alt=p.elevation))
        return out

    def read_raw(self, rec: FrameRecord) -> bytes:
        """The stored bytes of a frame (ciphertext when encrypted)."""
        try:
            return (self.path / rec.file).read_bytes()
        except OSError as e:
            raise SessionError(f"{self.path / rec.file}: cannot read frame: {e}") from e

    def decode(self, rec: FrameRecord, blob: bytes) -> bytes:
        """Turn stored bytes into JPEG bytes (decrypting when the session is encrypted)."""
        if not self.encrypted:
            return blob
        return self._frame_cipher().open(blob, Path(rec.file).name)

    def read_frame(self, rec: FrameRecord) -> bytes:
        """The JPEG bytes of a frame."""
        return self.decode(rec, self.read_raw(rec))

    def _frame_cipher(self) -> FrameCipher:
        if self._cipher is None:
            if self._private_key is None:
                from capture.errors import DecryptionError

                raise DecryptionError(
                    f"{self.path}: session is encrypted; give the cluster's private key "
                    "(config [decrypt] private_key or STREETVEIL_NIGHTLY__DECRYPT__PRIVATE_KEY)"
                )
            self._cipher = FrameCipher(unwrap_key(read_key_file(self.path), self._private_key))
        return self._cipher


# ---------------------------------------------------------------------------- checker


@dataclass(frozen=True, slots=True)
class SessionSummary:
    session_id: str
    status: str
    frames: int
    first: datetime | None
    last: datetime | None
    distance_m: float
    frames_without_position: int
    fixes: int
    encrypted: bool
    torn_tail: bool
    counters: dict[str, Any]
    deleted_frames: int = 0
    key_shredded: bool = False

    @property
    def duration_s(self) -> float:
        return (self.last - self.first).total_seconds() if self.first and self.last else 0.0


def check_session(path: Path, *, verify_hashes: bool = True) -> SessionSummary:
    """Validate a session; raise SessionInvalid listing every problem, else return a summary.

    Checks: session.json and each record against the schemas; frame ids unique; each frame
    file exists and matches its sha256; capture times strictly increase; positions are valid
    WGS84. A torn last line (power cut) is reported in the summary, not a problem.
    """
    path = Path(path)
    problems: list[str] = []
    try:
        doc = _read_session_doc(path)
    except SessionError as e:
        raise SessionInvalid(str(path), [str(e)]) from e
    sv = _validator("session")
    for err in sorted(sv.iter_errors(doc), key=lambda e: list(e.path)):
        where = ".".join(str(p) for p in err.path) or "(root)"
        problems.append(f"{SESSION_JSON}: {where}: {err.message}")
    rows, jproblems, torn = read_jsonl(path / FRAMES_JSONL)
    problems += jproblems
    fv = _validator("frame")
    deleted = Deletions.load(path)
    seen: set[str] = set()
    prev_time: datetime | None = None
    positions: list[tuple[float, float]] = []
    without_pos = 0
    times: list[datetime] = []
    for line, obj in rows:
        where = f"{FRAMES_JSONL} line {line}"
        errs = list(fv.iter_errors(obj))
        if errs:
            problems += [f"{where}: {'.'.join(map(str, e.path)) or '(record)'}: {e.message}" for e in errs[:3]]
            continue
        fid = obj["frame_id"]
        if fid in seen:
            problems.append(f"{where}: duplicate frame_id {fid}")
        seen.add(fid)
        try:
            t = parse_time(obj["time"])
        except ValueError as e:
            problems.append(f"{where}: bad time: {e}")
            continue
        if prev_time is not None and t <= prev_time:
            problems.append(
                f"{where}: frame {fid} time {obj['time']} does not increase (previous {format_time(prev_time)})"
            )
        prev_time = t
        times.append(t)
        if obj["position_source"] == "none":
            without_pos += 1
        elif valid_wgs84(obj["lat"], obj["lon"]):
            positions.append((obj["lat"], obj["lon"]))
        else:
            problems.append(f"{where}: frame {fid} position is not valid WGS84")
        fpath = path / obj["file"]
        if fid in deleted.frame_ids:
            continue
        if not fpath.is_file():
            problems.append(f"{where}: frame {fid}: file {obj['file']} is missing")
        elif verify_hashes:
            h = hashlib.sha256(fpath.read_bytes()).hexdigest()
            if h != obj["sha256"]:
                problems.append(f"{where}: frame {fid}: file {obj['file']} does not match its sha256")
    if doc.get("encryption") and not (path / KEY_FILE).exists() and not deleted.key_shredded:
        problems.append(f"{KEY_FILE}: missing (encrypted session without its wrapped key: unreadable)")
    if problems:
        raise SessionInvalid(str(path), problems)
    fix_rows, _, _ = read_jsonl(path / TRACK_JSONL)
    track = [(o["lat"], o["lon"]) for _, o in fix_rows if valid_wgs84(o.get("lat"), o.get("lon"))]
    return SessionSummary(
        session_id=doc["session_id"],
        status=doc["status"],
        frames=len(rows),
        first=times[0] if times else None,
        last=times[-1] if times else None,
        distance_m=path_length_m(track if len(track) >= 2 else positions),
        frames_without_position=without_pos,
        fixes=len(fix_rows),
        encrypted=doc.get("encryption") is not None,
        torn_tail=torn,
        counters=dict(doc.get("summary") or {}),
        deleted_frames=len(deleted.frame_ids),
        key_shredded=deleted.key_shredded,
    )


def iter_sessions(root: Path) -> Iterator[Path]:
    """Session directories directly below ``root`` (or ``root`` itself if it is one)."""
    root = Path(root)
    if (root / SESSION_JSON).is_file():
        yield root
        return
    for p in sorted(root.iterdir()):
        # Temporary folders are sessions under construction (or left by a crash during it).
        if not p.name.startswith(TMP_PREFIX) and (p / SESSION_JSON).is_file():
            yield p
