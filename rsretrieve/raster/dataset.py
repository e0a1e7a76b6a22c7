"""Opening rasters: one-line errors (``SourceError``), a quiet GDAL environment, checked sources.

A source is a local path or a URI string (``rsretrieve.raster.remote``); URIs are read through GDAL's virtual
file systems with the settings of ``remote.remote_options``.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import rasterio
from rasterio._err import CPLE_BaseError  # GDAL errors not wrapped in RasterioError
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import DatasetReader
from rasterio.session import DummySession

from rsretrieve.raster.errors import source_error
from rsretrieve.raster.remote import is_remote, remote_options, vsi_path

GDAL_ERRORS: tuple[type[Exception], ...] = (RasterioError, CPLE_BaseError, OSError, ValueError)


def gdal_message(exc: BaseException) -> str:
    """The most specific message of a GDAL error (rasterio often wraps it: "Read failed...")."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc)


_QUIET_LOCK = threading.Lock()
_quiet_depth = 0  # quiet() blocks open in all threads (remote scenes are planned by a few threads)
_quiet_saved_level = logging.NOTSET


def _quiet_logger(enter: bool) -> None:
    """Keep the ``rasterio`` logger at ERROR while any quiet() block is open, in any thread."""
    global _quiet_depth, _quiet_saved_level
    logger = logging.getLogger("rasterio")
    with _QUIET_LOCK:
        if enter:
            if _quiet_depth == 0:
                _quiet_saved_level = logger.level
                logger.setLevel(max(logger.level, logging.ERROR))
            _quiet_depth += 1
        else:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                logger.setLevel(_quiet_saved_level)


@contextmanager
def quiet(source: str | Path | None = None) -> Iterator[None]:
    """A default rasterio.Env, no NotGeoreferencedWarning, and GDAL's warnings about odd but readable files
    (which rasterio.Env routes to the ``rasterio`` logger) kept below ERROR: bad files raise SourceError instead.

    For a remote ``source`` the Env also holds the GDAL settings of remote reads (``remote.remote_options``).
    Safe in threads (the warning filter, which Python keeps per process, is only changed in the main thread).
    """
    options = remote_options(str(source)) if source is not None and is_remote(source) else {}
    main = threading.current_thread() is threading.main_thread()
    _quiet_logger(enter=True)
    try:
        # No rasterio session: GDAL reads credentials from the environment itself, and rasterio's default would
        # build a boto3 session on every entry when AWS variables are set (~70 ms per chip read).
        with rasterio.Env(session=DummySession(), **options), warnings.catch_warnings() if main else nullcontext():
            if main:
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
            yield
    finally:
        _quiet_logger(enter=False)


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


def checked_source(source: str | Path) -> str | Path:
    """A remote URI as given (opening it tells whether it exists), else ``checked_path``."""
    return source if is_remote(source) else checked_path(source)


def _remote_reason(message: str) -> str:
    """GDAL's message about a remote object, with its HTTP status said plainly when it has one."""
    if any(
        text in message
        for text in (
            "does not exist in the file system",
            "HTTP response code: 404",
            "NoSuchKey",
            "The specified key does not exist",
            "NoSuchBucket",
        )
    ):
        return "no such object (404)"
    if "HTTP response code: 403" in message or "Access Denied" in message or "AccessDenied" in message:
        return f"access denied (403): {message}"
    return f"not a readable raster ({message})"


def open_raster(file: str | Path) -> DatasetReader:
    """Open a raster (local path or remote URI) read-only, turning GDAL errors into SourceError."""
    try:
        with quiet(file):
            src = rasterio.open(vsi_path(file))
    except GDAL_ERRORS as exc:
        if is_remote(file):
            raise source_error(file, _remote_reason(gdal_message(exc))) from exc
        raise source_error(file, f"not a readable raster ({gdal_message(exc)})") from exc
    if src.count == 0:
        src.close()
        raise source_error(file, "no raster bands")
    if any(np.dtype(d).kind == "c" for d in src.dtypes):
        src.close()
        raise source_error(file, f"unsupported complex data type {src.dtypes[0]}")
    return src
