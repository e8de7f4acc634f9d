"""Redaction operators: irreversibility (high-frequency energy), masks, expansion, feathering."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from redact.ops import RedactParams, blur_sigma, box_mask, redact, redacted_area, redacted_within
from redact.types import FACE, PLATE


def _hf_energy(rgb: np.ndarray, mask: np.ndarray, short_side: float) -> float:
    """Energy of the detail finer than 1/8 of the box's shorter side (what identifies a face
    or a plate: eyes, mouth, character strokes), over ``mask``: the grey image minus its
    Gaussian low-pass with sigma = short side / 8. Relative to the box, so the measure means
    the same for a 16 px and a 400 px box (a fixed 3x3 Laplacian would mostly measure the
    uint8 rounding noise of large, already smooth boxes)."""
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    hp = g - cv2.GaussianBlur(g, (0, 0), sigmaX=max(1.0, short_side / 8))
    return float((hp[mask] ** 2).sum())


def _ellipse_mask(h: int, w: int, box: list[float]) -> np.ndarray:
    return box_mask(h, w, tuple(box), "ellipse", 0.0) > 0.5  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def scenes(shared: Path) -> dict[str, tuple[np.ndarray, list[float]]]:
    """Real content: a labelled face and a labelled plate, and pure noise (the worst case)."""
    out = {}
    for key, folder in (("face", "faces-group-photos"), ("plate", "plates-dashcam-ro")):
        labels = json.loads((shared / folder / "labels.json").read_text())
        name = sorted(labels)[0]
        img = cv2.cvtColor(cv2.imread(str(shared / folder / name)), cv2.COLOR_BGR2RGB)
        out[key] = (img, labels[name][0])
    rng = np.random.default_rng(0)
    out["noise"] = (rng.integers(0, 256, (400, 600, 3), dtype=np.uint8), [250.0, 150.0, 330.0, 250.0])
    return out


@pytest.mark.parametrize("scene", ["face", "plate", "noise"])
@pytest.mark.parametrize("scale", [0.5, 1.0, 2.0, 4.0])
@pytest.mark.parametrize(("cls", "shape"), [(FACE, "ellipse"), (PLATE, "rectangle")])
def test_blur_removes_95_percent_of_high_frequency_energy(
    scenes: dict, scene: str, scale: float, cls: int, shape: str
) -> None:
    img, box = scenes[scene]
    # Crop around the box (keeps the test fast), then scale: boxes of ~12 to ~400 px.
    bw, bh = box[2] - box[0], box[3] - box[1]
    cx0, cy0 = max(0, int(box[0] - bw)), max(0, int(box[1] - bh))
    img = img[cy0 : int(box[3] + bh), cx0 : int(box[2] + bw)]
    box = [box[0] - cx0, box[1] - cy0, box[2] - cx0, box[3] - cy0]
    img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    box = [v * scale for v in box]
    h, w = img.shape[:2]
    out = redact(img, np.array([box]), np.array([cls]), RedactParams(method="blur"))
    x1, y1, x2, y2 = (round(v) for v in box)
    if shape == "ellipse":
        region = _ellipse_mask(h, w, box)
    else:
        region = np.zeros((h, w), bool)
        region[y1 + 1 : y2 - 1, x1 + 1 : x2 - 1] = True
    short = min(x2 - x1, y2 - y1)
    before, after = _hf_energy(img, region, short), _hf_energy(out, region, short)
    assert before > 0
    assert after / before < 0.05, f"{scene} x{scale}: {after / before:.3f} of the energy left"


@pytest.mark.parametrize("method", ["blur", "pixelate", "fill"])
@pytest.mark.parametrize("feather", [0.0, 0.2])
def test_pixels_far_from_boxes_are_untouched_and_output_is_deterministic(method: str, feather: float) -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    boxes = np.array([[50, 50, 110, 130], [250, 200, 370, 230]], np.float32)
    cls = np.array([FACE, PLATE])
    p = RedactParams(method=method, feather=feather)  # type: ignore[arg-type]
    out = redact(img, boxes, cls, p)
    np.testing.assert_array_equal(out, redact(img, boxes, cls, p))
    changed = np.any(out != img, axis=2)
    area = redacted_area(boxes, cls, p, 400, 300)
    # Inside the redacted area nearly every pixel changed (noise has no flat patches).
    assert changed[area].mean() > 0.9
    # Outside it, only a feathered rim (at most a few px) may change.
    # The feather's Gaussian (sigma = feather x the expanded box's shorter side, face box:
    # 78 px) fades to nothing within 4 sigma.
    reach = int(np.ceil(4 * feather * 78)) + 1
    rim = cv2.dilate(area.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=reach) > 0
    assert not changed[~rim].any()


def test_fill_is_solid_and_pixelate_is_blocky() -> None:
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)
    box = np.array([[40, 40, 160, 100]], np.float32)
    filled = redact(img, box, np.array([PLATE]), RedactParams(method="fill", plate_expand=1.0))
    assert (filled[40:100, 40:160] == 0).all()
    pix = redact(img, box, np.array([PLATE]), RedactParams(method="pixelate", plate_expand=1.0))
    inner = pix[40:100, 40:160].reshape(-1, 3)
    # A 120 x 60 box in blocks of 10 px: at most (12 + 2) x (6 + 2) distinct colours.
    assert len(np.unique(inner, axis=0)) <= 14 * 8


def test_face_mask_is_an_ellipse_plate_mask_a_rectangle() -> None:
    p = RedactParams(face_expand=1.0, plate_expand=1.0)
    box = np.array([[0, 0, 100, 60]], np.float32)
    face = redacted_area(box, np.array([FACE]), p, 100, 60)
    plate = redacted_area(box, np.array([PLATE]), p, 100, 60)
    assert plate.all()
    assert not face[0, 0] and not face[59, 99] and face[30, 50]
    assert face.mean() == pytest.approx(np.pi / 4, abs=0.03)


@pytest.mark.parametrize(("cls", "factor"), [(FACE, 1.3), (PLATE, 1.15)])
def test_default_expansion_per_class(cls: int, factor: float) -> None:
    p = RedactParams(face_shape="rectangle")
    area = redacted_area(np.array([[100, 100, 200, 150]], np.float32), np.array([cls]), p, 400, 300)
    ys, xs = np.nonzero(area)
    assert xs.max() - xs.min() + 1 == pytest.approx(100 * factor, abs=2)
    assert ys.max() - ys.min() + 1 == pytest.approx(50 * factor, abs=2)


def test_redacted_within_takes_whole_plate_redactions_only() -> None:
    """An unblur area takes a plate box only if everything redacting it would touch (the box
    grown by plate_expand, clipped, rounded out to whole pixels) lies inside; never a face."""
    p = RedactParams()  # plate_expand 1.15: [100, 100, 200, 140] redacts [92.5, 97, 207.5, 143]
    xy = np.array([[100, 100, 200, 140], [100, 100, 200, 140], [590, 10, 640, 30]], np.float32)
    cls = np.array([PLATE, FACE, PLATE])
    got = redacted_within(xy, cls, np.array([[92, 97, 208, 143]]), p, 640, 480, of_class=PLATE)
    assert got.tolist() == [True, False, False]
    # One pixel short on any side (rounded out, 92.5 needs 92) keeps it.
    for short in ([93, 97, 208, 143], [92, 98, 208, 143], [92, 97, 207, 143], [92, 97, 208, 142]):
        assert not redacted_within(xy, cls, np.array([short]), p, 640, 480, of_class=PLATE)[0]
    # Clipped at the image edge: the area need not reach past it; several areas, any one will do.
    areas = np.array([[0, 0, 10, 10], [586, 8, 640, 32]])
    assert redacted_within(xy, cls, areas, p, 640, 480, of_class=PLATE).tolist() == [False, False, True]
    assert redacted_within(xy[:0], cls[:0], areas, p, 640, 480, of_class=PLATE).shape == (0,)


def test_feather_fades_outwards_only() -> None:
    m = box_mask(100, 100, (30, 30, 70, 70), "rectangle", 6.0)
    assert (m[30:70, 30:70] == 1).all()
    assert 0 < m[30, 26] < 1 and m[50, 5] == 0


@pytest.mark.parametrize(("w", "h", "sigma"), [(6, 6, 2.0), (10, 10, 2.5), (40, 100, 10.0), (400, 80, 20.0)])
def test_blur_sigma_rule(w: float, h: float, sigma: float) -> None:
    assert blur_sigma(w, h) == pytest.approx(sigma)
