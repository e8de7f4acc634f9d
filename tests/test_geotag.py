"""Geotagging tables: linear in time, heading from course else track bearing, no bridging."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from capture.geodesy import bearing_deg, distance_m, offset_m
from capture.geotag import geotag
from capture.types import Fix

T0 = datetime(2026, 5, 1, 3, 0, 0, tzinfo=UTC)
LAT, LON = 35.0, 139.0


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def fix(s: float, north: float = 0.0, east: float = 0.0, **kw: object) -> Fix:
    lat, lon = offset_m(LAT, LON, north, east)
    return Fix(time=at(s), lat=lat, lon=lon, **kw)  # type: ignore[arg-type]


# Two fixes 1 s apart, 10 m due east, with course 80 and 100 degrees.
TRACK = [fix(0, 0, 0, course=80.0, speed=10.0, alt=5.0, fix_quality=1, hdop=0.8, satellites=9),
         fix(1, 0, 10, course=100.0, speed=12.0, alt=7.0, fix_quality=2, hdop=1.2, satellites=7)]


@pytest.mark.parametrize(
    ("s", "source", "east_m", "heading", "speed", "alt", "quality"),
    [
        (0.0, "fix", 0.0, 80.0, 10.0, 5.0, 1),
        (1.0, "fix", 10.0, 100.0, 12.0, 7.0, 2),
        (0.25, "interpolated", 2.5, 85.0, 10.5, 5.5, 1),
        (0.5, "interpolated", 5.0, 90.0, 11.0, 6.0, 1),
        (0.75, "interpolated", 7.5, 95.0, 11.5, 6.5, 2),
        (-0.1, "none", None, None, None, None, None),
        (1.1, "none", None, None, None, None, None),
    ],
)
def test_interpolation_table(s: float, source: str, east_m: float | None, heading: float | None,
                             speed: float | None, alt: float | None, quality: int | None) -> None:
    g = geotag(TRACK, at(s), max_gap_s=2.0)
    assert g.position_source == source
    if east_m is None:
        assert g.lat is None and g.heading is None
        return
    assert g.lat is not None and g.lon is not None
    assert distance_m(LAT, LON, g.lat, g.lon) == pytest.approx(east_m, abs=0.01)
    assert g.heading == pytest.approx(heading)
    assert g.speed == pytest.approx(speed)
    assert g.altitude == pytest.approx(alt)
    assert g.fix_quality == quality


@pytest.mark.parametrize(
    ("a_course", "b_course", "expect"),
    [
        (350.0, 10.0, 0.0),  # shorter arc across north
        (10.0, 350.0, 0.0),
        (None, None, "bearing"),  # no course: the bearing of the track
        (None, 120.0, "bearing"),
    ],
)
def test_heading_table(a_course: float | None, b_course: float | None, expect: float | str) -> None:
    fixes = [fix(0, 0, 0, course=a_course), fix(1, 10, 10, course=b_course)]
    g = geotag(fixes, at(0.5), max_gap_s=2.0)
    if expect == "bearing":
        assert g.heading == pytest.approx(bearing_deg(fixes[0].lat, fixes[0].lon, fixes[1].lat, fixes[1].lon))
        assert g.heading == pytest.approx(45.0, abs=0.1)
    else:
        assert g.heading == pytest.approx(expect, abs=1e-9) or g.heading == pytest.approx(360.0)


def test_heading_none_when_standing_still_without_course() -> None:
    fixes = [fix(0), fix(1, 0.2, 0.0)]  # 20 cm of GPS noise is not a direction
    assert geotag(fixes, at(0.5), max_gap_s=2).heading is None


def test_speed_from_track_when_missing() -> None:
    fixes = [fix(0), fix(2, 0, 20)]
    g = geotag(fixes, at(1), max_gap_s=5)
    assert g.speed == pytest.approx(10.0, rel=1e-3)


def test_fix_without_course_takes_bearing_of_neighbours() -> None:
    fixes = [fix(0), fix(1, 10, 0), fix(2, 20, 0)]
    g = geotag(fixes, at(1), max_gap_s=2)
    assert g.position_source == "fix"
    assert g.heading == pytest.approx(0.0, abs=0.01) or g.heading == pytest.approx(360.0, abs=0.01)
    assert g.speed == pytest.approx(10.0, rel=1e-3)


@pytest.mark.parametrize(("gap", "max_gap", "source"), [(2.0, 2.0, "interpolated"), (2.5, 2.0, "none"),
                                                       (30.0, 60.0, "interpolated")])
def test_gaps_are_not_bridged(gap: float, max_gap: float, source: str) -> None:
    fixes = [fix(0), fix(gap, 0, 10)]
    assert geotag(fixes, at(gap / 2), max_gap_s=max_gap).position_source == source


def test_tolerance_makes_a_near_fix_exact() -> None:
    g = geotag(TRACK, at(0.0005), max_gap_s=2)
    assert g.position_source == "fix"
    g = geotag(TRACK, at(0.05), max_gap_s=2, match_tolerance_s=0.1)
    assert g.position_source == "fix" and g.lat == TRACK[0].lat


def test_empty_and_antimeridian() -> None:
    assert geotag([], T0, max_gap_s=1).position_source == "none"
    fixes = [Fix(time=at(0), lat=0.0, lon=179.9999), Fix(time=at(1), lat=0.0, lon=-179.9999)]
    g = geotag(fixes, at(0.5), max_gap_s=2)
    assert g.lon is not None and abs(abs(g.lon) - 180.0) < 1e-6
