"""Value types of the redaction side: detections and decoded images."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Index = value of ``Detections.cls``. Append only: reports and audit records store names.
CLASS_NAMES: tuple[str, ...] = ("face", "plate")
FACE = 0
PLATE = 1


def class_index(name: str) -> int:
    try:
        return CLASS_NAMES.index(name)
    except ValueError:
        raise ValueError(f"unknown class {name!r} (expected one of {', '.join(CLASS_NAMES)})") from None


@dataclass(frozen=True, slots=True)
class Detections:
    """N boxes in input-image pixels (x1, y1, x2, y2), with score and class index."""

    xyxy: np.ndarray  # float32 [N, 4]
    score: np.ndarray  # float32 [N]
    cls: np.ndarray  # uint8 [N], index into CLASS_NAMES

    def __post_init__(self) -> None:
        xyxy = np.ascontiguousarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        score = np.ascontiguousarray(self.score, dtype=np.float32).reshape(-1)
        cls = np.asarray(self.cls)
        if cls.size and (cls.min() < 0 or cls.max() >= len(CLASS_NAMES)):
            raise ValueError(f"class index out of range 0..{len(CLASS_NAMES) - 1}")
        cls = np.ascontiguousarray(cls, dtype=np.uint8).reshape(-1)
        if not (len(xyxy) == len(score) == len(cls)):
            raise ValueError(f"length mismatch: xyxy {len(xyxy)}, score {len(score)}, cls {len(cls)}")
        if not np.isfinite(xyxy).all() or not np.isfinite(score).all():
            raise ValueError("boxes and scores must be finite")
        if (xyxy[:, 2] < xyxy[:, 0]).any() or (xyxy[:, 3] < xyxy[:, 1]).any():
            raise ValueError("boxes must have x2 >= x1 and y2 >= y1")
        # Read-only arrays: a frozen value must not change under a caller's feet.
        for a in (xyxy, score, cls):
            a.flags.writeable = False
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "score", score)
        object.__setattr__(self, "cls", cls)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.uint8))

    @classmethod
    def of_class(cls, xyxy: np.ndarray, score: np.ndarray, name: str) -> Detections:
        """Boxes that all belong to one class."""
        n = len(np.asarray(score).reshape(-1))
        return cls(xyxy, score, np.full(n, class_index(name), np.uint8))

    def __len__(self) -> int:
        return len(self.score)

    def count(self, name: str) -> int:
        return int((self.cls == class_index(name)).sum())

    def select(self, mask: Any) -> Detections:
        """A subset by boolean mask or index array."""
        return Detections(self.xyxy[mask], self.score[mask], self.cls[mask])

    def of(self, name: str) -> Detections:
        return self.select(self.cls == class_index(name))

    @staticmethod
    def concat(items: Sequence[Detections]) -> Detections:
        items = [d for d in items if len(d)]
        if not items:
            return Detections.empty()
        return Detections(
            np.concatenate([d.xyxy for d in items]),
            np.concatenate([d.score for d in items]),
            np.concatenate([d.cls for d in items]),
        )

    def to_json(self) -> list[dict[str, Any]]:
        """The report form (DESIGN.md): boxes rounded to 0.1 px, scores to 3 decimals."""
        return [
            {
                "class": CLASS_NAMES[int(c)],
                "box": [round(float(v), 1) for v in box],
                "score": round(float(s), 3),
            }
            for box, s, c in zip(self.xyxy, self.score, self.cls, strict=True)
        ]

    @classmethod
    def from_json(cls, items: Sequence[dict[str, Any]]) -> Detections:
        if not items:
            return cls.empty()
        return cls(
            np.array([d["box"] for d in items], np.float32),
            np.array([d.get("score", 1.0) for d in items], np.float32),
            np.array([class_index(d["class"]) for d in items], np.uint8),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Detections):
            return NotImplemented
        return (
            np.array_equal(self.xyxy, other.xyxy)
            and np.array_equal(self.score, other.score)
            and np.array_equal(self.cls, other.cls)
        )

    __hash__ = None  # type: ignore[assignment]
