"""Detection quality on a labelled image set: recall and precision at IoU 0.3, by height band.

Labels: ``{"images/x.jpg": [[x1, y1, x2, y2], ...]}`` (paths relative to the images folder),
as in ``../shared/data``. Labels may be incomplete, so an unmatched detection is an *upper
bound* on false positives; precision here is a lower bound.

Tuning discipline: ``split_of(name)`` puts every image in a fixed "tune" or "holdout" half by
a hash of its labelled path; thresholds are tuned on "tune" only and "holdout" is reported
separately. Dashcam sets (``ORIGIN.json`` beside ``labels.json``) also have the plate model's
time split, "train" and "val" (``time_split_keys``), as its model card reports them.

``run_eval`` is what ``streetveil eval`` runs: the configured Redactor over a labelled set.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from redact.boxes import iou_matrix

if TYPE_CHECKING:
    from redact.config import RedactConfig

IOU = 0.3
BANDS: tuple[tuple[str, float, float], ...] = (
    ("<16", 0, 16),
    ("16-32", 16, 32),
    ("32-64", 32, 64),
    ("64-128", 64, 128),
    (">=128", 128, float("inf")),
)
Split = Literal["all", "tune", "holdout", "train", "val"]
SPLITS: tuple[str, ...] = ("all", "tune", "holdout", "train", "val")


def split_of(name: str) -> Literal["tune", "holdout"]:
    """The fixed split of a labelled image: sha256 of its label key, even first byte → tune."""
    return "tune" if hashlib.sha256(name.encode()).digest()[0] % 2 == 0 else "holdout"


def time_split_keys(root: Path) -> dict[str, set[str]]:
    """The plate model's time split of a dashcam set: the last 20 % of each ride by time is
    "val" (never trained on), the rest "train" (``redact.train.data.time_split``, the split
    redact/models/MODEL_CARD.md reports). Needs ``ORIGIN.json`` and ``labels.json`` in ``root``."""
    from redact.errors import RedactError

    if not (root / "ORIGIN.json").is_file() or not (root / "labels.json").is_file():
        raise RedactError(f"{root}: splits 'train' and 'val' are the plate model's time split of a dashcam set "
                          "and need ORIGIN.json and labels.json in the --images folder (plates-dashcam-ro)")
    from redact.train.data import load_dashcam, time_split

    try:
        frames = load_dashcam(root)
    except (ValueError, KeyError, OSError) as e:
        raise RedactError(f"{root}: not a dashcam set with ride times in ORIGIN.json ({e}); splits 'train' and "
                          "'val' are the plate model's time split (plates-dashcam-ro)") from None
    train, val = time_split(frames)
    return {"train": {f.key for f in train}, "val": {f.key for f in val}}


def select_images(labels: Mapping[str, Any], images_dir: Path, split: str) -> list[str]:
    """The label keys of ``split`` (see the module doc), sorted."""
    if split == "all":
        return sorted(labels)
    if split in ("tune", "holdout"):
        return sorted(k for k in labels if split_of(k) == split)
    if split in ("train", "val"):
        keys = time_split_keys(images_dir)[split]
        return sorted(k for k in labels if k in keys)
    raise ValueError(f"unknown split {split!r} (expected one of: {', '.join(SPLITS)})")


def band_of(height: float) -> int:
    for i, (_, lo, hi) in enumerate(BANDS):
        if lo <= height < hi:
            return i
    return len(BANDS) - 1


def match(gt: np.ndarray, det: np.ndarray, score: np.ndarray, iou: float = IOU) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching, best detection first, each to its highest-IoU free label.

    Returns (gt_matched bool [G], det_matched bool [D]).
    """
    g_ok = np.zeros(len(gt), bool)
    d_ok = np.zeros(len(det), bool)
    if not len(gt) or not len(det):
        return g_ok, d_ok
    ious = iou_matrix(det, gt)
    for d in np.argsort(-np.asarray(score), kind="stable"):
        cand = np.where(~g_ok & (ious[d] >= iou), ious[d], -1.0)
        g = int(np.argmax(cand))
        if cand[g] >= 0:
            g_ok[g] = True
            d_ok[d] = True
    return g_ok, d_ok


@dataclass
class Tally:
    """Counts per height band: labels, labels found, detections, detections that matched."""

    gt: np.ndarray = field(default_factory=lambda: np.zeros(len(BANDS), np.int64))
    gt_found: np.ndarray = field(default_factory=lambda: np.zeros(len(BANDS), np.int64))
    det: np.ndarray = field(default_factory=lambda: np.zeros(len(BANDS), np.int64))
    det_ok: np.ndarray = field(default_factory=lambda: np.zeros(len(BANDS), np.int64))
    images: int = 0
    redacted_outside: float = 0.0  # sum over images of the image share redacted outside labels

    def add(self, gt: np.ndarray, det: np.ndarray, score: np.ndarray) -> None:
        g_ok, d_ok = match(gt, det, score)
        for boxes, ok, total, good in ((gt, g_ok, self.gt, self.gt_found), (det, d_ok, self.det, self.det_ok)):
            for b, m in zip(boxes, ok, strict=True):
                i = band_of(float(b[3] - b[1]))
                total[i] += 1
                good[i] += int(m)
        self.images += 1

    def row(self, sel: slice | list[int]) -> dict[str, Any]:
        g, gf, d, do = (int(np.sum(a[sel])) for a in (self.gt, self.gt_found, self.det, self.det_ok))
        return {
            "labels": g, "found": gf, "recall": gf / g if g else None,
            "detections": d, "matched": do, "precision": do / d if d else None,
        }


@dataclass(frozen=True, slots=True)
class EvalResult:
    cls: str
    split: str
    images: int
    seconds: float  # decode + detect time
    by_threshold: dict[float, Tally]
    # What ran (Redactor.info) and how (labels file, --as-large-frame ratio): ``run_eval`` sets them.
    info: dict[str, Any] | None = None
    labels: str | None = None
    as_large_frame: float | None = None

    @property
    def fps(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def table(self, threshold: float) -> list[dict[str, Any]]:
        t = self.by_threshold[threshold]
        rows = [{"band": "all", **t.row(slice(None))}, {"band": ">=16", **t.row(slice(1, None))}]
        rows += [{"band": name, **t.row([i])} for i, (name, _, _) in enumerate(BANDS)]
        return rows

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "class": self.cls, "split": self.split, "images": self.images, "fps": round(self.fps, 3),
            "thresholds": {
                str(th): {
                    "bands": self.table(th),
                    "redacted_outside_labels": t.redacted_outside / t.images if t.images else 0.0,
                }
                for th, t in self.by_threshold.items()
            },
        }
        if self.info is not None:
            out.update(detectors=self.info["detectors"], precision=self.info.get("precision"),
                       labels=self.labels, as_large_frame=self.as_large_frame)
        return out


def merge(results: Sequence[EvalResult], split: str) -> EvalResult:
    """Disjoint parts of one set (e.g. tune + holdout) as one result: counts add (exact, since
    each image's detections do not depend on the others)."""
    first = results[0]
    tallies: dict[float, Tally] = {}
    for th in first.by_threshold:
        t = Tally()
        for r in results:
            o = r.by_threshold[th]
            t.gt, t.gt_found, t.det, t.det_ok = t.gt + o.gt, t.gt_found + o.gt_found, t.det + o.det, t.det_ok + o.det_ok
            t.images += o.images
            t.redacted_outside += o.redacted_outside
        tallies[th] = t
    return EvalResult(first.cls, split, sum(r.images for r in results), sum(r.seconds for r in results), tallies,
                      info=first.info, labels=first.labels, as_large_frame=first.as_large_frame)


def load_labels(path: Path) -> dict[str, np.ndarray]:
    from redact.errors import RedactError

    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RedactError(f"{path}: cannot read labels: {e}") from None
    if not isinstance(raw, dict):
        raise RedactError(f"{path}: labels must be an object {{image: [[x1,y1,x2,y2], ...]}}")
    out = {}
    for k, v in raw.items():
        arr = np.asarray(v, np.float32).reshape(-1, 4) if v else np.zeros((0, 4), np.float32)
        out[str(k)] = arr
    return out


def evaluate(
    labels: dict[str, np.ndarray],
    images_dir: Path,
    detect: Callable[[bytes, str], tuple[np.ndarray, np.ndarray, tuple[int, int]]],
    *,
    cls: str,
    thresholds: Sequence[float],
    split: Split = "all",
    area_of: Callable[[np.ndarray, tuple[int, int]], np.ndarray] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Run ``detect(bytes, name) -> (xyxy, score, (w, h))`` over the labelled images.

    Detection must have run at ``min(thresholds)``; higher thresholds filter its output
    (equivalent to thresholding before NMS: a suppressing box always scores higher; not with
    a second look that promotes candidates, see ``run_eval``).
    ``area_of(xyxy, (w, h))`` (optional) returns the boolean mask a redaction would change,
    for the share of pixels redacted outside the labelled boxes.
    """
    names = select_images(labels, images_dir, split)
    tallies = {float(t): Tally() for t in sorted(set(thresholds))}
    seconds = 0.0
    for i, name in enumerate(names):
        data = (images_dir / name).read_bytes()
        t0 = time.perf_counter()
        xyxy, score, (w, h) = detect(data, name)
        seconds += time.perf_counter() - t0
        gt = labels[name]
        for th, tally in tallies.items():
            keep = score >= th
            tally.add(gt, xyxy[keep], score[keep])
            if area_of is not None:
                red = area_of(xyxy[keep], (w, h))
                lab = area_of(gt, (w, h)) if len(gt) else np.zeros_like(red)
                tally.redacted_outside += float((red & ~lab).mean())
        if progress:
            progress(i + 1, len(names))
    return EvalResult(cls, split, len(names), seconds, tallies)


def format_table(result: EvalResult, threshold: float) -> str:
    lines = [
        f"class {result.cls}, split {result.split}, {result.images} images, threshold {threshold:g}, "
        f"IoU >= {IOU}",
        f"{'height px':<10} {'labels':>7} {'found':>7} {'recall':>7} {'dets':>7} {'matched':>8} {'precision':>9}",
    ]
    for r in result.table(threshold):
        rec = f"{r['recall']:.3f}" if r["recall"] is not None else "-"
        pre = f"{r['precision']:.3f}" if r["precision"] is not None else "-"
        lines.append(f"{r['band']:<10} {r['labels']:>7} {r['found']:>7} {rec:>7} {r['detections']:>7} "
                     f"{r['matched']:>8} {pre:>9}")
    t = result.by_threshold[threshold]
    if t.images:
        lines.append(f"redacted outside labelled boxes: {100 * t.redacted_outside / t.images:.2f} % of image area")
    lines.append(f"speed: {result.fps:.2f} frames/s (decode + detect)")
    return "\n".join(lines)


def thresholds_arg(values: Iterable[float]) -> list[float]:
    out = sorted({round(float(v), 4) for v in values})
    if not out or out[0] <= 0 or out[-1] >= 1:
        raise ValueError("thresholds must lie in (0, 1)")
    return out


def eval_config(config: RedactConfig, cls: str, threshold: float, frame_ratio: float | None = None) -> RedactConfig:
    """The config an evaluation of ``cls`` at ``threshold`` runs (``config`` is not changed).

    ``frame_ratio`` (``--as-large-frame``): the whole-frame pass sees each image at
    1/``frame_ratio``, with no upscale or tile pass (1.5: a 1920 px frame at input_size 1280).
    """
    from pydantic import ValidationError

    from redact.config import DetectorSection
    from redact.errors import RedactError

    upd: dict[str, Any] = {f"{cls}_threshold": threshold}
    if frame_ratio is not None:
        upd.update(input_scale=1.0 / frame_ratio, upscale=1.0, tile_above=10**9)
    try:
        new = DetectorSection.model_validate({**config.detector.model_dump(), **upd})
    except ValidationError as e:
        raise RedactError(f"evaluation settings: {e.errors()[0]['msg']}") from None
    return config.model_copy(update={"detector": new})


def run_eval(
    labels_path: Path,
    images_dir: Path,
    config: RedactConfig,
    *,
    cls: str,
    thresholds: Sequence[float] = (),
    split: Split = "all",
    threads: int | None = None,
    frame_ratio: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """``streetveil eval``: the Redactor ``config`` describes over the labelled images of
    ``split``; recall and precision per threshold (default: the one in effect) and height band.

    A sweep of thresholds filters one detection run at its lowest threshold, which equals
    separate runs only without a second look: faces with refinement promote candidates below
    their threshold, so each threshold then gets its own run.
    """
    from redact.detectors import plate_threshold
    from redact.engine import Redactor
    from redact.errors import RedactError
    from redact.ops import redacted_area
    from redact.types import class_index

    det = config.detector
    ths = thresholds_arg(thresholds or [det.face_threshold if cls == "face" else plate_threshold(det)])
    groups = [[t] for t in ths] if cls == "face" and det.refine else [ths]
    labels = load_labels(labels_path)
    ci = class_index(cls)
    results: list[EvalResult] = []
    info: dict[str, Any] | None = None
    for gi, group in enumerate(groups):
        redactor = Redactor(eval_config(config, cls, group[0], frame_ratio), threads=threads)
        if cls not in redactor.classes:
            raise RedactError(f"the configured detectors find no {cls}s")
        info = info or redactor.info

        def detect(data: bytes, name: str, r: Redactor = redactor) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
            img = r.decode(data, name=name)
            d = r.detect(img, classes=(cls,))
            return np.array(d.xyxy), np.array(d.score), (img.width, img.height)

        def area(xyxy: np.ndarray, size: tuple[int, int], r: Redactor = redactor) -> np.ndarray:
            return redacted_area(xyxy, np.full(len(xyxy), ci, np.uint8), r.params, size[0], size[1])

        def step(done: int, total: int, gi: int = gi) -> None:
            if progress:
                progress(gi * total + done, total * len(groups))

        results.append(evaluate(labels, images_dir, detect, cls=cls, thresholds=group, split=split, area_of=area,
                                progress=step))
    first = results[0]
    return EvalResult(cls, split, first.images, sum(r.seconds for r in results) / len(results),
                      {t: tally for r in results for t, tally in r.by_threshold.items()},
                      info=info, labels=str(labels_path), as_large_frame=frame_ratio)
