"""Chip thumbnails cut from the source raster window, read exactly as the indexer reads a chip (page and service).

A chip of imported embeddings has no window (``Chip.window`` is None): it has no thumbnail."""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image

from rsretrieve.chips import Chip, Window
from rsretrieve.raster import ScenePlan, SourceError, plan_whole, read_window
from rsretrieve.raster.errors import source_error


@lru_cache(maxsize=64)
def _scene_plan(path: str, bands: tuple[int, ...] | None) -> ScenePlan:
    """Band mapping and stretch of a source file (the same for every chip size)."""
    return plan_whole(path, bands)


def chip_pixels(chip: Chip, bands: tuple[int, ...] | None = None) -> np.ndarray:
    """(h, w, 3) uint8 RGB of one indexed chip. Raises SourceError when the source cannot be read, or the chip has no
    pixel window (imported embeddings)."""
    if chip.window is None:
        raise source_error(chip.path, f"chip {chip.id} holds an imported embedding, not a window of this file")
    return read_window(_scene_plan(chip.path, bands), chip.window)


@lru_cache(maxsize=1024)
def _cached_png(path: str, window: Window, bands: tuple[int, ...] | None, size: int | None) -> bytes | None:
    try:
        pixels = chip_pixels(Chip("", path, window), bands)
    except SourceError:
        return None
    image = Image.fromarray(pixels)
    if size is not None and max(image.size) != size:
        scale = size / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def chip_png(chip: Chip, bands: tuple[int, ...] | None = None, size: int | None = None) -> bytes | None:
    """The chip as PNG bytes (``bands`` as the index was built with; long side ``size`` px if given), or None when
    its source is unreadable or it has no pixel window (imported embeddings)."""
    if chip.window is None:
        return None
    return _cached_png(chip.path, chip.window, tuple(bands) if bands else None, size)
