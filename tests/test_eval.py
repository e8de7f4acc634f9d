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
