"""Retention (guidebook 4.8): delete raw frames once their redacted publication is verified.

``purge`` walks a sessions root. A session's raw frames are deleted only when all of these
hold: the session ended longer ago than the retention period; its publication exists and
``audit verify`` passes on it; and every raw frame still on disk is accounted for by that
publication (its latest audit record is "ok" or "excluded" for the same raw sha256, so frames
that failed or were added later are kept for the next run).

What is deleted, through ``capture.session.delete_frames`` / ``shred_session_key`` (which
journal each deletion in the session's ``deletions.jsonl`` before unlinking): the raw frame
files, and for encrypted sessions also ``session.key``. Destroying the only wrapped copy of the
data key already makes every frame unreadable, including copies in backups
(crypto-shredding); the frame files are deleted as well to free the disk. ``frames.jsonl``,
``track.*`` and ``session.json`` stay: they hold no pixels, and they are what lets an operator
answer "which frames, when, where" later (disclosure requests, leak reports).

Raw frames that a queued unblur request needs are held back: an unblur re-renders the frame
from raw and is rejected once the raw frame is gone, so those frames (and, for an encrypted
session, its key, which keeps every frame of the session readable in backups meanwhile) wait
until the request is applied or rejected, for at most ``hold`` after it was filed; the
session's other frames are deleted as usual. Extra blur and take-down requests need no raw
frame. The request queue must verify (its hash chain and the index's head), else nothing is
purged: a damaged queue cannot say which frames are held.

Each purge appends a ``purge`` record (what, when, who, the deleted files' sha256, the frames
held back) to the session's published audit chain and the index.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from capture.crypto import KEY_FILE
from capture.types import FrameRecord, format_time, parse_time
from pipeline import audit
from pipeline.errors import ConfigError
from pipeline.publish import append_session_records
from pipeline.verify import verify_tree

log = logging.getLogger(__name__)

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str, option: str = "--raw-older-than") -> timedelta:
    """``7d``, ``36h``, ``2w``, ``90m``, ``30s`` → timedelta."""
    m = _AGE.match(text)
    if not m:
        raise ConfigError(f"{option} {text!r}: expected a number and a unit (s, m, h, d, w), e.g. 7d")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])


@dataclass
class PurgeOutcome:
    session_id: str
    path: str
    action: str  # purged | would-purge | kept | error (the session cannot be read)
    reason: str = ""
    frames: int = 0
    bytes: int = 0
    crypto_shredded: bool = False
    held: int = 0  # raw frames kept for queued unblur requests (see module doc)
    released: list[str] = field(default_factory=list)  # requests whose hold ran out: frames purged
    record: dict[str, Any] = field(default_factory=dict)


def _session_end(doc: dict[str, Any], frames: list[FrameRecord]) -> datetime | None:
    for t in (doc.get("closed"),):
        if t:
            return parse_time(t)
    if frames:
        return frames[-1].time
    return parse_time(doc["created"]) if doc.get("created") else None


# How long a queued unblur request holds its raw frame past the retention period by default.
UNBLUR_HOLD = timedelta(days=14)


_Frames = dict[tuple[str, str], list[str]]


def _held_by_requests(publish_dir: Path, now: datetime, hold: timedelta) -> tuple[_Frames, _Frames]:
    """(session id, frame id) -> ids of the queued unblur requests that still hold its raw
    frame (filed less than ``hold`` ago), and likewise of those filed earlier (no longer)."""
    from pipeline.publish import publish_lock
    from pipeline.requests import pending_requests, queue_path, queue_records, verify_governance

    with publish_lock(publish_dir, "governance"):  # a consistent snapshot of the queue
        problems = verify_governance(publish_dir)
        if problems:
            raise ConfigError(f"{queue_path(publish_dir)}: the request queue does not verify ({problems[0]}): "
                              "nothing purged, since it says which raw frames queued requests still need; "
                              "see `streetveil audit verify`")
        pending = pending_requests(queue_records(publish_dir))
    held: _Frames = {}
    expired: _Frames = {}
    for q in pending:
        if q.get("action") != "unblur":
            continue
        filed = parse_time(q["time"]) if q.get("time") else None
        into = expired if filed is not None and now - filed >= hold else held
        into.setdefault((str(q.get("session_id")), str(q.get("frame_id"))), []).append(str(q["request_id"]))
    return held, expired


def purge(
    sessions_root: Path,
    publish_dir: Path,
    *,
    older_than: timedelta,
    dry_run: bool = False,
    now: datetime | None = None,
    unblur_hold: timedelta = UNBLUR_HOLD,
) -> list[PurgeOutcome]:
    """Delete raw frames of sessions whose verified publication covers them (see module doc)."""
    from capture.errors import CaptureError
    from capture.session import SessionReader, delete_frames, iter_sessions, shred_session_key

    now = now or datetime.now(UTC)
    sessions_root, publish_dir = Path(sessions_root), Path(publish_dir)
    if not sessions_root.is_dir():
        raise ConfigError(f"{sessions_root}: sessions folder not found")
    if not publish_dir.is_dir():
        raise ConfigError(f"{publish_dir}: publish folder not found")
    out: list[PurgeOutcome] = []
    held_for, expired = _held_by_requests(publish_dir, now, unblur_hold)
    for path in iter_sessions(sessions_root):
        try:
            reader = SessionReader(path)
            sid = reader.session_id
            frames = reader.frames()
            deleted = reader.deletions()
        except CaptureError as e:  # one damaged session must not keep the others' raw frames
            out.append(PurgeOutcome(path.name, str(path), "error", reason=f"cannot read session: {e}"))
            continue
        oc = PurgeOutcome(sid, str(path), "kept")
        out.append(oc)
        remaining = [r for r in frames if r.frame_id not in deleted.frame_ids and (path / r.file).exists()]
        key_present = (path / KEY_FILE).exists()
        if not remaining and not key_present:
            oc.reason = "nothing left to delete"
            continue
        end = _session_end(reader.doc, frames)
        if end is None or now - end < older_than:
            oc.reason = f"ended {format_time(end) if end else 'at an unknown time'}: within the retention period"
            continue
        pub = publish_dir / sid
        if not (pub / "manifest.json").exists():
            oc.reason = f"not published in {publish_dir}"
            continue
        report = verify_tree(pub)
        if not report.ok:
            oc.reason = f"publication does not verify: {report.problems[0]}"
            continue
        latest = audit.latest_frame_records(audit.read_records(pub / audit.AUDIT_FILE))
        uncovered = [r for r in remaining
                     if latest.get(r.frame_id, {}).get("status") not in ("ok", "excluded")
                     or latest[r.frame_id].get("raw_sha256") != r.sha256]
        if uncovered:
            oc.reason = (f"{len(uncovered)} raw frame(s) not covered by the publication (failed or new, "
                         f"e.g. {uncovered[0].frame_id}): run the job again first")
            continue
        held = [r for r in remaining if (sid, r.frame_id) in held_for]
        if held:
            ids = sorted({i for r in held for i in held_for[(sid, r.frame_id)]})
            oc.held = len(held)
            oc.reason = (f"{len(held)} raw frame(s) held for queued unblur request(s) {', '.join(ids)}: "
                         f"streetveil request apply {publish_dir / sid}, then purge again")
            remaining = [r for r in remaining if (sid, r.frame_id) not in held_for]
            if not remaining:
                continue
        oc.released = sorted({i for r in remaining for i in expired.get((sid, r.frame_id), [])})
        oc.frames = len(remaining)
        oc.bytes = sum((path / r.file).stat().st_size for r in remaining)
        # The held frames still need the key to be read.
        oc.crypto_shredded = reader.encrypted and key_present and not held
        if dry_run:
            oc.action = "would-purge"
            continue
        ref = f"purge-{now:%Y%m%dT%H%M%SZ}"
        key_entry = shred_session_key(path, reason="retention", ref=ref) if oc.crypto_shredded else None
        delete_frames(path, remaining, reason="retention", ref=ref)
        oc.action = "purged"
        oc.record = {
            "type": "purge", "time": audit.now_utc(), "who": audit.who(), "session_id": sid,
            "reason": "retention", "ref": ref, "raw_older_than_s": older_than.total_seconds(),
            "session_end": format_time(end), "frames_deleted": oc.frames, "bytes_deleted": oc.bytes,
            "frames": [{"frame_id": r.frame_id, "sha256": r.sha256} for r in remaining],
            "crypto_shredded": oc.crypto_shredded,
            "key_sha256": key_entry["sha256"] if key_entry else None,
            "note": ("session.key destroyed: the data key existed only wrapped in it, so every frame of "
                     "this session is unreadable for good, backups included (crypto-shredding); frame "
                     "files deleted too" if oc.crypto_shredded else "raw frame files deleted")
                    + "; frames.jsonl, track and session.json kept (no pixels)"
                    + (f"; {len(held)} raw frame(s) held for queued unblur requests until they are applied"
                       + (", session.key with them" if reader.encrypted and key_present else "")
                       if held else ""),
            **({"held_for_requests": [{"frame_id": r.frame_id, "request_ids": held_for[(sid, r.frame_id)]}
                                      for r in held]} if held else {}),
            **({"hold_expired_for_requests": oc.released} if oc.released else {}),
        }
        append_session_records(publish_dir, sid, [oc.record])
        log.info("purged %s: %d frames, %d bytes", sid, oc.frames, oc.bytes)
    return out
