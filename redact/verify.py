"""Second look at plate candidates: a small classifier on a close-up of each candidate.

The combined model's plate scores are compressed (most true plates score 0.2-0.5, and so do
signs, foliage and shop lettering: redact/models/MODEL_CARD.md), so no single threshold gives
both recall and few false boxes. The detector therefore *proposes* at a low threshold and a
verifier trained on the detector's own proposals decides, seeing each candidate at a fixed
size with its surroundings (``crops``). The verifier's file states, per detector file it was
calibrated with (by sha256), the proposal threshold, its own threshold and, optionally, the
detector score from which a candidate is kept without a second look (``streetveil.verify.<sha256>``
= ``"<proposal> <verify> [<bypass>]"``); a detector it was not calibrated with gets no verifier
unless the config names the thresholds.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from redact.errors import ModelError

log = logging.getLogger(__name__)

VERIFIER_MODEL = Path(__file__).resolve().parent / "models" / "streetveil-plate-verify-v4.onnx"
# The close-up: (height, width) of the classifier input, and the window around a candidate
# in units of its plate-like width s = max(w, 2h): context*s wide, context*s/2 tall. A 2:1
# plate fills half of the window's width and height, a 4.7:1 EU plate half its width.
CROP_SIZE = (40, 80)
CONTEXT = 2.0
META_PREFIX = "streetveil.verify."


def crop_window(box: np.ndarray, context: float = CONTEXT) -> tuple[float, float, float, float]:
    """The source window (x0, y0, x1, y1) the classifier sees for ``box`` (x1 y1 x2 y2)."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    s = max(x2 - x1, 2 * (y2 - y1), 4.0)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    ww = context * s
    return cx - ww / 2, cy - ww / 4, cx + ww / 2, cy + ww / 4


def crops(rgb: np.ndarray, boxes: np.ndarray, size: tuple[int, int] = CROP_SIZE,
          context: float = CONTEXT) -> np.ndarray:
    """[N, 3, h, w] float32 (RGB 0-255) close-ups of ``boxes`` in ``rgb`` (H x W x 3 uint8);
    parts of a window outside the image are 0. Area averaging when shrinking (a 200 px plate
    becomes 40 px wide), bilinear when enlarging."""
    oh, ow = size
    n = len(boxes)
    out = np.zeros((n, 3, oh, ow), np.float32)
    H, W = rgb.shape[:2]
    for k in range(n):
        x0, y0, x1, y1 = crop_window(boxes[k], context)
        f = ow / (x1 - x0)
        ix0, iy0 = max(0, math.floor(x0)), max(0, math.floor(y0))
        ix1, iy1 = min(W, math.ceil(x1)), min(H, math.ceil(y1))
        if ix1 <= ix0 or iy1 <= iy0:
            continue
        ox0, oy0 = max(0, round((ix0 - x0) * f)), max(0, round((iy0 - y0) * f))
        ox1, oy1 = min(ow, round((ix1 - x0) * f)), min(oh, round((iy1 - y0) * f))
        if ox1 <= ox0 or oy1 <= oy0:
            continue
        sub = rgb[iy0:iy1, ix0:ix1]
        interp = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
        out[k, :, oy0:oy1, ox0:ox1] = cv2.resize(sub, (ox1 - ox0, oy1 - oy0), interpolation=interp).transpose(2, 0, 1)
    return out


@dataclass(frozen=True, slots=True)
class Calibration:
    """Thresholds for one detector file: it proposes at ``proposal``, a proposal is kept when
    the verifier scores it at ``verify`` or more, or when the detector itself scores it at
    ``bypass`` or more (None: every proposal is verified). The bypass is for robustness: the
    verifier vetoes plates unlike its training data (other renderers, loose boxes at dusk)
    that the detector is sure of, while what it is there to remove (lettering, lights,
    texture) mostly scores low."""

    proposal: float
    verify: float
    bypass: float | None = None

    def __post_init__(self) -> None:
        if not (0 < self.proposal < 1 and 0 <= self.verify < 1):
            raise ValueError(f"verifier thresholds out of range: {self.proposal}, {self.verify}")
        if self.bypass is not None and not self.proposal < self.bypass <= 1:
            raise ValueError(f"verifier bypass {self.bypass} must be in ({self.proposal}, 1]")

    def encode(self) -> str:
        return f"{self.proposal:.3f} {self.verify:.3f}" + ("" if self.bypass is None else f" {self.bypass:.3f}")

    @classmethod
    def decode(cls, raw: str) -> Calibration:
        a, b, *c = raw.split()
        if len(c) > 1:
            raise ValueError(f"{raw!r}: more than three thresholds")
        return cls(float(a), float(b), float(c[0]) if c else None)

    def at(self, proposal: float) -> Calibration:
        """These thresholds with candidates proposed from ``proposal`` instead: a bypass at or
        below it would keep every candidate unverified, so it is dropped (all are verified)."""
        bypass = self.bypass if self.bypass is not None and self.bypass > proposal else None
        return Calibration(proposal, self.verify, bypass)

    @property
    def skip_from(self) -> float | None:
        """The detector score from which a proposal skips the verifier; None when none does
        (no bypass, or 1: verify every candidate)."""
        return self.bypass if self.bypass is not None and self.bypass < 1 else None

    def keep(self, score: np.ndarray, verified: np.ndarray) -> np.ndarray:
        """Which proposals (detector ``score`` >= ``proposal``, verifier score ``verified``) stay."""
        sure = score >= self.skip_from if self.skip_from is not None else np.zeros(len(score), bool)
        return (score >= self.proposal) & ((verified >= self.verify) | sure)


def stated_calibration(metadata: Mapping[str, str], detector_sha256: str, source: Path) -> Calibration | None:
    """The thresholds a verifier file's ``metadata`` states for the detector file with this
    sha256 (None: not calibrated for it); ModelError naming ``source`` when malformed."""
    raw = metadata.get(META_PREFIX + detector_sha256)
    if raw is None:
        return None
    try:
        return Calibration.decode(raw)
    except ValueError:
        raise ModelError(f"{source}: metadata {META_PREFIX}{detector_sha256[:12]}... is {raw!r}, "
                         "not two or three thresholds") from None


class PlateVerifier:
    """The verifier ONNX model on onnxruntime CPU (a few crops per frame: ~1 ms)."""

    def __init__(self, path: Path = VERIFIER_MODEL, threads: int = 1) -> None:
        from redact.centernet import ort_session, sha256_file
        from redact.detectors import model_metadata

        if not path.is_file():
            raise ModelError(f"plate verifier not found: {path}; it ships with the package (redact/models/) "
                             "and is built by scripts/train_plates.py --verifier")
        self.path = path
        self.sha256 = sha256_file(path)
        self.metadata = model_metadata(path)
        self.session = ort_session(path, threads)
        self.input_name = self.session.get_inputs()[0].name

    def calibration(self, detector_sha256: str) -> Calibration | None:
        """The thresholds calibrated for the detector file with this sha256, if any."""
        return stated_calibration(self.metadata, detector_sha256, self.path)

    def scores(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """[N] probability that each box is a plate."""
        if not len(boxes):
            return np.zeros(0, np.float32)
        (logit,) = self.session.run(None, {self.input_name: crops(rgb, boxes)})
        return (1.0 / (1.0 + np.exp(-logit.reshape(-1)))).astype(np.float32)
