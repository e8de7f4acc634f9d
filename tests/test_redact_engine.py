"""The Redactor contract the nightly job builds on: decode / detect / render / redact_bytes,
determinism, orientation, formats, per-image errors, pickling."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from redact.boxes import iou_matrix
from redact.config import DetectorSection, OutputSection, RedactConfig
from redact.engine import Redactor, RedactResult, is_panorama
from redact.errors import ImageError
from redact.imageio import estimate_jpeg_quality
from redact.types import Detections


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor(RedactConfig(), threads=1)


@pytest.fixture(scope="module")
def group_jpeg(shared: Path) -> tuple[bytes, list[list[float]]]:
    d = shared / "faces-group-photos"
    labels = json.loads((d / "labels.json").read_text())
    return (d / "images" / "0000.jpg").read_bytes(), labels["images/0000.jpg"]


def test_no_plate_detector_is_a_visible_warning(caplog: pytest.LogCaptureFixture) -> None:
    """Operators run at the default log level (warnings): a config that redacts no plates must
    say so there, not at INFO."""
    import logging

    with caplog.at_level(logging.WARNING, logger="redact.engine"):
        Redactor(RedactConfig(detector=DetectorSection(plate_backend="none")), threads=1)
    assert any(r.levelno == logging.WARNING and "plates are NOT redacted" in r.getMessage() for r in caplog.records)


def test_info_and_model_hash_describe_the_detectors(redactor: Redactor) -> None:
    from redact.detectors import int8_path, streetveil_path, streetveil_plate_threshold

    info = redactor.info
    assert [(d["name"], d["classes"]) for d in info["detectors"]] == [("streetveil", ["face", "plate"])]
    assert all(len(d["weights_sha256"]) == 64 for d in info["detectors"])
    # The thresholds in effect: the face threshold from the config, the plate threshold the
    # model's calibrated default (the config leaves it unset).
    cfg = RedactConfig().detector
    assert cfg.plate_threshold is None
    assert cfg.resolved_precision() == "int8"  # the int8 variant states its own threshold
    want = {"face": cfg.face_threshold, "plate": streetveil_plate_threshold(int8_path(streetveil_path(cfg)))}
    assert info["thresholds"] == want and info["detectors"][0]["thresholds"] == want
    assert info["threshold_source"] == {"face": "config", "plate": "model default"}
    assert info["precision"] == cfg.resolved_precision()
    assert info["method"] == "blur" and info["expand"] == {"face": 1.3, "plate": 1.15}
    assert len(redactor.model_hash) == 64
    other = Redactor(RedactConfig(detector=DetectorSection(plate_backend="none")), threads=1)
    assert other.model_hash != redactor.model_hash


def test_redact_bytes_is_decode_detect_render_and_deterministic(redactor: Redactor, group_jpeg: tuple) -> None:
    data, labels = group_jpeg
    res = redactor.redact_bytes(data, name="g.jpg")
    assert isinstance(res, RedactResult)
    img = redactor.decode(data, name="g.jpg")
    dets = redactor.detect(img)
    assert dets == res.detections
    assert redactor.render(img, dets) == res.data
    assert redactor.redact_bytes(data, name="g.jpg").data == res.data
    assert (res.width, res.height, res.format) == (img.width, img.height, "JPEG")
    found = iou_matrix(np.array(labels, np.float32), dets.of("face").xyxy).max(axis=1) >= 0.3
    assert found.mean() >= 0.85
    # Pixels changed inside the faces, not far away from them.
    out = np.asarray(Image.open(io.BytesIO(res.data)).convert("RGB")).astype(int)
    x1, y1, x2, y2 = (int(v) for v in labels[0])
    cy, cx = (y1 + y2) // 2, (x1 + x2) // 2
    inner = np.abs(out[cy - 5 : cy + 5, cx - 5 : cx + 5] - img.rgb[cy - 5 : cy + 5, cx - 5 : cx + 5].astype(int))
    assert inner.mean() > 3


def test_extra_boxes_are_redacted_too() -> None:
    # Faces only, so no detection on the noise blurs the pixels compared below.
    redactor = Redactor(RedactConfig(detector=DetectorSection(plate_backend="none")), threads=1)
    rng = np.random.default_rng(5)
    arr = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    extra = Detections.of_class(np.array([[100, 50, 200, 90]], np.float32), np.array([1.0]), "plate")
    res = redactor.redact_bytes(buf.getvalue(), name="n.png", extra=extra)
    out = np.asarray(Image.open(io.BytesIO(res.data)))
    assert res.format == "PNG" and out.shape == arr.shape
    assert (out[55:85, 105:195] != arr[55:85, 105:195]).any(axis=2).mean() > 0.9
    np.testing.assert_array_equal(out[150:, :], arr[150:, :])  # lossless elsewhere
    assert extra.xyxy.tolist()[0] in res.detections.xyxy.tolist()


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_orientation_is_kept_and_boxes_are_in_stored_pixels(redactor: Redactor, group_jpeg: tuple,
                                                             orientation: int) -> None:
    """A camera held sideways stores rotated pixels plus an Orientation tag: the faces are
    found on the upright view, redacted in place, and the tag is kept."""
    data, labels = group_jpeg
    upright = Image.open(io.BytesIO(data)).convert("RGB")
    inverse = {1: None, 3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
    stored = upright.transpose(inverse[orientation]) if inverse[orientation] else upright
    ex = Image.Exif()
    ex[0x0112] = orientation
    buf = io.BytesIO()
    stored.save(buf, "JPEG", quality=92, exif=ex.tobytes())
    res = redactor.redact_bytes(buf.getvalue(), name="o.jpg")
    out = Image.open(io.BytesIO(res.data))
    assert out.size == stored.size and out.getexif().get(0x0112) == orientation
    # Map the labelled (upright) faces into stored pixels and check they were found there.
    from redact.boxes import boxes_to_stored

    gt = boxes_to_stored(np.array(labels, np.float32), orientation, stored.width, stored.height)
    found = iou_matrix(gt, res.detections.of("face").xyxy).max(axis=1) >= 0.3
    assert found.mean() >= 0.85


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [("JPEG", "RGB"), ("JPEG", "L"), ("PNG", "RGB"), ("PNG", "L"), ("PNG", "RGBA"), ("WEBP", "RGB"),
     ("WEBP", "RGBA"), ("TIFF", "RGB"), ("BMP", "RGB")],
)
def test_output_keeps_format_size_and_mode(redactor: Redactor, group_jpeg: tuple, fmt: str, mode: str) -> None:
    im = Image.open(io.BytesIO(group_jpeg[0])).convert(mode)
    buf = io.BytesIO()
    im.save(buf, fmt)
    res = redactor.redact_bytes(buf.getvalue(), name=f"x.{fmt.lower()}")
    out = Image.open(io.BytesIO(res.data))
    src = Image.open(io.BytesIO(buf.getvalue()))  # WebP stores grey as RGB
    assert (out.format, out.size, out.mode) == (fmt, im.size, src.mode)
    assert res.detections.count("face") >= 4


@pytest.mark.parametrize("quality", [50, 75, 90, 95])
def test_jpeg_quality_is_kept(redactor: Redactor, group_jpeg: tuple, quality: int) -> None:
    im = Image.open(io.BytesIO(group_jpeg[0]))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, subsampling=1)
    src = Image.open(io.BytesIO(buf.getvalue()))
    assert estimate_jpeg_quality(src.quantization) == quality
    out = Image.open(io.BytesIO(redactor.redact_bytes(buf.getvalue(), name="q.jpg").data))
    assert out.quantization == src.quantization
    from PIL import JpegImagePlugin

    assert JpegImagePlugin.get_sampling(out) == 1
    # An explicit quality overrides "keep".
    fixed = Redactor(RedactConfig(output=OutputSection(jpeg_quality=60),
                                  detector=DetectorSection(plate_backend="none")), threads=1)
    q60 = Image.open(io.BytesIO(fixed.redact_bytes(buf.getvalue(), name="q.jpg").data))
    assert estimate_jpeg_quality(q60.quantization) == 60


@pytest.mark.parametrize(
    ("mangle", "msg"),
    [
        (lambda b: b[: len(b) // 2], "truncated"),
        (lambda b: b"", "empty"),
        (lambda b: b"GIF89a" + b"\0" * 100, "not an image file|unsupported"),
        (lambda b: b"not an image at all", "not an image file"),
        (lambda b: b[:200] + bytes(len(b) - 200), "truncated|cannot decode"),
    ],
)
def test_bad_input_raises_image_error_naming_the_file(redactor: Redactor, group_jpeg: tuple, mangle, msg: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ImageError, match=msg) as e:
        redactor.redact_bytes(mangle(group_jpeg[0]), name="dir/broken.jpg")
    assert str(e.value).startswith("dir/broken.jpg: ")
    assert " at 0x" not in str(e.value)  # no Python object reprs in a user's error
    assert e.value.exit_code == 1


def test_redactor_pickles_as_config_and_threads(redactor: Redactor, group_jpeg: tuple) -> None:
    blob = pickle.dumps(redactor)
    assert len(blob) < 20_000  # no model weights inside
    clone = pickle.loads(blob)
    assert clone.model_hash == redactor.model_hash and clone.threads == redactor.threads
    assert clone.redact_bytes(group_jpeg[0], name="g.jpg").data == redactor.redact_bytes(group_jpeg[0], name="g.jpg").data


def test_panorama_detection_rule() -> None:
    assert is_panorama(5760, 2880) and not is_panorama(1920, 1080) and not is_panorama(0, 0)
