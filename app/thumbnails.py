"""Chip thumbnails cut from the source raster window, read exactly as the indexer reads a chip."""

from __future__ import annotations

import io
from dataclasses import replace
from functools import lru_cache

import numpy as np
from PIL import Image

from indexer.read import ChipReader, ScenePlan, SourceError, Window, plan_scene

WHOLE_SCENE = 1 << 30  # a chip size larger than any scene: planning yields one chip, cheaply


@lru_cache(maxsize=64)
def _scene_plan(path: str) -> ScenePlan:
    """Band mapping and stretch of a source file (the same for every chip size)."""
    return plan_scene(path, chip_size=WHOLE_SCENE)


def chip_pixels(path: str, window: dict[str, int]) -> np.ndarray:
    """(h, w, 3) uint8 RGB of one indexed chip. Raises SourceError when the source cannot be read."""
    plan = _scene_plan(path)
    chip = replace(plan.chips[0], window=Window(**window))
    reader = ChipReader(max_nodata_fraction=1.0)
    try:
        pixels = reader.read(plan, chip)
    finally:
        reader.close()
    assert pixels is not None  # max_nodata_fraction=1.0 always returns pixels
    return pixels


@lru_cache(maxsize=1024)
def _cached_png(path: str, col_off: int, row_off: int, width: int, height: int) -> bytes | None:
    try:
        pixels = chip_pixels(path, {"col_off": col_off, "row_off": row_off, "width": width, "height": height})
    except SourceError:
        return None
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def chip_png(path: str, window: dict[str, int]) -> bytes | None:
    """The chip as PNG bytes, or None when its source file is gone or unreadable."""
    return _cached_png(path, window["col_off"], window["row_off"], window["width"], window["height"])
