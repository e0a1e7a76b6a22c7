"""Reading chips window by window as (h, w, 3) uint8 RGB, exactly as the indexer embeds them."""

from __future__ import annotations

import dataclasses
import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, Resampling
from rasterio.env import get_gdal_config, set_gdal_config
from rasterio.io import DatasetReader
from rasterio.windows import Window as RioWindow

from rsretrieve.chips import Chip, Window
from rsretrieve.raster.dataset import GDAL_ERRORS, checked_source, gdal_message, open_raster, quiet
from rsretrieve.raster.errors import source_error
from rsretrieve.raster.pixels import all_valid, extra_alpha, read_valid, to_uint8, unique_bands
from rsretrieve.raster.plan import ScenePlan, plan_whole
from rsretrieve.raster.remote import is_remote

GDAL_CACHE_BYTES = 64 << 20  # GDAL's block cache while reading (its default is 5 % of the RAM)...
GDAL_CACHE_MAX_BYTES = 1 << 30  # ...raised up to this to hold the blocks under a row of chips (hold_block_rows)


def hold_block_rows(src: DatasetReader, window_height: int) -> None:
    """Raise GDAL's block cache cap (up to GDAL_CACHE_MAX_BYTES) to hold every block under one row of windows.

    Chips are read row by row: when the blocks under a row of chips do not fit (a wide 16-bit scene), each block is
    decoded again for every row of chips it spans, which halves the read rate. A GDAL_CACHEMAX environment
    variable and a cap already larger (GDAL's default is 5 % of the RAM) are left alone.
    """
    cap = get_gdal_config("GDAL_CACHEMAX")  # rasterio reports GDAL's cap, its default too
    if "GDAL_CACHEMAX" in os.environ or not str(cap).isdigit():
        return
    block_height = src.block_shapes[0][0]
    itemsize = max(np.dtype(dtype).itemsize for dtype in src.dtypes)
    rows = math.ceil(window_height / block_height) + 1
    need = min(rows * block_height * src.width * src.count * itemsize, GDAL_CACHE_MAX_BYTES)
    if int(cap) * (1 << 20 if int(cap) < 100_000 else 1) < need:  # GDAL reads values under 100,000 as MB
        set_gdal_config("GDAL_CACHEMAX", need)


# --- reading -----------------------------------------------------------------------------------


@dataclass
class _Handle:
    """An open dataset and what the reader needs to know about it."""

    src: DatasetReader
    alpha: int | None  # alpha band that GDAL's masks do not already cover
    palette: dict[int, np.ndarray]  # band -> (256, 3) uint8 colour table, for paletted uint8 bands
    all_valid: bool  # no masks to read (pixels.all_valid)
    cache_held: bool = False  # hold_block_rows done for this dataset


def _palettes(src: DatasetReader) -> dict[int, np.ndarray]:
    """Colour tables of paletted uint8 bands, as lookup arrays."""
    tables = {}
    for band, ci in enumerate(src.colorinterp, start=1):
        if ci == ColorInterp.palette and src.dtypes[band - 1] == "uint8":
            lut = np.zeros((256, 3), np.uint8)
            for value, rgba in src.colormap(band).items():
                lut[value] = rgba[:3]
            tables[band] = lut
    return tables


class ChipReader:
    """Reads chips window by window, keeping a few datasets open (small LRU).

    Handles are opened lazily and dropped when pickled, so one reader per DataLoader worker is safe.
    """

    max_open = 8

    def __init__(self, max_nodata_fraction: float = 0.5) -> None:
        self.max_nodata_fraction = max_nodata_fraction
        self._handles: OrderedDict[str, _Handle] = OrderedDict()

    def __getstate__(self) -> dict[str, float]:
        return {"max_nodata_fraction": self.max_nodata_fraction}

    def __setstate__(self, state: dict[str, float]) -> None:
        self.max_nodata_fraction = state["max_nodata_fraction"]
        self._handles = OrderedDict()

    def _handle(self, path: str) -> _Handle:
        """The open dataset of path (opened on first use, least recently used closed beyond max_open)."""
        if path in self._handles:
            self._handles.move_to_end(path)
            return self._handles[path]
        src = open_raster(checked_source(path))
        try:
            with quiet(path):
                alpha = extra_alpha(src)
                handle = _Handle(src, alpha, _palettes(src), all_valid(src, alpha))
        except GDAL_ERRORS as exc:
            src.close()
            raise source_error(path, f"cannot read ({gdal_message(exc)})") from exc
        self._handles[path] = handle
        while len(self._handles) > self.max_open:
            self._handles.popitem(last=False)[1].src.close()
        return handle

    def read(
        self, plan: ScenePlan, chip: Chip, out_size: tuple[int, int] | None = None, channels_first: bool = False
    ) -> np.ndarray | None:
        """(height, width, 3) uint8 RGB of the chip — (3, height, width) with ``channels_first`` — or None when
        too much of it is nodata.

        ``out_size`` (height, width) reads the window decimated to that size (GDAL uses overviews where the
        file has them), so a large window costs memory for the output only. Raises SourceError when the pixels
        cannot be read (truncated file...).
        """
        handle = self._handle(plan.path)
        w = chip.window
        bands = unique_bands(plan.bands)
        resampled = {} if out_size is None else {"out_shape": (len(bands), *out_size), "resampling": Resampling.average}
        if out_size is None and not handle.cache_held:
            hold_block_rows(handle.src, w.height)
            handle.cache_held = True
        try:
            with quiet(plan.path):
                window = RioWindow(w.col_off, w.row_off, w.width, w.height)
                if handle.all_valid:
                    data, valid = handle.src.read(bands, window=window, **resampled), None
                else:
                    data, valid = read_valid(handle.src, bands, handle.alpha, window=window, **resampled)
        except GDAL_ERRORS as exc:
            self._drop(plan.path)
            message = gdal_message(exc)
            if is_remote(plan.path) and "got 0 bytes" in message:  # GDAL keeps the network's own error to itself
                message = f"nothing received from the server: network or server error? {message}"
            raise source_error(plan.path, f"cannot read window {w.as_dict()} ({message})") from exc
        if valid is not None and 1.0 - valid.any(axis=0).mean() > self.max_nodata_fraction:
            return None
        return self._to_rgb(handle, plan, data, valid, channels_first)

    @staticmethod
    def _to_rgb(
        handle: _Handle, plan: ScenePlan, data: np.ndarray, valid: np.ndarray | None, channels_first: bool
    ) -> np.ndarray:
        """Map the read bands to uint8 RGB (palette lookup, stretch or pass-through), (h, w, 3) or (3, h, w)."""
        order = [unique_bands(plan.bands).index(b) for b in plan.bands]
        band = plan.bands[0]
        if len(set(plan.bands)) == 1 and band in handle.palette:
            rgb = handle.palette[band][data[0]]
            if valid is not None:
                rgb = np.where(valid[0][..., None], rgb, 0).astype(np.uint8)
            return np.ascontiguousarray(rgb.transpose(2, 0, 1)) if channels_first else rgb
        return to_uint8(data[order], None if valid is None else valid[order], plan.stretch, channels_first)

    def _drop(self, path: str) -> None:
        """Close and forget one dataset."""
        if handle := self._handles.pop(path, None):
            handle.src.close()

    def close(self) -> None:
        """Close every open dataset."""
        while self._handles:
            self._handles.popitem()[1].src.close()


def read_window(plan: ScenePlan, window: Window | None = None) -> np.ndarray:
    """(h, w, 3) uint8 RGB of a window (default: the whole image), read exactly as the indexer reads chips."""
    chip = plan.chips[0] if window is None else dataclasses.replace(plan.chips[0], window=window)
    reader = ChipReader(max_nodata_fraction=1.0)
    try:
        pixels = reader.read(plan, chip)
    finally:
        reader.close()
    assert pixels is not None  # max_nodata_fraction=1.0 always returns pixels
    return pixels


PREVIEW_MAX_SIDE = 1024  # long side of a query image as read: ample for a model input of 224-336 px


def read_preview(path: str | Path, max_side: int = PREVIEW_MAX_SIDE, bands: Sequence[int] | None = None) -> np.ndarray:
    """(h, w, 3) uint8 RGB of a whole image with its long side at most ``max_side`` (a decimated read).

    Query images go through here: a 20,000² GeoTIFF is read through its overviews or decimated, never whole,
    with GDAL's block cache capped as in the indexer. Raises SourceError.
    """
    plan = plan_whole(path, bands)
    scale = max(plan.width, plan.height) / max_side
    size = None if scale <= 1 else (max(1, math.floor(plan.height / scale)), max(1, math.floor(plan.width / scale)))
    reader = ChipReader(max_nodata_fraction=1.0)
    try:
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
            pixels = reader.read(plan, plan.chips[0], size)
    finally:
        reader.close()
    assert pixels is not None  # max_nodata_fraction=1.0 always returns pixels
    return pixels
