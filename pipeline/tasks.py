"""The per-frame work, as two batch functions that Dask (or the serial path) runs.

Phase 1, ``detect_batch``: read → verify sha256 → decrypt → decode → detect, for a run of
consecutive frames of the capture sequence, including frames left out of the publication (they
are the carry context of their published neighbours). Phase 2, ``render_batch``: for the
frames of the batch to publish, add the boxes carried from the ±k neighbouring frames of the
sequence (their detections come from phase-1 results, passed in by the scheduler), then read →
verify → decrypt → decode again → render with EXIF from the frame record → write atomically
into the work area.

Why two phases and not overlapping batches: temporal carry needs the detections of k frames
beyond each end of a batch. Overlapping batches would detect those 2k frames twice (25 % more
detection at batch 8, k 1); here every frame is detected once, a render task waits only for
the detection of its neighbouring batches, and re-reading and decoding a frame costs a few
milliseconds against about 200 ms of detection. Detections are tiny, so passing them between
workers is cheap, and they are cached per frame in the work area, so a rerun skips detection.

Arguments are picklable values (paths/URLs, frozen records, the config); each worker process
builds its ``Redactor`` once (``get_redactor``), with the runtime's threads set to the
worker's threads, and runs one inference at a time (``_detect_lock``) while the worker's other
threads read, decode, blur and encode.

Per-frame failures are data (``status "failed"`` with the stage and the error), never
exceptions; only a model that cannot load (a setup error for the whole job) raises.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from capture.types import FrameRecord, format_time
from pipeline.carry import carry_boxes, neighbour_order
from pipeline.plan import UnblurArea
from pipeline.store import SessionSource, Store

log = logging.getLogger(__name__)

WORK_VERSION = 1


# ---------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """How every worker builds its detector: the redaction config (paths made absolute by
    the loader) and the thread count (0 = the worker's threads)."""

    redact: Any  # redact.config.RedactConfig (kept Any so this module imports no redact code)
    threads: int = 0
    # sha256 of the config without machine-specific fields (see pipeline.plan.redact_key)
    config_key: str = ""

    def cache_key(self) -> tuple[str, int]:
        return (self.config_key, self.threads)


@dataclass(frozen=True, slots=True)
class CarrySpec:
    frames: int = 1
    expand: float = 1.25

    def token(self) -> str:
        return f"carry{self.frames}x{self.expand:g}"


@dataclass(frozen=True, slots=True)
class TaskContext:
    """Everything a batch function needs besides its frames; picklable."""

    source: SessionSource
    work: Store  # PUBLISH_DIR/.work/<session-id>
    model: ModelSpec
    model_hash: str
    carry: CarrySpec = CarrySpec()
    # frame id -> extra boxes ((x1, y1, x2, y2, class index), ...) from requests (issue 7)
    extra_boxes: Mapping[str, tuple[tuple[float, float, float, float, int], ...]] = field(default_factory=dict)
    # frame id -> areas where a request judged the plate redactions false (pipeline.plan.Override)
    unblur_areas: Mapping[str, tuple[UnblurArea, ...]] = field(default_factory=dict)
    # Frames whose raw file was deleted on purpose: never read; their detections come only
    # from earlier results: the work cache, else ``stored`` (the detections kept with the
    # publication, pipeline.qadata), else they are "unavailable" (never "failed").
    deleted: frozenset[str] = frozenset()
    stored: Mapping[str, DetResult] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra_boxes", dict(self.extra_boxes))
        object.__setattr__(self, "unblur_areas", dict(self.unblur_areas))
        object.__setattr__(self, "deleted", frozenset(self.deleted))
        object.__setattr__(self, "stored", dict(self.stored))


# A frame's detections cannot be had: its raw file was deleted on purpose and no earlier result
# is kept. Not a failure: the frame is not published; its neighbours carry nothing from it.
UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class DetResult:
    frame_id: str
    key: str
    status: str  # ok | failed | unavailable
    error: str | None = None
    xyxy: tuple[tuple[float, float, float, float], ...] = ()
    score: tuple[float, ...] = ()
    cls: tuple[int, ...] = ()
    width: int | None = None
    height: int | None = None
    # Plate candidates a verifier vetoed that the detector alone would have redacted
    # ((x1, y1, x2, y2, class, score), for QA); None: not recorded (cached before it was kept).
    vetoed: tuple[tuple[float, float, float, float, int, float], ...] | None = None
    cached: bool = False

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (np.array(self.xyxy, np.float32).reshape(-1, 4), np.array(self.score, np.float32),
                np.array(self.cls, np.uint8))

    def to_json(self) -> dict[str, Any]:
        return {"v": WORK_VERSION, "frame_id": self.frame_id, "key": self.key, "status": self.status,
                "error": self.error, "xyxy": [list(b) for b in self.xyxy], "score": list(self.score),
                "cls": list(self.cls), "width": self.width, "height": self.height,
                "vetoed": None if self.vetoed is None else [list(b) for b in self.vetoed]}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> DetResult:
        return cls(frame_id=d["frame_id"], key=d["key"], status=d["status"], error=d.get("error"),
                   xyxy=tuple(tuple(float(v) for v in b) for b in d["xyxy"]),  # type: ignore[misc]
                   score=tuple(float(s) for s in d["score"]), cls=tuple(int(c) for c in d["cls"]),
                   width=d.get("width"), height=d.get("height"), vetoed=vetoed_boxes(d.get("vetoed")), cached=True)


def vetoed_boxes(raw: Any) -> tuple[tuple[float, float, float, float, int, float], ...] | None:
    """``DetResult.vetoed`` from its JSON form (None stays None: not recorded)."""
    if raw is None:
        return None
    return tuple((float(b[0]), float(b[1]), float(b[2]), float(b[3]), int(b[4]), float(b[5])) for b in raw)


@dataclass(frozen=True, slots=True)
class FrameResult:
    """The outcome of one frame; ``image`` is relative to the work area when status is ok."""

    frame_id: str
    key: str
    status: str  # ok | failed
    error: str | None = None
    image: str | None = None
    sha256: str | None = None
    size: int = 0
    faces: int = 0  # redacted boxes per class, carried boxes included
    plates: int = 0
    faces_carried: int = 0
    plates_carried: int = 0
    extra: int = 0  # boxes added by requests
    # Indices into ``boxes`` of the plate boxes unblur requests left out: not rendered and not
    # in the counts above, but still the frame's detections (QA, and carry once raw is gone).
    unblurred: tuple[int, ...] = ()
    width: int | None = None
    height: int | None = None
    # What was redacted, for QA (pipeline.qadata): (x1, y1, x2, y2, class, score, carried 0/1),
    # own detections first, then the carried boxes; and the key of the frame's own detections.
    boxes: tuple[tuple[float, float, float, float, int, float, int], ...] = ()
    det_key: str = ""
    vetoed: tuple[tuple[float, float, float, float, int, float], ...] | None = None  # DetResult.vetoed
    detected_cached: bool = False
    cached: bool = False

    def to_json(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__slots__ if k not in ("cached", "detected_cached")}
        d["boxes"] = [list(b) for b in self.boxes]
        d["vetoed"] = None if self.vetoed is None else [list(b) for b in self.vetoed]
        d["unblurred"] = list(self.unblurred)
        d["v"] = WORK_VERSION
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> FrameResult:
        keys = {k: d[k] for k in cls.__slots__ if k in d}
        keys["boxes"] = tuple((float(b[0]), float(b[1]), float(b[2]), float(b[3]), int(b[4]), float(b[5]), int(b[6]))
                              for b in d.get("boxes", ()))
        keys["unblurred"] = tuple(int(i) for i in d.get("unblurred", ()))
        keys["vetoed"] = vetoed_boxes(d.get("vetoed"))
        return cls(**keys, cached=True, detected_cached=True)


def _box_rows(xy: np.ndarray, sc: np.ndarray, cl: np.ndarray,
              carried: int) -> list[tuple[float, float, float, float, int, float, int]]:
    return [(float(b[0]), float(b[1]), float(b[2]), float(b[3]), int(c), float(s), carried)
            for b, s, c in zip(xy, sc, cl, strict=True)]


class FrameFailure(Exception):
    """Internal: one frame failed at ``stage``; becomes a failed result, never escapes."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(f"{stage}: {message}")
        self.stage = stage


# ---------------------------------------------------------------------------- keys


def _h(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def detect_key(raw_sha256: str, config_key: str, model_hash: str) -> str:
    """Detections depend on the raw bytes, the redaction config and the model weights."""
    return _h("detect", str(WORK_VERSION), raw_sha256, config_key, model_hash)


def geotag_token(rec: FrameRecord) -> str:
    """What of the frame record goes into the output's EXIF (position, time, heading, speed)."""
    return json.dumps([rec.lat, rec.lon, rec.altitude, format_time(rec.time), rec.heading, rec.speed])


def render_key(det_key: str, neighbour_det_keys: Sequence[str], carry: CarrySpec,
               extra: Sequence[tuple[float, float, float, float, int]], config_key: str, geotag: str,
               unblur: Sequence[UnblurArea] = ()) -> str:
    """The output image depends on its own detections, the neighbours' (carry), the carry
    parameters, request boxes and unblur areas, and the EXIF geotag from the frame record.
    Neighbours that failed are left out of the key, so a rerun that recovers one re-renders
    the frames next to it. (Unblur areas enter only when there are some: every other frame
    keeps the key, and the cached render, it had before unblur requests existed.)"""
    parts = ["render", str(WORK_VERSION), det_key, ",".join(neighbour_det_keys), carry.token(),
             json.dumps([list(e) for e in extra]), config_key, geotag]
    if unblur:
        parts.append("unblur" + json.dumps([list(a) for a in unblur]))
    return _h(*parts)


# Work files are named by frame and key, so results for other configs or neighbourhoods stay
# reusable side by side (the work area is a cache; deleting it only costs recomputation).
def _det_rel(fid: str, key: str) -> str:
    return f"det/{fid}-{key[:16]}.json"


def _out_rel(fid: str, key: str) -> str:
    return f"out/{fid}-{key[:16]}.json"


def image_rel(fid: str, key: str) -> str:
    return f"out/{fid}-{key[:16]}.jpg"


# ---------------------------------------------------------------------------- the detector

_lock = threading.Lock()
_detect_lock = threading.Lock()
_redactors: dict[tuple[str, int], Any] = {}


def worker_threads() -> int:
    """Threads of the Dask worker running this task, else the cores this process may use."""
    try:
        from distributed import get_worker

        return int(get_worker().state.nthreads)
    except (ImportError, ValueError, AttributeError):
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def get_redactor(spec: ModelSpec) -> Any:
    """This process's Redactor for ``spec`` (built once; later calls return the same one)."""
    with _lock:
        r = _redactors.get(spec.cache_key())
        if r is None:
            from redact.engine import Redactor

            threads = spec.threads or spec.redact.detector.threads or worker_threads()
            r = Redactor(spec.redact, threads=threads)
            log.info("loaded detectors (%s threads): %s", threads, r.model_hash[:12])
            _redactors[spec.cache_key()] = r
        return r


def describe_model(spec: ModelSpec) -> dict[str, Any]:
    """What the audit's run record says about the detectors, from a worker's own Redactor."""
    r = get_redactor(spec)
    return {"model_hash": str(r.model_hash), "info": dict(r.info)}


def _check_model(spec: ModelSpec, expected: str) -> Any:
    r = get_redactor(spec)
    if expected and r.model_hash != expected:
        from redact.errors import ModelError

        raise ModelError(
            f"this worker's model weights (hash {str(r.model_hash)[:12]}) differ from the ones the "
            f"job planned with ({expected[:12]}); install the same models on every worker")
    return r


# ---------------------------------------------------------------------------- helpers


def _read_json(store: Store, rel: str) -> dict[str, Any] | None:
    try:
        d = json.loads(store.read_bytes(rel))
    except (FileNotFoundError, ValueError, OSError):
        return None
    return d if isinstance(d, dict) else None


def _intact(store: Store, result: Mapping[str, Any]) -> bool:
    """A cached image is reused only if it still hashes to what its result says (work files
    are not fsynced: after a power cut an image may be short even though its JSON exists)."""
    try:
        data = store.read_bytes(str(result.get("image")))
    except (FileNotFoundError, OSError):
        return False
    return hashlib.sha256(data).hexdigest() == result.get("sha256")


def _write_json(store: Store, rel: str, obj: Mapping[str, Any]) -> None:
    store.write_bytes(rel, json.dumps(obj, sort_keys=True, separators=(",", ":")).encode(), durable=False)


def _load_frame(ctx: TaskContext, rec: FrameRecord) -> bytes:
    """Raw bytes → verified → decrypted JPEG bytes, or FrameFailure naming the stage."""
    from capture.errors import DecryptionError

    try:
        raw = ctx.source.read_raw(rec)
    except Exception as e:
        raise FrameFailure("read", str(e)) from e
    if hashlib.sha256(raw).hexdigest() != rec.sha256:
        raise FrameFailure("verify", f"{rec.file} does not match the sha256 in frames.jsonl "
                                     "(corrupt or altered raw frame)")
    try:
        return bytes(ctx.source.reader().decode(rec, raw))
    except DecryptionError as e:
        raise FrameFailure("decrypt", str(e)) from e
    except Exception as e:
        raise FrameFailure("decrypt", repr(e)) from e


def _decode(redactor: Any, data: bytes, rec: FrameRecord) -> Any:
    try:
        return redactor.decode(data, name=rec.file)
    except Exception as e:
        raise FrameFailure("decode", str(e)) from e


def _is_fatal(e: BaseException) -> bool:
    from redact.errors import is_fatal

    return is_fatal(e)


# ---------------------------------------------------------------------------- phase 1


def detect_batch(ctx: TaskContext, frames: Sequence[FrameRecord]) -> dict[str, DetResult]:
    """Detect faces and plates in ``frames``; cached results with a matching key are reused.
    Frames in ``ctx.deleted`` are never read (see ``TaskContext``)."""
    redactor = _check_model(ctx.model, ctx.model_hash)
    # Vetoes are recorded (possibly none) only where a verifier runs; None: no verifier.
    verifying = any("verify" in d for d in redactor.info["detectors"])
    out: dict[str, DetResult] = {}
    for rec in frames:
        key = detect_key(rec.sha256, ctx.model.config_key, ctx.model_hash)
        cached = _read_json(ctx.work, _det_rel(rec.frame_id, key))
        # (Results cached before the verifier's vetoes were kept are detected again: same boxes.)
        if cached and cached.get("key") == key and cached.get("status") == "ok" and "vetoed" in cached:
            out[rec.frame_id] = DetResult.from_json(cached)
            continue
        if rec.frame_id in ctx.deleted:
            # Kept detections count even if made under another config or model (their own key
            # goes into the neighbours' render keys): more blur, never less.
            kept = ctx.stored.get(rec.frame_id)
            out[rec.frame_id] = kept if kept is not None else DetResult(
                frame_id=rec.frame_id, key=key, status=UNAVAILABLE,
                error="raw frame deleted on purpose; no earlier detections kept")
            continue
        try:
            img = _decode(redactor, _load_frame(ctx, rec), rec)
            try:
                with _detect_lock:
                    dets, vetoed = redactor.detect_with_vetoes(img)
            except Exception as e:
                if _is_fatal(e):
                    raise
                raise FrameFailure("detect", repr(e)) from e
            res = DetResult(
                frame_id=rec.frame_id, key=key, status="ok",
                xyxy=tuple(tuple(float(v) for v in b) for b in dets.xyxy),  # type: ignore[misc]
                score=tuple(float(s) for s in dets.score), cls=tuple(int(c) for c in dets.cls),
                width=int(img.width), height=int(img.height),
                vetoed=tuple((*(float(v) for v in b), int(c), float(sc))  # type: ignore[misc]
                             for b, c, sc in zip(vetoed.xyxy, vetoed.cls, vetoed.score, strict=True))
                if verifying else None)
        except FrameFailure as f:
            res = DetResult(frame_id=rec.frame_id, key=key, status="failed", error=str(f))
        _write_json(ctx.work, _det_rel(rec.frame_id, key), res.to_json())
        out[rec.frame_id] = res
    return out


# ---------------------------------------------------------------------------- phase 2


def _geotag(rec: FrameRecord) -> Any:
    if rec.lat is None or rec.lon is None:
        return None
    from redact.exif import Geotag

    return Geotag(lat=rec.lat, lon=rec.lon, altitude=rec.altitude, time=rec.time,
                  heading=rec.heading, speed=rec.speed)


def render_batch(
    ctx: TaskContext,
    frames: Sequence[FrameRecord],
    window: Sequence[str],
    *det_parts: Mapping[str, DetResult],
) -> list[FrameResult]:
    """Redact ``frames`` into the work area.

    ``window`` is the ordered list of frame ids of the session's plan around this batch (k on
    each side); ``det_parts`` are the phase-1 results that cover it.
    """
    dets: dict[str, DetResult] = {}
    for part in det_parts:
        dets.update(part)
    pos = {fid: i for i, fid in enumerate(window)}
    redactor = None
    results = []
    for rec in frames:
        own = dets[rec.frame_id]
        if own.status != "ok":
            results.append(FrameResult(frame_id=rec.frame_id, key=own.key, status="failed", error=own.error))
            continue
        neigh = [dets[window[j]] for j in neighbour_order(pos[rec.frame_id], len(window), ctx.carry.frames)]
        neigh = [d for d in neigh if d.status == "ok"]
        extra = ctx.extra_boxes.get(rec.frame_id, ())
        unblur = ctx.unblur_areas.get(rec.frame_id, ())
        key = render_key(own.key, [d.key for d in neigh], ctx.carry, extra, ctx.model.config_key, geotag_token(rec),
                         unblur)
        cached = _read_json(ctx.work, _out_rel(rec.frame_id, key))
        # (Results written before the QA boxes were kept are rendered again: same bytes.)
        if cached and cached.get("key") == key and cached.get("status") == "ok" and "boxes" in cached \
                and _intact(ctx.work, cached):
            # The vetoes as detected: a render cached before they were kept has none.
            results.append(replace(FrameResult.from_json(cached), vetoed=own.vetoed))
            continue
        if redactor is None:
            redactor = _check_model(ctx.model, ctx.model_hash)
        try:
            res = _render_one(ctx, redactor, rec, own, neigh, extra, unblur, key)
        except FrameFailure as f:
            res = FrameResult(frame_id=rec.frame_id, key=key, status="failed", error=str(f))
            _write_json(ctx.work, _out_rel(rec.frame_id, key), res.to_json())
        results.append(res)
    return results


def _render_one(ctx: TaskContext, redactor: Any, rec: FrameRecord, own: DetResult,
                neigh: Sequence[DetResult], extra: Sequence[tuple[float, float, float, float, int]],
                unblur: Sequence[UnblurArea], key: str) -> FrameResult:
    from redact.ops import redacted_within
    from redact.types import PLATE, Detections

    img = _decode(redactor, _load_frame(ctx, rec), rec)
    w, h = int(img.width), int(img.height)
    oxy, osc, ocl = own.arrays()
    # Carry from the detections as found: an unblur request is about this frame's image only.
    cxy, csc, ccl = carry_boxes(oxy, ocl, [d.arrays() for d in neigh], expand=ctx.carry.expand,
                                width=w, height=h)
    boxes = _box_rows(oxy, osc, ocl, 0) + _box_rows(cxy, csc, ccl, 1)
    # Plate redactions (own and carried) a person judged false, wholly inside an area they
    # named, while the frame's detections are the ones they judged (a new model or config
    # blurs again: fail closed). Faces and request boxes are never left out this way.
    areas = np.array([a[:4] for a in unblur if a[4] == own.key], np.float64).reshape(-1, 4)
    keep_o = ~redacted_within(oxy, ocl, areas, redactor.params, w, h, of_class=PLATE)
    keep_c = ~redacted_within(cxy, ccl, areas, redactor.params, w, h, of_class=PLATE)
    unblurred = tuple(int(i) for i in np.flatnonzero(~np.concatenate([keep_o, keep_c])))
    oxy, osc, ocl = oxy[keep_o], osc[keep_o], ocl[keep_o]
    cxy, csc, ccl = cxy[keep_c], csc[keep_c], ccl[keep_c]
    parts = [Detections(oxy, osc, ocl), Detections(cxy, csc, ccl)]
    if extra:
        parts.append(Detections(np.array([e[:4] for e in extra], np.float32),
                                np.ones(len(extra), np.float32), np.array([e[4] for e in extra], np.uint8)))
    allb = Detections.concat(parts)
    try:
        data = redactor.render(img, allb, geotag=_geotag(rec))
    except Exception as e:
        if _is_fatal(e):
            raise
        raise FrameFailure("redact", repr(e)) from e
    rel = image_rel(rec.frame_id, key)
    try:
        ctx.work.write_bytes(rel, bytes(data), durable=False)
    except OSError as e:
        raise FrameFailure("write", str(e)) from e
    res = FrameResult(
        frame_id=rec.frame_id, key=key, status="ok", image=rel,
        sha256=hashlib.sha256(data).hexdigest(), size=len(data),
        faces=int((ocl == 0).sum() + (ccl == 0).sum()), plates=int((ocl == 1).sum() + (ccl == 1).sum()),
        faces_carried=int((ccl == 0).sum()), plates_carried=int((ccl == 1).sum()), extra=len(extra),
        unblurred=unblurred,
        width=w, height=h, detected_cached=own.cached, det_key=own.key, vetoed=own.vetoed,
        boxes=tuple(boxes))
    # The JSON is the commit marker: written after the image it names.
    _write_json(ctx.work, _out_rel(rec.frame_id, key), res.to_json())
    return res
