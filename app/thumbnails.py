"""Chip thumbnails cut from the source raster window, read exactly as the indexer reads a chip."""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image

from indexer.read import ScenePlan, SourceError, Window, plan_whole, read_window


@lru_cache(maxsize=64)
def _scene_plan(path: str, bands: tuple[int, ...] | None) -> ScenePlan:
    """Band mapping and stretch of a source file (the same for every chip size)."""
    return plan_whole(path, bands)


def chip_pixels(path: str, window: dict[str, int], bands: tuple[int, ...] | None = None) -> np.ndarray:
    """(h, w, 3) uint8 RGB of one indexed chip. Raises SourceError when the source cannot be read."""
    return read_window(_scene_plan(path, bands), Window(**window))


@lru_cache(maxsize=1024)
def _cached_png(
    path: str, col_off: int, row_off: int, width: int, height: int, bands: tuple[int, ...] | None
) -> bytes | None:
    window = {"col_off": col_off, "row_off": row_off, "width": width, "height": height}
    try:
        pixels = chip_pixels(path, window, bands)
    except SourceError:
        return None
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def chip_png(path: str, window: dict[str, int], bands: tuple[int, ...] | None = None) -> bytes | None:
    """The chip as PNG bytes (``bands`` as the index was built with), or None when its source is unreadable."""
    return _cached_png(path, window["col_off"], window["row_off"], window["width"], window["height"], bands)
