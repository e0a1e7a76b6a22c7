"""Downloads of the page's results and classifier finds: GeoJSON, GeoParquet 1.1 and CSV (no FAISS import, so
that the page stays light as a client of the service)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence

from app.backend import Hit
from rsretrieve.chips import BBOX_FIELDS, WINDOW_FIELDS

CSV_COLUMNS = ["rank", "score", "id", "path", "date", "crs", *WINDOW_FIELDS, *BBOX_FIELDS, "item_id", "collection"]


def geojson(hits: Sequence[Hit]) -> str:
    """A FeatureCollection of the footprints with rank, score and the chip record as properties."""
    features = [hit.chip.feature(rank=rank, score=hit.score) for rank, hit in enumerate(hits, 1)]
    return json.dumps({"type": "FeatureCollection", "features": features}) + "\n"


def geoparquet(hits: Sequence[Hit]) -> bytes:
    """A GeoParquet 1.1 file (WKB footprints, bbox covering)."""
    from rsretrieve.geoparquet import geoparquet_bytes, hits_geotable

    return geoparquet_bytes(*hits_geotable(hits))


def table_csv(hits: Sequence[Hit]) -> str:
    """One row per hit: rank, score, the chip record with its window and bbox spread into columns."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for rank, hit in enumerate(hits, 1):
        record = hit.record()
        bbox = dict(zip(BBOX_FIELDS, record["bbox"] or [None] * 4, strict=True))
        writer.writerow({"rank": rank, **record, **record["window"], **bbox})
    return buffer.getvalue()


FORMATS: dict[str, tuple[Callable[[Sequence[Hit]], str | bytes], str, str]] = {
    "GeoJSON": (geojson, "geojson", "application/geo+json"),
    "GeoParquet": (geoparquet, "parquet", "application/vnd.apache.parquet"),
    "CSV": (table_csv, "csv", "text/csv"),
}
