"""Reprojecting shapely geometries between CRSs (one PROJ call per geometry's coordinates), and areas in m²."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import shapely

from rsretrieve.errors import UserError

EQUAL_AREA_CRS = "EPSG:6933"  # WGS 84 / NSIDC EASE-Grid 2.0 Global: cylindrical equal-area, for areas in m²


class ReprojectionError(UserError):
    """Geometries that cannot be reprojected; one line for the user."""


def _transform(geometries: Iterable[Any], source: str, target: str) -> np.ndarray:
    """Geometries reprojected point by point (one rasterio/PROJ call for all coordinates)."""
    from rasterio.warp import transform

    geometries = np.asarray(list(geometries), object)
    if len(geometries) == 0:
        return geometries

    def project(coordinates: np.ndarray) -> np.ndarray:
        if len(coordinates) == 0:
            return coordinates
        xs, ys = transform(source, target, coordinates[:, 0], coordinates[:, 1])
        return np.column_stack([xs, ys])

    try:
        return shapely.transform(geometries, project)
    except Exception as error:
        raise ReprojectionError(f"cannot reproject from {source}: {error}") from None


def to_wgs84(geometries: Iterable[Any], crs: str) -> np.ndarray:
    """Geometries in ``crs`` reprojected to WGS84 longitude/latitude."""
    return _transform(geometries, crs, "EPSG:4326")


def areas_m2(geometries: Iterable[Any]) -> np.ndarray:
    """Areas in square metres of WGS84 geometries (projected to the equal-area EPSG:6933)."""
    projected = _transform(geometries, "EPSG:4326", EQUAL_AREA_CRS)
    return shapely.area(projected).astype(np.float64) if len(projected) else np.zeros(0)
