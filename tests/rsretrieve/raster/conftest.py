"""Helpers of the raster tests: read every chip of a plan, read a window with rasterio, check georeference."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform_bounds
from rasterio.windows import Window as RioWindow
from rasterio.windows import bounds as window_bounds

from rsretrieve.chips import Chip, Window
from rsretrieve.raster import ChipReader, ScenePlan


def read_all(plan: ScenePlan, **reader_args: float) -> list[np.ndarray | None]:
    """Every chip of a plan, read with a fresh reader."""
    reader = ChipReader(**reader_args)
    try:
        return [reader.read(plan, chip) for chip in plan.chips]
    finally:
        reader.close()


def source_pixels(path: str | Path, bands: list[int], chip: Chip) -> np.ndarray:
    """(h, w, bands) source values of a chip's window, read directly with rasterio."""
    w = chip.window
    with rasterio.open(path) as src:
        data = src.read(bands, window=RioWindow(w.col_off, w.row_off, w.width, w.height))
    return data.transpose(1, 2, 0)


def expected_bbox(path: str | Path, window: Window) -> tuple[float, ...]:
    """transform_bounds of a window's bounds to EPSG:4326, computed independently."""
    with rasterio.open(path) as src:
        rio = RioWindow(window.col_off, window.row_off, window.width, window.height)
        with warnings.catch_warnings():  # rasterio's own `transform * xy` under affine 3
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            bounds = window_bounds(rio, src.transform)
        return transform_bounds(src.crs, "EPSG:4326", *bounds, densify_pts=21)


def footprint_bounds(footprint: dict) -> tuple[float, float, float, float]:
    """Bounds of a GeoJSON Polygon."""
    xs, ys = zip(*footprint["coordinates"][0], strict=True)
    return min(xs), min(ys), max(xs), max(ys)


def signed_area(ring: list) -> float:
    """Shoelace area: positive for a counter-clockwise ring."""
    return 0.5 * sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in itertools.pairwise(ring))


def assert_georeferenced(plan: ScenePlan) -> None:
    """Every chip's bbox equals transform_bounds of its window; its footprint has the same extent."""
    for chip in plan.chips:
        assert chip.bbox == pytest.approx(expected_bbox(plan.path, chip.window), abs=1e-9)
        assert chip.footprint["type"] == "Polygon"
        ring = chip.footprint["coordinates"][0]
        assert len(ring) == 41 and tuple(ring[0]) == tuple(ring[-1])
        assert signed_area(ring) > 0
        assert footprint_bounds(chip.footprint) == pytest.approx(chip.bbox, abs=1e-6)
