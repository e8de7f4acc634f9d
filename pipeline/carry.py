"""Temporal carry (USERS-WANT #1): a face or plate the detector found in a neighbouring frame
of the same drive is redacted in this frame too, unless this frame already has a detection of
the same class covering it. A plate missed in one frame is often found in the next.

Pure array functions, no I/O: boxes are ``float32[N, 4]`` xyxy in pixels, classes ``uint8[N]``.
Carried boxes are grown about their centre by ``expand`` (the object moves between frames at a
few metres' spacing) and clipped to the image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# A neighbour's box counts as already covered when this much of its area lies inside one
# of this frame's boxes of the same class.
COVERED_FRACTION = 0.5


def _area(b: np.ndarray) -> np.ndarray:
    return np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)


def covered(candidate: np.ndarray, boxes: np.ndarray) -> bool:
    """True when ``COVERED_FRACTION`` of ``candidate`` (xyxy) lies inside one of ``boxes``."""
    if len(boxes) == 0:
        return False
    x1 = np.maximum(boxes[:, 0], candidate[0])
    y1 = np.maximum(boxes[:, 1], candidate[1])
    x2 = np.minimum(boxes[:, 2], candidate[2])
    y2 = np.minimum(boxes[:, 3], candidate[3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    a = float(_area(candidate))
    return bool(a > 0 and float(inter.max()) >= COVERED_FRACTION * a)


def grow(box: np.ndarray, expand: float, width: int, height: int) -> np.ndarray:
    """``box`` scaled by ``expand`` about its centre, clipped to the image."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    hw, hh = (box[2] - box[0]) * expand / 2, (box[3] - box[1]) * expand / 2
    out = np.array([cx - hw, cy - hh, cx + hw, cy + hh], np.float32)
    out[[0, 2]] = np.clip(out[[0, 2]], 0, width)
    out[[1, 3]] = np.clip(out[[1, 3]], 0, height)
    return out


def carry_boxes(
    own_xyxy: np.ndarray,
    own_cls: np.ndarray,
    neighbours: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    *,
    expand: float,
    width: int,
    height: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes to add to a frame from its neighbours' detections.

    ``neighbours`` are ``(xyxy, score, cls)`` in the order they should be considered (nearest
    first); returns ``(xyxy float32[M,4], score float32[M], cls uint8[M])`` of the carried
    boxes, in a deterministic order. A candidate covered by this frame's own boxes, or by a box
    carried already, is skipped.
    """
    if expand < 1.0:
        raise ValueError("expand must be >= 1")
    kept_b: list[np.ndarray] = []
    kept_s: list[float] = []
    kept_c: list[int] = []
    own_xyxy = np.asarray(own_xyxy, np.float32).reshape(-1, 4)
    own_cls = np.asarray(own_cls, np.uint8).reshape(-1)
    for xyxy, score, cls in neighbours:
        xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
        for i in range(len(xyxy)):
            c = int(cls[i])
            g = grow(xyxy[i], expand, width, height)
            if float(_area(g)) <= 0:
                continue
            same = own_xyxy[own_cls == c]
            if covered(xyxy[i], same):
                continue
            prev = np.array([b for b, k in zip(kept_b, kept_c, strict=True) if k == c], np.float32).reshape(-1, 4)
            if covered(g, prev):
                continue
            kept_b.append(g)
            kept_s.append(float(score[i]))
            kept_c.append(c)
    return (
        np.array(kept_b, np.float32).reshape(-1, 4),
        np.array(kept_s, np.float32),
        np.array(kept_c, np.uint8),
    )


def neighbour_order(index: int, n: int, k: int) -> list[int]:
    """Indices within ``k`` of ``index`` in a sequence of ``n``, nearest first, earlier first
    on ties: for k=2, [i-1, i+1, i-2, i+2] (those that exist)."""
    out = []
    for d in range(1, k + 1):
        for j in (index - d, index + d):
            if 0 <= j < n:
                out.append(j)
    return out
