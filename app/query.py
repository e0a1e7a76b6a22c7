"""What the page asks ``Searcher``: the active query, uploads saved for ``Searcher.image``, the index's extent."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal

import numpy as np

from rsretrieve.query_copies import day_date
from rsretrieve.search import Filters, QueryError, Searcher, SearchResult
from rsretrieve.store import ChipStore

UPLOAD_TYPES = ("jpg", "jpeg", "png", "tif", "tiff")


@dataclass(frozen=True)
class Query:
    """One query: text, an image file, or an indexed chip ("more like this"); ``label`` is what the page shows."""

    kind: Literal["text", "image", "like"]
    value: str
    label: str


@dataclass(frozen=True)
class Response:
    """Results of a query and how long it took (search only, and with query encoding)."""

    results: list[SearchResult]
    search_seconds: float
    total_seconds: float


@dataclass(frozen=True)
class Extent:
    """WGS84 bbox and date range covered by an index (None where no chip has one)."""

    bbox: tuple[float, float, float, float] | None
    start: date | None
    end: date | None


def save_upload(name: str, data: bytes, folder: Path) -> Path:
    """Write an uploaded image under ``folder`` (named by content, keeping the suffix) and return its path."""
    suffix = Path(name).suffix.lower()
    if suffix.lstrip(".") not in UPLOAD_TYPES:
        raise QueryError(f"{name}: not an image file (expected {', '.join(UPLOAD_TYPES)})")
    path = folder / f"{hashlib.sha1(data).hexdigest()[:16]}{suffix}"
    if not path.exists():
        path.write_bytes(data)
    return path


def run_query(searcher: Searcher, query: Query, k: int, filters: Filters) -> Response:
    """Run a query through the searcher; an image error names the upload, not its temporary file."""
    started = time.perf_counter()
    try:
        if query.kind == "text":
            results = searcher.text(query.value, k, filters)
        elif query.kind == "image":
            results = searcher.image(query.value, k, filters)
        else:
            results = searcher.like(query.value, k, filters)
    except QueryError as error:
        raise QueryError(str(error).replace(query.value, query.label)) from error
    return Response(results, searcher.last_seconds, time.perf_counter() - started)


def index_extent(store: ChipStore) -> Extent:
    """The union bbox and the first and last date of the chips in an index."""
    bounds = store.bounds()
    placed = bounds[~np.isnan(bounds[:, 0])]
    days = bounds[~np.isnan(bounds[:, 4]), 4]
    bbox = None
    if len(placed):
        bbox = tuple(float(value) for value in (*placed[:, :2].min(axis=0), *placed[:, 2:4].max(axis=0)))
    if not len(days):
        return Extent(bbox, None, None)
    return Extent(bbox, day_date(days.min()), day_date(days.max()))
