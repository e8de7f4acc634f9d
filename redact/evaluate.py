"""Detection quality on a labelled image set: recall and precision at IoU 0.3, by height band.

Labels: ``{"images/x.jpg": [[x1, y1, x2, y2], ...]}`` (paths relative to the images folder),
as in ``../shared/data``. Labels may be incomplete, so an unmatched detection is an *upper
bound* on false positives; precision here is a lower bound.

Tuning discipline: ``split_of(name)`` puts every image in a fixed "tune" or "holdout" half by
a hash of its labelled path; thresholds are tuned on "tune" only and "holdout" is reported
separately.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from redact.boxes import iou_matrix

IOU = 0.3
BANDS: tuple[tuple[str, float, float], ...] = (
    ("<16", 0, 16),
    ("16-32", 16, 32),
    ("32-64", 32, 64),
    ("64-128", 64, 128),
    (">=128", 128, float("inf")),
)
Split = Literal["all", "tune", "holdout"]


def split_of(name: str) -> Literal["tune", "holdout"]:
    """The fixed split of a labelled image: sha256 of its label key, even first byte → tune."""
    return "tune" if hashlib.sha256(name.encode()).digest()[0] % 2 == 0 else "holdout"


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

    @property
    def fps(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def table(self, threshold: float) -> list[dict[str, Any]]:
        t = self.by_threshold[threshold]
        rows = [{"band": "all", **t.row(slice(None))}, {"band": ">=16", **t.row(slice(1, None))}]
        rows += [{"band": name, **t.row([i])} for i, (name, _, _) in enumerate(BANDS)]
        return rows

    def to_json(self) -> dict[str, Any]:
        return {
            "class": self.cls, "split": self.split, "images": self.images, "fps": round(self.fps, 3),
            "thresholds": {
                str(th): {
                    "bands": self.table(th),
                    "redacted_outside_labels": t.redacted_outside / t.images if t.images else 0.0,
                }
                for th, t in self.by_threshold.items()
            },
        }


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
    progress: Callable[[], None] | None = None,
) -> EvalResult:
    """Run ``detect(bytes, name) -> (xyxy, score, (w, h))`` over the labelled images.

    Detection must have run at ``min(thresholds)``; higher thresholds filter its output
    (equivalent to thresholding before NMS: a suppressing box always scores higher).
    ``area_of(xyxy, (w, h))`` (optional) returns the boolean mask a redaction would change,
    for the share of pixels redacted outside the labelled boxes.
    """
    names = sorted(k for k in labels if split == "all" or split_of(k) == split)
    tallies = {float(t): Tally() for t in sorted(set(thresholds))}
    seconds = 0.0
    for name in names:
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
            progress()
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


def as_large_frame(redactor: Any, long_side: int, ratio: float) -> None:
    """Make ``redactor``'s CenterNet detectors plan an image of ``long_side`` px as if it were
    a frame ``ratio`` x larger than the network input: whole-frame pass at 1/ratio, no upscale
    or tile pass (the regime of a 1920 px frame at input_size 1280 is ratio 1.5)."""
    from dataclasses import replace

    from redact.centernet import CenterNetDetector

    for det in redactor.detectors:
        if isinstance(det, CenterNetDetector):
            det.params = replace(det.params, input_size=max(32, int(long_side / ratio)), upscale=1.0,
                                 tile_above=10**9)


def widen_refinement(redactor: Any, high: float) -> None:
    """Refine candidates up to ``high`` (the highest threshold of a sweep): detection runs at
    the lowest threshold and higher ones filter its output, which is only equivalent to
    separate runs if every candidate below each threshold got its second look."""
    from dataclasses import replace

    from redact.centernet import CenterNetDetector

    for det in redactor.detectors:
        if isinstance(det, CenterNetDetector):
            det.heads = tuple(replace(h, refine=replace(h.refine, high=high)) if h.refine else h for h in det.heads)
