"""Evaluation arithmetic: matching, height bands, the fixed tune/holdout split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from redact.evaluate import BANDS, Tally, band_of, evaluate, match, split_of


@pytest.mark.parametrize(
    ("gt", "det", "score", "g_ok", "d_ok"),
    [
        ([[0, 0, 10, 10]], [[0, 0, 10, 10]], [0.9], [True], [True]),
        ([[0, 0, 10, 10]], [[6, 6, 16, 16]], [0.9], [False], [False]),  # IoU 16/184 < 0.3
        ([[0, 0, 10, 10]], [[0, 0, 10, 10], [1, 1, 11, 11]], [0.5, 0.9], [True], [False, True]),  # one label, one match
        ([[0, 0, 10, 10], [20, 0, 30, 10]], [[0, 0, 30, 10]], [0.9], [True, False], [True]),  # one det, one label
        ([], [[0, 0, 1, 1]], [0.5], [], [False]),
        ([[0, 0, 1, 1]], [], [], [False], []),
    ],
)
def test_match(gt: list, det: list, score: list, g_ok: list, d_ok: list) -> None:
    g, d = match(np.array(gt, np.float32).reshape(-1, 4), np.array(det, np.float32).reshape(-1, 4),
                 np.array(score, np.float32))
    assert g.tolist() == g_ok and d.tolist() == d_ok


@pytest.mark.parametrize(("h", "band"), [(0, "<16"), (15.9, "<16"), (16, "16-32"), (63.9, "32-64"), (64, "64-128"),
                                          (500, ">=128")])
def test_bands(h: float, band: str) -> None:
    assert BANDS[band_of(h)][0] == band


def test_split_is_fixed_and_roughly_half(shared: Path) -> None:
    labels = json.loads((shared / "faces-street-photos" / "labels.json").read_text())
    tune = [k for k in labels if split_of(k) == "tune"]
    assert 0.4 < len(tune) / len(labels) < 0.6
    assert split_of("images/0000.jpg") == split_of("images/0000.jpg")
    assert {split_of(k) for k in labels} == {"tune", "holdout"}


def test_tally_and_threshold_sweep_filter_one_detection_run(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"x")
    labels = {"a.jpg": np.array([[0, 0, 20, 20], [50, 50, 60, 60]], np.float32)}

    def detect(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        return np.array([[0, 0, 20, 20], [50, 50, 60, 60], [100, 100, 140, 140]], np.float32), \
            np.array([0.9, 0.4, 0.6], np.float32), (200, 200)

    r = evaluate(labels, tmp_path, detect, cls="face", thresholds=[0.3, 0.5])
    low, high = r.table(0.3), r.table(0.5)
    assert low[0]["recall"] == 1.0 and low[0]["precision"] == pytest.approx(2 / 3)
    assert high[0]["recall"] == 0.5 and high[0]["precision"] == 0.5
    rows = {row["band"]: row for row in low}
    assert rows["<16"]["labels"] == 1 and rows["16-32"]["labels"] == 1 and rows[">=16"]["labels"] == 1
    assert rows["32-64"]["detections"] == 1 and rows["32-64"]["matched"] == 0
    t = Tally()
    t.add(np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    assert t.images == 1 and t.row(slice(None))["recall"] is None


def test_eval_config_sets_the_threshold_and_the_large_frame_regime_through_the_config() -> None:
    from redact.config import RedactConfig
    from redact.evaluate import eval_config

    base = RedactConfig()
    d = eval_config(base, "face", 0.2, frame_ratio=1.5).detector
    assert d.face_threshold == 0.2 and d.plate_threshold == base.detector.plate_threshold
    assert (d.input_scale, d.upscale) == (pytest.approx(1 / 1.5), 1.0) and d.tile_above >= 10**9
    assert base.detector.input_scale is None and base.detector.face_threshold != 0.2  # not changed
    d = eval_config(base, "plate", 0.4).detector
    assert d.plate_threshold == 0.4 and d.input_scale is None and d.face_threshold == base.detector.face_threshold


def test_a_threshold_sweep_equals_separate_runs(shared: Path, tmp_path: Path) -> None:
    """One detection run filtered at each threshold gives what a run at that threshold gives:
    the second look covers candidates up to the sweep's highest threshold."""
    from redact.config import RedactConfig
    from redact.evaluate import run_eval

    d = shared / "faces-street-photos"
    labels = json.loads((d / "labels.json").read_text())
    subset = {k: labels[k] for k in sorted(labels)[:12]}
    lab = tmp_path / "labels.json"
    lab.write_text(json.dumps(subset))
    kw = {"cls": "face", "threads": 2, "frame_ratio": 1.5}
    sweep = run_eval(lab, d, RedactConfig(), thresholds=[0.2, 0.3], **kw)  # type: ignore[arg-type]
    for th in (0.2, 0.3):
        alone = run_eval(lab, d, RedactConfig(), thresholds=[th], **kw)  # type: ignore[arg-type]
        assert alone.table(th) == sweep.table(th), th
    assert sweep.table(0.2)[0]["labels"] == sum(len(v) for v in subset.values())
    assert sweep.info is not None and sweep.info["detectors"][0]["name"] == "streetveil"


def test_train_val_is_the_plate_models_time_split(shared: Path) -> None:
    from redact.evaluate import select_images

    d = shared / "plates-dashcam-ro"
    labels = json.loads((d / "labels.json").read_text())
    train, val = select_images(labels, d, "train"), select_images(labels, d, "val")
    assert sorted(train + val) == sorted(labels) and not set(train) & set(val)
    assert 0.15 < len(val) / len(labels) < 0.25
    # Independently of the split code: per ride (ORIGIN.json), every val frame is later than
    # every train frame.
    import re

    origin = json.loads((d / "ORIGIN.json").read_text())

    def ride_t(key: str) -> tuple[str, float]:
        m = re.search(r"/([^/]+)\.mp4#t=([0-9.]+)\.jpg$", origin[key])
        assert m is not None
        return m.group(1), float(m.group(2))

    for ride in {ride_t(k)[0] for k in labels}:
        t_train = [ride_t(k)[1] for k in train if ride_t(k)[0] == ride]
        t_val = [ride_t(k)[1] for k in val if ride_t(k)[0] == ride]
        assert t_val and (not t_train or min(t_val) > max(t_train))


def test_train_val_needs_a_dashcam_set(shared: Path) -> None:
    from redact.errors import RedactError
    from redact.evaluate import select_images

    d = shared / "faces-group-photos"
    with pytest.raises(RedactError, match=r"ORIGIN\.json"):
        select_images(json.loads((d / "labels.json").read_text()), d, "val")
