"""GeoParquet 1.1 output: metadata per the specification, read back by geopandas, DuckDB and our own reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import shapely

from rsretrieve.geoparquet import read_geoparquet, write_features
from rsretrieve.render import BINARY_RENDERERS, MEDIA_TYPES
from tests.conftest import unavailable
from tests.rsretrieve.analyst_fixtures import run_cli, write_grid


def importable(name: str):
    """A reader the tests check the files with (test extra; CI has it: fails there when missing)."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        unavailable(f"{name} is not installed (pip install -e '.[test]')")


def check_geo_metadata(path: Path, types: list[str], rows: int) -> dict:
    """The ``geo`` metadata of a file, checked against GeoParquet 1.1."""
    table = pq.read_table(path)
    assert table.num_rows == rows
    geo = json.loads(table.schema.metadata[b"geo"])
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    column = geo["columns"]["geometry"]
    assert column["encoding"] == "WKB" and column["geometry_types"] == types
    assert "crs" not in column  # omitted: OGC:CRS84 by the specification
    assert column["covering"] == {"bbox": {key: ["bbox", key] for key in ("xmin", "ymin", "xmax", "ymax")}}
    assert str(table.schema.field("bbox").type) == "struct<xmin: double, ymin: double, xmax: double, ymax: double>"
    geometries = shapely.from_wkb(table.column("geometry").to_numpy(zero_copy_only=False))
    present = geometries[~shapely.is_missing(geometries)]
    if len(present):
        np.testing.assert_allclose(column["bbox"], shapely.total_bounds(present))
    boxes = table.column("bbox").to_pylist()
    for geometry, box in zip(geometries, boxes, strict=True):
        if geometry is None:
            assert box is None
        else:
            assert [box[k] for k in ("xmin", "ymin", "xmax", "ymax")] == list(shapely.bounds(geometry))
    return geo


def test_hits_as_geoparquet(result, tmp_path: Path) -> None:
    hits = [result("a1", 0.9), result("b2", 0.8, georeferenced=False), result("c3", 0.7)]
    path = tmp_path / "hits.parquet"
    path.write_bytes(BINARY_RENDERERS["geoparquet"](hits))
    assert MEDIA_TYPES["geoparquet"] == "application/vnd.apache.parquet"
    check_geo_metadata(path, ["Polygon"], 3)
    table, geometries = read_geoparquet(path)
    assert table.column("id").to_pylist() == ["a1", "b2", "c3"]
    assert table.column("rank").to_pylist() == [1, 2, 3] and table.column("score").to_pylist() == [0.9, 0.8, 0.7]
    assert geometries[1] is None and shapely.equals(geometries[0], shapely.box(10, 50, 11, 51))

    geopandas = importable("geopandas")
    frame = geopandas.read_parquet(path)
    assert list(frame["id"]) == ["a1", "b2", "c3"] and frame.crs.equals("OGC:CRS84")
    assert frame.geometry.iloc[1] is None and frame.geometry.iloc[0].equals(shapely.box(10, 50, 11, 51))

    duckdb = importable("duckdb")
    source = f"read_parquet('{path}')"
    rows = duckdb.sql(f"SELECT id, score, bbox.xmin, bbox.ymax FROM {source} ORDER BY rank").fetchall()
    assert [(r[0], r[2], r[3]) for r in rows] == [("a1", 10.0, 51.0), ("b2", None, None), ("c3", 10.0, 51.0)]
    kinds = {row[0]: row[1] for row in duckdb.sql(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    if kinds["geometry"].startswith("GEOMETRY"):  # DuckDB ≥ 1.4 reads GeoParquet natively (CRS84 by default)
        assert kinds["geometry"] == "GEOMETRY('OGC:CRS84')"
        texts = [row[0] for row in duckdb.sql(f"SELECT ST_AsText(geometry) FROM {source} ORDER BY rank").fetchall()]
        assert shapely.equals(shapely.from_wkt(texts[0]), shapely.box(10, 50, 11, 51)) and texts[1] is None
    else:  # an older DuckDB without the spatial extension: WKB bytes
        assert kinds["geometry"] == "BLOB"


def test_empty_and_mixed_outputs(tmp_path: Path) -> None:
    path = tmp_path / "sites.parquet"
    rows = [{"site": 1, "area_m2": 5.0}, {"site": 2, "area_m2": 1.0}]
    write_features(path, rows, np.array([shapely.box(0, 0, 1, 1), shapely.MultiPolygon([shapely.box(2, 2, 3, 3)])]))
    check_geo_metadata(path, ["MultiPolygon", "Polygon"], 2)
    write_features(tmp_path / "empty.parquet", [], np.empty(0, object))
    geo = check_geo_metadata(tmp_path / "empty.parquet", [], 0)
    assert "bbox" not in geo["columns"]["geometry"]


def test_query_writes_geoparquet(tmp_path: Path, capsys) -> None:
    grid = write_grid(tmp_path / "db", columns=10, rows=5, blocks=[])
    out = tmp_path / "results.parquet"
    ran = run_cli(capsys, "query", "--like", grid.chips[3].id, "--db", grid.db, "-k", "7", "--geoparquet", out)
    assert ran.returncode == 0, ran.stderr
    assert "wrote 7 results" in ran.stderr and ran.stdout == ""  # the results go to the file
    check_geo_metadata(out, ["Polygon"], 7)
    table, _ = read_geoparquet(out)
    assert table.column("id").to_pylist()[0] == grid.chips[3].id
