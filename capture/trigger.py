"""Which frames to keep: every N metres or every T seconds, not while stopped, not
near-duplicates, never faster than a maximum rate. Pure decision logic (no I/O); the
near-duplicate measure is computed by ``thumbnail``/``thumb_difference`` on pixel arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np

from capture.geodesy import distance_m

Reason = Literal[
    "first", "distance", "time", "regained_position",
    "rate", "stationary", "duplicate", "not_due",
]
THUMB_SIZE = (64, 36)


@dataclass(frozen=True, slots=True)
class TriggerSettings:
    every_meters: float = 5.0
    every_seconds: float = 0.0  # 0: distance only
    min_speed_mps: float = 0.5
    max_rate_hz: float = 5.0
    duplicate_threshold: float = 2.0
    # Frames without a position are kept (when the config keeps them at all) this often.
    no_position_interval_s: float = 1.0

    def __post_init__(self) -> None:
        if self.every_meters <= 0 or self.max_rate_hz <= 0 or self.no_position_interval_s <= 0:
            raise ValueError("every_meters, max_rate_hz and no_position_interval_s must be > 0")
        if self.every_seconds < 0 or self.min_speed_mps < 0 or self.duplicate_threshold < 0:
            raise ValueError("every_seconds, min_speed_mps and duplicate_threshold must be >= 0")


@dataclass(frozen=True, slots=True)
class Decision:
    keep: bool
    reason: Reason


class Trigger:
    """Stateful over one session: remembers the last kept frame's time and position."""

    def __init__(self, settings: TriggerSettings) -> None:
        self.s = settings
        self.last_time: datetime | None = None
        self.last_pos: tuple[float, float] | None = None

    def decide(
        self,
        t: datetime,
        lat: float | None,
        lon: float | None,
        speed: float | None,
        difference: float | None = None,
    ) -> Decision:
        """Decide on the frame at ``t``; ``difference`` is its thumbnail difference from the
        last kept frame (None when unknown). Keeping updates the state."""
        s = self.s
        since = (t - self.last_time).total_seconds() if self.last_time is not None else None
        has_pos = lat is not None and lon is not None
        if since is not None and since < 1.0 / s.max_rate_hz:
            return Decision(False, "rate")
        if has_pos and speed is not None and speed < s.min_speed_mps:
            return Decision(False, "stationary")
        if difference is not None and since is not None and difference < s.duplicate_threshold:
            return Decision(False, "duplicate")
        reason: Reason | None = None
        if since is None:
            reason = "first"
        elif has_pos and self.last_pos is None:
            reason = "regained_position"
        elif has_pos and self.last_pos is not None:
            assert lat is not None and lon is not None
            if distance_m(self.last_pos[0], self.last_pos[1], lat, lon) >= s.every_meters:
                reason = "distance"
        if reason is None and since is not None:
            interval = s.every_seconds if has_pos else (s.every_seconds or s.no_position_interval_s)
            if interval > 0 and since >= interval:
                reason = "time"
        if reason is None:
            return Decision(False, "not_due")
        self.last_time = t
        self.last_pos = (lat, lon) if has_pos else None  # type: ignore[assignment]
        return Decision(True, reason)


def thumbnail(bgr: np.ndarray) -> np.ndarray:
    """A small grey thumbnail (float32, 36x64) for the near-duplicate test."""
    import cv2

    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) if bgr.ndim == 3 else bgr
    small: np.ndarray = cv2.resize(grey, THUMB_SIZE, interpolation=cv2.INTER_AREA)
    return small.astype(np.float32)


def thumb_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute grey-level difference (0-255) of two thumbnails."""
    return float(np.mean(np.abs(a - b)))
