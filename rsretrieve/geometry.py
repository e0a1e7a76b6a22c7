"""Vector geometry for the analyst loop: areas of interest, labelled features, exact chip intersection, areas.

Everything is in WGS84 longitude/latitude (GeoJSON order, OGC:CRS84). Files from GIS tools (QGIS, geopandas) are
read here: GeoJSON (a legacy ``crs`` member other than WGS84 is reprojected), GeoParquet, and — when geopandas is
installed — anything it reads (GeoPackage, Shapefile).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from rsretrieve.errors import UserError
from rsretrieve.reproject import to_wgs84

WGS84_NAMES = ("EPSG:4326", "OGC:CRS84", "CRS84", "urn:ogc:def:crs:OGC:1.3:CRS84", "urn:ogc:def:crs:EPSG::4326")
POLYGONAL = ("Polygon", "MultiPolygon")


class GeometryError(UserError):
    """A geometry or vector file that cannot be used; one line for the user."""


@dataclass(frozen=True)
class Feature:
    """A shapely geometry (WGS84) and its properties."""

    geometry: Any
    properties: dict[str, Any]


def as_geometry(value: Any, what: str = "the area") -> Any:
    """A shapely geometry of a shapely geometry, a GeoJSON geometry / Feature / FeatureCollection dict (the union of
    its features), or GeoJSON text."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as error:
            raise GeometryError(f"{what} is not GeoJSON ({error})") from None
    if isinstance(value, dict):
        kind = value.get("type")
        if kind == "FeatureCollection":
            parts = [as_geometry(feature, what) for feature in value.get("features") or []]
            if not parts:
                raise GeometryError(f"{what} has no features")
            return shapely.union_all(parts)
        if kind == "Feature":
            value = value.get("geometry")
            if value is None:
                raise GeometryError(f"{what} has a feature without geometry")
        try:
            return shapely.geometry.shape(value)
        except Exception as error:
            raise GeometryError(f"{what} is not a GeoJSON geometry ({error})") from None
    if isinstance(value, shapely.Geometry):
        return value
    raise GeometryError(f"{what} must be a shapely geometry or GeoJSON, not {type(value).__name__}")


def polygonal(value: Any, what: str = "the area") -> Any:
    """A valid WGS84 Polygon or MultiPolygon (holes kept) from ``value`` (see ``as_geometry``); invalid rings (a
    self-intersecting bow tie drawn by hand) are repaired with ``make_valid``."""
    geometry = as_geometry(value, what)
    if geometry.geom_type not in POLYGONAL and not (
        geometry.geom_type == "GeometryCollection" and all(g.geom_type in POLYGONAL for g in geometry.geoms)
    ):
        raise GeometryError(f"{what} must be a Polygon or MultiPolygon (got {geometry.geom_type})")
    if not shapely.is_valid(geometry):
        geometry = shapely.make_valid(geometry)
    polygons = [part for part in shapely.get_parts(geometry) if part.geom_type in POLYGONAL]
    geometry = shapely.union_all(polygons) if polygons else shapely.Polygon()
    if geometry.is_empty:
        raise GeometryError(f"{what} is empty")
    check_wgs84(geometry, what)
    return geometry


def check_wgs84(geometry: Any, what: str) -> None:
    """Raise unless the coordinates are WGS84 longitude/latitude."""
    minx, miny, maxx, maxy = shapely.bounds(geometry)
    if not (-180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90):
        raise GeometryError(
            f"{what} is not in WGS84 longitude/latitude (bounds {minx:.6g},{miny:.6g},{maxx:.6g},{maxy:.6g}); "
            "export it as EPSG:4326"
        )


GRID_FROM = 4096  # from this many candidates, chips far from the area's boundary are decided on a grid (below)
MAX_GRID_SIDE = 4096  # cells per axis of that grid (16M cells, 16 MB at most)


def intersecting(
    area: Any,
    boxes: np.ndarray,
    footprints: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Which chips intersect ``area``, given their WGS84 bboxes ((n, 4) minx, miny, maxx, maxy; NaN: unplaced).

    A chip far from the area's boundary (``near_boundary``) lies wholly inside or outside it: its bbox centre
    decides (``intersects_xy``, no geometry made). Near the boundary, a bbox that misses the area rules its chip
    out and one properly inside it rules it in; only the chips whose bbox crosses the boundary are tested on their
    footprint, read with ``footprints(rows)`` (rows of ``boxes``), or on the bbox itself without one. Vectorised
    shapely predicates on a prepared area.
    """
    result = np.zeros(len(boxes), bool)
    if len(boxes) == 0:
        return result
    shapely.prepare(area)
    rows = np.flatnonzero(~np.isnan(boxes).any(axis=1))
    if len(rows) >= GRID_FROM:
        placed = boxes[rows]
        x, y = (placed[:, 0] + placed[:, 2]) / 2, (placed[:, 1] + placed[:, 3]) / 2
        reach = float(np.hypot(placed[:, 2] - placed[:, 0], placed[:, 3] - placed[:, 1]).max()) / 2
        near = near_boundary(area, x, y, reach)
        far = ~near
        result[rows[far]] = shapely.intersects_xy(area, x[far], y[far])
        rows = rows[near]
    rectangles = shapely.box(*boxes[rows].T)
    touching = shapely.intersects(area, rectangles)
    inside = touching & shapely.contains_properly(area, rectangles)
    result[rows[inside]] = True
    unsure = rows[touching & ~inside]
    if len(unsure):
        shapes = footprints(unsure) if footprints is not None else shapely.box(*boxes[unsure].T)
        result[unsure] = shapely.intersects(area, shapes)
    return result


def near_boundary(area: Any, x: np.ndarray, y: np.ndarray, reach: float) -> np.ndarray:
    """Which points may lie within ``reach`` of the area's boundary (a superset: never misses one).

    The boundary is sampled every h/2 (h ≥ 2·reach, the cell size of a grid over the area) and the cells holding a
    sample are marked with their 8 neighbours. A point within ``reach`` of the boundary is within reach + h/4 < h
    of a sample, so its cell is marked; points in unmarked cells are farther than ``reach`` from it.
    """
    minx, miny, maxx, maxy = shapely.bounds(area)
    span = max(maxx - minx, maxy - miny)
    cell = max(2 * reach, span / (MAX_GRID_SIDE - 4), 1e-9)
    minx, miny = minx - 2 * cell, miny - 2 * cell
    columns = int(np.ceil((maxx - minx) / cell)) + 3
    rows = int(np.ceil((maxy - miny) / cell)) + 3
    samples = shapely.get_coordinates(shapely.segmentize(shapely.boundary(area), cell / 2))
    marked = np.zeros((rows + 2, columns + 2), bool)  # one cell of margin on every side for the dilation
    marked[((samples[:, 1] - miny) // cell).astype(int) + 1, ((samples[:, 0] - minx) // cell).astype(int) + 1] = True
    grown = marked.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            grown[1:-1, 1:-1] |= marked[1 + dy : rows + 1 + dy, 1 + dx : columns + 1 + dx]
    column = np.floor((x - minx) / cell)
    row = np.floor((y - miny) / cell)
    inside = (column >= 0) & (column < columns) & (row >= 0) & (row < rows)
    near = np.zeros(len(x), bool)
    near[inside] = grown[row[inside].astype(int) + 1, column[inside].astype(int) + 1]
    return near


# --- files ------------------------------------------------------------------------------------------


def read_features(path: str | Path) -> list[Feature]:
    """The features of a vector file in WGS84: GeoJSON, GeoParquet, or anything geopandas reads."""
    path = Path(path)
    if not path.is_file():
        raise GeometryError(f"file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".geojson", ".json"):
        return _geojson_features(path)
    if suffix in (".parquet", ".geoparquet"):
        from rsretrieve.geoparquet import read_geoparquet

        table, geometries = read_geoparquet(path)
        rows = table.to_pylist()
        return [Feature(g, row) for g, row in zip(geometries, rows, strict=True) if g is not None]
    try:
        import geopandas
    except ImportError:
        raise GeometryError(f"{path}: give GeoJSON or GeoParquet (other formats need geopandas)") from None
    try:
        frame = geopandas.read_file(path)
    except Exception as error:
        raise GeometryError(f"cannot read {path}: {error}") from None
    if frame.crs is not None:
        frame = frame.to_crs("OGC:CRS84")
    properties = frame.drop(columns=frame.geometry.name).to_dict("records")
    return [Feature(g, p) for g, p in zip(frame.geometry.values, properties, strict=True) if g is not None]


def _geojson_features(path: Path) -> list[Feature]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise GeometryError(f"cannot read {path}: {error}") from None
    return geojson_features(data, path.name)


def geojson_features(data: Any, name: str) -> list[Feature]:
    """The features of a GeoJSON object (FeatureCollection, Feature or geometry) in WGS84 (a legacy ``crs`` member
    naming another CRS is reprojected); ``name`` says where it came from in errors."""
    if not isinstance(data, dict):
        raise GeometryError(f"{name} is not a GeoJSON object")
    if data.get("type") == "FeatureCollection":
        items = data.get("features") or []
    elif data.get("type") == "Feature":
        items = [data]
    else:
        items = [{"type": "Feature", "geometry": data, "properties": {}}]
    features = []
    for number, item in enumerate(items, 1):
        if not isinstance(item, dict) or item.get("geometry") is None:
            continue
        geometry = as_geometry(item["geometry"], f"{name} feature {number}")
        features.append(Feature(geometry, dict(item.get("properties") or {})))
    crs = ((data.get("crs") or {}).get("properties") or {}).get("name")
    if crs and crs not in WGS84_NAMES:
        features = [
            Feature(g, f.properties)
            for g, f in zip(to_wgs84([f.geometry for f in features], crs), features, strict=True)
        ]
    for number, feature in enumerate(features, 1):
        check_wgs84(feature.geometry, f"{name} feature {number}")
    return features
