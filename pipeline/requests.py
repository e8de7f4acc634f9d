"""Residents' requests against published imagery: extra blur, takedown, exclusion zones; and
the QA fix for a false plate box, unblur (re-rendered from raw only).

``add_request`` queues a request; ``apply_requests`` carries out the pending ones and
re-publishes each affected session atomically through ``PublishTxn``. Everything is recorded in
hash chains (``pipeline.audit``):

- The queue, ``PUBLISH_DIR/.governance/requests.jsonl``: one ``request`` record when a request
  is added and one ``request-outcome`` when it is applied or rejected. It lives in a dot folder
  next to ``.work``, outside every published session, because a pending blur request points at
  a spot of a published image that is still sharp: it must not sit in files the GIS team reads
  before the blur is out. Its head is recorded in the publish index, and ``audit verify``
  checks it (``verify_governance``).
- The session's own chain, at apply time: the ``request`` (its id, action, frame and the sha256
  of its queued record; the reason, the requester's reference and the boxes asked for stay in
  the queue, because the chain goes to the GIS team), the ``frame-override`` that later nightly runs obey
  (``pipeline.plan.overrides_from``), a new ``frame`` record for the image (status ok with its
  new sha256, or excluded) and the ``request-outcome``; then the usual ``publish`` record.
- Exclusion zones added by request are kept in ``PUBLISH_DIR/.governance/exclusion-zones.geojson``;
  the nightly job reads that file in addition to ``[publish] exclusion_zones``, so the zone
  also applies to every later run. The zone's coordinates stay out of the published chains
  (only its sha256 is recorded there): they map where the requester lives.

Extra blur changes the published image only inside the requested box (grown to the JPEG's
16-pixel MCU grid): when the raw frame is still there it is re-rendered from raw by the nightly
job's own task functions with the original detections plus the new boxes and the run's config
(so the next nightly run produces the very same bytes), and accepted only if every DCT block
outside the box is unchanged; otherwise the published image itself is blurred and only the
affected blocks are spliced into it (``pipeline.jpegblocks``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from capture.fsutil import atomic_write_bytes
from pipeline import audit, qadata
from pipeline.errors import ConfigError, PipelineError
from pipeline.geojson import dumps, split_at
from pipeline.manifest import MANIFEST
from pipeline.publish import (
    TRACK_GEOJSON,
    PublishTxn,
    append_index,
    check_name,
    image_path,
    publish_lock,
    published_sessions,
)
from pipeline.store import Store

log = logging.getLogger(__name__)

GOVERNANCE_DIR = ".governance"
QUEUE_FILE = "requests.jsonl"
ZONES_FILE = "exclusion-zones.geojson"
# Request boxes are redacted as rectangles (the plate class's mask shape); see render_box.
REQUEST_CLASS = 1
_PLATE = 1  # redact.types.PLATE (not imported at module level: redact pulls in numpy/cv2)
_EPS = 0.01
_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/#-]{0,63}$")
_EMAIL = re.compile(r"[^\s@]+@[^\s@]+\.[A-Za-z]{2,}")
MAX_REASON = 500

Action = Literal["blur", "unblur", "remove", "zone"]
IntBox = tuple[int, int, int, int]


class RequestError(PipelineError):
    """A request cannot be added (bad target, frame, box, zone or reason)."""


# ---------------------------------------------------------------------------- values


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def check_reason(reason: str) -> str:
    r = " ".join(reason.split())
    if not r:
        raise RequestError("--reason must say why (e.g. 'resident asked to blur their house name plate')")
    if len(r) > MAX_REASON:
        raise RequestError(f"--reason is {len(r)} characters; keep it under {MAX_REASON}")
    if _EMAIL.search(r):
        raise RequestError("--reason contains an e-mail address: the audit log must hold no personal data "
                           "of the requester; keep it in your case system and pass --requester-ref")
    return r


def check_ref(ref: str | None) -> str | None:
    if ref is None:
        return None
    if not _REF.match(ref) or "@" in ref:
        raise RequestError(f"--requester-ref {ref!r}: use an opaque case number (letters, digits, ._:/#-, "
                           "at most 64), never a name or e-mail address")
    return ref


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One request as given by the operator (validated here; checked against the publish
    tree by ``add_request``)."""

    action: Action
    reason: str
    session_id: str | None = None
    frame_id: str | None = None
    boxes: tuple[IntBox, ...] = ()
    zone: Mapping[str, Any] | None = None  # GeoJSON geometry (Polygon/MultiPolygon)
    requester_ref: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", check_reason(self.reason))
        check_ref(self.requester_ref)
        if self.action in ("blur", "unblur", "remove"):
            if not self.session_id or not self.frame_id:
                raise RequestError(f"{_a(self.action)} request needs a published session and --frame")
            check_name(self.frame_id, "frame id")
        if self.action in ("blur", "unblur"):
            if not self.boxes:
                raise RequestError(f"{_a(self.action)} request needs at least one --{self.action} x1,y1,x2,y2 box")
            for b in self.boxes:
                if len(b) != 4 or b[2] <= b[0] or b[3] <= b[1] or min(b) < 0:
                    raise RequestError(f"box {','.join(map(str, b))}: expected x1,y1,x2,y2 with x2 > x1 >= 0 "
                                       "and y2 > y1 >= 0 (pixels of the published image)")
        elif self.boxes:
            raise RequestError(f"boxes are only for blur and unblur requests, not {self.action}")
        if self.action == "zone":
            if self.zone is None:
                raise RequestError("a zone request needs a polygon (--zone FILE.geojson)")
        elif self.zone is not None:
            raise RequestError("a zone is only for zone requests")


def parse_box(text: str, option: str = "--blur") -> IntBox:
    """``x1,y1,x2,y2`` in published-image pixels (integers)."""
    try:
        v = tuple(int(p) for p in text.replace(" ", "").split(","))
    except ValueError:
        raise RequestError(f"{option} {text!r}: expected four integers x1,y1,x2,y2") from None
    if len(v) != 4:
        raise RequestError(f"{option} {text!r}: expected four integers x1,y1,x2,y2")
    return v[0], v[1], v[2], v[3]


def plate_areas(boxes: Sequence[Sequence[float]], params: Any, width: int, height: int) -> list[IntBox]:
    """Every pixel the plate boxes among ``boxes`` ((x1, y1, x2, y2, class, ...), as
    ``FrameResult.boxes`` holds them) redact, per box, as whole-pixel boxes: what an unblur
    area must enclose to leave one out (``redact.ops.redacted_within``). Pure."""
    return [(int(b[0]), int(b[1]), int(b[2]), int(b[3])) for b, c in zip(_touched(boxes, params, width, height),
                                                                      (int(b[4]) for b in boxes), strict=True)
            if c == _PLATE]


def _box_arrays(boxes: Sequence[Sequence[float]]) -> tuple[Any, Any]:
    """(xyxy float32[N, 4], class uint8[N]) of box rows (x1, y1, x2, y2, class, ...)."""
    import numpy as np

    return (np.array([b[:4] for b in boxes], np.float32).reshape(-1, 4),
            np.array([int(b[4]) for b in boxes], np.uint8))


def _touched(boxes: Sequence[Sequence[float]], params: Any, width: int, height: int) -> list[list[int]]:
    from redact.ops import touched_boxes

    return [list(map(int, t)) for t in touched_boxes(*_box_arrays(boxes), params, width, height).tolist()]


def _no_plate_inside(fid: str, areas: Sequence[IntBox], plates: Sequence[IntBox]) -> str:
    listed = " ".join(",".join(map(str, b)) for b in plates) or "none"
    return (f"--unblur {' '.join(','.join(map(str, a)) for a in areas)}: no plate redaction of frame {fid} that is "
            f"still blurred lies wholly inside (each area must enclose one; faces and request boxes are never "
            f"unblurred); the frame's blurred plate areas: {listed}")


def _within(areas: Sequence[Sequence[float]], boxes: Sequence[Sequence[float]], params: Any, width: int,
            height: int) -> list[bool]:
    """Per box of ``boxes`` ((x1, y1, x2, y2, class, ...)): a plate box whose redaction lies
    wholly inside one of ``areas`` (``redact.ops.redacted_within``). Pure."""
    import numpy as np

    from redact.ops import redacted_within

    ar = np.array([a[:4] for a in areas], np.float64).reshape(-1, 4)
    return [bool(v) for v in redacted_within(*_box_arrays(boxes), ar, params, width, height, of_class=_PLATE)]


def _lonely_areas(areas: Sequence[IntBox], boxes: Sequence[Sequence[float]], params: Any, width: int,
                  height: int) -> list[IntBox]:
    """The areas among ``areas`` that enclose none of the plate ``boxes``. Pure."""
    return [a for a in areas if not any(_within([a], boxes, params, width, height))]


def render_box(box: Sequence[float], plate_expand: float) -> tuple[float, float, float, float, int]:
    """The box to hand the renderer so that the area it redacts is exactly ``box``.

    The renderer grows every box of the rectangle class by ``plate_expand`` (a margin for
    detector boxes); a request box is already the area the resident asked for, so it is
    shrunk by that factor first (and by a hundredth of a pixel, so rounding never reaches the
    next pixel)."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    hw, hh = (x2 - x1 - 2 * _EPS) / 2 / plate_expand, (y2 - y1 - 2 * _EPS) / 2 / plate_expand
    return (cx - hw, cy - hh, cx + hw, cy + hh, REQUEST_CLASS)


# ---------------------------------------------------------------------------- chain helpers


def queue_path(publish_dir: Path) -> Path:
    return Path(publish_dir) / GOVERNANCE_DIR / QUEUE_FILE


def zones_path(publish_dir: Path) -> Path:
    return Path(publish_dir) / GOVERNANCE_DIR / ZONES_FILE


def basis_run(records: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The last nightly ``run`` record: the config, model and thresholds the published images
    were rendered with (a later run that rendered anything differently re-published it)."""
    runs = [r for r in records if r.get("type") == "run"]
    return dict(runs[-1]) if runs else None


def resolve_target(target: Path) -> tuple[Path, str | None]:
    """(publish dir, session id or None) from ``PUBLISH_DIR/<session>`` or ``PUBLISH_DIR``."""
    target = Path(target)
    if (target / MANIFEST).is_file():
        return target.parent, target.name
    if target.is_dir() and (published_sessions(target) or (target / audit.INDEX_FILE).exists()):
        return target, None
    raise RequestError(f"{target}: neither a published session (no {MANIFEST}) nor a publish folder")


def _index(publish_dir: Path, rec: dict[str, Any]) -> None:
    st = audit.read_state(queue_path(publish_dir))
    append_index(Store(str(publish_dir)), [{**rec, "time": audit.now_utc(), "governance_head": st.head,
                                            "governance_seq": st.seq - 1}])


# ---------------------------------------------------------------------------- add


def _feature_ids(sdir: Path) -> dict[str, dict[str, Any]]:
    fc = json.loads((sdir / "frames.geojson").read_bytes())
    return {f["properties"]["frame_id"]: f for f in fc["features"]}


def zone_geometry(path: Path) -> dict[str, Any]:
    """The union of the (Multi)Polygons in a GeoJSON file, as a GeoJSON geometry."""
    from shapely.geometry import mapping

    from capture.zones import load_zones

    zones = load_zones(path)
    if not zones:
        raise RequestError(f"{path}: no polygon in the zone file")
    geom: dict[str, Any] = json.loads(json.dumps(mapping(zones.geometry)))
    return geom


def add_request(target: Path, spec: RequestSpec) -> dict[str, Any]:
    """Queue ``spec`` against ``target`` (a published session, or the publish folder for a zone
    request); returns the queued record. Nothing published changes until ``apply_requests``."""
    publish_dir, sid = resolve_target(target)
    if spec.action == "zone":
        if sid is not None:
            raise RequestError("a zone request applies to every session of the publish folder: "
                               f"give the folder ({publish_dir}), not one session")
    else:
        if sid is None or spec.session_id != sid:
            raise RequestError(f"a {spec.action} request needs a published session folder (PUBLISH_DIR/<session>)")
        sdir = publish_dir / sid
        feats = _feature_ids(sdir)
        chain = audit.read_records(sdir / audit.AUDIT_FILE)
        known = audit.latest_frame_records(chain)
        fid = str(spec.frame_id)
        if spec.action in ("blur", "unblur"):
            f = feats.get(fid)
            if f is None:
                raise RequestError(f"{sdir}: frame {fid} is not published (nothing to {spec.action})")
            w, h = f["properties"].get("width"), f["properties"].get("height")
            for b in spec.boxes:
                if w is not None and h is not None and (b[2] > w or b[3] > h):
                    raise RequestError(f"box {','.join(map(str, b))} reaches outside the {w}x{h} image {fid}")
            if spec.action == "unblur":
                _check_unblur(publish_dir, sid, fid, spec.boxes, chain)
        elif fid not in feats and fid not in known:
            raise RequestError(f"{sdir}: no frame {fid} in this session")
    now = datetime.now(UTC)
    rec: dict[str, Any] = {
        "type": "request", "request_id": f"r-{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}",
        "time": audit.now_utc(), "who": audit.who(), "action": spec.action,
        "session_id": sid, "frame_id": spec.frame_id, "reason": spec.reason,
        "requester_ref": spec.requester_ref,
    }
    if spec.action in ("blur", "unblur"):
        rec["boxes"] = [list(b) for b in spec.boxes]
    if spec.action == "zone":
        rec["zone"] = dict(spec.zone or {})
        rec["zone_sha256"] = hashlib.sha256(audit.canonical(rec["zone"])).hexdigest()
    with publish_lock(publish_dir, "governance"):
        audit.append_records(queue_path(publish_dir), [rec])
        _index(publish_dir, {"type": "request-received", "request_id": rec["request_id"],
                             "session_id": sid, "action": spec.action})
    log.info("queued %s request %s", spec.action, rec["request_id"])
    return rec


def _check_unblur(publish_dir: Path, sid: str, fid: str, areas: Sequence[IntBox],
                  chain: Sequence[Mapping[str, Any]]) -> None:
    """Refuse an unblur request with an area that encloses none of the frame's plate
    redactions, by the QA detections of the publication (``chain``: the session's audit
    records; when the detections are at hand: ``apply`` checks again on the frame as
    re-rendered)."""
    ref = qadata.named(chain)
    entries = qadata.read(lambda rel: (publish_dir / rel).read_bytes(), ref)[0] if ref else None
    e = (entries or {}).get(fid)
    if e is None or e.get("width") is None:
        return
    w, h = int(e["width"]), int(e["height"])
    boxes = [[*d["box"], qadata.CLASS_NAMES.index(d["class"])] for d in e["detections"] if not d.get("unblurred")]
    params = _params_of(basis_run(chain))
    lonely = _lonely_areas(areas, boxes, params, w, h)
    if lonely:
        raise RequestError(f"{publish_dir / sid}: " + _no_plate_inside(fid, lonely, plate_areas(boxes, params, w, h)))


def queue_records(publish_dir: Path) -> list[dict[str, Any]]:
    return audit.read_records(queue_path(publish_dir))


def pending_requests(recs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The queued requests of the queue records ``recs`` that have no outcome yet, oldest first."""
    done = {r.get("request_id") for r in recs if r.get("type") == "request-outcome"}
    return [r for r in recs if r.get("type") == "request" and r.get("request_id") not in done]


# ---------------------------------------------------------------------------- zones


@dataclass(frozen=True, slots=True)
class _EitherZone:
    """``excluded_at`` of the nightly job: inside the configured zones or a requested one."""

    first: Callable[[float, float], bool] | None
    second: Callable[[float, float], bool]

    def __call__(self, lat: float, lon: float) -> bool:
        return bool((self.first is not None and self.first(lat, lon)) or self.second(lat, lon))


def read_request_zones(out: Store) -> tuple[Any, str | None]:
    """(the exclusion zones added by requests to the publish tree ``out`` as
    ``capture.zones.Zones``, or None when there are none; the sha256 of the file they were read
    from, or None when there is no file). One read, so the hash is of the zones applied."""
    from capture.zones import zones_from_geojson

    rel = f"{GOVERNANCE_DIR}/{ZONES_FILE}"
    try:
        data = out.read_bytes(rel)
    except FileNotFoundError:
        return None, None
    try:
        zones = zones_from_geojson(json.loads(data), source=out.display(rel))
    except ValueError as e:
        raise ConfigError(f"{out.display(rel)}: not valid JSON: {e}") from None
    return (zones if zones else None), hashlib.sha256(data).hexdigest()


def either_zone(first: Callable[[float, float], bool] | None,
                zones: Any) -> Callable[[float, float], bool] | None:
    """``first`` extended by ``zones`` (``capture.zones.Zones`` or None)."""
    if zones is None:
        return first
    return _EitherZone(first, zones.contains)


def _zone_doc(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    feats = [{"type": "Feature", "id": r["request_id"], "geometry": r["zone"],
              "properties": {"name": r["request_id"], "request_id": r["request_id"], "added": r["time"],
                             "zone_sha256": r["zone_sha256"]}}
             for r in records]
    return {"type": "FeatureCollection", "features": feats}


def cut_track(fc: Mapping[str, Any], inside: Callable[[float, float], bool]) -> dict[str, Any]:
    """A published track.geojson with the points ``inside(lat, lon)`` left out; the line is split
    there (MultiLineString), as the nightly job does for exclusion zones. Pure."""
    from capture.geodesy import path_length_m

    out = json.loads(json.dumps(fc))
    for feat in out.get("features", []):
        g = feat.get("geometry")
        if not g:
            continue
        lines = [g["coordinates"]] if g["type"] == "LineString" else list(g["coordinates"])
        first, last = lines[0][0], lines[-1][-1]
        kept = [run for line in lines for run in split_at(line, lambda p: inside(p[1], p[0]))]
        if not kept:
            feat["geometry"] = None
        elif len(kept) == 1:
            feat["geometry"] = {"type": "LineString", "coordinates": kept[0]}
        else:
            feat["geometry"] = {"type": "MultiLineString", "coordinates": kept}
        props = feat.setdefault("properties", {})
        props["points"] = sum(len(p) for p in kept)
        props["length_m"] = round(sum(path_length_m([(la, lo) for lo, la in p]) for p in kept), 1)
        if not kept or kept[0][0] != first:
            props["start"] = None
        if not kept or kept[-1][-1] != last:
            props["end"] = None
    return out


# ---------------------------------------------------------------------------- apply


@dataclass
class RequestOutcome:
    request_id: str
    action: str
    session_id: str | None
    frame_id: str | None
    status: str  # applied | rejected
    detail: str
    method: str | None = None
    frames_removed: int = 0


@dataclass
class ApplyReport:
    publish_dir: str
    outcomes: list[RequestOutcome] = field(default_factory=list)
    sessions: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> list[RequestOutcome]:
        return [o for o in self.outcomes if o.status != "applied"]


@dataclass(frozen=True, slots=True)
class ApplyOptions:
    """How to re-render from raw: the nightly config (None: the run's recorded config file if
    it is still there, else defaults) and where the raw sessions are (None: the run's
    recorded source)."""

    config: Any = None  # pipeline.config.NightlyConfig
    config_path: str | None = None
    sessions_root: Path | None = None


class _Rerender:
    """Re-renders single frames from raw with the nightly job's own tasks (lazily loaded)."""

    def __init__(self, publish_dir: Path, opts: ApplyOptions) -> None:
        self.publish_dir = publish_dir
        self.opts = opts
        self._cfg: Any = None
        self._cfg_error: str | None = None
        self._model: dict[str, Any] | None = None

    def config(self, run: Mapping[str, Any]) -> Any:
        if self._cfg is None and self._cfg_error is None:
            from pipeline.config import NightlyConfig, load_config

            try:
                if self.opts.config is not None:
                    self._cfg = self.opts.config
                else:
                    cf = run.get("config_file")
                    if cf and not Path(cf).is_file():
                        raise ConfigError(f"the run's config file {cf} is not here (pass --config)")
                    self._cfg = load_config(cf or None, NightlyConfig, kind="nightly")
            except PipelineError as e:
                self._cfg_error = str(e)
        return self._cfg

    def why_not(self, run: Mapping[str, Any] | None) -> str | None:
        """None when frames can be re-rendered exactly as ``run`` rendered them, else why not."""
        from pipeline.plan import redact_key

        if run is None:
            return "no nightly run record in the session's chain"
        cfg = self.config(run)
        if cfg is None:
            return f"nightly config unavailable: {self._cfg_error}"
        if redact_key(cfg.redact) != run.get("redact_config_key"):
            return "the redaction config differs from the one the published images were made with"
        tc = run.get("temporal_carry") or {}
        if (cfg.publish.temporal_carry, cfg.publish.carry_expand) != (tc.get("frames"), tc.get("expand")):
            return "the temporal carry settings differ from the published run's"
        return None

    def model(self) -> dict[str, Any]:
        if self._model is None:
            from pipeline.plan import redact_key
            from pipeline.tasks import ModelSpec, describe_model

            spec = ModelSpec(self._cfg.redact, threads=0, config_key=redact_key(self._cfg.redact))
            self._model = {"spec": spec, **describe_model(spec)}
        return self._model

    def source(self, sid: str, run: Mapping[str, Any]) -> Any:
        from pipeline.store import SessionSource

        if self.opts.sessions_root is not None:
            path = Path(self.opts.sessions_root) / sid
        else:
            src = str(run.get("source") or "")
            path = Path(src) if src and "://" not in src else Path("/nonexistent")
        if not (path / "session.json").is_file():
            return None
        key = self._cfg.decrypt.private_key
        return SessionSource(str(path), str(key) if key else None)

    def render(self, sid: str, fid: str, run: Mapping[str, Any],
               records: Sequence[Mapping[str, Any]]) -> tuple[Any, str | None]:
        """(FrameResult, None) re-rendered from raw with every override in ``records``, or
        (None, why not)."""
        why = self.why_not(run)
        if why:
            return None, why
        src = self.source(sid, run)
        if src is None:
            return None, "the raw session is not available (pass --sessions-root)"
        from pipeline.plan import overrides_from, plan_session
        from pipeline.tasks import CarrySpec, TaskContext, detect_batch, render_batch

        cfg = self._cfg
        out = Store(str(self.publish_dir))
        try:
            reader = src.reader()
            if fid in reader.deletions().frame_ids:
                return None, "the raw frame was deleted (retention or request)"
            m = self.model()
            if m["model_hash"] != run.get("model_hash"):
                return None, "the detector weights differ from the published run's"
            from pipeline.job import config_zones

            # The zones the nightly job obeys: the configured ones and those added by request.
            excluded_at = either_zone(config_zones(cfg)[0], read_request_zones(out)[0])
            plan = plan_session(src, batch_size=cfg.job.batch_size, excluded_at=excluded_at,
                                overrides=overrides_from(records))
        except Exception as e:  # any problem with the raw side means: edit the published image
            return None, f"cannot read the raw session: {e}"
        if fid not in plan.publish_ids:
            return None, "the frame is no longer in the session's publication plan"
        carry = CarrySpec(cfg.publish.temporal_carry, cfg.publish.carry_expand)
        from pipeline.job import stored_detections

        ctx = TaskContext(source=src, work=out.child(f".work/{sid}"), model=m["spec"],
                          model_hash=m["model_hash"], carry=carry, extra_boxes=plan.extra_boxes,
                          unblur_areas=plan.unblur_areas, deleted=plan.deleted_ids, stored=stored_detections(out, records, plan.deleted_ids))
        # The same neighbourhood as the nightly job: the capture sequence, left-out frames included.
        ids, _ = plan.frame_window(fid, carry.frames)
        by_id = {r.frame_id: r for r in plan.frames}
        dets = detect_batch(ctx, [by_id[x] for x in ids])
        res = render_batch(ctx, [by_id[fid]], ids, dets)[0]
        if res.status != "ok":
            return None, f"re-render from raw failed: {res.error}"
        return res, None


def _params_of(run: Mapping[str, Any] | None) -> Any:
    from redact.ops import RedactParams

    info = (run or {}).get("detectors") or {}
    exp = info.get("expand") or {}
    # Runs recorded before face_shape was in Redactor.info used the default, the ellipse.
    return RedactParams(method=info.get("method", "blur"), face_expand=float(exp.get("face", 1.3)),
                        plate_expand=float(exp.get("plate", 1.15)), feather=float(info.get("feather", 0.0)),
                        face_shape=info.get("face_shape", "ellipse"))


def blur_published(data: bytes, boxes: Sequence[IntBox], params: Any, *, name: str) -> bytes:
    """Blur ``boxes`` in a published JPEG, changing only the MCUs they touch."""
    import numpy as np

    from pipeline.jpegblocks import splice
    from redact.imageio import decode_image, encode_image
    from redact.ops import redact

    img = decode_image(data, name=name)
    if img.format != "JPEG":
        raise PipelineError(f"{name}: published image is {img.format}, expected JPEG")
    rb = [render_box(b, params.plate_expand) for b in boxes]
    pixels = redact(img.rgb, np.array([b[:4] for b in rb], np.float32), np.array([b[4] for b in rb], np.uint8),
                    params)
    full = encode_image(img, pixels, exif=b"", jpeg_quality="keep")
    return splice(data, full, [_fbox(b) for b in boxes])


def _fbox(b: Sequence[float]) -> tuple[float, float, float, float]:
    return float(b[0]), float(b[1]), float(b[2]), float(b[3])


def _frame_record(prev: Mapping[str, Any] | None, fid: str, **kw: Any) -> dict[str, Any]:
    base = {"type": "frame", "frame_id": fid}
    for k in ("capture_time", "raw_sha256"):
        if prev and k in prev:
            base[k] = prev[k]
    return {**base, **kw}


def _request_record(q: Mapping[str, Any]) -> dict[str, Any]:
    """The request as the session's published chain records it: what and when, linked by
    ``request_id`` (and the sha256 of its queue line) to the queue in .governance/, which
    alone keeps the reason, the requester's reference, the boxes asked for and a zone's
    polygon. None of those may reach the folder the GIS team gets: a reason names a place or
    a person's situation, a rejected blur's boxes point at a spot that is still sharp, a
    polygon maps a home. Applied blur boxes are in the ``frame-override`` record (the image
    is blurred there; later runs need them)."""
    rec = {"type": "request", "request_id": q["request_id"], "received": q["time"], "time": audit.now_utc(),
           "action": q["action"], "frame_id": q.get("frame_id"), "requested_by": q.get("who"),
           "applied_by": audit.who(), "queue_record_sha256": audit.line_hash(audit.canonical(q))}
    if q["action"] == "zone":
        rec["zone_sha256"] = q["zone_sha256"]
    return rec


def _reject(oc_list: list[RequestOutcome], records: list[dict[str, Any]], q: Mapping[str, Any],
            sid: str | None, why: str) -> None:
    oc_list.append(RequestOutcome(q["request_id"], q["action"], sid, q.get("frame_id"), "rejected", why))
    records.append({"type": "request-outcome", "request_id": q["request_id"], "status": "rejected", "detail": why})


def _apply_session(publish_dir: Path, sid: str, reqs: Sequence[Mapping[str, Any]],
                   zones: Sequence[tuple[Mapping[str, Any], Any]], rr: _Rerender,
                   zone_counts: dict[str, int]) -> list[RequestOutcome]:
    """Apply ``reqs`` (frame requests of ``sid``) and ``zones`` to one session in one txn."""
    from pipeline.plan import EXCLUDED_NO_POSITION, EXCLUDED_REQUEST, EXCLUDED_ZONE

    out = Store(str(publish_dir))
    outcomes: list[RequestOutcome] = []
    with PublishTxn.open(out, sid, keep_published=True) as txn:
        chain = txn.records()
        run = basis_run(chain)
        latest = audit.latest_frame_records(chain)
        params = _params_of(run)
        records: list[dict[str, Any]] = []
        published_before = len(txn.features)
        for q in reqs:
            fid = str(q["frame_id"])
            records.append(_request_record(q))
            if q["action"] == "remove":
                had = txn.remove_frame(fid)
                records.append({"type": "frame-override", "request_id": q["request_id"], "frame_id": fid,
                                "action": "remove"})
                records.append(_frame_record(latest.get(fid), fid, status="excluded", reason=EXCLUDED_REQUEST,
                                             request_id=q["request_id"]))
                detail = "image and feature removed" if had else "was not published; later runs leave it out"
                records.append({"type": "request-outcome", "request_id": q["request_id"], "status": "applied",
                                "detail": detail})
                outcomes.append(RequestOutcome(q["request_id"], "remove", sid, fid, "applied", detail,
                                               frames_removed=int(had)))
                continue
            feat = txn.features.get(fid)
            if feat is None:
                _reject(outcomes, records, q, sid, f"frame {fid} is not published (removed meanwhile?)")
                continue
            if q["action"] == "unblur":
                _unblur(txn, sid, fid, q, feat, chain, run, latest, records, outcomes, rr, params)
                continue
            boxes: list[IntBox] = [(int(b[0]), int(b[1]), int(b[2]), int(b[3])) for b in q["boxes"]]
            pe = params.plate_expand
            override = {"type": "frame-override", "request_id": q["request_id"], "frame_id": fid, "action": "blur",
                        "boxes": [list(render_box(b, pe)) for b in boxes]}
            current = (txn.staging / image_path(fid)).read_bytes()
            new: bytes | None = None
            source: Path | None = None
            res, why = rr.render(sid, fid, run or {}, [*chain, *records, override])
            method = "request-rerender-raw"
            if res is not None:
                from pipeline.jpegblocks import JpegEditError, only_inside

                work = publish_dir / ".work" / sid / res.image
                cand = work.read_bytes()
                try:
                    inside = only_inside(current, cand, [_fbox(b) for b in boxes],
                                         int(res.width or 0), int(res.height or 0))
                except JpegEditError as e:
                    inside = False
                    why = str(e)
                if inside:
                    source = work
                else:
                    why = why or ("re-rendering from raw also changed pixels outside the box (the frame's "
                                  "neighbours or config changed since it was published)")
            if source is None:
                method = "request-splice-published"
                try:
                    new = blur_published(current, boxes, params, name=f"{sid}/{image_path(fid)}")
                except PipelineError as e:
                    _reject(outcomes, records, q, sid, f"cannot blur the published image: {e}")
                    continue
            data = new if new is not None else Path(str(source)).read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            props = dict(feat["properties"], sha256=sha)
            # Re-rendered from raw: its QA detections as rendered; spliced: the frame's entry
            # stands (only the request box changed, and request boxes are in the chain).
            qa = None if source is None or res is None else qadata.entry(
                fid, image_sha256=sha, width=res.width, height=res.height, detect_key=res.det_key, boxes=res.boxes,
                vetoed=res.vetoed, unblurred=res.unblurred)
            txn.put_image(fid, {**feat, "properties": props}, data=data, sha256=sha, qa=qa)
            prev = latest.get(fid)
            carried = {k: prev[k] for k in ("faces", "plates", "faces_carried", "plates_carried", "plates_unblurred")
                       if prev and k in prev}
            n_boxes = int((prev or {}).get("request_boxes", 0) or 0) + len(boxes)
            frame = _frame_record(prev, fid, **carried, status="ok", error=None, output_sha256=sha,
                                  output_size=len(data), image=image_path(fid), request_boxes=n_boxes,
                                  method=method, request_id=q["request_id"],
                                  previous_sha256=str(feat["properties"].get("sha256")))
            latest[fid] = frame
            detail = ("re-rendered from the raw frame with the original detections and the new boxes"
                      if source is not None else f"blurred the published image in place ({why})")
            records += [override, frame, {"type": "request-outcome", "request_id": q["request_id"],
                                          "status": "applied", "method": method, "detail": detail,
                                          "previous_sha256": frame["previous_sha256"], "new_sha256": sha}]
            outcomes.append(RequestOutcome(q["request_id"], "blur", sid, fid, "applied", detail, method=method))
        for zq, zone in zones:
            records.append(_request_record(zq))
            removed = 0
            for fid, feat in sorted(txn.features.items()):
                g = feat.get("geometry")
                if g is None:
                    why_out = EXCLUDED_NO_POSITION  # cannot be shown to lie outside the zone
                elif zone.contains(g["coordinates"][1], g["coordinates"][0]):
                    why_out = EXCLUDED_ZONE
                else:
                    continue
                txn.remove_frame(fid)
                removed += 1
                # No position: the log would otherwise map the zone the resident asked for.
                records.append(_frame_record(latest.get(fid), fid, status="excluded", reason=why_out,
                                             request_id=zq["request_id"]))
            track = txn.staging / TRACK_GEOJSON
            if track.exists():
                txn.write_file(TRACK_GEOJSON, dumps(cut_track(json.loads(track.read_bytes()), zone.contains)))
            zone_counts[zq["request_id"]] = zone_counts.get(zq["request_id"], 0) + removed
            records.append({"type": "request-outcome", "request_id": zq["request_id"], "status": "applied",
                            "detail": f"{removed} frame(s) of this session removed; zone applies to later runs"})
        if len(txn.features) != published_before:
            _renotice(txn, chain, run, rr, records)
        ids = [q["request_id"] for q in reqs] + [z["request_id"] for z, _ in zones]
        counts = {"published": len(txn.features), "removed": published_before - len(txn.features)}
        txn.commit(records, {"reason": "requests", "requests": ids, "counts": counts},
                   index={"reason": "requests", "requests": ids})
    return outcomes


def _unblur(txn: PublishTxn, sid: str, fid: str, q: Mapping[str, Any], feat: Mapping[str, Any],
            chain: Sequence[Mapping[str, Any]], run: Mapping[str, Any] | None, latest: dict[str, dict[str, Any]],
            records: list[dict[str, Any]], outcomes: list[RequestOutcome], rr: _Rerender, params: Any) -> None:
    """Leave out the plate redactions of ``fid`` that lie wholly inside the requested areas.

    Only a re-render from the raw frame can show what a blur hid, so without the raw frame
    (or with a config or model other than the published run's) the request is rejected and
    the image stays as it is. The areas are bound to the frame's detections as they are now
    (their detect key): a later run with other detections blurs again rather than leave a new
    box unseen by anyone. Accepted only when every area leaves out a plate redaction that was
    still blurred, and the re-render changed nothing outside the areas and the redactions it
    kept (whose blur may read pixels of a box left out; they stay redacted)."""
    from pipeline.plan import overrides_from
    from pipeline.tasks import detect_key

    areas: list[IntBox] = [(int(b[0]), int(b[1]), int(b[2]), int(b[3])) for b in q["boxes"]]
    prev = latest.get(fid) or {}
    key = detect_key(str(prev.get("raw_sha256")), str((run or {}).get("redact_config_key")),
                     str((run or {}).get("model_hash")))
    override = {"type": "frame-override", "request_id": q["request_id"], "frame_id": fid, "action": "unblur",
                "areas": [list(a) for a in areas], "detect_key": key}
    res, why = rr.render(sid, fid, run or {}, [*chain, *records, override])
    if res is None:
        return _reject(outcomes, records, q, sid, f"an unblur needs the frame re-rendered from raw, and it "
                                                  f"cannot be: {why}")
    if res.det_key != key:
        return _reject(outcomes, records, q, sid, "the raw frame's detections are not those the published image "
                                                  "was made from; the image is kept as it is")
    w, h = int(res.width or 0), int(res.height or 0)
    ov = overrides_from([*chain, *records]).get(fid)
    earlier = [a[:4] for a in (ov.unblur if ov else ()) if a[4] == key]
    left_out = [res.boxes[i] for i in res.unblurred]
    # Left out by this request: boxes no earlier area of the frame already left out.
    new = [b for b, old in zip(left_out, _within(earlier, left_out, params, w, h), strict=True) if not old]
    gone = set(res.unblurred)
    rendered = [b for i, b in enumerate(res.boxes) if i not in gone]
    lonely = _lonely_areas(areas, new, params, w, h)
    if lonely:
        return _reject(outcomes, records, q, sid, _no_plate_inside(fid, lonely, plate_areas(rendered, params, w, h)))
    from pipeline.jpegblocks import JpegEditError, only_inside

    data = (rr.publish_dir / ".work" / sid / str(res.image)).read_bytes()
    current = (txn.staging / image_path(fid)).read_bytes()
    allowed = [_fbox(b) for b in (*areas, *_touched(rendered, params, w, h))]
    why = None
    try:
        ok = only_inside(current, data, allowed, w, h)
    except JpegEditError as e:
        ok, why = False, str(e)
    if not ok:
        return _reject(outcomes, records, q, sid, "re-rendering from raw also changed pixels outside the areas (the "
                       f"frame's neighbours or config changed since it was published{'; ' + why if why else ''}); "
                       "the image is kept as it is")
    sha = hashlib.sha256(data).hexdigest()
    qa = qadata.entry(fid, image_sha256=sha, width=res.width, height=res.height, detect_key=res.det_key,
                      boxes=res.boxes, vetoed=res.vetoed, unblurred=res.unblurred)
    txn.put_image(fid, {**feat, "properties": dict(feat["properties"], sha256=sha, faces=res.faces,
                                                   plates=res.plates)}, data=data, sha256=sha, qa=qa)
    frame = _frame_record(prev, fid, status="ok", error=None, output_sha256=sha, output_size=len(data),
                          image=image_path(fid), faces=res.faces, plates=res.plates,
                          faces_carried=res.faces_carried, plates_carried=res.plates_carried,
                          request_boxes=res.extra, plates_unblurred=len(res.unblurred),
                          method="request-rerender-raw", request_id=q["request_id"],
                          previous_sha256=str(feat["properties"].get("sha256")))
    latest[fid] = frame
    detail = f"re-rendered from the raw frame without {len(new)} plate redaction(s) inside the area(s)"
    records += [override, frame, {"type": "request-outcome", "request_id": q["request_id"], "status": "applied",
                                  "method": "request-rerender-raw", "detail": detail,
                                  "previous_sha256": frame["previous_sha256"], "new_sha256": sha}]
    outcomes.append(RequestOutcome(q["request_id"], "unblur", sid, fid, "applied", detail,
                                   method="request-rerender-raw"))


def _renotice(txn: PublishTxn, chain: Sequence[Mapping[str, Any]], run: Mapping[str, Any] | None,
              rr: _Rerender, records: list[dict[str, Any]]) -> None:
    """Re-render notice.html/txt for the new image count, with the notice version the session
    was published under; when that notice config is not at hand, keep the old notice and say so."""
    from pipeline.config import NoticeConfig, load_config
    from pipeline.notice import SessionFacts, render_html, render_text

    cfg = rr.config(run or {})
    why = None
    notice = None
    if cfg is None:
        why = "nightly config unavailable"
    else:
        try:
            notice = load_config(cfg.publish.notice, NoticeConfig, kind="notice")
        except PipelineError as e:
            why = str(e)
        else:
            if run is not None and notice.version != run.get("notice_version"):
                why = f"notice config is version {notice.version}, the session was published with {run.get('notice_version')}"
    if notice is None or why:
        records.append({"type": "notice-kept", "detail": f"notice not re-rendered ({why}); its image count is "
                                                         "stale until the next nightly run"})
        return
    times = sorted(str(r["capture_time"]) for r in audit.latest_frame_records(chain).values() if r.get("capture_time"))
    facts = SessionFacts(session_id=txn.session_id,
                         captured_span=f"{times[0]} to {times[-1]}" if times else "no frames",
                         published=len(txn.features),
                         session_notice_version=str((run or {}).get("session_notice_version", "unknown")),
                         method=str(((run or {}).get("detectors") or {}).get("method") or "blur"))
    txn.write_file("notice.html", render_html(notice, facts).encode())
    txn.write_file("notice.txt", render_text(notice, facts).encode())


def apply_requests(target: Path, opts: ApplyOptions | None = None) -> ApplyReport:
    """Apply the pending requests for ``target`` (one published session: its frame requests;
    the publish folder: all, zone requests included) and record every outcome."""
    from capture.zones import zones_from_geojson

    opts = opts or ApplyOptions()
    publish_dir, only = resolve_target(target)
    report = ApplyReport(str(publish_dir))
    rr = _Rerender(publish_dir, opts)
    with publish_lock(publish_dir, "governance"):
        recs = queue_records(publish_dir)
        pending = pending_requests(recs)
        if only is not None:
            pending = [q for q in pending if q.get("session_id") == only and q["action"] != "zone"]
        if not pending:
            return report
        zone_reqs = [q for q in pending if q["action"] == "zone"]
        by_session: dict[str, list[dict[str, Any]]] = {}
        queue_out: list[dict[str, Any]] = []
        sessions = set(published_sessions(publish_dir))
        for q in pending:
            if q["action"] == "zone":
                continue
            if q.get("session_id") not in sessions:
                why = f"session {q.get('session_id')} is no longer published here"
                report.outcomes.append(RequestOutcome(q["request_id"], q["action"], q.get("session_id"),
                                                      q.get("frame_id"), "rejected", why))
                queue_out.append({"type": "request-outcome", "request_id": q["request_id"], "status": "rejected",
                                  "detail": why, "time": audit.now_utc()})
                continue
            by_session.setdefault(q["session_id"], []).append(q)
        zones = [(q, zones_from_geojson(q["zone"], source=q["request_id"])) for q in zone_reqs]
        if zones:
            # The zones file first: if anything below fails, later runs already exclude the zone.
            done = _applied_ids(recs)
            applied = [r for r in recs if r.get("type") == "request" and r["action"] == "zone"
                       and r["request_id"] in done]
            zp = zones_path(publish_dir)
            zp.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(zp, dumps(_zone_doc([*applied, *zone_reqs])))
        zone_counts: dict[str, int] = {}
        todo = sorted(set(by_session) | (sessions if zones else set()))
        for sid in todo:
            report.outcomes += _apply_session(publish_dir, sid, by_session.get(sid, []), zones, rr, zone_counts)
            report.sessions.append(sid)
        for q, _ in zones:
            n = zone_counts.get(q["request_id"], 0)
            report.outcomes.append(RequestOutcome(q["request_id"], "zone", None, None, "applied",
                                                  f"{n} published frame(s) removed in {len(todo)} session(s); "
                                                  "later nightly runs exclude the zone", frames_removed=n))
        for oc in report.outcomes:
            if any(r["request_id"] == oc.request_id for r in queue_out):
                continue
            queue_out.append({"type": "request-outcome", "request_id": oc.request_id, "status": oc.status,
                              "detail": oc.detail, "method": oc.method, "session_id": oc.session_id,
                              "frames_removed": oc.frames_removed, "time": audit.now_utc(), "who": audit.who()})
        audit.append_records(queue_path(publish_dir), queue_out)
        _index(publish_dir, {"type": "requests-applied", "requests": [o.request_id for o in report.outcomes],
                             "sessions": report.sessions})
    return report


def _applied_ids(recs: Sequence[Mapping[str, Any]]) -> set[str]:
    return {str(r["request_id"]) for r in recs
            if r.get("type") == "request-outcome" and r.get("status") == "applied"}


# ---------------------------------------------------------------------------- verify


def verify_governance(publish_dir: Path) -> list[str]:
    """Problems with the request queue of a publish tree (empty when fine or absent): its hash
    chain, the head the index last recorded, and the request zones file against the applied
    zone requests (a zone taken out of the file would let later runs publish the area again)."""
    publish_dir = Path(publish_dir)
    q = queue_path(publish_dir)
    label = f"{GOVERNANCE_DIR}/{QUEUE_FILE}"
    idx = [r for r in audit.read_records(publish_dir / audit.INDEX_FILE) if "governance_head" in r]
    if not q.exists():
        if idx:
            return [f"{label}: missing, but {audit.INDEX_FILE} records requests (seq {idx[-1].get('seq')})"]
        return []
    problems = list(audit.verify_chain(q, name=label).problems)
    if idx and not audit.contains_head(q, str(idx[-1]["governance_head"])):
        problems.append(f"{label}: the record the index holds as its head (seq {idx[-1].get('governance_seq')}) "
                        "is gone: queue truncated or replaced")
    recs = audit.read_records(q)
    applied = _applied_ids(recs)
    want = {r["request_id"]: r.get("zone_sha256") for r in recs
            if r.get("type") == "request" and r.get("action") == "zone" and r.get("request_id") in applied}
    zp = zones_path(publish_dir)
    have: dict[str, str] = {}
    if zp.exists():
        try:
            for f in json.loads(zp.read_bytes())["features"]:
                have[str(f["properties"]["request_id"])] = hashlib.sha256(audit.canonical(f["geometry"])).hexdigest()
        except (ValueError, KeyError, TypeError) as e:
            problems.append(f"{GOVERNANCE_DIR}/{ZONES_FILE}: unreadable: {e}")
            return problems
    for rid, sha in sorted(want.items()):
        if rid not in have:
            problems.append(f"{GOVERNANCE_DIR}/{ZONES_FILE}: zone of request {rid} is missing "
                            "(later runs would publish the area again)")
        elif have[rid] != sha:
            problems.append(f"{GOVERNANCE_DIR}/{ZONES_FILE}: zone of request {rid} was altered")
    for rid in sorted(set(have) - set(want)):
        problems.append(f"{GOVERNANCE_DIR}/{ZONES_FILE}: zone {rid} has no applied request in the queue")
    return problems
