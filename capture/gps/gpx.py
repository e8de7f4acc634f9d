"""GPX tracks as fixes (gpxpy): replay for the daemon, and the track for ``capture import``."""

from __future__ import annotations

import itertools
import logging
import threading
import time as _time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import gpxpy
import gpxpy.gpx

from capture.errors import GpsError
from capture.types import Fix, gpx_time

log = logging.getLogger(__name__)


def _ext_float(p: Any, name: str) -> float | None:
    for e in getattr(p, "extensions", None) or []:
        for el in e.iter():
            if el.tag.split("}")[-1].lower() == name and el.text:
                try:
                    return float(el.text)
                except ValueError:
                    return None
    return None


def _fill_times(times: list[datetime | None]) -> list[datetime | None]:
    """Give untimed points (e.g. GoPro GPS5 samples between the 1 s GPSU stamps) times spread
    evenly between their timed neighbours; trailing ones continue at the last known rate."""
    idx = [i for i, t in enumerate(times) if t is not None]
    out = list(times)
    if len(idx) < 2:
        return out
    for a, b in itertools.pairwise(idx):
        ta, tb = times[a], times[b]
        assert ta is not None and tb is not None
        step = (tb - ta) / (b - a)
        for k in range(a + 1, b):
            out[k] = ta + step * (k - a)
    a, b = idx[-2], idx[-1]
    tb = times[b]
    assert tb is not None and times[a] is not None
    step = (tb - times[a]) / (b - a)  # type: ignore[operator]
    for k in range(b + 1, len(times)):
        out[k] = tb + step * (k - b)
    return out


def read_gpx_fixes(path: Path) -> list[Fix]:
    """Every timed track point as a Fix, sorted by time (duplicates by time dropped)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            gpx = gpxpy.parse(f)
    except FileNotFoundError as e:
        raise GpsError(f"{path}: GPX file not found") from e
    except (OSError, UnicodeDecodeError, gpxpy.gpx.GPXException) as e:
        raise GpsError(f"{path}: not a readable GPX file: {e}") from e
    fixes: list[Fix] = []
    bad = 0
    for trk in gpx.tracks:
        for seg in trk.segments:
            pts = seg.points
            times = _fill_times([gpx_time(p.time) for p in pts])
            for p, t in zip(pts, times, strict=True):
                if t is None:
                    continue
                speed = p.speed if p.speed is not None else _ext_float(p, "speed2d")
                if speed is None:
                    speed = _ext_float(p, "speed")
                course = p.course if p.course is not None else _ext_float(p, "course")
                q = {"dgps": 2, "pps": 3}.get(str(p.type_of_gpx_fix or "").lower(), 1)
                try:
                    fixes.append(Fix(
                        time=t, lat=p.latitude, lon=p.longitude, alt=p.elevation,
                        speed=speed if speed is not None and speed >= 0 else None,
                        course=course % 360.0 if course is not None else None,
                        fix_quality=q, hdop=p.horizontal_dilution,
                        satellites=int(p.satellites) if p.satellites is not None else None,
                    ))
                except ValueError:
                    bad += 1
    if bad:
        log.warning("%s: skipped %d track points with invalid values", path, bad)
    if not fixes:
        raise GpsError(f"{path}: GPX has no track points with times (needed to geotag by time)")
    fixes.sort(key=lambda f: f.time)
    unique = [fixes[0]]
    for fx in fixes[1:]:
        if fx.time > unique[-1].time:
            unique.append(fx)
    return unique


class GpxReplaySource:
    """Replays a GPX track as a GPS source, at real-time pace or as fast as possible."""

    def __init__(self, path: Path, *, realtime: bool = True) -> None:
        self.name = f"gpx {path}"
        self.fixes = read_gpx_fixes(path)
        self.realtime = realtime
        self._stop = threading.Event()
        self.counters = {"fixes": 0}
        self.last_error: str | None = None

    @property
    def stats(self) -> dict[str, int]:
        return dict(self.counters)

    def close(self) -> None:
        self._stop.set()

    def __iter__(self) -> Iterator[Fix]:
        start = _time.monotonic()
        t0 = self.fixes[0].time
        for f in self.fixes:
            if self.realtime:
                due = (f.time - t0) / timedelta(seconds=1) - (_time.monotonic() - start)
                if due > 0 and self._stop.wait(due):
                    return
            if self._stop.is_set():
                return
            self.counters["fixes"] += 1
            yield f
