"""Opening rasters: one-line errors (``SourceError``), a quiet GDAL environment, checked paths."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import rasterio
from rasterio._err import CPLE_BaseError  # GDAL errors not wrapped in RasterioError
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import DatasetReader

from rsretrieve.errors import UserError

GDAL_ERRORS: tuple[type[Exception], ...] = (RasterioError, CPLE_BaseError, OSError, ValueError)


class SourceError(UserError):
    """A source that cannot be indexed; str(e) is ONE line naming the file and the reason."""


def source_error(path: str | Path, reason: object) -> SourceError:
    """A SourceError whose message is one line: "<path>: <reason>"."""
    return SourceError(f"{path}: {' '.join(str(reason).split())}")


def gdal_message(exc: BaseException) -> str:
    """The most specific message of a GDAL error (rasterio often wraps it: "Read failed...")."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc)


@contextmanager
def quiet() -> Iterator[None]:
    """A default rasterio.Env, no NotGeoreferencedWarning, and GDAL's warnings about odd but readable files
    (which rasterio.Env routes to the ``rasterio`` logger) kept below ERROR: bad files raise SourceError instead."""
    logger = logging.getLogger("rasterio")
    level = logger.level
    logger.setLevel(max(level, logging.ERROR))
    try:
        with rasterio.Env(), warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            yield
    finally:
        logger.setLevel(level)


def checked_path(path: str | Path) -> Path:
    """Absolute path of an existing, non-empty file, else SourceError."""
    file = Path(path).expanduser().resolve()
    if not file.exists():
        raise source_error(file, "no such file")
    if not file.is_file():
        raise source_error(file, "not a file")
    if file.stat().st_size == 0:
        raise source_error(file, "empty file (0 bytes)")
    return file


def open_raster(file: Path) -> DatasetReader:
    """Open a raster read-only, turning GDAL errors into SourceError."""
    try:
        with quiet():
            src = rasterio.open(file)
    except GDAL_ERRORS as exc:
        raise source_error(file, f"not a readable raster ({gdal_message(exc)})") from exc
    if src.count == 0:
        src.close()
        raise source_error(file, "no raster bands")
    if any(np.dtype(d).kind == "c" for d in src.dtypes):
        src.close()
        raise source_error(file, f"unsupported complex data type {src.dtypes[0]}")
    return src
