"""Adapters for user-supplied detector weights (contracts in docs/detectors.md).

- ``EgoBlurDetector``: an EgoBlur gen1 TorchScript file (one class per file: face or plate),
  called as ``boxes, labels, scores, dims = model(chw_uint8_bgr)``; NMS 0.3 and the score
  threshold are applied here. Needs torch (the ``gpu`` extra).
- ``YoloOnnxDetector``: a YOLOv8/YOLO11-style ONNX export: input [1, 3, H, W] float32 RGB in
  0..1, letterboxed (aspect kept, grey 114 padding, centred); output [1, 4 + nc, A] (or its
  transpose) with (cx, cy, w, h) in network pixels and nc per-class scores in 0..1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from redact.boxes import nms
from redact.centernet import ort_session, sha256_file
from redact.errors import ModelError
from redact.types import Detections

NMS_IOU = 0.3


class EgoBlurDetector:
    """One EgoBlur gen1 TorchScript model (faces or plates)."""

    name = "egoblur"

    def __init__(self, path: Path, cls: str, threshold: float, *, threads: int, device: str = "cpu") -> None:
        from redact.detectors import import_torch

        torch = import_torch()
        self._torch = torch
        if device == "cpu":
            torch.set_num_threads(threads)
        try:
            self.device = torch.device(device)
            self.model = torch.jit.load(str(path), map_location=self.device).eval()
        except (RuntimeError, ValueError) as e:
            raise ModelError(f"{path}: not a loadable TorchScript model: {e}") from None
        self.cls = cls
        self.threshold = threshold
        self.version = f"gen1:{Path(path).name}"
        self.weights_sha256 = sha256_file(path)

    @property
    def classes(self) -> tuple[str, ...]:
        return (self.cls,)

    @property
    def thresholds(self) -> dict[str, float]:
        return {self.cls: self.threshold}

    def __call__(self, rgb: np.ndarray) -> Detections:
        torch = self._torch
        bgr = np.ascontiguousarray(rgb[:, :, ::-1].transpose(2, 0, 1))
        with torch.inference_mode():
            out = self.model(torch.from_numpy(bgr).to(self.device))
        boxes = out[0].float().cpu().numpy().reshape(-1, 4)
        scores = out[2].float().cpu().numpy().reshape(-1)
        keep = nms(boxes, scores, NMS_IOU)
        boxes, scores = boxes[keep], scores[keep]
        ok = scores > self.threshold
        h, w = rgb.shape[:2]
        b = boxes[ok].copy()
        b[:, 0::2] = np.clip(b[:, 0::2], 0, w)
        b[:, 1::2] = np.clip(b[:, 1::2], 0, h)
        valid = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        return Detections.of_class(b[valid], scores[ok][valid], self.cls)


def letterbox(rgb: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Resize keeping the aspect ratio into ``size`` (h, w), centred on grey 114.

    Returns (image, scale, (pad_x, pad_y)): network = source * scale + pad.
    """
    h, w = rgb.shape[:2]
    th, tw = size
    s = min(th / h, tw / w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    px, py = (tw - nw) / 2, (th - nh) / 2
    out = np.full((th, tw, 3), 114, np.uint8)
    x0, y0 = round(px - 0.1), round(py - 0.1)
    out[y0 : y0 + nh, x0 : x0 + nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return out, s, (float(x0), float(y0))


class YoloOnnxDetector:
    """A user-supplied YOLO-style ONNX detector (see the module doc for the contract)."""

    name = "yolo-onnx"

    def __init__(
        self,
        path: Path,
        class_names: Sequence[str],
        keep: Sequence[str],
        thresholds: Mapping[str, float],
        *,
        threads: int,
        input_size: int,
    ) -> None:
        self.session: Any = ort_session(Path(path), threads)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        shape = inp.shape
        if len(shape) != 4 or shape[1] not in (3, "3"):
            raise ModelError(f"{path}: input must be [1, 3, H, W], got {shape}")
        h, w = shape[2], shape[3]
        if isinstance(h, int) and isinstance(w, int):
            self.size = (h, w)
        else:
            side = max(32, (input_size or 640) // 32 * 32)
            self.size = (side, side)
        self.class_names = tuple(class_names)
        self.keep = tuple(c for c in keep if c in self.class_names)
        if not self.keep:
            raise ModelError(f"{path}: yolo_classes {list(class_names)} name none of {list(keep)}")
        self.thresholds_by_class = dict(thresholds)
        self.version = Path(path).name
        self.weights_sha256 = sha256_file(Path(path))

    @property
    def classes(self) -> tuple[str, ...]:
        return self.keep

    @property
    def thresholds(self) -> dict[str, float]:
        return {c: self.thresholds_by_class[c] for c in self.keep}

    def __call__(self, rgb: np.ndarray) -> Detections:
        img, s, (px, py) = letterbox(rgb, self.size)
        x = (img.transpose(2, 0, 1)[None].astype(np.float32)) / 255.0
        out = np.asarray(self.session.run(None, {self.input_name: x})[0])
        nc = len(self.class_names)
        if out.ndim != 3 or out.shape[0] != 1 or 4 + nc not in out.shape[1:]:
            raise ModelError(f"yolo-onnx output shape {out.shape} does not fit 4 + {nc} classes (yolo_classes)")
        pred = out[0] if out.shape[1] == 4 + nc else out[0].T  # [4 + nc, A]
        cx, cy, bw, bh = pred[0], pred[1], pred[2], pred[3]
        xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        xyxy = (xyxy - np.array([px, py, px, py], np.float32)) / s
        h, w = rgb.shape[:2]
        xyxy[:, 0::2] = np.clip(xyxy[:, 0::2], 0, w)
        xyxy[:, 1::2] = np.clip(xyxy[:, 1::2], 0, h)
        parts = []
        for ci, name in enumerate(self.class_names):
            if name not in self.keep:
                continue
            sc = pred[4 + ci].astype(np.float32)
            m = (sc >= self.thresholds_by_class[name]) & (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
            b, sc = xyxy[m].astype(np.float32), sc[m]
            k = nms(b, sc, NMS_IOU)
            parts.append(Detections.of_class(b[k], sc[k], name))
        return Detections.concat(parts)
