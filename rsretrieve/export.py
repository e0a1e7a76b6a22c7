"""Results for machines and spreadsheets: GeoJSON and CSV (``rsretrieve query --geojson / --csv``, the app)."""

from __future__ import annotations

import csv
import io
import json

from rsretrieve.search import SearchResult, to_geojson

CSV_COLUMNS = [
    "rank", "score", "id", "path", "date", "crs", "col_off", "row_off", "width", "height",
    "minx", "miny", "maxx", "maxy",
]  # fmt: skip


def results_geojson(results: list[SearchResult]) -> str:
    """A GeoJSON FeatureCollection of the result footprints."""
    return json.dumps(to_geojson(results))


def results_csv(results: list[SearchResult]) -> str:
    """One CSV row per result: rank, score, chip id, source, date, CRS, pixel window and WGS84 bbox."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for rank, result in enumerate(results, 1):
        bbox = dict(zip(("minx", "miny", "maxx", "maxy"), result.bbox or [None] * 4, strict=True))
        writer.writerow({"rank": rank, **result.record(), **result.window, **bbox})
    return buffer.getvalue()
