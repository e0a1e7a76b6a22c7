"""Downloads of the page's results and classifier finds: GeoJSON, GeoParquet 1.1 and CSV, rendered by
``rsretrieve.render`` (which imports no FAISS, so the page stays light as a client of the service)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rsretrieve.hits import Hit
from rsretrieve.render import MEDIA_TYPES, as_csv, as_geojson, as_geoparquet

FORMATS: dict[str, tuple[Callable[[Sequence[Hit]], str | bytes], str, str]] = {
    "GeoJSON": (as_geojson, "geojson", MEDIA_TYPES["geojson"]),
    "GeoParquet": (as_geoparquet, "parquet", MEDIA_TYPES["geoparquet"]),
    "CSV": (as_csv, "csv", MEDIA_TYPES["csv"]),
}
