"""CenterNet targets in CenterFace's encoding (stride 4); ``redact.boxes.decode_centernet``
(the runtime's decode) inverts it.

Encoding of a box (x1, y1, x2, y2) in input pixels, cell (r, c) = floor(centre / 4):
``offset = (cy/4 - r - 0.5, cx/4 - c - 0.5)``, ``scale = (log(h/4), log(w/4))`` — so that
CenterFace's decode ``x1 = (c + ox + 0.5)*4 - exp(s1)*4/2`` gives the box back. The heatmap
target is an elliptical Gaussian (sigma proportional to the box's width and height, as in
TTFNet), which suits plates from 1:1 to 5:1.
"""

from __future__ import annotations

import numpy as np

STRIDE = 4
MAX_OBJECTS = 32
_ALPHA = 0.54


def encode(boxes: np.ndarray, ignore: np.ndarray, h: int, w: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Targets for an ``h`` x ``w`` input: heatmap [1, h/4, w/4] float32, weight [1, h/4, w/4]
    uint8 (0 under ignore boxes), index [K] int32 (flat cell index), mask [K] uint8,
    scale [K, 2] and offset [K, 2] float32 (K = MAX_OBJECTS)."""
    oh, ow = h // STRIDE, w // STRIDE
    hm = np.zeros((oh, ow), np.float32)
    weight = np.ones((oh, ow), np.uint8)
    for b in ignore:
        ix0, iy0 = int(np.floor(b[0] / STRIDE)), int(np.floor(b[1] / STRIDE))
        ix1, iy1 = int(np.ceil(b[2] / STRIDE)), int(np.ceil(b[3] / STRIDE))
        weight[max(0, iy0):max(0, iy1), max(0, ix0):max(0, ix1)] = 0
    index = np.zeros(MAX_OBJECTS, np.int32)
    mask = np.zeros(MAX_OBJECTS, np.uint8)
    scale = np.zeros((MAX_OBJECTS, 2), np.float32)
    offset = np.zeros((MAX_OBJECTS, 2), np.float32)
    ys, xs = np.arange(oh, dtype=np.float32)[:, None], np.arange(ow, dtype=np.float32)[None, :]
    # Largest first, so a small plate's peak survives where Gaussians overlap (max below).
    order: np.ndarray | list[int] = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])) if len(boxes) else []
    for k, i in enumerate(list(order)[:MAX_OBJECTS]):
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        bw, bh = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
        cx, cy = (x1 + x2) / 2 / STRIDE, (y1 + y2) / 2 / STRIDE
        c, r = min(int(cx), ow - 1), min(int(cy), oh - 1)
        sx, sy = max(_ALPHA * bw / STRIDE / 6, 0.5), max(_ALPHA * bh / STRIDE / 6, 0.5)
        g = np.exp(-((xs - c) ** 2) / (2 * sx * sx) - ((ys - r) ** 2) / (2 * sy * sy))
        np.maximum(hm, g, out=hm)
        hm[r, c] = 1.0
        weight[r, c] = 1
        index[k], mask[k] = r * ow + c, 1
        scale[k] = (np.log(bh / STRIDE), np.log(bw / STRIDE))
        offset[k] = (cy - r - 0.5, cx - c - 0.5)
    return hm[None], weight[None], index, mask, scale, offset
