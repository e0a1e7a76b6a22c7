"""The polygon filter (``Filters.within``): bbox prefilter + exact shapely test on the stored footprints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import shapely

from rsretrieve.geometry import intersecting
from rsretrieve.query import Filters, QueryError
from rsretrieve.store import ChipStore
from tests.rsretrieve.analyst_fixtures import write_grid

# a ring with a hole, and an L-shaped second polygon: a MultiPolygon whose bbox covers chips it does not touch
RING = shapely.Polygon(
    [(10.052, 50.052), (10.148, 50.052), (10.148, 50.148), (10.052, 50.148)],
    [[(10.071, 50.071), (10.129, 50.071), (10.129, 50.129), (10.071, 50.129)]],
)
ELL = shapely.Polygon([(10.3, 50.2), (10.4, 50.2), (10.4, 50.215), (10.315, 50.215), (10.315, 50.3), (10.3, 50.3)])
AREA = shapely.MultiPolygon([RING, ELL])


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory):
    return write_grid(tmp_path_factory.mktemp("within") / "db", columns=50, rows=40)


def expected(grid, area, start=None) -> np.ndarray:
    footprints = np.array([shapely.geometry.shape(chip.footprint) for chip in grid.chips])
    keep = shapely.intersects(area, footprints)
    if start is not None:
        keep &= np.array([chip.date >= start for chip in grid.chips])
    return np.flatnonzero(keep)


def test_within_matches_shapely_on_the_footprints(grid) -> None:
    store = ChipStore(grid.db)
    found = Filters(within=AREA).matching(store.filter_columns(), store)
    truth = expected(grid, AREA)
    np.testing.assert_array_equal(found, truth)
    assert 0 < len(truth) < 0.2 * len(grid.chips)
    hole_centre = grid.chips.index(next(c for c in grid.chips if c.bbox[:2] == (10.09, 50.09)))
    assert hole_centre not in found  # inside the hole: excluded
    # the same through GeoJSON, combined with a date filter, and without the store (bbox rectangles = footprints)
    geojson = json.loads(shapely.to_geojson(AREA))
    import datetime as dt

    start = dt.date(2020, 6, 1)
    dated = Filters(within=geojson, start=start).matching(store.filter_columns(), store)
    np.testing.assert_array_equal(dated, expected(grid, AREA, start))
    np.testing.assert_array_equal(Filters(within=AREA).matching(store.filter_columns()), truth)


def test_footprints_come_back_from_the_store(grid) -> None:
    store = ChipStore(grid.db)
    fids = np.array([5, 1999, 0, 1000])
    footprints = store.footprints(fids)
    for fid, geometry in zip(fids, footprints, strict=True):
        assert shapely.equals(geometry, shapely.geometry.shape(grid.chips[fid].footprint))


def test_boundary_chips_are_tested_on_their_footprint() -> None:
    triangle = shapely.Polygon([(0, 0), (1, 0), (0, 1)])
    boxes = np.array([[0.3, 0.3, 0.9, 0.9], [0.1, 0.1, 0.2, 0.2], [2, 2, 3, 3], [np.nan] * 4, [0.4, 0.4, 0.7, 0.7]])
    # footprints smaller than their bboxes: a point near the bbox's far corner
    read_rows = []

    def footprints(rows):
        read_rows.extend(rows.tolist())
        return shapely.points(boxes[rows, 2], boxes[rows, 3])

    found = intersecting(triangle, boxes, footprints)
    assert found.tolist() == [False, True, False, False, False]
    assert sorted(read_rows) == [0, 4]  # only the bboxes crossing the boundary were read


def test_bad_areas_are_one_line_errors() -> None:
    with pytest.raises(QueryError, match="Polygon or MultiPolygon"):
        Filters(within={"type": "Point", "coordinates": [10, 50]})
    with pytest.raises(QueryError, match="WGS84"):
        Filters(within=shapely.box(500000, 4000000, 510000, 4010000))
    bow_tie = shapely.Polygon([(0, 0), (1, 1), (1, 0), (0, 1)])  # invalid: repaired, not refused
    assert Filters(within=bow_tie).within.is_valid and Filters(within=bow_tie).active


def test_cli_query_within(grid, tmp_path: Path, capsys) -> None:
    from tests.rsretrieve.analyst_fixtures import run_cli

    area = tmp_path / "area.geojson"
    area.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": json.loads(shapely.to_geojson(AREA))}]}))  # fmt: skip
    result = run_cli(capsys, "query", "--like", grid.chips[0].id, "--db", grid.db, "--within", area, "-k", "2000",
                        "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    found = sorted(int(record["id"], 16) for record in json.loads(result.stdout))
    assert found == expected(grid, AREA).tolist()


@pytest.mark.parametrize("grid_from", [10**9, 0])  # box tests for every chip, or the far ones decided on the grid
def test_many_chips_match_shapely(monkeypatch, grid_from: int) -> None:
    import rsretrieve.geometry

    monkeypatch.setattr(rsretrieve.geometry, "GRID_FROM", grid_from)
    rng = np.random.default_rng(3)
    n = 20_000
    x, y, size = rng.uniform(9.9, 10.5, n), rng.uniform(49.9, 50.4, n), rng.uniform(0.0005, 0.02, n)
    boxes = np.column_stack([x, y, x + size, y + size])
    boxes[:50] = np.nan  # unplaced chips never match
    sliver = shapely.Polygon([(10.0, 50.0), (10.4, 50.0003), (10.4, 50.0004)])  # thinner than a chip
    area = shapely.MultiPolygon([RING, ELL, sliver])
    truth = shapely.intersects(area, shapely.box(*np.nan_to_num(boxes, nan=-1).T))
    found = intersecting(area, boxes)
    np.testing.assert_array_equal(found, truth)
    assert 1000 < found.sum() < n / 2
