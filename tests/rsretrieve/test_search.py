"""Tests for rsretrieve/search.py: filters, exact scores, k results, like/image/text queries."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pytest

from rsretrieve.search import EXACT_FILTER_LIMIT, Filters, QueryError, Searcher, to_geojson
from rsretrieve.store import ChipStore, StoreWriter


def make_rows(count: int) -> list[dict]:
    """Chips on a 20 × N grid of 0.01° cells, dated one day apart from 2020-01-01."""
    rows = []
    for i in range(count):
        x, y = (i % 20) * 0.01, (i // 20) * 0.01
        rows.append(
            {
                "id": f"{i:016x}",
                "path": f"/data/scene_{i // 50}.tif",
                "col_off": 64 * (i % 20),
                "row_off": 64 * (i // 20),
                "width": 64,
                "height": 64,
                "crs": "EPSG:4326",
                "minx": x,
                "miny": y,
                "maxx": x + 0.01,
                "maxy": y + 0.01,
                "footprint": None,
                "date": date.fromordinal(date(2020, 1, 1).toordinal() + i),
            }
        )
    return rows


@pytest.fixture(scope="module")
def vector_index(tmp_path_factory: pytest.TempPathFactory, tiny_model) -> tuple[Path, np.ndarray]:
    """An index of 400 random unit vectors of the tiny model's size, with grid footprints."""
    db = tmp_path_factory.mktemp("search") / "db"
    vectors = np.random.default_rng(0).normal(size=(400, tiny_model.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    writer = StoreWriter.open(db, tiny_model)
    try:
        writer.append(make_rows(400), vectors, new_files=8)
        writer.finish()
    finally:
        writer.close()
    return db, vectors


@pytest.fixture(scope="module")
def searcher(vector_index, tiny_model) -> Searcher:
    return Searcher(vector_index[0], model=tiny_model)


def brute_force(vectors: np.ndarray, query: np.ndarray, allowed: np.ndarray, k: int) -> list[int]:
    scores = vectors[allowed] @ query
    order = np.lexsort((allowed, -scores))
    return allowed[order[:k]].tolist()


def test_unfiltered_search_equals_brute_force_with_true_scores(searcher, vector_index) -> None:
    _, vectors = vector_index
    query = vectors[17] * 0.6 + vectors[3] * 0.4
    results = searcher.search(query, k=10)
    assert [int(r.id, 16) for r in results] == brute_force(vectors, query, np.arange(400), 10)
    for result in results:
        assert result.score == pytest.approx(float(vectors[int(result.id, 16)] @ query), abs=1e-5)


@pytest.mark.parametrize(
    "filters",
    [
        Filters(bbox=(0.0, 0.0, 0.045, 0.045)),
        Filters(start=date(2020, 3, 1), end=date(2020, 4, 30)),
        Filters(bbox=(0.1, 0.05, 0.3, 0.2), start=date(2020, 2, 1)),
    ],
)
def test_filters_return_only_matching_chips_and_k_of_them(searcher, vector_index, filters: Filters) -> None:
    _, vectors = vector_index
    rows = make_rows(400)
    allowed = np.array([i for i, row in enumerate(rows) if _matches(row, filters)])
    query = vectors[250]
    results = searcher.search(query, k=8, filters=filters)
    assert len(results) == min(8, len(allowed))
    assert [int(r.id, 16) for r in results] == brute_force(vectors, query, allowed, 8)


def _matches(row: dict, filters: Filters) -> bool:
    if filters.bbox is not None:
        minx, miny, maxx, maxy = filters.bbox
        if row["maxx"] < minx or row["minx"] > maxx or row["maxy"] < miny or row["miny"] > maxy:
            return False
    if filters.start and row["date"] < filters.start:
        return False
    return not (filters.end and row["date"] > filters.end)


def test_large_filtered_sets_go_through_faiss(searcher, vector_index, monkeypatch) -> None:
    monkeypatch.setattr("rsretrieve.search.EXACT_FILTER_LIMIT", 10)
    _, vectors = vector_index
    filters = Filters(start=date(2020, 2, 1))
    results = searcher.search(vectors[5], k=5, filters=filters)
    allowed = np.arange(31, 400)
    assert [int(r.id, 16) for r in results] == brute_force(vectors, vectors[5], allowed, 5)
    assert EXACT_FILTER_LIMIT > 10


def test_more_like_this_finds_the_chip_first(searcher) -> None:
    results = searcher.like(f"{42:016x}", k=3)
    assert results[0].id == f"{42:016x}" and results[0].score == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(QueryError, match="no chip with id"):
        searcher.like("does-not-exist")


def test_k_larger_than_the_index_returns_everything(searcher) -> None:
    assert len(searcher.text("farmland", k=1000)) == 400


def test_bad_queries(searcher) -> None:
    with pytest.raises(QueryError, match="empty"):
        searcher.text("   ")
    with pytest.raises(QueryError, match="at least 1"):
        searcher.text("farmland", k=0)
    with pytest.raises(QueryError, match="query image not found"):
        searcher.image(Path("/no/such/image.png"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bbox": (1.0, 0.0, 0.0, 1.0)}, "min must not exceed max"),
        ({"bbox": (0.0, 0.0, 200.0, 1.0)}, "out of range"),
        ({"bbox": (0.0, float("nan"), 1.0, 1.0)}, "finite"),
        ({"start": date(2021, 1, 1), "end": date(2020, 1, 1)}, "after end date"),
    ],
)
def test_invalid_filters(kwargs: dict, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        Filters(**kwargs)


def test_results_serialise_to_json_records_and_geojson(searcher) -> None:
    results = searcher.text("a river", k=2)
    record = results[0].record()
    assert set(record) == {"score", "id", "path", "window", "bbox", "date", "crs"}
    assert set(record["window"]) == {"col_off", "row_off", "width", "height"}
    assert len(record["bbox"]) == 4 and date.fromisoformat(record["date"])
    collection = to_geojson(results)
    assert collection["type"] == "FeatureCollection"
    assert collection["features"][0]["properties"] == record


def test_another_model_is_refused(vector_index) -> None:
    from rsretrieve.store import StoreError

    with pytest.raises(StoreError, match="built with model 'tiny-test'"):
        Searcher(vector_index[0], model_name="remoteclip-vit-b-32")


def test_numpy_bbox_values_become_plain_floats() -> None:
    filters = Filters(bbox=tuple(np.array([0.0, 0.0, 0.5, 0.5])))
    assert filters.bbox == (0.0, 0.0, 0.5, 0.5) and all(type(value) is float for value in filters.bbox)


def test_filters_select_what_lancedb_sql_selects(tmp_path: Path, tiny_model) -> None:
    """The numpy filter over ``bounds.f64`` agrees with SQL on the table, edges and missing values included."""
    rows = make_rows(60)
    for row in rows[::7]:
        row.update(minx=None, miny=None, maxx=None, maxy=None)
    for row in rows[::5]:
        row["date"] = None
    db = tmp_path / "db"
    writer = StoreWriter.open(db, tiny_model)
    try:
        writer.append(rows, np.eye(60, tiny_model.dim, dtype=np.float32), new_files=2)
    finally:
        writer.close()
    store = ChipStore(db)
    cases = [
        (Filters(bbox=(0.05, 0.01, 0.1, 0.02)), "maxx >= 0.05 AND minx <= 0.1 AND maxy >= 0.01 AND miny <= 0.02"),
        (Filters(start=date(2020, 1, 10)), "date >= date '2020-01-10'"),
        (Filters(end=date(2020, 1, 10)), "date <= date '2020-01-10'"),
        (
            Filters(bbox=(-180.0, -90.0, 180.0, 90.0), start=date(2020, 1, 3), end=date(2020, 2, 1)),
            "minx IS NOT NULL AND date >= date '2020-01-03' AND date <= date '2020-02-01'",
        ),
    ]
    for filters, sql in cases:
        expected = store.where_fids(sql)
        assert 0 < len(expected) < 60
        np.testing.assert_array_equal(filters.matching(store.bounds()), expected)
    assert Filters().matching(store.bounds()).tolist() == list(range(60)) and not Filters().active


def test_filters_of_up_to_a_64th_of_a_large_index_are_scored_exactly() -> None:
    from rsretrieve.search import exact_filter_limit

    assert exact_filter_limit(0) == exact_filter_limit(100_000) == EXACT_FILTER_LIMIT == 4096
    assert exact_filter_limit(1_000_000) == 15_625
