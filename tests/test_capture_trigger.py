"""Trigger tables: every N metres / T seconds, stationary and duplicate drops, max rate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from capture.geodesy import offset_m
from capture.trigger import Trigger, TriggerSettings, thumb_difference, thumbnail

T0 = datetime(2026, 5, 1, 3, 0, 0, tzinfo=UTC)

# (seconds, metres east, speed, difference) → expected (keep, reason)
Row = tuple[float, float | None, float | None, float | None, bool, str]


def run(settings: TriggerSettings, rows: list[Row]) -> None:
    trig = Trigger(settings)
    for i, (s, east, speed, diff, keep, reason) in enumerate(rows):
        lat, lon = offset_m(35.0, 139.0, 0.0, east) if east is not None else (None, None)
        d = trig.decide(T0 + timedelta(seconds=s), lat, lon, speed, diff)
        assert (d.keep, d.reason) == (keep, reason), f"row {i}: {rows[i]} got {d}"


@pytest.mark.parametrize(
    ("settings", "rows"),
    [
        (  # every 5 m
            TriggerSettings(every_meters=5),
            [(0.0, 0, 5, None, True, "first"), (0.5, 2.5, 5, 50, False, "not_due"),
             (1.0, 5.05, 5, 50, True, "distance"), (1.5, 9.9, 5, 50, False, "not_due"),
             (2.0, 10.2, 5, 50, True, "distance")],
        ),
        (  # stationary: speed below threshold drops, even far away
            TriggerSettings(every_meters=5, min_speed_mps=0.5),
            [(0.0, 0, 5, None, True, "first"), (1.0, 10, 0.2, 50, False, "stationary"),
             (2.0, 10, 0.6, 50, True, "distance")],
        ),
        (  # max rate beats distance
            TriggerSettings(every_meters=1, max_rate_hz=2),
            [(0.0, 0, 30, None, True, "first"), (0.3, 9, 30, 50, False, "rate"),
             (0.5, 15, 30, 50, True, "distance")],
        ),
        (  # near-duplicates dropped
            TriggerSettings(every_meters=1, duplicate_threshold=2.0),
            [(0.0, 0, 5, None, True, "first"), (1.0, 5, 5, 1.0, False, "duplicate"),
             (2.0, 10, 5, 3.0, True, "distance")],
        ),
        (  # every T seconds as well
            TriggerSettings(every_meters=100, every_seconds=2),
            [(0.0, 0, 5, None, True, "first"), (1.0, 5, 5, 50, False, "not_due"),
             (2.0, 10, 5, 50, True, "time"), (3.0, 120, 5, 50, True, "distance")],
        ),
        (  # frames without a position (kept by config): once a second, then position regained
            TriggerSettings(every_meters=5),
            [(0.0, None, None, None, True, "first"), (0.5, None, None, 50, False, "not_due"),
             (1.0, None, None, 50, True, "time"), (1.3, 0, 5, 50, True, "regained_position")],
        ),
        (  # unknown speed: no stationary test
            TriggerSettings(every_meters=5, min_speed_mps=1),
            [(0.0, 0, None, None, True, "first"), (1.0, 6, None, 50, True, "distance")],
        ),
    ],
)
def test_trigger_table(settings: TriggerSettings, rows: list[Row]) -> None:
    run(settings, rows)


def test_settings_validated() -> None:
    with pytest.raises(ValueError):
        TriggerSettings(every_meters=0)
    with pytest.raises(ValueError):
        TriggerSettings(min_speed_mps=-1)


def test_thumbnail_difference() -> None:
    ramp = np.linspace(0, 255, 640, dtype=np.float32)[None, :, None]
    a = np.broadcast_to(ramp, (480, 640, 3)).astype(np.uint8)
    ta = thumbnail(a)
    assert ta.shape == (36, 64)
    assert thumb_difference(ta, thumbnail(a.copy())) == 0.0
    assert thumb_difference(ta, thumbnail(255 - a)) > 20
