"""plate-heuristic-interim: a classical licence-plate candidate finder. WEAK — not a default.

It was the stop-gap until the trained face+plate model (backend "streetveil", now the
default) landed, and stays available by name (plate_backend = "plate-heuristic-interim")
for comparison; see docs/detectors.md for its measured recall and precision. It finds dark characters on a light, roughly rectangular background:

1. black-hat morphology (dark strokes narrower than a character cell on a lighter ground),
2. horizontal gradient, closed with a wide flat kernel so a row of characters merges into
   one blob; Otsu threshold,
3. blobs whose bounding box has a plate-like aspect ratio (1.5–7) and size,
4. a score from the number of dark/light transitions along the middle rows (characters)
   and the blob's fill ratio.

It runs at two scales so plates from ~10 to ~150 px tall produce blobs. No learning, no
weights; its false positives are mostly shop-sign lettering, railings and grilles.
"""

from __future__ import annotations

import cv2
import numpy as np

from redact.boxes import nms
from redact.types import Detections

NAME = "plate-heuristic-interim"
VERSION = "1"

_WORK_LONG_SIDE = 1280  # frames are analysed at most this large
_SCALES = (1.0, 0.5)


def _candidates(gray: np.ndarray) -> list[tuple[int, int, int, int]]:
    bh_kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (15, 5))
    blackhat = cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, bh_kernel)
    grad = np.abs(cv2.Sobel(blackhat, cv2.CV_32F, 1, 0, ksize=3))
    mx = float(grad.max())
    if mx <= 0:
        return []
    grad8 = cv2.GaussianBlur((grad * (255.0 / mx)).astype(np.uint8), (5, 5), 0)
    closed = cv2.morphologyEx(grad8, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (17, 3)))
    _, binary = cv2.threshold(closed, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    k3 = np.ones((3, 3), np.uint8)
    binary = cv2.dilate(cv2.erode(binary, k3, iterations=1), k3, iterations=2)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for c in contours:
        x, y, w, h = cv2.boundingRect(c)
        if h < 8 or h > 160 or w < 24:
            continue
        aspect = w / h
        if not 1.5 <= aspect <= 7.0:
            continue
        fill = cv2.contourArea(c) / float(w * h)
        if fill < 0.45:
            continue
        out.append((x, y, x + w, y + h))
    return out


def _score(gray: np.ndarray, box: tuple[int, int, int, int]) -> float:
    x1, y1, x2, y2 = box
    crop = gray[y1:y2, x1:x2]
    if crop.size < 64:
        return 0.0
    _, bw = cv2.threshold(crop, 0, 1, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    h = crop.shape[0]
    rows = [bw[int(h * f)] for f in (0.35, 0.5, 0.65)]
    transitions = float(np.median([np.count_nonzero(np.diff(r.astype(np.int8))) for r in rows]))
    # A plate line of 5-8 characters gives ~10-24 transitions.
    t_score = float(np.clip((transitions - 6) / 8, 0, 1)) * float(np.clip((40 - transitions) / 12, 0, 1))
    light = float(bw.mean())  # share of light pixels: plate background is light
    l_score = float(np.clip((light - 0.35) / 0.25, 0, 1)) * float(np.clip((0.92 - light) / 0.12, 0, 1))
    contrast = float(np.clip(crop.std() / 40.0, 0, 1))
    return t_score * l_score * (0.5 + 0.5 * contrast)


class PlateHeuristicDetector:
    """Classical plate candidates (see the module doc). WEAK: never a default."""

    name = NAME
    version = VERSION
    weights_sha256 = ""  # no weights

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    @property
    def classes(self) -> tuple[str, ...]:
        return ("plate",)

    @property
    def thresholds(self) -> dict[str, float]:
        return {"plate": self.threshold}

    def __call__(self, rgb: np.ndarray) -> Detections:
        gray_full = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        h, w = gray_full.shape
        base = min(1.0, _WORK_LONG_SIDE / max(h, w))
        boxes, scores = [], []
        for s in _SCALES:
            f = base * s
            gray = gray_full if f == 1.0 else cv2.resize(gray_full, (max(1, round(w * f)), max(1, round(h * f))),
                                                          interpolation=cv2.INTER_AREA)
            for box in _candidates(gray):
                sc = _score(gray, box)
                if sc >= self.threshold:
                    boxes.append(np.array(box, np.float32) / f)
                    scores.append(sc)
        if not boxes:
            return Detections.empty()
        xyxy = np.stack(boxes).astype(np.float32)
        xyxy[:, 0::2] = np.clip(xyxy[:, 0::2], 0, w)
        xyxy[:, 1::2] = np.clip(xyxy[:, 1::2], 0, h)
        sc_arr = np.array(scores, np.float32)
        keep = nms(xyxy, sc_arr, 0.3)
        return Detections.of_class(xyxy[keep], sc_arr[keep], "plate")
