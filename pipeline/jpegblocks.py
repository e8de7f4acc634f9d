"""Block-level JPEG edits: change a JPEG only inside a region, keeping every other DCT block.

Re-encoding a whole JPEG changes (a little) every block of it. A takedown or extra-blur request
must change the published image only where it asks, so edits are done on the quantised DCT
coefficients (``jpeglib``, a binding of libjpeg): the edited pixels are encoded with the
image's own quantisation tables and chroma subsampling, and only the blocks of the MCUs
(minimum coded units: 16 x 16 pixels for 4:2:0) that the region touches are copied into the
original file. Every other block keeps its exact coefficients, so a decoder yields identical
pixels there; libjpeg's "fancy" chroma upsampling interpolates across block edges, so with
subsampled chroma the one pixel row or column next to a changed MCU may differ by a little
(tests check both).

Pure functions over bytes (temporary files only because libjpeg's reader takes a path).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError

Box = tuple[float, float, float, float]


class JpegEditError(PipelineError):
    """A JPEG cannot be edited block by block (unsupported layout, mismatched tables)."""

    exit_code = 1


@dataclass(frozen=True, slots=True)
class McuGrid:
    """The MCU size of a JPEG in pixels and the per-component sampling factors."""

    mcu_w: int
    mcu_h: int
    factors: tuple[tuple[int, int], ...]  # (h, v) per component

    def __post_init__(self) -> None:
        if self.mcu_w < 8 or self.mcu_h < 8 or not self.factors:
            raise ValueError("invalid MCU grid")


def align_box(box: Box, grid: McuGrid, width: int, height: int) -> tuple[int, int, int, int]:
    """``box`` grown out to whole MCUs, clipped to the image (pixels, x2/y2 exclusive)."""
    x1, y1, x2, y2 = box
    ax1 = max(0, math.floor(x1 / grid.mcu_w) * grid.mcu_w)
    ay1 = max(0, math.floor(y1 / grid.mcu_h) * grid.mcu_h)
    ax2 = min(width, math.ceil(x2 / grid.mcu_w) * grid.mcu_w)
    ay2 = min(height, math.ceil(y2 / grid.mcu_h) * grid.mcu_h)
    return ax1, ay1, ax2, ay2


def _read_dct(data: bytes, tmp: Path, name: str) -> Any:
    import jpeglib

    p = tmp / name
    p.write_bytes(data)
    try:
        return jpeglib.read_dct(str(p))
    except Exception as e:  # libjpeg reports corrupt data through several exception types
        raise JpegEditError(f"{name}: cannot read the JPEG's DCT coefficients: {e}") from None


def _components(im: Any) -> list[np.ndarray]:
    comps = [im.Y]
    if im.has_chrominance:
        comps += [im.Cb, im.Cr]
    return comps


def grid_of(im: Any) -> McuGrid:
    sf = np.asarray(im.samp_factor).reshape(-1, 2)
    factors = tuple((int(h), int(v)) for h, v in sf[: 3 if im.has_chrominance else 1])
    hmax, vmax = max(f[0] for f in factors), max(f[1] for f in factors)
    return McuGrid(8 * hmax, 8 * vmax, factors)


def block_mask(boxes: Iterable[Box], grid: McuGrid, comp: int, shape: tuple[int, int],
               width: int, height: int) -> np.ndarray:
    """Boolean (rows, cols) mask over component ``comp``'s 8x8 blocks: the blocks of every MCU
    that ``boxes`` touch."""
    h, v = grid.factors[comp]
    mask = np.zeros(shape, bool)
    for b in boxes:
        x1, y1, x2, y2 = align_box(b, grid, width, height)
        if x2 <= x1 or y2 <= y1:
            continue
        c1, c2 = x1 // grid.mcu_w * h, math.ceil(x2 / grid.mcu_w) * h
        r1, r2 = y1 // grid.mcu_h * v, math.ceil(y2 / grid.mcu_h) * v
        mask[r1:min(r2, shape[0]), c1:min(c2, shape[1])] = True
    return mask


def _read_pair(old: bytes, new: bytes, tmp: Path) -> tuple[Any, Any]:
    """Both images' DCT data; JpegEditError when they do not share size, sampling and
    quantisation tables."""
    a = _read_dct(old, tmp, "old.jpg")
    b = _read_dct(new, tmp, "new.jpg")
    _check_compatible(a, b)
    return a, b


def only_inside(old: bytes, new: bytes, boxes: Sequence[Box], width: int, height: int) -> bool:
    """True when every DCT block that differs between ``old`` and ``new`` lies in an MCU that
    ``boxes`` touch (the promise of a block-level edit)."""
    with tempfile.TemporaryDirectory(prefix="streetveil-jpeg-") as d:
        a, b = _read_pair(old, new, Path(d))
        grid = grid_of(a)
        for comp, (ca, cb) in enumerate(zip(_components(a), _components(b), strict=True)):
            diff = (ca != cb).any(axis=(2, 3))
            if (diff & ~block_mask(boxes, grid, comp, diff.shape, width, height)).any():
                return False
    return True


def _check_compatible(a: Any, b: Any) -> None:
    if (a.height, a.width) != (b.height, b.width):
        raise JpegEditError("edited image has a different pixel size")
    if a.has_chrominance != b.has_chrominance or grid_of(a) != grid_of(b):
        raise JpegEditError("edited image has a different chroma subsampling")
    qa, qb = np.asarray(a.qt), np.asarray(b.qt)
    ta = [qa[i] for i in np.asarray(a.quant_tbl_no)[: len(_components(a))]]
    tb = [qb[i] for i in np.asarray(b.quant_tbl_no)[: len(_components(b))]]
    if any(not np.array_equal(x, y) for x, y in zip(ta, tb, strict=True)):
        raise JpegEditError("edited image has different quantisation tables")


def splice(old: bytes, new: bytes, boxes: Sequence[Box]) -> bytes:
    """``old`` with the DCT blocks of the MCUs that ``boxes`` touch taken from ``new``.

    ``new`` must be the same image re-encoded with the same tables and subsampling (as
    ``redact.imageio.encode_image`` does with ``jpeg_quality="keep"``). Markers (EXIF, ICC)
    and all other blocks of ``old`` are kept.
    """
    with tempfile.TemporaryDirectory(prefix="streetveil-jpeg-") as d:
        tmp = Path(d)
        a, b = _read_pair(old, new, tmp)
        grid = grid_of(a)
        names = ["Y", "Cb", "Cr"][: len(_components(a))]
        for comp, name in enumerate(names):
            ca, cb = getattr(a, name).copy(), getattr(b, name)
            m = block_mask(boxes, grid, comp, ca.shape[:2], a.width, a.height)
            ca[m] = cb[m]
            setattr(a, name, ca)
        out = tmp / "out.jpg"
        try:
            a.write_dct(str(out))
        except Exception as e:
            raise JpegEditError(f"cannot write the edited JPEG: {e}") from None
        return out.read_bytes()
