"""Every way results are shown: a table for people; JSON, GeoJSON and CSV for machines; GeoParquet for GIS.

Each renderer takes ``Results`` (or any sequence of ``Hit``) and returns text (``RENDERERS``) or bytes
(``BINARY_RENDERERS``: GeoParquet, ``rsretrieve.geoparquet``); the CLI prints or writes it, the page offers it for
download, the service returns it. New formats go here.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from typing import Any

from rsretrieve.chips import BBOX_FIELDS, WINDOW_FIELDS
from rsretrieve.hits import Hit

CSV_COLUMNS = ["rank", "score", "id", "path", "date", "crs", *WINDOW_FIELDS, *BBOX_FIELDS, "item_id", "collection"]


def records(hits: Sequence[Hit]) -> list[dict[str, Any]]:
    """The machine records of the hits (``--json``)."""
    return [hit.record() for hit in hits]


def feature_collection(hits: Sequence[Hit]) -> dict[str, Any]:
    """A GeoJSON FeatureCollection of the hits' footprints (null geometry for chips without georeference)."""
    return {"type": "FeatureCollection", "features": [hit.chip.feature(score=hit.score) for hit in hits]}


def as_json(hits: Sequence[Hit]) -> str:
    """The records as an indented JSON list."""
    return json.dumps(records(hits), indent=2) + "\n"


def as_geojson(hits: Sequence[Hit]) -> str:
    """A GeoJSON FeatureCollection."""
    return json.dumps(feature_collection(hits)) + "\n"


def as_csv(hits: Sequence[Hit]) -> str:
    """One CSV row per hit: rank, score, chip id, source, date, CRS, pixel window and WGS84 bbox."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for rank, hit in enumerate(hits, 1):
        record = hit.record()
        bbox = dict(zip(BBOX_FIELDS, record["bbox"] or [None] * 4, strict=True))
        writer.writerow({"rank": rank, **record, **(record["window"] or {}), **bbox})
    return buffer.getvalue()


def as_table(hits: Sequence[Hit]) -> str:
    """A fixed-width table for people."""
    if not hits:
        return "no results\n"
    lines = [f"{'#':>3}  {'score':>6}  {'chip id':16}  {'date':10}  {'bbox (WGS84)':38}  source [col,row,w,h]"]
    for rank, hit in enumerate(hits, 1):
        chip = hit.chip
        bbox = ",".join(f"{value:.4f}" for value in chip.bbox) if chip.bbox else "-"
        window = chip.window
        where = chip.path  # an imported embedding has no pixel window
        if window is not None:
            where += f" [{window.col_off},{window.row_off},{window.width},{window.height}]"
        date = chip.date.isoformat() if chip.date else "-"
        if chip.item_id:  # from a STAC catalogue: its collection and item first
            where = f"{chip.collection or '-'}/{chip.item_id}: {where}"
        lines.append(f"{rank:>3}  {hit.score:6.3f}  {chip.id:16}  {date:10}  {bbox:38}  {where}")
    return "\n".join(lines) + "\n"


RENDERERS: dict[str, Callable[[Sequence[Hit]], str]] = {
    "table": as_table,
    "json": as_json,
    "geojson": as_geojson,
    "csv": as_csv,
}


def as_geoparquet(hits: Sequence[Hit]) -> bytes:
    """A GeoParquet 1.1 file: rank, score, the chip record, WKB footprint and bbox covering (``geoparquet``)."""
    from rsretrieve.geoparquet import geoparquet_bytes, hits_geotable

    return geoparquet_bytes(*hits_geotable(hits))


BINARY_RENDERERS: dict[str, Callable[[Sequence[Hit]], bytes]] = {"geoparquet": as_geoparquet}
MEDIA_TYPES = {
    "json": "application/json",
    "geojson": "application/geo+json",
    "csv": "text/csv",
    "geoparquet": "application/vnd.apache.parquet",
}
