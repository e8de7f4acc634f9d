"""Box geometry, CenterNet decoding, orientation mapping and the tiling plan (pure functions)."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from PIL import Image, ImageOps

from redact.boxes import (
    batched_nms,
    boxes_to_stored,
    clip_boxes,
    decode_centernet,
    expand_boxes,
    iou_matrix,
    nms,
    nms_union,
    to_display,
)
from redact.centernet import unwrap
from redact.tiling import PlanParams, Window, plan


@pytest.mark.parametrize(
    ("a", "b", "iou"),
    [
        ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
        ([0, 0, 10, 10], [10, 10, 20, 20], 0.0),
        ([0, 0, 10, 10], [5, 0, 15, 10], 50 / 150),
        ([0, 0, 10, 10], [2, 2, 8, 8], 36 / 100),
        ([0, 0, 0, 0], [0, 0, 0, 0], 0.0),
    ],
)
def test_iou(a: list, b: list, iou: float) -> None:
    assert iou_matrix(np.array([a]), np.array([b]))[0, 0] == pytest.approx(iou, abs=1e-6)


def test_nms_keeps_best_of_overlapping_and_separate_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.5, 0.9, 0.3, 0.5], np.float32)
    assert nms(boxes, scores, 0.3).tolist() == [1, 2]
    # Equal boxes in different classes both survive batched NMS.
    assert batched_nms(boxes[[0, 3]], scores[[0, 3]], np.array([0, 1])).tolist() == [0, 1]



def test_nms_union_keeps_what_nms_keeps_grown_by_what_each_kept_box_suppressed() -> None:
    # A close plate: the best box covers its top half, a weaker one all of it (IoU 0.5); a
    # third box overlaps the weaker one only (IoU 0.17 with it, 0 with the best): NMS keeps it,
    # so it grows nothing; a separate box stays as it is.
    boxes = np.array([[0, 0, 100, 20], [0, 0, 100, 40], [0, 30, 100, 60], [200, 0, 220, 10]], np.float32)
    scores = np.array([0.9, 0.6, 0.5, 0.4], np.float32)
    keep, grown = nms_union(boxes, scores, 0.3)
    assert keep.tolist() == nms(boxes, scores, 0.3).tolist() == [0, 2, 3]
    np.testing.assert_array_equal(grown, [[0, 0, 100, 40], [0, 30, 100, 60], [200, 0, 220, 10]])
    # Each grown box contains its kept box; no boxes, no rows.
    assert (grown[:, :2] <= boxes[keep, :2]).all() and (grown[:, 2:] >= boxes[keep, 2:]).all()
    keep, grown = nms_union(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    assert keep.shape == (0,) and grown.shape == (0, 4)
    # Only suppressed boxes scoring grow_min or more grow a box (a verifier's low proposals).
    keep, grown = nms_union(boxes, scores, 0.3, grow_min=0.7)
    assert keep.tolist() == [0, 2, 3] and grown[0].tolist() == [0, 0, 100, 20]

@pytest.mark.parametrize(
    ("box", "f", "out"),
    [
        ([10, 10, 20, 30], 1.0, [10, 10, 20, 30]),
        ([10, 10, 20, 30], 1.3, [8.5, 7, 21.5, 33]),
        ([0, 0, 100, 10], 2.0, [-50, -5, 150, 15]),
    ],
)
def test_expand(box: list, f: float, out: list) -> None:
    np.testing.assert_allclose(expand_boxes(np.array([box]), f)[0], out, atol=1e-4)


def test_clip() -> None:
    np.testing.assert_array_equal(clip_boxes(np.array([[-5, -5, 120, 50]]), 100, 40)[0], [0, 0, 100, 40])


def test_decode_centernet_matches_the_documented_formula() -> None:
    heat = np.zeros((8, 8), np.float32)
    scale = np.zeros((2, 8, 8), np.float32)
    offset = np.zeros((2, 8, 8), np.float32)
    heat[2, 5] = 0.8
    scale[:, 2, 5] = (np.log(6.0), np.log(4.0))  # h = 24 px, w = 16 px
    offset[:, 2, 5] = (0.25, -0.5)  # y, x
    xyxy, score = decode_centernet(heat, scale, offset, 0.5)
    cx, cy = (5 - 0.5 + 0.5) * 4, (2 + 0.25 + 0.5) * 4
    np.testing.assert_allclose(xyxy[0], [cx - 8, cy - 12, cx + 8, cy + 12], atol=1e-4)
    assert score.tolist() == [pytest.approx(0.8)]
    assert len(decode_centernet(heat, scale, offset, 0.9)[0]) == 0


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_view_matches_pillow_and_boxes_map_back(orientation: int) -> None:
    rng = np.random.default_rng(orientation)
    stored = rng.integers(0, 255, (5, 7, 3), dtype=np.uint8)
    im = Image.fromarray(stored)
    ex = im.getexif()
    ex[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, "PNG", exif=ex)
    ref = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue()))))
    view = to_display(stored, orientation)
    np.testing.assert_array_equal(view, ref)
    for r in range(view.shape[0]):
        for c in range(view.shape[1]):
            sx1, sy1, sx2, sy2 = boxes_to_stored(np.array([[c, r, c + 1, r + 1]]), orientation, 7, 5)[0]
            assert (sx2 - sx1, sy2 - sy1) == (1, 1)
            np.testing.assert_array_equal(stored[int(sy1), int(sx1)], view[r, c])


def _covered(windows: list[Window], w: int, h: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    for win in windows:
        m[win.y0 : win.y1, win.x0 : min(win.x1, w)] = True
    return m


@pytest.mark.parametrize(
    ("w", "h", "scales"),
    [
        (400, 300, [1.0, 2.0]),  # small image: 1x and a 2x pass
        (1280, 720, [1.0]),  # fits the input size: one native pass
        (1920, 1080, [1280 / 1920]),  # 1080p: one whole-frame pass at the input size
        (3840, 2160, [1 / 3, 1.0]),  # 4K: whole frame at 1/3 plus native tiles
    ],
)
def test_plan_scales(w: int, h: int, scales: list[float]) -> None:
    wins = plan(w, h, PlanParams())
    assert sorted({round(x.scale, 4) for x in wins}) == sorted(round(s, 4) for s in scales)
    assert wins[0] == Window(0, 0, w, h, wins[0].scale)
    for s in scales:
        assert _covered([x for x in wins if round(x.scale, 4) == round(s, 4)], w, h).all()
    for x in wins:
        ph, pw = x.padded_size
        assert ph % 32 == 0 and pw % 32 == 0
        assert max(x.net_size) <= max(1280, PlanParams().tile_size)


def test_a_fixed_input_scale_replaces_the_input_size() -> None:
    """input_scale (``streetveil eval --as-large-frame``) fixes the whole-frame pass's scale
    whatever the image size; with no upscale or tile pass it is the only window."""
    p = PlanParams(input_scale=2 / 3, upscale=1.0, tile_above=10**9)
    for w, h in ((400, 300), (1920, 1080), (3840, 2160)):
        (win,) = plan(w, h, p)
        assert win == Window(0, 0, w, h, 2 / 3)
    with pytest.raises(ValueError, match="input_scale"):
        PlanParams(input_scale=1.5)


def test_tiles_overlap_by_at_least_the_configured_amount() -> None:
    p = PlanParams(tile_size=1024, tile_overlap=128)
    tiles = [x for x in plan(4000, 2000, p) if x.scale == 1.0]
    xs = sorted({(t.x0, t.x1) for t in tiles})
    for (_a0, a1), (b0, _b1) in itertools.pairwise(xs):
        assert a1 - b0 >= 128
    assert len(tiles) == len(xs) * len({(t.y0, t.y1) for t in tiles})


def test_wrap_extends_past_the_right_edge_and_unwrap_splits_seam_boxes() -> None:
    p = PlanParams(wrap=True)
    wins = plan(2000, 1000, p)
    assert wins[0].x1 > 2000
    boxes = np.array([[100, 10, 150, 60], [2010, 10, 2050, 60], [1980, 10, 2030, 60]], np.float32)
    out, score = unwrap(boxes, np.array([0.9, 0.8, 0.7], np.float32), 2000)
    got = sorted(map(tuple, out.tolist()))
    assert got == sorted([(100, 10, 150, 60), (10, 10, 50, 60), (1980, 10, 2000, 60), (0, 10, 30, 60)])
    assert sorted(score.tolist()) == pytest.approx(sorted([0.9, 0.8, 0.7, 0.7]))
