"""Training data: the time split of the real dashcam frames, the synthetic training crops,
and the CenterNet target encoding (which must invert CenterFace's decode)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from redact.boxes import decode_centernet
from redact.train import compose, data, targets


@pytest.fixture(scope="module")
def dashcam(shared: Path) -> list[data.Frame]:
    return data.load_dashcam(shared / "plates-dashcam-ro")


def test_time_split_holds_out_the_end_of_every_ride(dashcam: list[data.Frame]) -> None:
    train, val = data.time_split(dashcam, 0.2)
    assert len(train) + len(val) == len(dashcam) == 427
    assert not {f.key for f in train} & {f.key for f in val}
    for ride in {f.ride for f in dashcam}:
        tr = [f.t for f in train if f.ride == ride]
        va = [f.t for f in val if f.ride == ride]
        assert va, ride
        assert max(tr) < min(va), ride  # validation is strictly later in every ride
        assert abs(len(va) - 0.2 * (len(tr) + len(va))) <= 1
    assert {f.ride for f in val} == {"dayride_type1_001", "nightride_type3_001"}


def test_origin_parse_error_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "labels.json").write_text('{"images/0.jpg": []}')
    (tmp_path / "ORIGIN.json").write_text('{"images/0.jpg": "no-time-here.png"}')
    with pytest.raises(ValueError, match=r"ORIGIN\.json"):
        data.load_dashcam(tmp_path)


def test_training_crops_are_reproducible_and_labelled(dashcam: list[data.Frame]) -> None:
    train, _ = data.time_split(dashcam)
    frames = train[:12]
    images = [data.read_rgb(f.path) for f in frames]
    n_boxes = 0
    for i in range(12):
        a = data.make_sample(frames, images, np.random.default_rng([1, i]))
        b = data.make_sample(frames, images, np.random.default_rng([1, i]))
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
        img, boxes, ignore = a
        assert img.shape == (data.CROP_H, data.CROP_W, 3) and img.dtype == np.uint8
        assert boxes.shape[1] == 4 and ignore.shape[1] == 4
        if len(boxes):
            assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= data.CROP_W).all()
            assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= data.CROP_H).all()
            assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        n_boxes += len(boxes)
    assert n_boxes >= 12  # almost every crop holds at least one plate


def test_validation_scene_plates_lie_in_their_band(dashcam: list[data.Frame]) -> None:
    _, val = data.time_split(dashcam)
    rng = np.random.default_rng(0)
    for band in data.HEIGHT_BANDS:
        sc = data.synthetic_scene(val[0], data.read_rgb(val[0].path), "jp_kei", band, rng)
        h = sc.boxes[:, 3] - sc.boxes[:, 1]
        assert len(h) >= 1
        # perspective and roll can grow the box a little beyond the plate's own height
        assert (h >= band[0] * 0.95).all() and (h < max(band[1], 300) * 1.35).all(), (band, h)


@pytest.mark.parametrize("box", [[100.3, 50.2, 180.9, 70.1], [10, 10, 18, 14], [0, 0, 511, 319], [250, 100, 420, 290]])
def test_targets_invert_centerface_decode(box: list[float]) -> None:
    boxes = np.array([box], np.float32)
    hm, _, index, mask, scale, offset = targets.encode(boxes, np.zeros((0, 4), np.float32), 320, 512)
    assert hm.shape == (1, 80, 128) and hm.max() == 1.0 and mask.sum() == 1
    # Put the regression targets into full maps and decode as the runtime does.
    sc = np.zeros((2, 80, 128), np.float32)
    off = np.zeros((2, 80, 128), np.float32)
    r, c = divmod(int(index[0]), 128)
    sc[:, r, c], off[:, r, c] = scale[0], offset[0]
    peak = np.zeros_like(hm)
    peak[0, r, c] = 0.9
    out, score = decode_centernet(peak[0], sc, off, 0.5)  # the runtime's decode
    np.testing.assert_allclose(out[0], boxes[0], atol=1e-3)
    assert score[0] == pytest.approx(0.9)


def test_ignore_regions_zero_the_weight() -> None:
    _, weight, *_ = targets.encode(np.zeros((0, 4), np.float32), np.array([[40, 40, 80, 60]], np.float32), 320, 512)
    assert weight[0, 10:15, 10:20].sum() == 0 and weight.sum() == 80 * 128 - 5 * 10


def test_a_variant_threshold_keeps_the_reference_recall() -> None:
    """--int8 calibration: the highest threshold whose recall reaches the fp32 model's, not the
    F2 optimum (which trades recall for fewer false boxes)."""
    from redact.train.pipeline import THRESHOLD_GRID, matched_threshold

    table = {"0.15": {"recall_ge16": 0.95}, "0.20": {"recall_ge16": 0.896}, "0.25": {"recall_ge16": 0.836},
             "0.30": {"recall_ge16": 0.777}}
    assert matched_threshold(table, 0.848) == 0.20
    assert matched_threshold(table, 0.836) == 0.25
    assert matched_threshold(table, 0.99) == THRESHOLD_GRID[0]  # nothing reaches it: the lowest


class _FixedRunner:
    """A detector stand-in that returns the same scored boxes for every image."""

    def __init__(self, boxes: list[list[float]], scores: list[float]) -> None:
        self.boxes, self.scores = np.array(boxes, np.float32), np.array(scores, np.float32)

    def detect(self, image: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        k = self.scores >= threshold
        return self.boxes[k], self.scores[k]


def test_a_matched_threshold_states_its_plates_to_spare(caplog: pytest.LogCaptureFixture) -> None:
    """The int8 rule's threshold can sit exactly on the reference's recall; the calibration
    record says how many plates it has to spare, and warns at 0 or 1 (a retrain may then land a
    grid step away)."""
    from redact.train.pipeline import calibrate

    plates = [[10, 10, 90, 30], [110, 10, 190, 30], [210, 10, 290, 30]]  # three plates 20 px tall
    z = np.zeros((0, 4), np.float32)
    scene = data.Scene(np.zeros((64, 320, 3), np.uint8), np.array(plates, np.float32), z, z, "s")
    variant = _FixedRunner(plates, [0.9, 0.22, 0.12])
    reference = _FixedRunner(plates, [0.9, 0.5, 0.1])  # finds 2 of 3 at its threshold 0.25
    with caplog.at_level("WARNING"):
        best, table = calibrate(variant, [scene], (reference, 0.25))  # type: ignore[arg-type]
    assert best == 0.20
    assert [table[t]["found_ge16"] for t in ("0.10", "0.20", "0.25")] == [3, 2, 1]
    assert table["matched"]["reference_found_ge16"] == 2 and table["matched"]["spare_plates"] == 0
    assert "0 plate(s) to spare" in caplog.text
    caplog.clear()
    # Every plate scores above the grid's top step while the reference finds one: 2 to spare, no warning.
    with caplog.at_level("WARNING"):
        best, table = calibrate(_FixedRunner(plates, [0.9, 0.9, 0.9]), [scene],  # type: ignore[arg-type]
                                (_FixedRunner(plates, [0.9, 0.1, 0.1]), 0.25))
    assert best == 0.80 and table["matched"]["spare_plates"] == 2 and "to spare" not in caplog.text
    # A variant that never reaches the reference: the lowest step, and the warning says so.
    with caplog.at_level("WARNING"):
        best, table = calibrate(_FixedRunner(plates, [0.9, 0.05, 0.05]), [scene],  # type: ignore[arg-type]
                                (reference, 0.25))
    assert best == 0.10 and table["matched"]["spare_plates"] == -1 and "1 plate(s) short" in caplog.text


def test_coverage_is_the_share_of_a_plate_under_the_grown_detections() -> None:
    """Recall asks IoU >= 0.3 of one box; coverage says how much of the plate the blur hides."""
    from redact.train.evaluate import Tally, coverage

    plate = np.array([[10, 10, 110, 30]], np.float32)
    # A box over the left half, grown by 1.15 about its centre: x 6.25-63.75, y 8.5-31.5.
    assert coverage(plate, np.array([[10, 10, 60, 30]], np.float32), (100, 200)) == [pytest.approx(0.54)]
    assert coverage(plate, np.zeros((0, 4), np.float32), (100, 200)) == [0.0]
    two = np.array([[10, 10, 60, 30], [60, 10, 110, 30]], np.float32)
    assert coverage(plate, two, (100, 200)) == [1.0]
    t = Tally()
    big = np.array([[10, 10, 210, 90]], np.float32)  # 80 px tall: counted
    t.add(big, np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32), big, np.ones(1, np.float32), (100, 300))
    t.add(plate, np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32), plate, np.ones(1, np.float32), (100, 300))
    assert t.as_dict()["coverage_ge64"] == {"plates": 1, "mean": 1.0, "share_ge95": 1.0}  # 20 px plate: not counted


def test_a_separable_rank_outside_what_a_3x3_filter_has_is_refused_before_any_work() -> None:
    from redact.train.loop import TrainConfig

    for rank in (-1, 10):
        with pytest.raises(ValueError, match="separable fuse rank"):
            TrainConfig(separable_fuse=rank)
    assert TrainConfig(separable_fuse=9).separable_fuse == 9
    for n in (-1, 9):
        with pytest.raises(ValueError, match="head blocks"):
            TrainConfig(head_blocks=n)


def test_small_plates_report_coverage_and_what_the_same_boxes_cover_by_chance() -> None:
    """8-16 px plates: the share >= 80 % / 95 % under the blur, and the share >= 80 % once the
    plates are moved sideways (the detections stay): coverage that is not the detector's doing."""
    from redact.train.evaluate import CHANCE_SHIFT_PX, Tally, shifted

    z = np.zeros((0, 4), np.float32)
    boxes = np.array([[20, 50, 60, 62], [900, 50, 940, 62]], np.float32)
    moved = shifted(boxes, 1000)
    assert moved[0, 0] == 20 + CHANCE_SHIFT_PX and moved[1, 0] == 900 - CHANCE_SHIFT_PX  # no room right: left
    assert np.array_equal(moved[:, [1, 3]], boxes[:, [1, 3]])
    t = Tally()
    # one plate under a box 3x its size (IoU < 0.3: not a hit, but hidden), one off by half its width
    big = np.array([[0, 40, 120, 75]], np.float32)
    off = np.array([[925, 50, 965, 62]], np.float32)
    t.add(boxes, z, z, np.concatenate([big, off]), np.ones(2, np.float32), (100, 1000))
    d = t.as_dict()
    assert d["recall_8_16"] == 0.0
    assert d["coverage_8_16"] == {"plates": 2, "share_ge80": 0.5, "share_ge95": 0.5, "chance_ge80": 0.0}
    # a detection where the first plate's shifted copy lands counts as chance
    t.add(boxes[:1], z, z, shifted(boxes[:1], 1000), np.ones(1, np.float32), (100, 1000))
    assert t.as_dict()["coverage_8_16"]["chance_ge80"] == pytest.approx(1 / 3, abs=1e-4)


def test_a_stress_condition_changes_only_itself(dashcam: list[data.Frame]) -> None:
    """Stress scenes under different conditions hold the same plates at the same places: night
    draws from its own stream, so the plates' boxes are those of the scene as validated, and
    the frame is darker; a forced viewing angle moves no plate centre."""
    from redact.train import pipeline

    _, val = data.time_split(dashcam)
    frames = val[:10]
    images = {f.key: data.read_rgb(f.path) for f in frames}
    night, angle = pipeline.STRESS_CONDITIONS[1], pipeline.STRESS_CONDITIONS[2]
    assert (night.name, angle.name) == ("night", "angle")
    base = pipeline.stress_scenes(frames, images, 7, data.AS_VALIDATION, "eu", per_cell=1)
    dark = pipeline.stress_scenes(frames, images, 7, night, "eu", per_cell=1)
    tilted = pipeline.stress_scenes(frames, images, 7, angle, "eu", per_cell=1)
    assert len(base) == len(dark) == len(tilted) == len(data.HEIGHT_BANDS) - 1
    for b, d, t in zip(base, dark, tilted, strict=True):
        assert np.array_equal(b.boxes, d.boxes), (b.name, d.name)
        assert d.image.mean() < 0.8 * b.image.mean(), d.name
        assert d.name.endswith(":night") and b.name == d.name.rsplit(":", 1)[0]
        if len(b.boxes) and len(t.boxes) == len(b.boxes):
            centre = lambda x: (x[:, :2] + x[:, 2:]) / 2  # noqa: E731
            assert np.abs(centre(b.boxes) - centre(t.boxes)).max() < 1.0 + 0.02 * (b.boxes[:, 2] - b.boxes[:, 0]).max()
    # Beyond training's angles: every plate's sides differ in height by at least yaw 0.3's.
    rng = np.random.default_rng(3)
    for _ in range(50):
        q = compose.random_quad(0, 0, 100, 50, rng, max_yaw=0.6, min_yaw=0.3, max_rot_deg=0)
        hl, hr = q[3, 1] - q[0, 1], q[2, 1] - q[1, 1]
        assert max(hl, hr) / min(hl, hr) >= 1.15 / 0.85 - 1e-4


def test_the_stress_report_counts_plates_by_condition(shared: Path) -> None:
    """The committed int8 model through the engine's passes, one family, two conditions, one
    scene per band: every plate counted under both, most of them found."""
    from redact.train import evaluate, pipeline

    model = Path(__file__).resolve().parents[1] / "redact" / "models" / "streetveil-fp-v1-int8.onnx"
    runner = evaluate.EngineRunner(evaluate.PlateRunner(model, 2), 1 / 3, True)
    out = pipeline.stress_report(runner, shared, 0.2, 20261126, per_cell=1,
                                 conditions=pipeline.STRESS_CONDITIONS[:2], families=("jp_private",))
    assert list(out["conditions"]) == ["as_validation", "night"]
    for name, c in out["conditions"].items():
        assert c["condition"]["name"] == name
        assert c["all"]["plates"] == c["families"]["jp_private"]["plates"] >= 10
        assert c["all"]["recall_ge16"] >= 0.75, (name, c["all"])


def test_hard_views_change_only_the_crops_they_draw(dashcam: list[data.Frame]) -> None:
    """Hard views (``make_sample``'s shares) leave every crop whose own stream drew no hard view exactly as
    the shipped recipe makes it, and streaks the ones it did (so the shipped caches stay valid)."""
    from redact.train import loop

    frames = data.time_split(dashcam)[0][:20]
    images = [data.read_rgb(f.path) for f in frames]
    kinds = set()
    for i in range(16):
        plain = data.make_sample(frames, images, np.random.default_rng([5, i]))
        hard_rng = np.random.default_rng([5, i, loop.HARD_STREAM])
        angled, streaked = np.random.default_rng([5, i, loop.HARD_STREAM]).random(2) < 0.4
        hard = data.make_sample(frames, images, np.random.default_rng([5, i]), 0.4, 0.4, hard_rng)
        same = np.array_equal(plain[0], hard[0]) and np.array_equal(plain[1], hard[1])
        if not (angled or streaked):
            assert same, i
        if streaked:
            assert not np.array_equal(plain[0], hard[0]), i
        # more negatives in the streaked crops: the others stay as they were, labels everywhere
        signed = data.make_sample(frames, images, np.random.default_rng([5, i]), 0.4, 0.4,
                                  np.random.default_rng([5, i, loop.HARD_STREAM]), streaked_signs=3)
        assert np.array_equal(signed[1], hard[1]) and np.array_equal(signed[0], hard[0]) != bool(streaked), i
        kinds.add((bool(angled), bool(streaked)))
    assert (False, False) in kinds and any(s for _, s in kinds)  # the seeds above exercise both sides
    with pytest.raises(ValueError, match="hard_rng"):
        data.make_sample(frames, images, np.random.default_rng(0), 0.0, 0.3)
    with pytest.raises(ValueError, match="hard-view share"):
        loop.CacheSpec(10, 1, streaked_views=1.5)
    with pytest.raises(ValueError, match="only with streaked views"):
        loop.CacheSpec(10, 1, streaked_signs=2)
