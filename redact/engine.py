"""The Redactor: decode → detect → redact → EXIF hygiene → encode, one image at a time.

Callers that carry boxes across frames (the nightly job) use ``decode``, ``detect`` and
``render`` separately; everyone else calls ``redact_bytes``. A Redactor loads its detectors
once; build one per process (or Dask worker) from ``(config, threads)``: pickling a Redactor
sends only those two and rebuilds it on the other side.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from redact.boxes import boxes_to_stored, to_display
from redact.centernet import CenterNetDetector, default_threads
from redact.config import REFINE_PX, RedactConfig
from redact.detectors import Detector, build_detectors, describe
from redact.exif import Geotag, clean_exif
from redact.imageio import DecodedImage, decode_image, encode_image
from redact.ops import RedactParams, redact
from redact.types import Detections, class_index

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, eq=False)
class RedactResult:
    data: bytes  # the encoded, redacted image
    detections: Detections  # what was redacted (input pixels), before box expansion
    width: int
    height: int
    format: str


def is_panorama(width: int, height: int) -> bool:
    """A 360° equirectangular panorama is twice as wide as high."""
    return height > 0 and abs(width / height - 2.0) < 0.01


def info_line(info: dict[str, Any]) -> str:
    """One line for people: the detectors and the thresholds in effect (from Redactor.info)."""
    dets = ", ".join(f"{d['name']} {d['version']} ({'+'.join(d['classes'])})" for d in info["detectors"])
    src = info.get("threshold_source", {})
    verify = {c: v for d in info["detectors"] for c, v in (d.get("verify") or {}).items()}
    bypass = {c: v for d in info["detectors"] for c, v in (d.get("verify_bypass") or {}).items()}
    ths = ", ".join(f"{c} {t:g}" + (f" ({src[c]})" if c in src else "")
                    + (f", verified at {verify[c]:g}" if c in verify else "")
                    + (f" unless scoring {bypass[c]:g}" if c in bypass else "") for c, t in info["thresholds"].items())
    return f"detectors: {dets}; thresholds: {ths or 'none'}"


def _rebuild(config: RedactConfig, threads: int | None) -> Redactor:
    return Redactor(config, threads=threads)


class Redactor:
    """Detects and redacts faces and plates in single images (see the module doc)."""

    def __init__(self, config: RedactConfig, *, threads: int | None = None) -> None:
        self.config = config
        self._threads_arg = threads
        self.threads = threads or config.detector.threads or default_threads()
        import cv2

        cv2.setNumThreads(self.threads)
        self.detectors: list[Detector] = build_detectors(config.detector, self.threads)
        self._wrapped: list[Detector] | None = None
        r = config.redaction
        self.params = RedactParams(
            method=r.method, face_expand=r.face_expand, plate_expand=r.plate_expand,
            feather=r.feather, face_shape=r.face_shape,
        )
        d = config.detector
        # The thresholds in effect, as the detectors apply them (a plate threshold left unset
        # in the config is the plate model's own calibrated default).
        thresholds = {c: float(x.thresholds[c]) for x in self.detectors for c in x.classes}
        self.info: dict[str, Any] = {
            "detectors": [describe(x) for x in self.detectors],
            "thresholds": thresholds,
            "threshold_source": {c: "config" if c == "face" or d.plate_threshold is not None else "model default"
                                 for c in thresholds},
            "precision": d.resolved_precision(),
            # torch (on any device) is another setup than the onnxruntime one measured.
            "runtime": d.runtime if d.runtime == "onnxruntime" else f"{d.runtime}:{d.device}",
            # The close-up size only where it is not REFINE_PX (see there).
            "refine": ({"low": d.refine_low, **({"px": d.refine_px} if d.refine_px != REFINE_PX else {})}
                       if d.refine else None),
            "method": r.method,
            "expand": {"face": r.face_expand, "plate": r.plate_expand},
            "feather": r.feather,
            "face_shape": r.face_shape,
            "plan": {
                "input_size": d.input_size, "input_scale": d.input_scale, "upscale": d.upscale,
                "upscale_below": d.upscale_below,
                "tile_above": d.tile_above, "tile_size": d.tile_size, "tile_overlap": d.tile_overlap,
                "panorama": d.panorama,
            },
        }
        self.info["measured_recall"] = self._measured_recall()
        # The classes too: the same weights asked for fewer classes detect something else.
        blob = json.dumps([[x.name, x.version, x.weights_sha256, list(x.classes)] for x in self.detectors],
                          separators=(",", ":"))
        self.model_hash = hashlib.sha256(blob.encode()).hexdigest()
        classes = {c for x in self.detectors for c in x.classes}
        if "plate" not in classes:
            log.warning("no plate detector configured (plate_backend = %r): plates are NOT redacted",
                        config.detector.plate_backend)

    def _measured_recall(self) -> dict[str, Any]:
        from redact.detectors import model_metadata, streetveil_path
        from redact.recall import measured_recall

        stated = None
        d = self.config.detector
        # The model's statement is about its own fp32 weights, not an int8 copy of them.
        if any(x.name == "streetveil" for x in self.detectors) and d.resolved_precision() == "fp32":
            stated = model_metadata(streetveil_path(d)).get("streetveil.measured_recall")
        return measured_recall(self.info, stated)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.config, self._threads_arg))

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c for x in self.detectors for c in x.classes))

    # ------------------------------------------------------------------ steps

    def decode(self, data: bytes, *, name: str) -> DecodedImage:
        """Decode image bytes; ``redact.errors.ImageError`` naming ``name`` if unreadable."""
        return decode_image(data, name=name)

    def _detectors_for(self, width: int, height: int) -> list[Detector]:
        mode = self.config.detector.panorama
        if mode == "no" or (mode == "auto" and not is_panorama(width, height)):
            return self.detectors
        if self._wrapped is None:
            self._wrapped = [d.with_wrap() if isinstance(d, CenterNetDetector) else d for d in self.detectors]
        return self._wrapped

    def detect(self, image: DecodedImage, *, classes: Sequence[str] | None = None) -> Detections:
        """Faces and plates in ``image``, boxes in stored (input) pixels.

        Detection runs on the upright view (EXIF orientation applied), where the networks
        were trained; boxes are mapped back to the stored pixel grid. ``classes`` (for
        evaluation) skips detectors that find none of them and drops other classes.
        """
        return self.detect_with_vetoes(image, classes=classes)[0]

    def detect_with_vetoes(self, image: DecodedImage, *,
                           classes: Sequence[str] | None = None) -> tuple[Detections, Detections]:
        """``detect``, and the candidates a plate verifier vetoed (not redacted; for QA), both
        in stored pixels. Detectors without a verifier veto nothing."""
        view = np.ascontiguousarray(to_display(image.rgb, image.orientation))
        dets_for = self._detectors_for(view.shape[1], view.shape[0])
        if classes is not None:
            dets_for = [d for d in dets_for if set(d.classes) & set(classes)]
        found = [d.detect_with_vetoes(view) if isinstance(d, CenterNetDetector) else (d(view), Detections.empty())
                 for d in dets_for]
        out = []
        for dets in (Detections.concat([f[0] for f in found]), Detections.concat([f[1] for f in found])):
            if classes is not None:
                dets = dets.select(np.isin(dets.cls, [class_index(c) for c in classes]))
            if image.orientation != 1 and len(dets):
                xyxy = boxes_to_stored(dets.xyxy, image.orientation, image.width, image.height)
                dets = Detections(xyxy, dets.score, dets.cls)
            out.append(dets)
        return out[0], out[1]

    def render(self, image: DecodedImage, detections: Detections, *, geotag: Geotag | None = None) -> bytes:
        """Redact ``detections`` in ``image``, clean its EXIF (writing ``geotag`` if given and
        enabled) and encode it in the input's format. Same input → same bytes."""
        pixels = redact(image.rgb, detections.xyxy, detections.cls, self.params)
        gt = geotag if self.config.output.write_geotag else None
        exif = clean_exif(image.exif, geotag=gt, size=(image.width, image.height))
        return encode_image(image, pixels, exif=exif, jpeg_quality=self.config.output.jpeg_quality)

    def redact_bytes(
        self, data: bytes, *, name: str, geotag: Geotag | None = None, extra: Detections | None = None
    ) -> RedactResult:
        """decode → detect → (∪ ``extra`` boxes) → render."""
        image = self.decode(data, name=name)
        dets = self.detect(image)
        if extra is not None and len(extra):
            dets = Detections.concat([dets, extra])
        out = self.render(image, dets, geotag=geotag)
        return RedactResult(out, dets, image.width, image.height, image.format)
