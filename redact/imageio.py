"""Decoding and encoding images so that the output keeps format, pixel size, orientation and
(for JPEG) the input's quantisation tables and chroma subsampling.

Pixels are kept in *stored* orientation (the EXIF Orientation tag is copied, never applied),
so output pixels line up with input pixels and report boxes are in input pixels.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
from PIL import Image, JpegImagePlugin, UnidentifiedImageError

from redact.errors import ImageError
from redact.exif import load_exif, orientation_of

# Formats we decode and write back in the same format.
FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "BMP")
SUFFIXES = (".jpg", ".jpeg", ".jpe", ".png", ".webp", ".tif", ".tiff", ".bmp")
MAX_PIXELS = 300_000_000  # a 360° panorama of 24k x 12k is fine; larger is a decompression bomb

# IJG (libjpeg) standard luminance table, natural order: the reference for quality estimates.
_IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
], np.float64)


@dataclass(frozen=True, slots=True, eq=False)
class DecodedImage:
    """An image ready for detection and redaction, plus what is needed to write it back."""

    name: str
    rgb: np.ndarray  # H x W x 3 uint8, stored orientation
    format: str  # one of FORMATS
    mode: str  # the input's Pillow mode ("RGB", "L", "RGBA", ...)
    orientation: int  # EXIF orientation 1..8 (1 when absent)
    exif: bytes | None  # the input's raw EXIF (cleaned on output by redact.exif)
    alpha: np.ndarray | None = None  # H x W uint8 for inputs with transparency
    icc_profile: bytes | None = None
    jpeg_qtables: tuple[tuple[int, ...], ...] | None = None
    jpeg_subsampling: int | None = None  # Pillow code: 0 4:4:4, 1 4:2:2, 2 4:2:0
    jpeg_progressive: bool = False
    jpeg_quality: int | None = None  # estimated from the luminance table

    def __post_init__(self) -> None:
        if self.rgb.ndim != 3 or self.rgb.shape[2] != 3 or self.rgb.dtype != np.uint8:
            raise ValueError("rgb must be H x W x 3 uint8")
        if self.format not in FORMATS:
            raise ValueError(f"unsupported format {self.format}")

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


def estimate_jpeg_quality(qtables: Any) -> int | None:
    """IJG-equivalent quality (1..100) of a JPEG's luminance quantisation table.

    Uses the ratio of table sums to the IJG reference (independent of zigzag/natural order),
    inverted through libjpeg's quality → scale rule. Exact for libjpeg-made files, a close
    estimate for camera tables.
    """
    if not qtables:
        return None
    tables = dict(qtables) if isinstance(qtables, dict) else dict(enumerate(qtables))
    luma = np.asarray(tables.get(0, next(iter(tables.values()))), np.float64)
    if luma.size != 64:
        return None
    # libjpeg: table = clamp((ref * S + 50) / 100, 1, 255) with S = 5000/q (q<50) or 200-2q.
    s = 100.0 * luma.sum() / _IJG_LUMA.sum()
    q = 5000.0 / s if s > 100 else (200.0 - s) / 2.0
    return int(min(100, max(1, round(q))))


def _jpeg_complete(data: bytes) -> bool:
    """A JPEG ends with EOI (FF D9), possibly followed by padding; a truncated one does not."""
    tail = data[-4096:].rstrip(b"\x00\r\n\xff ")
    return tail.endswith(b"\xff\xd9") or data.rstrip(b"\x00")[-2:] == b"\xff\xd9"


def decode_image(data: bytes, *, name: str) -> DecodedImage:
    """Decode encoded image bytes; ImageError naming ``name`` when truncated or corrupt."""
    if not data:
        raise ImageError(f"{name}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = MAX_PIXELS
            im = Image.open(io.BytesIO(data))
            fmt = im.format or "?"
            if fmt == "MPO":  # multi-picture JPEG (a camera's preview images): first picture
                fmt = "JPEG"
            if fmt not in FORMATS:
                raise ImageError(f"{name}: unsupported image format {fmt} (supported: {', '.join(FORMATS)})")
            exif = im.info.get("exif")
            if isinstance(exif, str):
                exif = exif.encode("latin-1")
            orientation = orientation_of(load_exif(exif))
            jpeg: dict[str, Any] = {}
            if fmt == "JPEG":
                if not _jpeg_complete(data):
                    raise ImageError(f"{name}: truncated JPEG (no end-of-image marker)")
                q = getattr(im, "quantization", None) or {}
                jpeg = {
                    "jpeg_qtables": tuple(tuple(int(v) for v in q[k]) for k in sorted(q)) or None,
                    "jpeg_subsampling": JpegImagePlugin.get_sampling(im),
                    "jpeg_progressive": bool(im.info.get("progressive") or im.info.get("progression")),
                    "jpeg_quality": estimate_jpeg_quality(q),
                }
            mode = im.mode
            alpha = None
            rgb = None
            if fmt == "JPEG" and mode in ("RGB", "L"):
                # libjpeg-turbo through OpenCV decodes ~1.6x faster than Pillow here.
                arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
                if arr is not None and arr.shape[:2] == (im.height, im.width):
                    rgb = arr
            if rgb is None:
                im.load()
                if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
                    rgba = np.asarray(im.convert("RGBA"))
                    rgb, alpha = np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3])
                elif mode in ("RGB", "L", "P", "CMYK", "YCbCr", "1"):
                    rgb = np.asarray(im.convert("RGB"))
                else:
                    raise ImageError(f"{name}: unsupported pixel mode {mode}")
            icc = im.info.get("icc_profile")
    except ImageError:
        raise
    except Image.DecompressionBombWarning as e:
        raise ImageError(f"{name}: image too large ({e})") from None
    except UnidentifiedImageError:  # Pillow's message names its BytesIO, not the file
        raise ImageError(f"{name}: not an image file (format not recognised; supported: "
                         f"{', '.join(FORMATS)})") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, EOFError) as e:
        raise ImageError(f"{name}: cannot decode image: {e}") from None
    return DecodedImage(
        name=name,
        rgb=np.ascontiguousarray(rgb),
        format=fmt,
        mode=mode,
        orientation=orientation,
        exif=exif or None,
        alpha=alpha,
        icc_profile=icc or None,
        **jpeg,
    )


def encode_image(
    img: DecodedImage,
    rgb: np.ndarray,
    *,
    exif: bytes = b"",
    jpeg_quality: int | Literal["keep"] = "keep",
) -> bytes:
    """Encode ``rgb`` (same size as ``img``) in ``img``'s format with ``exif``; deterministic."""
    if rgb.shape != img.rgb.shape:
        raise ValueError(f"pixel size changed: {rgb.shape} vs {img.rgb.shape}")
    if img.mode in ("L", "1"):
        out = Image.fromarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), "L")
    elif img.alpha is not None:
        out = Image.fromarray(np.dstack([rgb, img.alpha]), "RGBA")
    else:
        out = Image.fromarray(rgb, "RGB")
    kw: dict[str, Any] = {}
    if exif and img.format in ("JPEG", "PNG", "WEBP", "TIFF"):
        kw["exif"] = exif
    if img.icc_profile and img.format in ("JPEG", "PNG", "WEBP", "TIFF"):
        kw["icc_profile"] = img.icc_profile
    if img.format == "JPEG":
        if jpeg_quality == "keep" and img.jpeg_qtables:
            kw["qtables"] = [list(t) for t in img.jpeg_qtables]
        else:
            kw["quality"] = 90 if jpeg_quality == "keep" else int(jpeg_quality)
        if img.jpeg_subsampling is not None and img.jpeg_subsampling >= 0 and out.mode != "L":
            kw["subsampling"] = img.jpeg_subsampling
        kw["progressive"] = img.jpeg_progressive
    elif img.format == "WEBP":
        kw["quality"] = 90 if jpeg_quality == "keep" else int(jpeg_quality)
        kw["method"] = 4
    elif img.format == "PNG":
        kw["compress_level"] = 6
    elif img.format == "TIFF":
        kw["compression"] = "tiff_deflate"
    buf = io.BytesIO()
    try:
        out.save(buf, img.format, **kw)
    except (OSError, ValueError) as e:
        raise ImageError(f"{img.name}: cannot encode {img.format}: {e}") from None
    return buf.getvalue()
