"""Georeference of chips: CRS names, WGS84 bboxes and densified footprint polygons."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rasterio.crs import CRS
from rasterio.io import DatasetReader
from rasterio.warp import transform, transform_bounds

from rsretrieve.chips import Window

WGS84 = "EPSG:4326"
FOOTPRINT_EDGE_POINTS = 10
FOOTPRINT_DECIMALS = 7


# --- georeference ------------------------------------------------------------------------------


def is_georeferenced(src: DatasetReader) -> bool:
    """True when the dataset has a CRS and a non-identity geotransform."""
    return src.crs is not None and not src.transform.is_identity


def crs_string(crs: CRS) -> str:
    """The CRS as "EPSG:nnnn" when it has an EPSG code, else as WKT."""
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def _pixel_rings(windows: Sequence[Window], points: int) -> np.ndarray:
    """(n, 4·points + 1, 2) closed rings (col, row) around each window, `points` per edge, counter-clockwise."""
    t = np.linspace(0.0, 1.0, points, endpoint=False)
    unit = np.concatenate(
        [np.stack([np.zeros_like(t), t], 1), np.stack([t, np.ones_like(t)], 1),
         np.stack([np.ones_like(t), 1 - t], 1), np.stack([1 - t, np.zeros_like(t)], 1), [[0.0, 0.0]]]
    )  # fmt: skip
    box = np.array([[w.col_off, w.row_off, w.width, w.height] for w in windows], np.float64)
    return box[:, None, :2] + unit[None] * box[:, None, 2:]


def georeference(src: DatasetReader, windows: Sequence[Window]) -> list[tuple[tuple[float, float, float, float], dict]]:
    """Per window: WGS84 bbox (transform_bounds of its bounds) and densified footprint polygon.

    The footprint rings of all windows are reprojected in one call; no antimeridian cutting. Coordinates are
    rounded to 1e-7° (1 cm): full float digits would make each stored footprint ~1.5× longer for nothing.
    """
    a, b, c, d, e, f = tuple(src.transform)[:6]
    rings = _pixel_rings(windows, FOOTPRINT_EDGE_POINTS)
    xs = a * rings[..., 0] + b * rings[..., 1] + c
    ys = d * rings[..., 0] + e * rings[..., 1] + f
    lons, lats = transform(src.crs, WGS84, xs.ravel(), ys.ravel())
    lonlat = np.round(np.stack([lons, lats], -1), FOOTPRINT_DECIMALS).reshape(rings.shape)
    out = []
    for corners_x, corners_y, ring in zip(xs, ys, lonlat, strict=True):
        bbox = transform_bounds(
            src.crs, WGS84, corners_x.min(), corners_y.min(), corners_x.max(), corners_y.max(), densify_pts=21
        )
        out.append((tuple(bbox), {"type": "Polygon", "coordinates": [ring.tolist()]}))
    return out
