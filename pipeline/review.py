"""The QA review sheet of one published session: ``streetveil review PUBLISH_DIR/<session>``.

One self-contained HTML file (inline CSS and JS, thumbnails as ``data:`` URIs, a
Content-Security-Policy that forbids every network request) for an operator checking a
publication: the track as SVG with a point per frame, a thumbnail of every *published* image
with its redaction areas outlined, filters and counts.

What it reads, and only that: the session's published files (images, frames.geojson,
track.geojson, manifest), its audit chain, and the boxes and scores of the published frames
(the audit chain holds counts only): first from the QA detections file the last ``publish``
record names (``PUBLISH_DIR/.qa/<session>/``, ``pipeline.qadata``: durable, checked by ``audit
verify``), else, for publications from before it existed, from the job's work cache
``PUBLISH_DIR/.work/<session>/det/`` (carry recomputed). Never the raw session: the thumbnails
are downscaled from the published JPEGs, so the page cannot show an unredacted pixel. Where a
frame's detections are in neither, the sheet says so (its image and counts are still shown;
the counts come from the audit chain).

Definitions (docs/governance.md):

- *redaction areas*: the frame's own detections, the boxes carried from its neighbours
  (temporal carry, recomputed with ``pipeline.carry`` exactly as the job does) and boxes added
  by requests, each grown as the renderer grows it (``redact.ops.redaction_boxes``).
- *low confidence*: some own detection scores within ``low_margin`` above its class threshold
  (thresholds from the run record): a detection the detector nearly missed, so a similar
  object elsewhere in the frame may have been missed. Flagged per class too (*low-confidence
  face*, *low-confidence plate*): the plate scores of the packaged int8 model are compressed
  (half of its plate boxes on the dashcam frames score within 0.1 of its threshold), so near-
  threshold plates are in most street frames, while near-threshold faces single out a few;
  ``low_margin_face`` / ``low_margin_plate`` set a class's own margin.
- *no detections in a busy area*: the detector found nothing in the frame while at least
  ``busy_min`` of the published frames within ``busy_window`` frames either side had
  detections: people and cars rarely vanish for one frame, so a miss is likely.
- *failed*: the audit chain's last record for the frame says failed; never published, so
  listed without an image.
- *vetoed by the verifier*: with ``plate_verify = "on"``, plate candidates the verifier
  vetoed that the detector alone would have redacted (``pipeline.qadata``): **not** blurred,
  outlined so that a reviewer can see whether the verifier let a real plate through on this
  camera.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from pipeline import audit, qadata
from pipeline.errors import PipelineError
from pipeline.manifest import MANIFEST, read_manifest

log = logging.getLogger(__name__)

CLASS_NAMES = qadata.CLASS_NAMES


@dataclass(frozen=True, slots=True)
class ReviewOptions:
    low_margin: float = 0.15
    # Per-class overrides (None: ``low_margin``): the int8 plate scores are compressed, so a
    # margin that singles out a few faces flags plates in most street frames.
    low_margin_face: float | None = None
    low_margin_plate: float | None = None
    busy_window: int = 2
    busy_min: int = 2
    thumb_width: int = 320
    thumb_quality: int = 80

    def __post_init__(self) -> None:
        for name, m in (("low_margin", self.low_margin), ("low_margin_face", self.low_margin_face),
                        ("low_margin_plate", self.low_margin_plate)):
            if m is not None and not 0 < m < 1:
                raise ValueError(f"{name} must be in (0, 1)")
        if self.busy_window < 1 or self.busy_min < 1:
            raise ValueError("busy_window and busy_min must be >= 1")
        if not 32 <= self.thumb_width <= 1024:
            raise ValueError("thumb_width must be 32..1024")

    def margins(self) -> dict[str, float]:
        """The low-confidence margin of each class."""
        own = {"face": self.low_margin_face, "plate": self.low_margin_plate}
        return {c: m if (m := own.get(c)) is not None else self.low_margin for c in CLASS_NAMES}


@dataclass(frozen=True, slots=True)
class BoxView:
    """A redaction area in image pixels."""

    x1: float
    y1: float
    x2: float
    y2: float
    cls: str
    kind: str  # detected | carried | request | vetoed (by a plate verifier) | unblurred (by request): not redacted
    score: float | None = None


@dataclass
class FrameView:
    frame_id: str
    time: str
    lat: float | None
    lon: float | None
    status: str  # published | failed
    image: str | None = None
    width: int | None = None
    height: int | None = None
    faces: int = 0
    plates: int = 0
    boxes: list[BoxView] = field(default_factory=list)
    own: int | None = None  # own detections; None when no detection data is left
    vetoed: int | None = None  # candidates a plate verifier vetoed; None when not recorded
    low_conf: tuple[str, ...] = ()  # classes with a near-threshold own detection
    busy_empty: bool = False
    edited: bool = False
    error: str | None = None
    thumb: bytes | None = None

    @property
    def flags(self) -> list[str]:
        out = []
        if self.low_conf:
            out += ["lowconf", *(f"lowconf-{c}" for c in self.low_conf)]
        if self.busy_empty:
            out.append("busy")
        if self.edited:
            out.append("request")
        if self.vetoed:
            out.append("vetoed")
        if self.status == "failed":
            out.append("failed")
        if self.status == "published" and self.own is None:
            out.append("nodata")
        return out


@dataclass
class SessionReview:
    session_id: str
    frames: list[FrameView]
    run: dict[str, Any]
    excluded: dict[str, int]
    track: list[list[tuple[float, float]]]
    thresholds: dict[str, float]
    options: ReviewOptions
    verified: bool = False  # the run verified plates (plate_verify): vetoes may be recorded

    def count(self, flag: str) -> int:
        return sum(flag in f.flags for f in self.frames)


# ---------------------------------------------------------------------------- pure rules


def low_confidence(scores: Sequence[float], classes: Sequence[int], thresholds: Mapping[str, float],
                   margin: float | Mapping[str, float]) -> tuple[str, ...]:
    """The classes (in CLASS_NAMES order) with some detection scoring in [threshold,
    threshold + margin) of its class (``margin``: one for all, or per class); empty when none."""
    low = set()
    for s, c in zip(scores, classes, strict=True):
        name = CLASS_NAMES[int(c)]
        thr = thresholds.get(name)
        m = margin if isinstance(margin, float | int) else margin.get(name)
        if thr is not None and m is not None and thr <= s < thr + m:
            low.add(name)
    return tuple(n for n in CLASS_NAMES if n in low)


def busy_empty(own: Sequence[int | None], window: int, min_busy: int) -> list[bool]:
    """Per frame (capture order): no own detections while at least ``min_busy`` frames within
    ``window`` either side have some. Unknown counts (None) are neither empty nor busy."""
    out = []
    for i, n in enumerate(own):
        if n != 0:
            out.append(False)
            continue
        near = [own[j] for j in range(max(0, i - window), min(len(own), i + window + 1)) if j != i]
        out.append(sum(1 for m in near if m) >= min_busy)
    return out


def thumbnail(data: bytes, width: int, quality: int = 80) -> bytes:
    """A JPEG thumbnail ``width`` pixels wide of the JPEG in ``data`` (no metadata copied)."""
    from PIL import Image

    im = Image.open(io.BytesIO(data))
    h = max(1, round(im.height * width / im.width))
    im.draft("RGB", (width * 2, h * 2))  # DCT-domain pre-scaling: fast, still >= 2x the target
    small = im.convert("RGB").resize((width, h), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


# ---------------------------------------------------------------------------- collecting


def _det_cache(publish_dir: Path, sid: str, fid: str, raw_sha: str | None,
               run: Mapping[str, Any]) -> dict[str, Any] | None:
    from pipeline.tasks import _det_rel, detect_key

    if not raw_sha or not run.get("redact_config_key") or not run.get("model_hash"):
        return None
    key = detect_key(raw_sha, str(run["redact_config_key"]), str(run["model_hash"]))
    p = publish_dir / ".work" / sid / _det_rel(fid, key)
    try:
        d = json.loads(p.read_bytes())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) and d.get("status") == "ok" and d.get("key") == key else None


def collect(sdir: Path, opts: ReviewOptions | None = None) -> SessionReview:
    """Everything the sheet shows about the published session in ``sdir`` (no raw data read)."""
    import numpy as np

    from pipeline.carry import carry_boxes, neighbour_order
    from pipeline.plan import overrides_from
    from pipeline.requests import _params_of, basis_run
    from redact.ops import redaction_boxes

    opts = opts or ReviewOptions()
    sdir = Path(sdir)
    if not (sdir / MANIFEST).is_file():
        raise PipelineError(f"{sdir}: not a published session (no {MANIFEST}); give PUBLISH_DIR/<session-id>")
    publish_dir, sid = sdir.parent, sdir.name
    man = read_manifest(sdir)
    records = audit.read_records(sdir / audit.AUDIT_FILE)
    run = basis_run(records) or {}
    thresholds = {k: float(v) for k, v in ((run.get("detectors") or {}).get("thresholds") or {}).items()}
    margins = opts.margins()
    verified = any(d.get("verify") for d in (run.get("detectors") or {}).get("detectors") or [])
    params = _params_of(run)
    latest = audit.latest_frame_records(records)
    overrides = overrides_from(records)
    fc = json.loads((sdir / "frames.geojson").read_bytes())
    feats = {f["properties"]["frame_id"]: f for f in fc["features"]}

    # The carry neighbourhood as the job builds it: every frame of the capture sequence, those
    # left out of the publication included (their detections are carried to their neighbours).
    order = [r for r in latest.values() if r.get("status") in ("ok", "failed", "excluded")]
    for fid, f in feats.items():  # a published frame always takes part, even without a record
        if fid not in latest:
            order.append({"frame_id": fid, "capture_time": f["properties"]["time"], "status": "ok"})
    order.sort(key=lambda r: (str(r.get("capture_time")), r["frame_id"]))
    # Boxes and scores: the publication's QA detections (for the very image published), else
    # the work cache.
    stored: dict[str, dict[str, Any]] = {}
    ref = qadata.named(records)
    if ref is not None:
        entries, why = qadata.read(lambda rel: (publish_dir / rel).read_bytes(), ref)
        if entries is None:
            log.warning("%s; boxes from the work cache where it still has them", why)
        stored = {fid: e for fid, e in (entries or {}).items()
                  if fid in feats and e.get("image_sha256") == feats[fid]["properties"].get("sha256")}
    # The work cache only for frames the QA detections do not cover (and their neighbours).
    dets = {r["frame_id"]: _det_cache(publish_dir, sid, r["frame_id"], r.get("raw_sha256"), run)
            for r in order} if set(feats) - set(stored) else {}
    tc = run.get("temporal_carry") or {}
    k, expand = int(tc.get("frames", 0) or 0), float(tc.get("expand", 1.25) or 1.25)

    def arrays(d: Mapping[str, Any]) -> tuple[Any, Any, Any]:
        return (np.array(d["xyxy"], np.float32).reshape(-1, 4), np.array(d["score"], np.float32),
                np.array(d["cls"], np.uint8))

    def listed(ds: Sequence[Mapping[str, Any]]) -> tuple[Any, Any, Any]:
        """Boxes, scores (as stored) and classes of QA-detections items (``{"class", "box", "score"}``)."""
        return (np.array([d["box"] for d in ds], np.float32).reshape(-1, 4), [float(d["score"]) for d in ds],
                np.array([CLASS_NAMES.index(d["class"]) for d in ds], np.uint8))

    def outline(fv: FrameView, kind: str, xy: Any, sc: Any, cl: Any) -> None:
        """Boxes as the renderer grows them (a veto, an unblurred box: as they would have been)."""
        for b, s, c in zip(redaction_boxes(xy, cl, params, int(fv.width or 0), int(fv.height or 0)), sc, cl,
                           strict=True):
            fv.boxes.append(_box(b, CLASS_NAMES[int(c)], kind, float(s)))

    views: list[FrameView] = []
    for i, r in enumerate(order):
        fid = r["frame_id"]
        feat = feats.get(fid)
        if feat is None:
            if r.get("status") == "failed":
                views.append(FrameView(fid, str(r.get("capture_time")), r.get("lat"), r.get("lon"), "failed",
                                       error=str(r.get("error") or "unknown error")))
            continue
        p = feat["properties"]
        g = feat.get("geometry")
        fv = FrameView(fid, p["time"], g["coordinates"][1] if g else None, g["coordinates"][0] if g else None,
                       "published", image=p["image"], width=p.get("width"), height=p.get("height"),
                       faces=int(p.get("faces", 0)), plates=int(p.get("plates", 0)))
        w, h = int(fv.width or 0), int(fv.height or 0)
        ov = overrides.get(fid)
        fv.edited = bool(ov and (ov.boxes or ov.unblur)) or "request_id" in (latest.get(fid) or {})
        own = dets.get(fid)
        entry = stored.get(fid)
        vetoed = None
        if entry is not None:
            fv.own = sum(not d.get("carried") for d in entry["detections"])
            oxy, osc, ocl = arrays(dict(zip(("xyxy", "score", "cls"), qadata.own_detections(entry), strict=True)))
            fv.low_conf = low_confidence(osc.tolist(), ocl.tolist(), thresholds, margins)
            for kind in ("detected", "carried"):
                outline(fv, kind, *listed([d for d in entry["detections"] if not d.get("unblurred")
                                           and bool(d.get("carried")) == (kind == "carried")]))
            # Plate boxes an unblur request left out: not blurred, outlined as they would be.
            outline(fv, "unblurred", *listed([d for d in entry["detections"] if d.get("unblurred")]))
            vetoed = None if entry.get("vetoed") is None else listed(entry["vetoed"])
        elif own is not None:
            oxy, osc, ocl = arrays(own)
            fv.own = len(osc)
            fv.low_conf = low_confidence(osc.tolist(), ocl.tolist(), thresholds, margins)
            neigh = [dets.get(order[j]["frame_id"]) for j in neighbour_order(i, len(order), k)]
            cxy, csc, ccl = carry_boxes(oxy, ocl, [arrays(d) for d in neigh if d is not None], expand=expand,
                                        width=w, height=h)
            outline(fv, "detected", oxy, osc, ocl)
            outline(fv, "carried", cxy, csc, ccl)
            raw = own.get("vetoed")  # (x1, y1, x2, y2, class, score) rows
            vetoed = None if raw is None else arrays({"xyxy": [b[:4] for b in raw], "score": [b[5] for b in raw],
                                                      "cls": [b[4] for b in raw]})
        if vetoed is not None:  # recorded (possibly none): the verifier's vetoes, not blurred
            fv.vetoed = len(vetoed[1])
            outline(fv, "vetoed", *vetoed)
        if ov and ov.boxes:
            xy = np.array([b[:4] for b in ov.boxes], np.float32)
            cl = np.array([b[4] for b in ov.boxes], np.uint8)
            for b in redaction_boxes(xy, cl, params, w, h):
                fv.boxes.append(_box(b, "request", "request", None))
        fv.thumb = thumbnail((sdir / str(fv.image)).read_bytes(), opts.thumb_width, opts.thumb_quality)
        views.append(fv)
    pub = [f for f in views if f.status == "published"]
    for f, flag in zip(pub, busy_empty([f.own for f in pub], opts.busy_window, opts.busy_min), strict=True):
        f.busy_empty = flag
    missing = sorted(set(feats) - {f.frame_id for f in views})
    if missing:  # cannot happen with a consistent tree; never drop a published image silently
        raise PipelineError(f"{sdir}: published frames missing from the sheet: {', '.join(missing[:5])}")
    excluded: dict[str, int] = {}
    for r in latest.values():
        if r.get("status") == "excluded":
            excluded[str(r.get("reason"))] = excluded.get(str(r.get("reason")), 0) + 1
    if len([x for x in man["files"] if x.startswith("images/")]) != len(pub):
        raise PipelineError(f"{sdir}: manifest and frames.geojson disagree; run `streetveil audit verify`")
    return SessionReview(sid, views, run, excluded, _track(sdir), thresholds, opts, verified)


def _box(b: Any, cls: str, kind: str, score: float | None) -> BoxView:
    return BoxView(float(b[0]), float(b[1]), float(b[2]), float(b[3]), cls=cls, kind=kind, score=score)


def _track(sdir: Path) -> list[list[tuple[float, float]]]:
    try:
        fc = json.loads((sdir / "track.geojson").read_bytes())
    except (OSError, ValueError):
        return []
    out: list[list[tuple[float, float]]] = []
    for f in fc.get("features", []):
        g = f.get("geometry")
        if not g:
            continue
        lines = [g["coordinates"]] if g["type"] == "LineString" else g["coordinates"]
        out += [[(float(p[1]), float(p[0])) for p in line] for line in lines]
    return out


# ---------------------------------------------------------------------------- rendering


def _template(name: str) -> str:
    return resources.files("pipeline").joinpath("templates", name).read_text(encoding="utf-8")


def _fmt(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def _map_svg(rv: SessionReview, width: int = 400, height: int = 300) -> str:
    """Track and frame points, projected equirectangularly (x scaled by cos(latitude))."""
    import math

    pts = [(la, lo) for line in rv.track for la, lo in line]
    pts += [(f.lat, f.lon) for f in rv.frames if f.lat is not None and f.lon is not None]
    if not pts:
        return '<p class="muted">No positions: nothing to draw.</p>'
    # A drive across the antimeridian (longitudes on both sides of ±180): draw it continuous,
    # with the western longitudes taken past +180, not stretched across the whole globe.
    wrap = max(p[1] for p in pts) - min(p[1] for p in pts) > 180.0

    def east(lo: float) -> float:
        return lo + 360.0 if wrap and lo < 0 else lo

    pts = [(la, east(lo)) for la, lo in pts]
    lat0 = sum(p[0] for p in pts) / len(pts)
    k = math.cos(math.radians(lat0))
    xs = [p[1] * k for p in pts]
    ys = [p[0] for p in pts]
    span = max(max(xs) - min(xs), max(ys) - min(ys), 1e-6)
    pad = 16
    scale = min((width - 2 * pad) / span, (height - 2 * pad) / span)
    cx, cy = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2

    def xy(la: float, lo: float) -> str:
        return f"{_fmt(width / 2 + (east(lo) * k - cx) * scale)},{_fmt(height / 2 - (la - cy) * scale)}"

    parts = [f'<svg id="track" viewBox="0 0 {width} {height}" role="img" aria-label="GPS track and frames">']
    for line in rv.track:
        parts.append(f'<polyline class="track-line" points="{" ".join(xy(la, lo) for la, lo in line)}"/>')
    for f in rv.frames:
        if f.lat is None or f.lon is None:
            continue
        x, y = xy(f.lat, f.lon).split(",")
        cls = " ".join(["pt", f.status, *f.flags])
        parts.append(f'<circle class="{cls}" cx="{x}" cy="{y}" r="4" data-frame="{html.escape(f.frame_id)}">'
                     f"<title>{html.escape(f.frame_id)} {html.escape(f.time)}</title></circle>")
    # Scale bar: a round number of metres (1 degree of latitude is about 111.32 km).
    m_per_px = 111_320.0 / scale
    bar_m = next((m for m in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
                  if m / m_per_px >= 40), 20000)
    bar_px = bar_m / m_per_px
    label = f"{bar_m // 1000} km" if bar_m >= 1000 else f"{bar_m} m"
    parts.append(f'<g class="scale"><line x1="{pad}" y1="{height - 8}" x2="{_fmt(pad + bar_px)}" y2="{height - 8}"/>'
                 f'<text x="{pad}" y="{height - 12}">{label}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


def _overlay(f: FrameView) -> str:
    w, h = int(f.width or 1), int(f.height or 1)
    out = [f'<svg class="overlay" viewBox="0 0 {w} {h}" preserveAspectRatio="none">']
    for b in f.boxes:
        label = b.cls if b.score is None else f"{b.cls} {b.score:.2f}"
        out.append(f'<rect class="box {html.escape(b.kind)} {html.escape(b.cls)}" x="{_fmt(b.x1)}" y="{_fmt(b.y1)}" '
                   f'width="{_fmt(b.x2 - b.x1)}" height="{_fmt(b.y2 - b.y1)}">'
                   f"<title>{html.escape(b.kind)}: {html.escape(label)} "
                   f"[{_fmt(b.x1)},{_fmt(b.y1)},{_fmt(b.x2)},{_fmt(b.y2)}]</title></rect>")
    out.append('<rect class="draw" x="0" y="0" width="0" height="0"/></svg>')
    return "".join(out)


_FLAG_TEXT = {"lowconf-face": "low-confidence face", "lowconf-plate": "low-confidence plate",
              "busy": "no detections, busy area", "request": "edited by request", "nodata": "no detection data",
              "vetoed": "verifier vetoed a plate"}


def _card(f: FrameView, rv: SessionReview) -> str:
    e = html.escape
    flags = " ".join(f.flags)
    badges = "".join(f'<span class="badge {x}">{e(_FLAG_TEXT[x])}</span>' for x in f.flags if x in _FLAG_TEXT)
    scores = sorted(b.score for b in f.boxes if b.kind == "detected" and b.score is not None)
    low = f"min score {scores[0]:.2f}" if scores else "no detections"
    own = "?" if f.own is None else str(f.own)
    if rv.verified:  # "?": vetoes not recorded (published before streetveil kept them)
        own += f" · vetoed {'?' if f.vetoed is None else f.vetoed}"
    assert f.thumb is not None
    uri = "data:image/jpeg;base64," + base64.b64encode(f.thumb).decode("ascii")
    return (
        f'<article class="frame-card" id="f-{e(f.frame_id)}" data-frame="{e(f.frame_id)}" data-flags="{e(flags)}" '
        f'data-width="{f.width}" data-height="{f.height}">'
        f'<div class="thumb"><img alt="published image {e(f.frame_id)}" src="{uri}" '
        f'width="{rv.options.thumb_width}">{_overlay(f)}</div>'
        f'<div class="meta"><b>{e(f.frame_id)}</b> <span class="muted">{e(f.time)}</span><br>'
        f"faces {f.faces} · plates {f.plates} · detected {own} · {e(low)}"
        f'<div class="badges">{badges}</div><div class="cmd" hidden></div></div></article>'
    )


def render(rv: SessionReview, *, publish_path: str = "PUBLISH_DIR") -> str:
    """The page as a string (deterministic for the same inputs, except the generation time)."""
    e = html.escape
    pub = [f for f in rv.frames if f.status == "published"]
    failed = [f for f in rv.frames if f.status == "failed"]
    det = (rv.run.get("detectors") or {}).get("detectors") or []
    counts = {
        "published": len(pub), "failed": len(failed), "lowconf": rv.count("lowconf"),
        "lowconf_face": rv.count("lowconf-face"), "lowconf_plate": rv.count("lowconf-plate"), "busy": rv.count("busy"),
        "request": rv.count("request"), "nodata": rv.count("nodata"), "vetoed": rv.count("vetoed"),
        "faces": sum(f.faces for f in pub), "plates": sum(f.plates for f in pub),
        "excluded": sum(rv.excluded.values()),
    }
    excl = ", ".join(f"{e(k)} {v}" for k, v in sorted(rv.excluded.items())) or "none"
    failed_rows = "".join(
        f'<tr class="failed-row" data-frame="{e(f.frame_id)}"><td>{e(f.frame_id)}</td><td>{e(f.time)}</td>'
        f"<td>{e(f.error or '')}</td></tr>" for f in failed) or '<tr><td colspan="3">none</td></tr>'
    margins = rv.options.margins()
    values = {
        "title": e(f"QA review: {rv.session_id}"),
        "session_id": e(rv.session_id),
        # Inside <script>: JSON, with "</" broken up so no string can close the element.
        "session_json": json.dumps(rv.session_id).replace("</", "<\\/"),
        "publish_json": json.dumps(publish_path).replace("</", "<\\/"),
        "generated": e(datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")),
        "run_id": e(str(rv.run.get("run_id", "unknown"))),
        "run_time": e(str(rv.run.get("time", ""))),
        "detectors": e(", ".join(f"{d.get('name')} {d.get('version')}" for d in det) or "unknown"),
        "thresholds": e(", ".join(f"{k} {v:g}" for k, v in sorted(rv.thresholds.items())) or "unknown"),
        "low_margin": e(" / ".join(f"{m:g} ({c})" for c, m in margins.items())
                        if len(set(margins.values())) > 1 else f"{next(iter(margins.values())):g}"),
        **{f"low_margin_{c}": e(f"{m:g}") for c, m in margins.items()},
        "busy_window": str(rv.options.busy_window),
        "busy_min": str(rv.options.busy_min),
        "excluded": excl,
        "map": _map_svg(rv),
        "cards": "\n".join(_card(f, rv) for f in pub),
        "failed_rows": failed_rows,
        "css": _template("review.css"),
        "js": _template("review.js"),
        **{f"n_{k}": str(v) for k, v in counts.items()},
    }
    return Template(_template("review.html")).substitute(values)


@dataclass(frozen=True, slots=True)
class ReviewResult:
    path: Path
    published: int
    failed: int
    low_confidence: int
    low_confidence_faces: int
    low_confidence_plates: int
    busy_empty: int
    no_detection_data: int
    edited: int
    vetoed: int  # frames where a plate verifier vetoed a candidate the detector alone would keep
    size: int


def write_review(sdir: Path, out: Path | None = None, opts: ReviewOptions | None = None) -> ReviewResult:
    """Write the QA sheet of the published session ``sdir`` to ``out`` (default
    ``review-<session>.html`` in the current folder; never inside the publish tree, which the
    manifest covers)."""
    from capture.fsutil import atomic_write_bytes

    sdir = Path(sdir)
    rv = collect(sdir, opts)
    out = Path(out) if out is not None else Path.cwd() / f"review-{rv.session_id}.html"
    if sdir.resolve() in out.resolve().parents:
        raise PipelineError(f"{out}: do not write the sheet into the published session (it would break its manifest)")
    page = render(rv, publish_path=str(sdir)).encode("utf-8")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, page)
    pub = [f for f in rv.frames if f.status == "published"]
    return ReviewResult(out, len(pub), sum(f.status == "failed" for f in rv.frames), rv.count("lowconf"),
                        rv.count("lowconf-face"), rv.count("lowconf-plate"), rv.count("busy"), rv.count("nodata"),
                        rv.count("request"), rv.count("vetoed"), len(page))
