"""Which windows of an image a fully convolutional detector sees, at which scale.

Pure functions (no I/O). A plan is a list of ``Window``s: a source rectangle and the scale at
which it is resized for the network. Detections from all windows are mapped back to source
pixels and merged by NMS.

- The *whole-frame* pass sees the entire image with its long side at ``input_size`` (never
  upscaled), which finds large and medium objects at a fixed, predictable cost (or at a fixed
  ``input_scale``, for evaluating that regime on small images).
- An *upscale* pass (small images) sees the image at ``upscale``× so that faces of 10–30 px
  reach the size range the network scores well; the 1× pass is always kept because large
  faces leave the network's range when upscaled.
- A *tiled* pass (large frames: 4K, panoramas) sees the image at native resolution in
  overlapping tiles of ``tile_size`` network pixels, so a 16 px face in a 4K frame is seen at
  16 px. Overlap must exceed the largest object the tiled pass is responsible for: anything
  larger is found whole by the whole-frame pass.
- For 360° equirectangular panoramas, ``wrap`` extends the image past its right edge with its
  own left edge, so an object cut by the seam is seen whole once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

STRIDE = 32  # network input sides must be multiples of this


@dataclass(frozen=True, slots=True)
class Window:
    """Source rectangle [x0, x1) × [y0, y1) (x may run past the width when wrapping) and the
    network-pixels-per-source-pixel scale it is resized by."""

    x0: int
    y0: int
    x1: int
    y1: int
    scale: float

    def __post_init__(self) -> None:
        if self.x1 <= self.x0 or self.y1 <= self.y0:
            raise ValueError(f"empty window {self}")
        if not self.scale > 0:
            raise ValueError(f"scale must be > 0, got {self.scale}")

    @property
    def net_size(self) -> tuple[int, int]:
        """(height, width) of the resized window before padding to a multiple of STRIDE."""
        return (max(1, round((self.y1 - self.y0) * self.scale)), max(1, round((self.x1 - self.x0) * self.scale)))

    @property
    def padded_size(self) -> tuple[int, int]:
        h, w = self.net_size
        return (ceil_to(h, STRIDE), ceil_to(w, STRIDE))


@dataclass(frozen=True, slots=True)
class PlanParams:
    input_size: int = 1280  # long side of the whole-frame pass; 0 = native resolution
    input_scale: float = 0.0  # > 0: the whole-frame pass at this fixed scale (input_size unused)
    upscale: float = 2.0  # extra pass for small images; 1.0 = none
    upscale_below: int = 800  # ... applied when the long side is below this
    tile_above: int = 2600  # native-resolution tiled pass when the long side is above this
    tile_size: int = 1280  # network pixels per tile side
    tile_overlap: int = 192  # network pixels shared by neighbouring tiles
    wrap: bool = False  # 360° panorama: wrap the left edge past the right one

    def __post_init__(self) -> None:
        if self.input_size and self.input_size < STRIDE:
            raise ValueError(f"input_size must be 0 or >= {STRIDE}")
        if self.upscale < 1.0:
            raise ValueError("upscale must be >= 1")
        if not 0.0 <= self.input_scale <= 1.0:
            raise ValueError("input_scale must be in [0, 1]")
        if not STRIDE <= self.tile_overlap * 2 < self.tile_size:
            raise ValueError("tile_overlap must be in [16, tile_size / 2)")


def ceil_to(v: int, m: int) -> int:
    return -(-v // m) * m


def _spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Start/end of evenly spread tiles of at most ``tile`` covering [0, length)."""
    if length <= tile:
        return [(0, length)]
    n = math.ceil((length - overlap) / (tile - overlap))
    step = (length - tile) / (n - 1)
    return [(round(i * step), round(i * step) + tile) for i in range(n)]


def wrap_margin(width: int, params: PlanParams) -> int:
    """Source pixels appended past the right edge of a wrapped panorama."""
    return min(width // 4, max(params.tile_overlap, width // 16)) if params.wrap else 0


def plan(width: int, height: int, params: PlanParams) -> list[Window]:
    """The windows to run for an image of ``width`` × ``height`` (see the module doc)."""
    if width < 1 or height < 1:
        raise ValueError("image must not be empty")
    ext_w = width + wrap_margin(width, params)
    long_side = max(ext_w, height)
    if params.input_scale:
        s0 = params.input_scale
    else:
        s0 = 1.0 if not params.input_size else min(1.0, params.input_size / long_side)
    windows = [Window(0, 0, ext_w, height, s0)]
    if params.upscale > 1.0 and max(width, height) < params.upscale_below:
        windows += _tiled(ext_w, height, params.upscale, params)
    if long_side > params.tile_above and s0 < 1.0:
        windows += _tiled(ext_w, height, 1.0, params)
    return windows


def _tiled(width: int, height: int, scale: float, params: PlanParams) -> list[Window]:
    t = params.tile_size / scale
    o = params.tile_overlap / scale
    out = []
    for y0, y1 in _spans(height, round(t), round(o)):
        for x0, x1 in _spans(width, round(t), round(o)):
            out.append(Window(x0, y0, min(x1, width), min(y1, height), scale))
    return out
