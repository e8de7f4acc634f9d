"""Privacy zones: GeoJSON (Multi)Polygons, pure contains, clear errors naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from capture.errors import ZoneError
from capture.zones import Zones, load_zones, zones_from_geojson

SQUARE = [[[139.0, 35.0], [139.01, 35.0], [139.01, 35.01], [139.0, 35.01], [139.0, 35.0]]]
HOLE = [[139.004, 35.004], [139.006, 35.004], [139.006, 35.006], [139.004, 35.006], [139.004, 35.004]]


def fc(*geoms: dict[str, object]) -> dict[str, object]:
    return {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": f"z{i}"}, "geometry": g} for i, g in enumerate(geoms)]}


@pytest.mark.parametrize(
    ("lat", "lon", "inside"),
    [(35.005, 139.002, True), (35.0, 139.005, True),  # inside, on the boundary
     (35.005, 139.005, False),  # in the hole
     (35.02, 139.005, False), (35.105, 139.105, True)],  # outside; in the second polygon
)
def test_contains(tmp_path: Path, lat: float, lon: float, inside: bool) -> None:
    p = tmp_path / "zones.geojson"
    second = {"type": "MultiPolygon", "coordinates": [[[[139.1, 35.1], [139.11, 35.1], [139.11, 35.11],
                                                          [139.1, 35.11], [139.1, 35.1]]]]}
    p.write_text(json.dumps(fc({"type": "Polygon", "coordinates": [SQUARE[0], HOLE]}, second)))
    z = load_zones(p)
    assert z.count == 2 and z.names == ("z0", "z1")
    assert z.contains(lat, lon) is inside


def test_bare_geometry_and_feature() -> None:
    assert zones_from_geojson({"type": "Polygon", "coordinates": SQUARE}).contains(35.005, 139.005)
    feat = {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": SQUARE}}
    assert zones_from_geojson(feat).contains(35.005, 139.005)


def test_empty_zones_contain_nothing() -> None:
    z = Zones.empty()
    assert not z and not z.contains(35.0, 139.0)
    assert not zones_from_geojson(fc())


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"features": []}), "not a GeoJSON object"),
        (json.dumps(fc({"type": "Point", "coordinates": [139, 35]})), "must be Polygon or MultiPolygon"),
        (json.dumps(fc({"type": "Polygon", "coordinates": [[[500000, 3900000], [500100, 3900000],
                                                              [500100, 3900100], [500000, 3900000]]]})),
         "outside lon/lat range"),
        (json.dumps(fc({"type": "Polygon", "coordinates": [[[139, 35], [139.01, 35.01], [139.01, 35],
                                                              [139, 35.01], [139, 35]]]})), "invalid polygon"),
        (json.dumps(fc({"type": "Polygon", "coordinates": [[[139, 35]]]})), "z0"),
    ],
)
def test_bad_geojson_names_file(tmp_path: Path, content: str, expect: str) -> None:
    p = tmp_path / "bad.geojson"
    p.write_text(content)
    with pytest.raises(ZoneError) as e:
        load_zones(p)
    assert str(p) in str(e.value) and expect in str(e.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ZoneError, match="not found"):
        load_zones(tmp_path / "nope.geojson")
