"""Tests for rsretrieve/export.py: CSV and GeoJSON of search results."""

from __future__ import annotations

import csv
import io
import json

from rsretrieve.export import CSV_COLUMNS, results_csv, results_geojson
from rsretrieve.search import SearchResult

SQUARE = {"type": "Polygon", "coordinates": [[[10, 50], [10, 51], [11, 51], [11, 50], [10, 50]]]}


def result(chip_id: str, score: float = 0.5, georeferenced: bool = True) -> SearchResult:
    """A result without a source file."""
    return SearchResult(
        score=score,
        id=chip_id,
        path=f"/archive/{chip_id}_20200101.tif",
        window={"col_off": 0, "row_off": 64, "width": 64, "height": 64},
        bbox=[10.0, 50.0, 11.0, 51.0] if georeferenced else None,
        date="2020-01-01",
        crs="EPSG:4326" if georeferenced else None,
        footprint=SQUARE if georeferenced else None,
    )


def test_results_csv_has_one_row_per_result() -> None:
    rows = list(csv.DictReader(io.StringIO(results_csv([result("a", 0.9), result("b", 0.8, georeferenced=False)]))))
    assert list(rows[0]) == CSV_COLUMNS
    assert [(row["rank"], row["id"], row["row_off"], row["minx"]) for row in rows] == [
        ("1", "a", "64", "10.0"),
        ("2", "b", "64", ""),
    ]


def test_results_geojson_is_a_feature_collection() -> None:
    collection = json.loads(results_geojson([result("a"), result("b", georeferenced=False)]))
    assert collection["type"] == "FeatureCollection"
    assert [feature["geometry"] for feature in collection["features"]] == [SQUARE, None]
