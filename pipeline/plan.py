"""The work plan of one session: which frames to redact, in which batches, which to leave out
and why, and the hashes that key every output.

Pure planning over frame records; the only I/O is reading the session's records and
deletions journal through ``SessionSource`` (by the caller).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from capture.types import FrameRecord
from pipeline.store import SessionSource
from redact.config import REFINE_PX

# Reasons a frame is left out of a publication on purpose (counted, never an error).
EXCLUDED_ZONE = "exclusion-zone"
EXCLUDED_NO_POSITION = "no-position"
EXCLUDED_DELETED = "raw-deleted"
EXCLUDED_REQUEST = "removed-by-request"

# Fields that describe the machine, not the result: left out of the output key.
_MACHINE_FIELDS = frozenset({"threads", "weights", "plate_weights"})


def _strip(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in _MACHINE_FIELDS and not isinstance(v, Path)}
    if isinstance(obj, list | tuple):
        return [_strip(v) for v in obj]
    return obj


def redact_key(cfg: BaseModel) -> str:
    """sha256 of a redaction config without machine-specific fields: absolute weight paths
    (the weights themselves are covered by the model hash) and thread counts; and without
    ``plate_zoom_out`` and ``plate_merge`` where they change nothing (off / nms, or not the
    streetveil plate head), ``refine_px`` where it is the 40 px every close-up had before
    it was a setting (or there is no close-up), and ``plate_verify_bypass`` when unset or
    verification is off, so those configs keep the keys, caches and unblur requests they had
    before the fields existed."""
    d = cfg.model_dump(mode="python")
    det = getattr(cfg, "detector", None)
    if det is not None and (not det.refine or det.refine_px == REFINE_PX):
        d["detector"].pop("refine_px", None)
    if det is not None and not det.resolved_plate_zoom_out():
        d["detector"].pop("plate_zoom_out", None)
    if det is not None and det.resolved_plate_merge() == "nms":
        d["detector"].pop("plate_merge", None)
    # Unset (calibrated: in the verifier file's hash) or without verification, it changes nothing.
    if det is not None and (det.plate_verify_bypass is None or det.plate_verify == "off"):
        d["detector"].pop("plate_verify_bypass", None)
    blob = json.dumps(_strip(d), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


# (x1, y1, x2, y2, detect key): an unblur area and the detections it was judged against.
UnblurArea = tuple[float, float, float, float, str]


@dataclass(frozen=True, slots=True)
class Override:
    """What residents' requests (governance, issue 7) changed about one frame. Read from the
    session's audit chain: records ``{"type": "frame-override", "frame_id", "action":
    "remove" | "blur" | "unblur", "boxes": [[x1, y1, x2, y2, class_index], ...]}`` (blur) or
    ``"areas": [[x1, y1, x2, y2], ...], "detect_key"`` (unblur: plate redactions lying wholly
    inside an area are not rendered, see ``redact.ops.redacted_within``, as long as the frame's
    detections are those the operator judged: each area carries that detect key)."""

    remove: bool = False
    boxes: tuple[tuple[float, float, float, float, int], ...] = ()
    unblur: tuple[UnblurArea, ...] = ()


def overrides_from(records: Iterable[Mapping[str, Any]]) -> dict[str, Override]:
    out: dict[str, Override] = {}
    for r in records:
        if r.get("type") != "frame-override" or not isinstance(r.get("frame_id"), str):
            continue
        fid = r["frame_id"]
        cur = out.get(fid, Override())
        if r.get("action") == "remove":
            cur = replace(cur, remove=True)
        elif r.get("action") == "blur":
            boxes = tuple((float(b[0]), float(b[1]), float(b[2]), float(b[3]), int(b[4])) for b in r.get("boxes", []))
            cur = replace(cur, boxes=cur.boxes + boxes)
        elif r.get("action") == "unblur":
            key = str(r.get("detect_key") or "")  # none: never matches, the frame stays blurred
            areas = tuple((float(b[0]), float(b[1]), float(b[2]), float(b[3]), key) for b in r.get("areas", []))
            cur = replace(cur, unblur=cur.unblur + areas)
        out[fid] = cur
    return out


@dataclass(frozen=True, slots=True)
class SessionPlan:
    """Which frames of a session to detect, to render and publish, and to leave out.

    The carry neighbourhood is the whole capture sequence (``frames``), not only the frames to
    publish: a frame left out (exclusion zone, no position, removed by request) is still
    detected, so the plate seen in it is blurred in the published frame next to it, which is
    where it is most readable. It is never rendered or published. A frame whose raw file was
    deleted on purpose cannot be detected: it takes part only with detections kept from before
    (the work cache), never by reading it, and never counts as failed.
    """

    source: SessionSource
    session_id: str
    doc: Mapping[str, Any]  # session.json
    frames: tuple[FrameRecord, ...]  # every record, capture order: the carry neighbourhood
    included: tuple[FrameRecord, ...]  # to redact and publish, capture order
    excluded: tuple[tuple[FrameRecord, str], ...]  # left out on purpose, with the reason
    batches: tuple[tuple[int, int], ...]  # [start, end) into ``frames``
    extra_boxes: Mapping[str, tuple[tuple[float, float, float, float, int], ...]] = field(default_factory=dict)
    unblur_areas: Mapping[str, tuple[UnblurArea, ...]] = field(default_factory=dict)
    # Ids of ``included``, built once: ``batch_included`` runs for every batch.
    publish_ids: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "publish_ids", frozenset(r.frame_id for r in self.included))

    @property
    def deleted_ids(self) -> frozenset[str]:
        """Frames whose raw file was deleted on purpose (detections only from earlier results)."""
        return frozenset(r.frame_id for r, why in self.excluded if why == EXCLUDED_DELETED)

    def batch_frames(self, b: int) -> tuple[FrameRecord, ...]:
        """The frames of batch ``b`` to detect: all of them (left-out ones as context)."""
        s, e = self.batches[b]
        return self.frames[s:e]

    def batch_included(self, b: int) -> tuple[FrameRecord, ...]:
        """The frames of batch ``b`` to render and publish."""
        return tuple(r for r in self.batch_frames(b) if r.frame_id in self.publish_ids)

    def window(self, b: int, k: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """Frame ids of batch ``b`` plus ``k`` on each side, and the batches that cover them."""
        s, e = self.batches[b]
        return self._span(s, e, k)

    def frame_window(self, frame_id: str, k: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """Frame ids of one frame's neighbourhood (``k`` on each side) and the batches covering it."""
        i = next(j for j, r in enumerate(self.frames) if r.frame_id == frame_id)
        return self._span(i, i + 1, k)

    def _span(self, s: int, e: int, k: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
        lo, hi = max(0, s - k), min(len(self.frames), e + k)
        ids = tuple(r.frame_id for r in self.frames[lo:hi])
        need = tuple(i for i, (bs, be) in enumerate(self.batches) if bs < hi and be > lo)
        return ids, need


def make_batches(n: int, size: int) -> tuple[tuple[int, int], ...]:
    if size < 1:
        raise ValueError("batch size must be >= 1")
    return tuple((s, min(n, s + size)) for s in range(0, n, size))


def plan_session(
    source: SessionSource,
    *,
    batch_size: int,
    excluded_at: Callable[[float, float], bool] | None,
    overrides: Mapping[str, Override] | None = None,
) -> SessionPlan:
    """Split a session's frames into included frames and excluded ones; batch the sequence.

    Left out, in this order of precedence: frames whose raw file was deleted on purpose
    (retention, requests; the journal in the session); frames removed by a request; with
    exclusion zones configured, frames inside one and frames without a position (they cannot
    be shown to lie outside, so publishing them would not fail closed). Batches cover every
    frame (see ``SessionPlan``).
    """
    reader = source.reader(fresh=True)
    frames = tuple(reader.frames())
    deleted = reader.deletions()
    overrides = overrides or {}
    included: list[FrameRecord] = []
    excluded: list[tuple[FrameRecord, str]] = []
    for rec in frames:
        why = exclusion(rec, overrides.get(rec.frame_id), excluded_at,
                        deleted=rec.frame_id in deleted.frame_ids or (deleted.key_shredded and reader.encrypted))
        if why is None:
            included.append(rec)
        else:
            excluded.append((rec, why))
    extra = {fid: ov.boxes for fid, ov in overrides.items() if ov.boxes}
    return SessionPlan(
        source=source,
        session_id=reader.session_id,
        doc=dict(reader.doc),
        frames=frames,
        included=tuple(included),
        excluded=tuple(excluded),
        batches=make_batches(len(frames), batch_size),
        extra_boxes=extra,
        unblur_areas={fid: ov.unblur for fid, ov in overrides.items() if ov.unblur},
    )


def exclusion(rec: FrameRecord, override: Override | None, excluded_at: Callable[[float, float], bool] | None,
              *, deleted: bool = False) -> str | None:
    """Why ``rec`` is left out of the publication (see ``plan_session``), or None. Pure."""
    if deleted:
        return EXCLUDED_DELETED
    if override is not None and override.remove:
        return EXCLUDED_REQUEST
    if excluded_at is not None and (rec.lat is None or rec.lon is None):
        return EXCLUDED_NO_POSITION
    if excluded_at is not None and rec.lat is not None and rec.lon is not None and excluded_at(rec.lat, rec.lon):
        return EXCLUDED_ZONE
    return None
