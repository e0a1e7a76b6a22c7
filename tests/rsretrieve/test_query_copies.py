"""Tests for rsretrieve/query_copies.py: what the copies hold and how they are rebuilt from table rows."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
from rsretrieve.query_copies import QueryCopies, bounds_of, records_of

from rsretrieve.store import chip_schema

FOOTPRINT = {"type": "Polygon", "coordinates": [[[1.0, 2.0], [1.5, 2.0], [1.5, 2.5], [1.0, 2.0]]]}


def chips(count: int, dim: int = 4) -> pa.Table:
    """Table rows: even fids georeferenced and dated, odd ones neither."""
    rows = []
    for fid in range(count):
        placed = fid % 2 == 0
        rows.append(
            {
                "fid": fid,
                "id": f"chip{fid}",
                "path": f"/data/{fid}.tif",
                "col_off": fid, "row_off": 2 * fid, "width": 64, "height": 32,
                "crs": "EPSG:32633" if placed else None,
                "minx": 1.0 + fid if placed else None, "miny": 2.0 if placed else None,
                "maxx": 1.5 + fid if placed else None, "maxy": 2.5 if placed else None,
                "footprint": json.dumps(FOOTPRINT) if placed else None,
                "date": date(1970, 1, 1 + fid) if placed else None,
                "vector": [float(fid)] * dim,
            }
        )  # fmt: skip
    return pa.Table.from_pylist(rows, schema=chip_schema(dim))


def test_bounds_hold_box_and_day_with_nan_where_missing() -> None:
    bounds = bounds_of(chips(3))
    np.testing.assert_array_equal(bounds[0], [1.0, 2.0, 1.5, 2.5, 0.0])
    np.testing.assert_array_equal(bounds[2], [3.0, 2.0, 3.5, 2.5, 2.0])
    assert np.isnan(bounds[1]).all() and bounds.dtype == np.float64
    assert bounds_of(chips(0)).shape == (0, 5)


def test_records_are_what_a_result_shows() -> None:
    placed, bare = records_of(chips(2))
    assert placed == {
        "id": "chip0",
        "path": "/data/0.tif",
        "window": {"col_off": 0, "row_off": 0, "width": 64, "height": 32},
        "bbox": [1.0, 2.0, 1.5, 2.5],
        "date": "1970-01-01",
        "crs": "EPSG:32633",
        "footprint": FOOTPRINT,
    }
    assert bare["bbox"] is None and bare["date"] is None and bare["footprint"] is None and bare["crs"] is None


def test_sync_cuts_extra_rows_and_rebuilds_short_copies(tmp_path: Path) -> None:
    table = chips(6)
    copies = QueryCopies(tmp_path, 4)
    copies.append(table.slice(0, 4))
    copies.records.file.remove()  # e.g. an index written before the copy existed
    asked = []

    def read_rows(fids: np.ndarray, columns: list[str]) -> pa.Table:
        asked.append(columns)
        return table.take(fids).select(columns)

    copies.sync(3, read_rows)
    assert asked == [list(copies.records.columns)]  # only the short copy is read from the table
    assert [copy.file.rows_on_disk() for copy in copies.all] == [3, 3, 3]
    assert copies.records.file.read([2], 3) == records_of(table.slice(2, 1))
    np.testing.assert_array_equal(copies.vectors.file.view(3), [[0.0] * 4, [1.0] * 4, [2.0] * 4])
    copies.remove()
    assert not any(tmp_path.iterdir())
