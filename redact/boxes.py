"""Box geometry: pure array functions on float32 [N, 4] (x1, y1, x2, y2) arrays.

No I/O and no logging here; tested with parametrized tables.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def area(xyxy: np.ndarray) -> np.ndarray:
    b = np.asarray(xyxy, np.float32).reshape(-1, 4)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def intersection_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection area of every box in ``a`` [N,4] with every box in ``b`` [M,4] → [N, M]."""
    a = np.asarray(a, np.float32).reshape(-1, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    return np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` [N,4] with every box in ``b`` [M,4] → [N, M]."""
    a = np.asarray(a, np.float32).reshape(-1, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)
    inter = intersection_matrix(a, b)
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)


def nms(xyxy: np.ndarray, score: np.ndarray, iou: float = 0.3) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first.

    Ties in score keep the lower index (a stable sort), so the result is deterministic.
    """
    return np.array([i for i, _ in _greedy_nms(xyxy, score, iou)], dtype=np.int64)


def nms_union(xyxy: np.ndarray, score: np.ndarray, iou: float = 0.3,
              grow_min: float = float("-inf")) -> tuple[np.ndarray, np.ndarray]:
    """``nms``'s kept indices, and each kept box grown to the union of itself and the boxes
    it suppressed that score at least ``grow_min`` [K, 4].

    For redaction, where the boxes are pieces and views of one object: the best-scoring box
    of a close plate may cover only part of it while a lower-scoring one covers the rest.
    """
    b = np.asarray(xyxy, np.float32).reshape(-1, 4)
    s = np.asarray(score, np.float32).reshape(-1)
    keep, grown = [], []
    for i, gone in _greedy_nms(b, s, iou):
        g = b[np.append(gone[s[gone] >= grow_min], i)]
        keep.append(i)
        grown.append([g[:, 0].min(), g[:, 1].min(), g[:, 2].max(), g[:, 3].max()])
    return np.array(keep, dtype=np.int64), np.array(grown, np.float32).reshape(-1, 4)


def _greedy_nms(xyxy: np.ndarray, score: np.ndarray, iou: float) -> Iterator[tuple[int, np.ndarray]]:
    """(kept index, indices of the boxes it suppresses) in greedy NMS order."""
    b = np.asarray(xyxy, np.float32).reshape(-1, 4)
    s = np.asarray(score, np.float32).reshape(-1)
    order = np.argsort(-s, kind="stable")
    areas = area(b)
    while order.size:
        i = int(order[0])
        rest = order[1:]
        xx1 = np.maximum(b[i, 0], b[rest, 0])
        yy1 = np.maximum(b[i, 1], b[rest, 1])
        xx2 = np.minimum(b[i, 2], b[rest, 2])
        yy2 = np.minimum(b[i, 3], b[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        ov = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        yield i, rest[ov > iou]
        order = rest[ov <= iou]


def batched_nms(xyxy: np.ndarray, score: np.ndarray, cls: np.ndarray, iou: float = 0.3) -> np.ndarray:
    """NMS within each class separately; returns kept indices in ascending order."""
    cls = np.asarray(cls).reshape(-1)
    keep = [np.flatnonzero(cls == c)[nms(np.asarray(xyxy)[cls == c], np.asarray(score)[cls == c], iou)]
            for c in np.unique(cls)]
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


def expand_boxes(xyxy: np.ndarray, factor: float | np.ndarray) -> np.ndarray:
    """Scale each box about its centre by ``factor`` (scalar or per box)."""
    b = np.asarray(xyxy, np.float32).reshape(-1, 4)
    f = np.broadcast_to(np.asarray(factor, np.float32), (len(b),))
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    hw, hh = (b[:, 2] - b[:, 0]) * f / 2, (b[:, 3] - b[:, 1]) * f / 2
    return np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=1).astype(np.float32)


def clip_boxes(xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
    b = np.asarray(xyxy, np.float32).reshape(-1, 4).copy()
    b[:, 0::2] = np.clip(b[:, 0::2], 0, width)
    b[:, 1::2] = np.clip(b[:, 1::2], 0, height)
    return b


def decode_centernet(
    heatmap: np.ndarray, scale: np.ndarray, offset: np.ndarray, threshold: float, stride: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """CenterFace/CenterNet decode of one image's stride-4 maps to boxes in network pixels.

    heatmap [H, W] (sigmoid), scale [2, H, W] (log h, log w), offset [2, H, W] (y, x).
    Every cell above ``threshold`` proposes a box (callers run NMS). Returns (xyxy, score).
    """
    rows, cols = np.nonzero(heatmap > threshold)
    if not rows.size:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    sh = np.exp(scale[0, rows, cols]) * stride
    sw = np.exp(scale[1, rows, cols]) * stride
    cy = (rows + offset[0, rows, cols] + 0.5) * stride
    cx = (cols + offset[1, rows, cols] + 0.5) * stride
    xyxy = np.stack([cx - sw / 2, cy - sh / 2, cx + sw / 2, cy + sh / 2], axis=1)
    return xyxy.astype(np.float32), heatmap[rows, cols].astype(np.float32)


def to_display(arr: np.ndarray, orientation: int) -> np.ndarray:
    """The stored pixel array as it is displayed under EXIF ``orientation`` (1..8); a view."""
    o = orientation
    if o == 2:
        return arr[:, ::-1]
    if o == 3:
        return arr[::-1, ::-1]
    if o == 4:
        return arr[::-1, :]
    if o == 5:
        return arr.swapaxes(0, 1)
    if o == 6:
        return np.rot90(arr, -1)
    if o == 7:
        return arr[::-1, ::-1].swapaxes(0, 1)
    if o == 8:
        return np.rot90(arr, 1)
    return arr


def boxes_to_stored(xyxy: np.ndarray, orientation: int, width: int, height: int) -> np.ndarray:
    """Map boxes from displayed pixels back to stored pixels (``width`` × ``height`` stored).

    Inverse of ``to_display`` for points: display (x, y) ↔ stored (sx, sy).
    """
    b = np.asarray(xyxy, np.float32).reshape(-1, 4)
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    W, H = float(width), float(height)
    o = orientation
    if o == 2:
        pts = (W - x2, y1, W - x1, y2)
    elif o == 3:
        pts = (W - x2, H - y2, W - x1, H - y1)
    elif o == 4:
        pts = (x1, H - y2, x2, H - y1)
    elif o == 5:
        pts = (y1, x1, y2, x2)
    elif o == 6:
        pts = (y1, H - x2, y2, H - x1)
    elif o == 7:
        pts = (W - y2, H - x2, W - y1, H - x1)
    elif o == 8:
        pts = (W - y2, x1, W - y1, x2)
    else:
        return b.copy()
    return np.stack(pts, axis=1).astype(np.float32)
