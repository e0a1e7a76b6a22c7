"""Bands and pixels: which source bands make R, G, B, validity masks, the percentile stretch, uint8 output."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.io import DatasetReader

from rsretrieve.raster.errors import source_error

STRETCH_PERCENTILES = (2.0, 98.0)
STATS_MAX_SIDE = 1024  # long side of the decimated read used for stretch statistics


# --- bands and pixels --------------------------------------------------------------------------


def _alpha_band(src: DatasetReader) -> int | None:
    """1-based index of the band whose colour interpretation is alpha, if any."""
    return next((i + 1 for i, ci in enumerate(src.colorinterp) if ci == ColorInterp.alpha), None)


def extra_alpha(src: DatasetReader) -> int | None:
    """The alpha band when GDAL's masks do not already use it (they do for gray+A and RGBA)."""
    alpha = _alpha_band(src)
    if alpha is None or MaskFlags.alpha in src.mask_flag_enums[0]:
        return None
    return alpha


def select_bands(src: DatasetReader, bands: Sequence[int] | None = None) -> tuple[int, int, int]:
    """Source bands (1-based) for R, G, B: explicit, else colour-interpreted RGB, else 1,2,3, else gray."""
    if bands is not None:
        return _checked_bands(src, bands)
    interp = list(src.colorinterp)
    rgb = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
    if all(ci in interp for ci in rgb):
        return tuple(interp.index(ci) + 1 for ci in rgb)  # type: ignore[return-value]
    alpha = _alpha_band(src)
    colour = [b for b in range(1, src.count + 1) if b != alpha] or [1]
    if len(colour) >= 3:
        return colour[0], colour[1], colour[2]
    return colour[0], colour[0], colour[0]


def _checked_bands(src: DatasetReader, bands: Sequence[int]) -> tuple[int, int, int]:
    """Validate explicit band indexes (1 or 3, each within 1..count)."""
    chosen = tuple(int(b) for b in bands)
    if len(chosen) not in (1, 3):
        raise source_error(src.name, f"expected 1 or 3 band indexes, got {len(chosen)}: {chosen}")
    if bad := [b for b in chosen if not 1 <= b <= src.count]:
        raise source_error(src.name, f"band index {bad[0]} out of range 1..{src.count}")
    return chosen * 3 if len(chosen) == 1 else chosen  # type: ignore[return-value]


def unique_bands(bands: Sequence[int]) -> list[int]:
    """Band indexes without repeats, in order."""
    return list(dict.fromkeys(bands))


def read_valid(
    src: DatasetReader, indexes: list[int], alpha: int | None, **kwargs: object
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (bands, h, w) and per-band validity (dataset masks, extra alpha band, NaN/inf)."""
    data = src.read(indexes, **kwargs)
    valid = src.read_masks(indexes, **kwargs) > 0
    if alpha is not None:
        valid &= src.read(alpha, **kwargs)[None] > 0
    if data.dtype.kind in "fc":
        valid &= np.isfinite(data)
    return data, valid


def stretch_limits(src: DatasetReader, bands: tuple[int, int, int]) -> tuple[tuple[float, float], ...]:
    """2-98 % percentiles per output channel from a decimated read (GDAL uses overviews if any)."""
    factor = max(1, math.ceil(max(src.width, src.height) / STATS_MAX_SIDE))
    indexes = unique_bands(bands)
    shape = (len(indexes), math.ceil(src.height / factor), math.ceil(src.width / factor))
    data, valid = read_valid(src, indexes, extra_alpha(src), out_shape=shape, resampling=Resampling.nearest)
    limits = {}
    for i, band in enumerate(indexes):
        values = data[i][valid[i]].astype(np.float64)
        lo, hi = np.percentile(values, STRETCH_PERCENTILES) if values.size else (0.0, 0.0)
        limits[band] = (float(lo), float(hi))
    return tuple(limits[b] for b in bands)


def all_valid(src: DatasetReader, alpha: int | None) -> bool:
    """Whether every pixel of ``src`` is valid: no nodata, no mask, no extra alpha band, integer values."""
    integer = all(np.dtype(dtype).kind in "iu" for dtype in src.dtypes)
    return alpha is None and integer and all(MaskFlags.all_valid in flags for flags in src.mask_flag_enums)


@functools.lru_cache(maxsize=64)
def _stretch_table(dtype: str, lo: float, hi: float) -> np.ndarray:
    """uint8 output of the stretch for every value of an 8/16-bit integer dtype, indexed by value − dtype min."""
    info = np.iinfo(dtype)
    table = _stretched(np.arange(info.min, info.max + 1, dtype=np.float64), lo, hi)
    table.flags.writeable = False
    return table


def _stretched(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Linear stretch of float64 values from [lo, hi] to uint8 (rounded, clipped)."""
    scale = 255.0 / (hi - lo) if hi > lo else 255.0  # constant band: no divide by zero
    return np.rint(np.clip((x - lo) * scale, 0, 255)).astype(np.uint8)


def _stretch_band(values: np.ndarray, valid: np.ndarray | None, lo: float, hi: float) -> np.ndarray:
    """(h, w) source values → uint8; invalid values become 0. 8/16-bit integers go through a lookup table."""
    if values.dtype.kind in "iu" and values.dtype.itemsize <= 2:
        table = _stretch_table(values.dtype.name, lo, hi)
        index = values if values.dtype.kind == "u" else values.astype(np.int32) - np.iinfo(values.dtype).min
        out = table[index]
        if valid is not None:
            out[~valid] = 0
        return out
    values = values.astype(np.float64)
    return _stretched(values if valid is None else np.where(valid, values, lo), lo, hi)


def to_uint8(
    data: np.ndarray,
    valid: np.ndarray | None,
    stretch: Sequence[tuple[float, float]] | None,
    channels_first: bool = False,
) -> np.ndarray:
    """(3, h, w) source values -> (h, w, 3) uint8, or (3, h, w) with ``channels_first``; invalid values become 0.

    ``valid`` None means every value is valid. The stretch maps [lo, hi] linearly to 0..255 (rounded, clipped).
    """
    if stretch is None:
        out = data if valid is None else np.where(valid, data, 0)
        out = out.astype(np.uint8, copy=False)
    else:
        out = np.stack([_stretch_band(data[c], None if valid is None else valid[c], lo, hi)
                        for c, (lo, hi) in enumerate(stretch)])  # fmt: skip
    return np.ascontiguousarray(out if channels_first else out.transpose(1, 2, 0))
