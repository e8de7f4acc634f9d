"""Evaluation helpers for the plate model: run the ONNX model, decode, match, and report
recall / false detections by plate height band.

Matching: a labelled plate is found when a detection overlaps it with IoU >= 0.3 (the
criterion DETECTORS.md uses for faces), each detection matching at most one plate. A
detection that matches neither a scored plate nor an unscored real label is a false
detection. A sign counts as detected when a detection covers half of the detection's area
or more with the sign, or IoU >= 0.3.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from redact.boxes import (
    clip_boxes,
    decode_centernet,
    intersection_matrix,
    iou_matrix,
    nms,
    nms_union,
)
from redact.centernet import ZOOM_MIN_NET_PX, union_rows
from redact.evaluate import match
from redact.train.data import HEIGHT_BANDS, Scene, band_name
from redact.verify import Calibration

MATCH_IOU = 0.3


class PlateRunner:
    """The combined ONNX model on onnxruntime CPU, for evaluation."""

    def __init__(self, onnx_path: Path, threads: int = 2) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        self.names = [o.name for o in self.session.get_outputs()]

    def outputs(self, rgb: np.ndarray, max_width: int | None = None) -> tuple[dict[str, np.ndarray], float]:
        """Raw outputs for one RGB image (padded right/bottom to multiples of 32, optionally
        downscaled to ``max_width``) and the scale applied to the image."""
        s = 1.0
        if max_width is not None and rgb.shape[1] > max_width:
            s = max_width / rgb.shape[1]
            rgb = cv2.resize(rgb, (max_width, round(rgb.shape[0] * s)), interpolation=cv2.INTER_AREA)
        h, w = rgb.shape[:2]
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        x = np.zeros((1, 3, ph, pw), np.float32)
        x[0, :, :h, :w] = rgb.transpose(2, 0, 1)
        out = self.session.run(None, {"input": x})
        return {n: o[0] for n, o in zip(self.names, out, strict=True)}, s

    def decoded(self, rgb: np.ndarray, threshold: float, cls: str = "plate",
                max_width: int | None = None) -> tuple[np.ndarray, np.ndarray, float]:
        """Every cell above ``threshold``: boxes [N, 4] in network pixels, scores [N] (no NMS),
        and the scale applied to the image."""
        o, s = self.outputs(rgb, max_width)
        boxes, scores = decode_centernet(o[f"{cls}_heatmap"][0], o[f"{cls}_scale"], o[f"{cls}_offset"], threshold)
        return boxes, scores, s

    def detect(self, rgb: np.ndarray, threshold: float, cls: str = "plate",
               max_width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Boxes [N, 4] in the image's pixels and scores [N], after NMS IoU 0.3."""
        boxes, scores, s = self.decoded(rgb, threshold, cls, max_width)
        keep = nms(boxes, scores, 0.3)
        return boxes[keep] / s, scores[keep]

    def propose(self, rgb: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        boxes, scores = self.detect(rgb, threshold)
        return boxes, boxes, scores


class Runner(Protocol):
    def detect(self, rgb: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """The boxes redacted [N, 4] and their scores [N]."""
        ...

    def propose(self, rgb: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The boxes as found (what a verifier judges), the boxes redacted, their scores."""
        ...


class EngineRunner:
    """A plate runner plus what the engine adds for the streetveil plate head, in the engine's
    order (redact/centernet.py): the zoom-out pass at ``zoom_out`` (0 = none; its boxes under
    ZOOM_MIN_NET_PX network pixels dropped), one NMS (IoU 0.3) over both passes, with
    ``union`` each kept box of UNION_MIN_NET_PX or more grown to the union of the boxes it
    suppressed (ClassHead.union).
    Like the engine for frames whose whole-frame pass runs at native scale (long side <=
    1280: the shared dashcam sets)."""

    def __init__(self, runner: PlateRunner, zoom_out: float = 0.0, union: bool = False,
                 grow_min: float = 0.0) -> None:
        if not 0.0 <= zoom_out < 1.0:
            raise ValueError(f"zoom-out scale must be in [0, 1), got {zoom_out}")
        # grow_min: behind a verifier, the detector alone's threshold (see ClassHead.unverified).
        self.runner, self.zoom_out, self.union, self.grow_min = runner, zoom_out, union, grow_min

    def propose(self, rgb: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        b, s, f = self.runner.decoded(rgb, threshold)
        b = b / f
        if self.zoom_out:
            b2, s2, f2 = self.runner.decoded(rgb, threshold, max_width=round(rgb.shape[1] * self.zoom_out))
            tall = b2[:, 3] - b2[:, 1] >= ZOOM_MIN_NET_PX
            b, s = np.concatenate([b, b2[tall] / f2]), np.concatenate([s, s2[tall]])
        # As the engine: clipped to the image, slivers dropped, then one NMS.
        h, w = rgb.shape[:2]
        b = clip_boxes(b, w, h)
        ok = (b[:, 2] - b[:, 0] >= 1) & (b[:, 3] - b[:, 1] >= 1)
        b, s = b[ok], s[ok]
        keep, grown = nms_union(b, s, 0.3, grow_min=max(threshold, self.grow_min))
        b, s = b[keep], s[keep]
        # The whole-frame pass runs at native scale here (see the class doc).
        return b, (np.where(union_rows(b, 1.0)[:, None], grown, b) if self.union else b), s

    def detect(self, rgb: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        _, shown, scores = self.propose(rgb, threshold)
        return shown, scores


class VerifiedRunner:
    """A plate runner whose proposals must also pass the verifier (redact/verify.py) at
    ``verify``: the engine's plate path with verification on (the verifier judges the boxes
    as found, the kept ones are redacted as the runner grows them)."""

    def __init__(self, runner: Runner, score_fn: Any, calibration: Calibration) -> None:
        # calibration: its verify threshold and bypass apply; proposals come at each call's threshold.
        self.runner, self.score_fn, self.calibration = runner, score_fn, calibration

    def propose(self, rgb: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        found, shown, scores = self.runner.propose(rgb, threshold)
        keep = self.calibration.at(threshold).keep(scores, self.score_fn(rgb, found))
        return found[keep], shown[keep], scores[keep]

    def detect(self, rgb: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        _, shown, scores = self.propose(rgb, threshold)
        return shown, scores


@dataclass
class Tally:
    """Counts per height band, plus false detections, over a set of images."""

    found: dict[str, int] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)
    images: int = 0
    false: int = 0
    detections: int = 0
    signs: int = 0
    signs_hit: int = 0
    signs_hit_images: int = 0
    # Coverage of plates >= COVER_MIN_PX tall (recall only asks IoU >= 0.3 of one box): the
    # share of each plate inside the union of the detections grown as the blur grows them.
    covers: list[float] = field(default_factory=list)
    # The same for 8-16 px plates, which IoU >= 0.3 judges harshly (a box a few pixels off, or
    # a merged box around a plate and its car, misses it while the blur hides it), and for the
    # same boxes moved sideways (``shifted``): what the detections would cover by chance.
    covers_small: list[float] = field(default_factory=list)
    covers_small_chance: list[float] = field(default_factory=list)

    def add(self, gt: np.ndarray, extra: np.ndarray, signs: np.ndarray, dets: np.ndarray, scores: np.ndarray,
            shape: tuple[int, ...] | None = None) -> None:
        self.images += 1
        if shape is not None:
            h = gt[:, 3] - gt[:, 1]
            self.covers += coverage(gt[h >= COVER_MIN_PX], dets, shape[:2])
            small = gt[(h >= SMALL_BAND[0]) & (h < SMALL_BAND[1])]
            self.covers_small += coverage(small, dets, shape[:2])
            self.covers_small_chance += coverage(shifted(small, shape[1]), dets, shape[:2])
        self.detections += len(dets)
        hit, used = match(gt, dets, scores, MATCH_IOU)
        _, used_extra = match(extra, dets[~used], scores[~used], MATCH_IOU)
        rest = dets[~used][~used_extra]
        self.false += len(rest)
        for b, h in zip(gt, hit, strict=True):
            name = band_of(float(b[3] - b[1]))
            self.total[name] = self.total.get(name, 0) + 1
            self.found[name] = self.found.get(name, 0) + int(h)
        if len(signs):
            self.signs += len(signs)
            hit_sign = sign_hits(signs, rest)
            self.signs_hit += int(hit_sign.sum())
            self.signs_hit_images += int(hit_sign.any())

    def recall(self, bands: Iterable[str] | None = None) -> float | None:
        keys = list(bands) if bands is not None else list(self.total)
        t = sum(self.total.get(k, 0) for k in keys)
        return None if t == 0 else sum(self.found.get(k, 0) for k in keys) / t

    @property
    def found_ge16(self) -> int:
        """Plates >= 16 px found: the count behind ``recall_ge16``."""
        return sum(self.found.get(n, 0) for n in GE16_BANDS)

    def as_dict(self) -> dict[str, Any]:
        names = [band_name(*b) for b in HEIGHT_BANDS]
        return {
            "images": self.images,
            "plates": sum(self.total.values()),
            "recall": _r(self.recall()),
            "recall_ge16": _r(self.recall(GE16_BANDS)),
            "recall_8_16": _r(self.recall([names[1]])),
            "bands": {n: {"found": self.found.get(n, 0), "total": self.total.get(n, 0),
                          "recall": _r(self.recall([n]))} for n in names if self.total.get(n, 0)},
            "false_per_image": _r(self.false / max(self.images, 1)),
            "precision": _r((self.detections - self.false) / self.detections) if self.detections else None,
            **({"signs": self.signs, "signs_detected": self.signs_hit} if self.signs else {}),
            **({"coverage_ge64": {"plates": len(self.covers), "mean": _r(float(np.mean(self.covers))),
                                  "share_ge95": _r(float(np.mean(np.array(self.covers) >= 0.95)))}}
               if self.covers else {}),
            **({"coverage_8_16": {"plates": len(self.covers_small),
                                  "share_ge80": _r(float(np.mean(np.array(self.covers_small) >= 0.8))),
                                  "share_ge95": _r(float(np.mean(np.array(self.covers_small) >= 0.95))),
                                  "chance_ge80": _r(float(np.mean(np.array(self.covers_small_chance) >= 0.8)))}}
               if self.covers_small else {}),
        }


COVER_MIN_PX = 64
SMALL_BAND = HEIGHT_BANDS[1]  # 8-16 px, as recall_8_16
GE16_BANDS = tuple(band_name(*b) for b in HEIGHT_BANDS[2:])  # behind recall_ge16 and found_ge16
CHANCE_SHIFT_PX = 200
PLATE_EXPAND = 1.15  # redact.ops.RedactParams().plate_expand: the blur grows each box by this


def coverage(plates: np.ndarray, dets: np.ndarray, hw: tuple[int, ...]) -> list[float]:
    """Per plate box: the share of its pixels inside the union of ``dets`` grown by
    PLATE_EXPAND about their centres (what the blur covers). Pure."""
    h, w = int(hw[0]), int(hw[1])
    mask = np.zeros((h, w), bool)
    for x1, y1, x2, y2 in np.asarray(dets, np.float64).reshape(-1, 4):
        cx, cy, hw_, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * PLATE_EXPAND / 2, (y2 - y1) * PLATE_EXPAND / 2
        mask[max(0, int(cy - hh)):max(0, int(np.ceil(cy + hh))), max(0, int(cx - hw_)):max(0, int(np.ceil(cx + hw_)))] = True
    out = []
    for x1, y1, x2, y2 in np.asarray(plates, np.float64).reshape(-1, 4):
        a, b = max(0, int(x1)), max(0, int(y1))
        region = mask[b:max(b + 1, int(np.ceil(y2))), a:max(a + 1, int(np.ceil(x2)))]
        out.append(float(region.mean()) if region.size else 0.0)
    return out


def shifted(boxes: np.ndarray, width: int, dx: float = CHANCE_SHIFT_PX) -> np.ndarray:
    """The boxes moved ``dx`` px sideways, to the left where the right has no room (same rows,
    so similar surroundings): where coverage by chance is measured. Pure."""
    out = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    right = out[:, 2] + dx <= width
    out[:, [0, 2]] += np.where(right, dx, -dx)[:, None]
    return out


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def band_of(h: float) -> str:
    for lo, hi in HEIGHT_BANDS:
        if lo <= h < hi:
            return band_name(lo, hi)
    return band_name(*HEIGHT_BANDS[-1])


def sign_hits(signs: np.ndarray, dets: np.ndarray) -> np.ndarray:
    """[S] bool: which signs a detection lands on."""
    if len(dets) == 0 or len(signs) == 0:
        return np.zeros(len(signs), bool)
    iou = iou_matrix(signs, dets)
    inter = intersection_matrix(signs, dets)
    det_area = (dets[:, 2] - dets[:, 0]) * (dets[:, 3] - dets[:, 1])
    cover = inter / (det_area[None, :] + 1e-9)
    return ((iou >= MATCH_IOU) | (cover >= 0.5)).any(axis=1)


def f_beta(precision: float, recall: float, beta: float = 2.0) -> float:
    """F-beta (recall counted beta² times precision; 0 when both are 0)."""
    b2 = beta ** 2
    return (1 + b2) * precision * recall / (b2 * precision + recall) if precision + recall > 0 else 0.0


def evaluate_scenes(runner: Runner, scenes: Iterable[Scene], threshold: float) -> Tally:
    t = Tally()
    for sc in scenes:
        dets, scores = runner.detect(sc.image, threshold)
        t.add(sc.boxes, sc.extra, sc.signs, dets, scores, sc.image.shape)
    return t


def scene_scores(runner: Runner, scenes: Iterable[Scene]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(gt, extra, signs, dets, scores) per scene at a low threshold, so several thresholds
    can be scored without re-running the model."""
    out = []
    for sc in scenes:
        dets, scores = runner.detect(sc.image, 0.05)
        out.append((sc.boxes, sc.extra, sc.signs, dets, scores))
    return out


def tally_at(rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]], threshold: float) -> Tally:
    """Score cached detections at ``threshold`` (NMS already applied at the low threshold;
    raising the threshold only removes boxes, which NMS order would have kept anyway)."""
    t = Tally()
    for gt, extra, signs, dets, scores in rows:
        k = scores >= threshold
        t.add(gt, extra, signs, dets[k], scores[k])
    return t
