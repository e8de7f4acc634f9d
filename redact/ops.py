"""Redaction operators: pure array functions (no I/O, no logging).

Rules (documented in docs/redaction.md):

- Blur: Gaussian with sigma = ``BLUR_SIGMA_FRACTION`` × the box's shorter side (at least
  ``MIN_SIGMA`` px), so a face or plate of any size loses the same fraction of its detail:
  features smaller than about a third of the box are gone. Large sigmas are applied on a
  downscaled copy (same result within rounding, bounded cost).
- Pixelate: blocks of 1/``PIXELATE_BLOCKS`` of the shorter side (at least 3 px) — weaker than
  blur for recognition by people and machines; offered for users who ask for it.
- Fill: a solid colour.
- Masks: ellipses for faces (the expanded box's inscribed ellipse), rectangles for plates;
  optional feathering fades the mask *outwards* so the inside stays fully redacted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from redact.boxes import clip_boxes, expand_boxes
from redact.types import FACE

Method = Literal["blur", "pixelate", "fill"]

BLUR_SIGMA_FRACTION = 0.25
MIN_SIGMA = 2.0
_MAX_DIRECT_SIGMA = 6.0  # above this, blur a downscaled copy
PIXELATE_BLOCKS = 6
FILL_COLOUR = (0, 0, 0)


def blur_sigma(width: float, height: float) -> float:
    """The Gaussian sigma (px) for a box of ``width`` × ``height``."""
    return max(MIN_SIGMA, BLUR_SIGMA_FRACTION * min(width, height))


def gaussian_blur(region: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of an H x W x C uint8 region (edges replicated)."""
    h, w = region.shape[:2]
    if sigma <= _MAX_DIRECT_SIGMA:
        return cv2.GaussianBlur(region, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE)
    f = _MAX_DIRECT_SIGMA / sigma
    sw, sh = max(1, round(w * f)), max(1, round(h * f))
    small = cv2.resize(region, (sw, sh), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigmaX=_MAX_DIRECT_SIGMA, sigmaY=_MAX_DIRECT_SIGMA,
                             borderType=cv2.BORDER_REPLICATE)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def pixelate(region: np.ndarray, block: int) -> np.ndarray:
    """Replace ``block`` × ``block`` cells by their mean colour."""
    h, w = region.shape[:2]
    bw, bh = max(1, math.ceil(w / block)), max(1, math.ceil(h / block))
    small = cv2.resize(region, (bw, bh), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def fill(region: np.ndarray, colour: tuple[int, int, int] = FILL_COLOUR) -> np.ndarray:
    out = np.empty_like(region)
    out[...] = np.asarray(colour, region.dtype)[: region.shape[2]]
    return out


def box_mask(h: int, w: int, box: tuple[float, float, float, float], shape: Literal["ellipse", "rectangle"],
             feather_px: float) -> np.ndarray:
    """Float32 alpha in [0, 1] over an ``h`` × ``w`` region for ``box`` (region pixels)."""
    x1, y1, x2, y2 = box
    mask = np.zeros((h, w), np.float32)
    if shape == "ellipse":
        # Sub-pixel ellipse: 4 fractional bits.
        c = (round((x1 + x2) / 2 * 16), round((y1 + y2) / 2 * 16))
        axes = (max(1, round((x2 - x1) / 2 * 16)), max(1, round((y2 - y1) / 2 * 16)))
        cv2.ellipse(mask, c, axes, 0, 0, 360, 1.0, thickness=-1, lineType=cv2.LINE_8, shift=4)
    else:
        mask[max(0, math.floor(y1)) : math.ceil(y2), max(0, math.floor(x1)) : math.ceil(x2)] = 1.0
    if feather_px >= 0.5:
        soft = cv2.GaussianBlur(mask, (0, 0), sigmaX=feather_px, sigmaY=feather_px, borderType=cv2.BORDER_CONSTANT)
        # Outward fade only: inside the hard mask the alpha stays 1.
        mask = np.maximum(mask, np.clip(soft * 2.0, 0.0, 1.0))
    return mask


@dataclass(frozen=True, slots=True)
class RedactParams:
    method: Method = "blur"
    face_expand: float = 1.3
    plate_expand: float = 1.15
    feather: float = 0.0  # fraction of the box's shorter side
    face_shape: Literal["ellipse", "rectangle"] = "ellipse"

    def __post_init__(self) -> None:
        if self.face_expand < 1 or self.plate_expand < 1:
            raise ValueError("box expansion must be >= 1")
        if not 0 <= self.feather <= 0.5:
            raise ValueError("feather must be in [0, 0.5]")


def redaction_boxes(xyxy: np.ndarray, cls: np.ndarray, params: RedactParams, width: int, height: int) -> np.ndarray:
    """The boxes actually redacted: expanded per class, clipped to the image."""
    factor = np.where(np.asarray(cls) == FACE, params.face_expand, params.plate_expand)
    return clip_boxes(expand_boxes(xyxy, factor), width, height)


def touched_boxes(xyxy: np.ndarray, cls: np.ndarray, params: RedactParams, width: int, height: int) -> np.ndarray:
    """int64[N, 4]: whole-pixel boxes holding every pixel ``redact`` may change for each box:
    the redaction box rounded out, plus the outward fade of a feather (``box_mask``: a
    Gaussian of sigma feather_px, cut at 3 sigma here), clipped to the image. Pure."""
    r = redaction_boxes(np.asarray(xyxy, np.float32).reshape(-1, 4), cls, params, width, height).astype(np.float64)
    fpx = params.feather * np.minimum(r[:, 2] - r[:, 0], r[:, 3] - r[:, 1])
    halo = np.where(fpx >= 0.5, np.ceil(3 * fpx), 0.0)
    out = np.stack([np.floor(r[:, 0]) - halo, np.floor(r[:, 1]) - halo, np.ceil(r[:, 2]) + halo,
                    np.ceil(r[:, 3]) + halo], axis=1)
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, width)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, height)
    return out.astype(np.int64)


def redacted_within(xyxy: np.ndarray, cls: np.ndarray, areas: np.ndarray, params: RedactParams,
                    width: int, height: int, *, of_class: int) -> np.ndarray:
    """Boolean mask over ``xyxy``: boxes of class ``of_class`` whose redaction (every pixel it
    may change, ``touched_boxes``) lies wholly inside one of ``areas`` (float[M, 4] xyxy).
    Pure; used to leave out redactions a person judged false."""
    xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
    cls = np.asarray(cls).reshape(-1)
    areas = np.asarray(areas, np.float64).reshape(-1, 4)
    if len(xyxy) == 0 or len(areas) == 0:
        return np.zeros(len(xyxy), bool)
    r = touched_boxes(xyxy, cls, params, width, height)
    inside = ((r[:, None, 0] >= areas[None, :, 0]) & (r[:, None, 1] >= areas[None, :, 1])
              & (r[:, None, 2] <= areas[None, :, 2]) & (r[:, None, 3] <= areas[None, :, 3]))
    return np.asarray((cls == of_class) & inside.any(axis=1), bool)


def redact(rgb: np.ndarray, xyxy: np.ndarray, cls: np.ndarray, params: RedactParams) -> np.ndarray:
    """A redacted copy of ``rgb`` (H x W x 3 uint8): every box expanded, masked and replaced.

    Boxes are processed in the given order; overlapping boxes are redacted twice (harmless).
    """
    out = rgb.copy()
    h, w = rgb.shape[:2]
    boxes = redaction_boxes(xyxy, cls, params, w, h)
    for (x1, y1, x2, y2), c in zip(boxes, np.asarray(cls), strict=True):
        bw, bh = float(x2 - x1), float(y2 - y1)
        if bw < 1 or bh < 1:
            continue
        feather_px = params.feather * min(bw, bh)
        sigma = blur_sigma(bw, bh)
        # Context margin: the blur reads neighbours, the feather paints outside the box.
        m = math.ceil(max(2 * feather_px, 3 * sigma if params.method == "blur" else 0, 1))
        rx1, ry1 = max(0, math.floor(x1) - m), max(0, math.floor(y1) - m)
        rx2, ry2 = min(w, math.ceil(x2) + m), min(h, math.ceil(y2) + m)
        region = out[ry1:ry2, rx1:rx2]
        if params.method == "blur":
            replaced = gaussian_blur(region, sigma)
        elif params.method == "pixelate":
            replaced = pixelate(region, max(3, round(min(bw, bh) / PIXELATE_BLOCKS)))
        else:
            replaced = fill(region)
        shape: Literal["ellipse", "rectangle"] = params.face_shape if c == FACE else "rectangle"
        alpha = box_mask(ry2 - ry1, rx2 - rx1, (x1 - rx1, y1 - ry1, x2 - rx1, y2 - ry1), shape, feather_px)
        a = alpha[..., None]
        blended = region.astype(np.float32) * (1.0 - a) + replaced.astype(np.float32) * a
        out[ry1:ry2, rx1:rx2] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out


def redacted_area(xyxy: np.ndarray, cls: np.ndarray, params: RedactParams, width: int, height: int) -> np.ndarray:
    """Boolean H x W mask of the pixels a redaction with ``params`` changes (hard masks)."""
    mask = np.zeros((height, width), np.uint8)
    for (x1, y1, x2, y2), c in zip(redaction_boxes(xyxy, cls, params, width, height), np.asarray(cls), strict=True):
        shape = params.face_shape if c == FACE else "rectangle"
        if shape == "ellipse":
            cv2.ellipse(mask, (round((x1 + x2) / 2 * 16), round((y1 + y2) / 2 * 16)),
                        (max(1, round((x2 - x1) / 2 * 16)), max(1, round((y2 - y1) / 2 * 16))),
                        0, 0, 360, 1, thickness=-1, shift=4)
        else:
            mask[math.floor(y1) : math.ceil(y2), math.floor(x1) : math.ceil(x2)] = 1
    return mask.astype(bool)
