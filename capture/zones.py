"""Privacy (and exclusion) zones: GeoJSON (Multi)Polygons in WGS84 lon/lat, and a pure
``contains(lat, lon)``. Used by the capture daemon (nothing inside is kept) and reusable by
the publisher for exclusion zones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from capture.errors import ZoneError

_POLY_TYPES = ("Polygon", "MultiPolygon")
__all__ = ["ZoneError", "Zones", "load_zones", "zones_from_geojson"]


@dataclass(frozen=True, slots=True)
class Zones:
    """A union of polygons; ``contains`` is True on or inside any of them."""

    geometry: BaseGeometry | None = None
    names: tuple[str, ...] = ()
    source: str = ""
    count: int = field(default=0)
    # sha256 of the file's bytes as read (load_zones): records name the zones that were applied.
    sha256: str = ""

    @classmethod
    def empty(cls) -> Zones:
        return cls()

    def __bool__(self) -> bool:
        return self.geometry is not None and not self.geometry.is_empty

    def contains(self, lat: float, lon: float) -> bool:
        if self.geometry is None:
            return False
        return bool(shapely.intersects_xy(self.geometry, lon, lat))


def _features(doc: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
    if not isinstance(doc, dict) or "type" not in doc:
        raise ZoneError(f"{where}: not a GeoJSON object (no 'type')")
    t = doc["type"]
    if t == "FeatureCollection":
        feats = doc.get("features")
        if not isinstance(feats, list):
            raise ZoneError(f"{where}: FeatureCollection without a 'features' list")
        out = []
        for i, f in enumerate(feats):
            if not isinstance(f, dict) or f.get("type") != "Feature":
                raise ZoneError(f"{where}: features[{i}] is not a Feature")
            props = f.get("properties") or {}
            name = str(props.get("name", f"features[{i}]")) if isinstance(props, dict) else f"features[{i}]"
            out.append((name, f.get("geometry") or {}))
        return out
    if t == "Feature":
        props = doc.get("properties") or {}
        return [(str(props.get("name", "feature")), doc.get("geometry") or {})]
    return [("geometry", doc)]


def zones_from_geojson(doc: Any, *, source: str = "(GeoJSON)") -> Zones:
    """Build zones from a parsed GeoJSON document; errors name ``source`` and the feature."""
    geoms = []
    names = []
    for name, g in _features(doc, source):
        gtype = g.get("type") if isinstance(g, dict) else None
        if gtype not in _POLY_TYPES:
            raise ZoneError(f"{source}: {name}: geometry type {gtype!r}; zones must be Polygon or MultiPolygon")
        try:
            geom = shape(g)
        except Exception as e:  # shapely raises several types on malformed coordinates
            raise ZoneError(f"{source}: {name}: malformed coordinates: {e}") from e
        minx, miny, maxx, maxy = geom.bounds if not geom.is_empty else (0, 0, 0, 0)
        if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)) or not (
            -180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90
        ):
            raise ZoneError(
                f"{source}: {name}: coordinates outside lon/lat range (GeoJSON must be WGS84 "
                "longitude, latitude; is this a projected CRS?)"
            )
        if not geom.is_valid:
            raise ZoneError(f"{source}: {name}: invalid polygon ({shapely.is_valid_reason(geom)})")
        geoms.append(geom)
        names.append(name)
    if not geoms:
        return Zones(source=source)
    union = shapely.union_all(geoms)
    shapely.prepare(union)
    return Zones(geometry=union, names=tuple(names), source=source, count=len(geoms))


def load_zones(path: Path | str) -> Zones:
    """Load a GeoJSON file of (Multi)Polygons (FeatureCollection, Feature or geometry)."""
    p = Path(path)
    try:
        data = p.read_bytes()
        doc = json.loads(data.decode("utf-8"))
    except FileNotFoundError as e:
        raise ZoneError(f"{p}: zones file not found") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ZoneError(f"{p}: cannot read zones file: {e}") from e
    except ValueError as e:
        raise ZoneError(f"{p}: not valid JSON: {e}") from e
    return dataclasses.replace(zones_from_geojson(doc, source=str(p)), sha256=hashlib.sha256(data).hexdigest())
