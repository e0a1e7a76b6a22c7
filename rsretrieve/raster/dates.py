"""Acquisition dates of scenes: from acquisition tags, else an unambiguous date in the file name, else TIFF's
save-time tag."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import PurePath, PurePosixPath

from rasterio.io import DatasetReader

DATE_TAGS = (  # upper-cased tag names, most specific first
    "ACQUISITIONDATE",
    "ACQUISITION_DATE",
    "DATE_ACQUIRED",
    "EXIF_DATETIMEORIGINAL",
)
SAVE_TIME_TAGS = ("TIFFTAG_DATETIME", "DATETIME")  # often when a file was last saved, not acquired
_FULL_DATE = re.compile(r"(?<!\d)(\d{4})([-_:/]?)(\d{2})\2(\d{2})(?!\d)")
# A lone year stands alone: not part of a longer number or of a code such as EPSG2056, 1920x1080 or v2019b.
_YEAR = re.compile(r"(?<![0-9A-Za-z])(\d{4})(?![0-9A-Za-z])")
EARLIEST_YEAR = 1900


def _valid_date(year: str, month: str = "01", day: str = "01") -> dt.date | None:
    """A real calendar date from 1900 up to today (an acquisition cannot be in the future), else None."""
    try:
        date = dt.date(int(year), int(month), int(day))
    except ValueError:
        return None
    return date if date.year >= EARLIEST_YEAR and date <= dt.date.today() else None


def parse_date(text: str) -> dt.date | None:
    """First valid YYYYMMDD / YYYY-MM-DD / YYYY_MM_DD / YYYY:MM:DD in text, else a lone year, else None.

    Only unambiguous dates count: ``tile_2048`` (future), ``ortho_EPSG2056`` (a code) and ``mosaic_1920x1080``
    (a size) give none, so the TIFF's own tags are used instead.
    """
    for m in _FULL_DATE.finditer(text):
        if date := _valid_date(m[1], m[3], m[4]):
            return date
    for m in _YEAR.finditer(_FULL_DATE.sub(" ", text)):  # a lone year, not part of a bad date
        if date := _valid_date(m[1]):
            return date
    return None


def _tags(src: DatasetReader) -> dict[str, str]:
    """Dataset tags of every namespace except XML blobs, keys upper-cased (default namespace wins)."""
    namespaces = [ns for ns in src.tag_namespaces() if not ns.startswith("xml:")]
    tags: dict[str, str] = {}
    for ns in [*namespaces, None]:
        tags.update({k.upper(): v for k, v in src.tags(ns=ns).items()})
    return tags


def scene_date(src: DatasetReader, path: str | PurePath) -> dt.date | None:
    """Acquisition date from acquisition tags, else the file name, else TIFF's DateTime tag, else None.

    ``path`` is a local path or a URI (its last segment is the file name).

    TIFFTAG_DATETIME is the time a file was written (UC Merced's images carry Photoshop's save time),
    so a date in the file name wins over it.
    """
    tags = _tags(src)
    for key in DATE_TAGS:
        if key in tags and (date := parse_date(tags[key])):
            return date
    from rsretrieve.raster.remote import source_name

    if date := parse_date(PurePosixPath(source_name(path)).stem):
        return date
    for key in SAVE_TIME_TAGS:
        if key in tags and (date := parse_date(tags[key])):
            return date
    return None
