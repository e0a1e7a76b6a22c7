"""Tests for rsretrieve/export.py: CSV and GeoJSON of search results."""

from __future__ import annotations

import csv
import io
import json

from rsretrieve.export import CSV_COLUMNS, results_csv, results_geojson


def test_results_csv_has_one_row_per_result(result) -> None:
    rows = list(csv.DictReader(io.StringIO(results_csv([result("a", 0.9), result("b", 0.8, georeferenced=False)]))))
    assert list(rows[0]) == CSV_COLUMNS
    assert [(row["rank"], row["id"], row["row_off"], row["minx"]) for row in rows] == [
        ("1", "a", "64", "10.0"),
        ("2", "b", "64", ""),
    ]


def test_results_geojson_is_a_feature_collection(result) -> None:
    collection = json.loads(results_geojson([result("a"), result("b", georeferenced=False)]))
    assert collection["type"] == "FeatureCollection"
    assert [feature["geometry"] for feature in collection["features"]] == [result("a").footprint, None]
