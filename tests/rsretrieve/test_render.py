"""Tests for rsretrieve/render.py: every renderer of results (table, JSON, GeoJSON, CSV)."""

from __future__ import annotations

import csv
import io
import json

from rsretrieve.render import CSV_COLUMNS, RENDERERS, as_csv, as_geojson, as_json, as_table


def test_csv_has_one_row_per_result(result) -> None:
    rows = list(csv.DictReader(io.StringIO(as_csv([result("a", 0.9), result("b", 0.8, georeferenced=False)]))))
    assert list(rows[0]) == CSV_COLUMNS
    assert [(row["rank"], row["id"], row["row_off"], row["minx"]) for row in rows] == [
        ("1", "a", "64", "10.0"),
        ("2", "b", "64", ""),
    ]


def test_geojson_is_a_feature_collection_with_the_records_as_properties(result) -> None:
    collection = json.loads(as_geojson([result("a", 0.9), result("b", georeferenced=False)]))
    assert collection["type"] == "FeatureCollection"
    assert [feature["geometry"] for feature in collection["features"]] == [result("a").chip.footprint, None]
    first = collection["features"][0]
    assert first["id"] == "a"
    assert first["properties"] == result("a", 0.9).record()


def test_json_records_have_the_documented_fields(result) -> None:
    records = json.loads(as_json([result("a", 0.9)]))
    assert records == [
        {
            "score": 0.9,
            "id": "a",
            "path": "/archive/a_20200101.tif",
            "window": {"col_off": 0, "row_off": 64, "width": 64, "height": 64},
            "bbox": [10.0, 50.0, 11.0, 51.0],
            "date": "2020-01-01",
            "crs": "EPSG:4326",
            "item_id": None,
            "collection": None,
        }
    ]


def test_table_lists_rank_score_id_date_and_source(result) -> None:
    lines = as_table([result("a", 0.9), result("b", 0.8, georeferenced=False)]).splitlines()
    assert lines[1].split()[:4] == ["1", "0.900", "a", "2020-01-01"]
    assert "/archive/b_20200101.tif [0,64,64,64]" in lines[2] and " - " in lines[2]
    assert as_table([]) == "no results\n"


def test_every_renderer_is_registered() -> None:
    assert set(RENDERERS) == {"table", "json", "geojson", "csv"}
