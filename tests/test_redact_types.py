"""Detections value type: validation, selection, concatenation, report form."""

from __future__ import annotations

import numpy as np
import pytest

from redact.types import CLASS_NAMES, Detections


def _d() -> Detections:
    return Detections(
        np.array([[0, 0, 10, 10], [5, 5, 20, 30], [1, 2, 3, 4]]),
        np.array([0.9, 0.5, 0.7]),
        np.array([0, 1, 0]),
    )


def test_coerces_dtypes_and_is_read_only() -> None:
    d = _d()
    assert d.xyxy.dtype == np.float32 and d.score.dtype == np.float32 and d.cls.dtype == np.uint8
    with pytest.raises(ValueError):
        d.xyxy[0, 0] = 3


@pytest.mark.parametrize(
    ("xyxy", "score", "cls", "msg"),
    [
        ([[0, 0, 1, 1]], [0.5, 0.2], [0], "length mismatch"),
        ([[0, 0, 1, 1]], [0.5], [7], "class index"),
        ([[5, 0, 1, 1]], [0.5], [0], "x2 >= x1"),
        ([[0, 0, np.nan, 1]], [0.5], [0], "finite"),
    ],
)
def test_rejects_bad_values(xyxy: list, score: list, cls: list, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        Detections(np.array(xyxy, np.float32), np.array(score), np.array(cls))


def test_count_select_concat_empty() -> None:
    d = _d()
    assert len(d) == 3 and d.count("face") == 2 and d.count("plate") == 1
    assert len(Detections.empty()) == 0
    faces = d.of("face")
    assert faces.count("plate") == 0 and len(faces) == 2
    assert d.select(np.array([False, True, False])).score.tolist() == [0.5]
    both = Detections.concat([faces, Detections.empty(), d.of("plate")])
    assert len(both) == 3 and both.count("plate") == 1
    assert Detections.concat([]) == Detections.empty()
    with pytest.raises(ValueError, match="unknown class"):
        d.count("car")


def test_json_round_trip_in_report_format() -> None:
    d = _d()
    js = d.to_json()
    assert js[1] == {"class": "plate", "box": [5.0, 5.0, 20.0, 30.0], "score": 0.5}
    assert {j["class"] for j in js} <= set(CLASS_NAMES)
    assert Detections.from_json(js) == d
