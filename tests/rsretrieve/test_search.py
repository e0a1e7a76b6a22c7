"""Tests for rsretrieve/search.py: Searcher.search over filters, paths taken, mixed queries, exact scores."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pytest

from rsretrieve.chips import Chip, Window
from rsretrieve.query import Filters, Part, Query, QueryError
from rsretrieve.search import EXACT_FILTER_LIMIT, Searcher
from rsretrieve.store import ChipStore, StoreWriter, vector_codes


def make_chips(count: int) -> list[Chip]:
    """Chips on a 20 × N grid of 0.01° cells, dated one day apart from 2020-01-01."""
    chips = []
    for i in range(count):
        x, y = (i % 20) * 0.01, (i // 20) * 0.01
        chips.append(
            Chip(
                id=f"{i:016x}",
                path=f"/data/scene_{i // 50}.tif",
                window=Window(64 * (i % 20), 64 * (i // 20), 64, 64),
                crs="EPSG:4326",
                bbox=(x, y, x + 0.01, y + 0.01),
                date=date.fromordinal(date(2020, 1, 1).toordinal() + i),
            )
        )
    return chips


def vector_query(vector: np.ndarray, k: int = 10, **settings) -> Query:
    return Query.build(vectors=[vector], k=k, **settings)


def ids(results) -> list[int]:
    return [int(hit.chip.id, 16) for hit in results]


@pytest.fixture(scope="module")
def vector_index(tmp_path_factory: pytest.TempPathFactory, tiny_model) -> tuple[Path, np.ndarray]:
    """An index of 400 random unit vectors of the tiny model's size, with grid footprints."""
    db = tmp_path_factory.mktemp("search") / "db"
    vectors = np.random.default_rng(0).normal(size=(400, tiny_model.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    writer = StoreWriter.open(db, tiny_model)
    try:
        writer.append(make_chips(400), vectors, new_files=8)
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
    results = searcher.search(vector_query(query))
    unit = query / np.linalg.norm(query)
    assert ids(results) == brute_force(vectors, unit, np.arange(400), 10)
    for hit in results:
        assert hit.score == pytest.approx(float(vectors[int(hit.chip.id, 16)] @ unit), abs=1e-5)
    assert results.path == "flat" and results.candidates == 0
    assert set(results.timings) == {"encode", "ann", "records"} and results.search_seconds > 0


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
    chips = make_chips(400)
    allowed = np.array([i for i, chip in enumerate(chips) if _matches(chip, filters)])
    query = vectors[250]
    results = searcher.search(vector_query(query, k=8, filters=filters))
    assert len(results) == min(8, len(allowed))
    assert ids(results) == brute_force(vectors, query, allowed, 8)
    assert results.path == "exact-filtered" and "filter" in results.timings


def _matches(chip: Chip, filters: Filters) -> bool:
    if filters.bbox is not None:
        minx, miny, maxx, maxy = filters.bbox
        if chip.bbox[2] < minx or chip.bbox[0] > maxx or chip.bbox[3] < miny or chip.bbox[1] > maxy:
            return False
    if filters.start and chip.date < filters.start:
        return False
    return not (filters.end and chip.date > filters.end)


def test_large_filtered_sets_go_through_faiss(searcher, vector_index, monkeypatch) -> None:
    monkeypatch.setattr("rsretrieve.search.EXACT_FILTER_LIMIT", 10)
    _, vectors = vector_index
    filters = Filters(start=date(2020, 2, 1))
    results = searcher.search(vector_query(vectors[5], k=5, filters=filters))
    allowed = np.arange(31, 400)
    assert ids(results) == brute_force(vectors, vectors[5], allowed, 5)
    assert results.path == "faiss-filtered"


def test_more_like_this_finds_the_chip_first(searcher) -> None:
    results = searcher.search(Query.build(like=[f"{42:016x}"], k=3))
    assert results.hits[0].chip.id == f"{42:016x}" and results.hits[0].score == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(QueryError, match="no chip with id"):
        searcher.search(Query.build(like=["does-not-exist"]))


def test_k_larger_than_the_index_returns_everything(searcher) -> None:
    assert len(searcher.search(Query.build(text="farmland", k=1000))) == 400


def test_bad_queries(searcher) -> None:
    with pytest.raises(QueryError, match="empty"):
        searcher.search(Query.build(text="   "))
    with pytest.raises(QueryError, match="at least 1"):
        searcher.search(Query.build(text="farmland", k=0))
    with pytest.raises(QueryError, match="query image not found"):
        searcher.search(Query.build(images=["/no/such/image.png"]))
    with pytest.raises(QueryError, match="this index's model gives 32"):
        searcher.search(Query.build(vectors=[np.ones(5)]))


def test_mixed_query_is_the_documented_combination(searcher, vector_index) -> None:
    """like A + like B (weight 2) − like C: the weighted sum of positives minus the mean of negatives."""
    _, vectors = vector_index
    a, b, c = (f"{i:016x}" for i in (10, 20, 30))
    query = Query(
        (Part("like", a), Part("like", b, weight=2.0)),
        (Part("like", c),),
        k=5,
    )
    stored = vector_codes.round_trip(vectors[[10, 20, 30]])  # the store's compact form
    stored /= np.linalg.norm(stored, axis=1, keepdims=True)  # each part normalised
    expected = stored[0] + 2 * stored[1] - stored[2]
    expected /= np.linalg.norm(expected)
    np.testing.assert_allclose(searcher.encode(query), expected, atol=1e-6)
    results = searcher.search(query)
    assert ids(results) == brute_force(vectors, expected, np.arange(400), 5)


def test_text_and_image_parts_are_encoded_by_the_model(searcher, tiny_model, tmp_path: Path) -> None:
    from PIL import Image

    pixels = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "q.png")
    text = tiny_model.encode_text(["farmland"])[0]
    image = tiny_model.encode_images([pixels])[0]
    expected = text / np.linalg.norm(text) + image / np.linalg.norm(image)
    expected /= np.linalg.norm(expected)
    for value in (str(tmp_path / "q.png"), (tmp_path / "q.png").read_bytes(), pixels):
        query = Query.build(text="farmland", images=[value])
        np.testing.assert_allclose(searcher.encode(query), expected, atol=1e-5)


def test_a_searcher_serves_many_threads_with_their_own_results(searcher, vector_index) -> None:
    from concurrent.futures import ThreadPoolExecutor

    _, vectors = vector_index
    queries = [vector_query(vectors[i], k=3) for i in range(0, 400, 25)]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(searcher.search, queries))
    for i, query, results in zip(range(0, 400, 25), queries, answers, strict=True):
        assert ids(results)[0] == i and results.query is query


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
    from rsretrieve.render import feature_collection

    results = searcher.search(Query.build(text="a river", k=2))
    record = results.hits[0].record()
    assert set(record) == {"score", "id", "path", "window", "bbox", "date", "crs", "item_id", "collection"}
    assert set(record["window"]) == {"col_off", "row_off", "width", "height"}
    assert len(record["bbox"]) == 4 and date.fromisoformat(record["date"])
    collection = feature_collection(results.hits)
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
    """The numpy filter over the filter columns agrees with SQL on the table, edges and missing values included."""
    import dataclasses

    chips = make_chips(60)
    for i in range(0, 60, 7):
        chips[i] = dataclasses.replace(chips[i], bbox=None)
    for i in range(0, 60, 5):
        chips[i] = dataclasses.replace(chips[i], date=None)
    db = tmp_path / "db"
    writer = StoreWriter.open(db, tiny_model)
    try:
        writer.append(chips, np.eye(60, tiny_model.dim, dtype=np.float32), new_files=2)
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
        np.testing.assert_array_equal(filters.matching(store.filter_columns()), expected)
    assert Filters().matching(store.filter_columns()).tolist() == list(range(60)) and not Filters().active


def test_filters_of_up_to_a_64th_of_a_large_index_are_scored_exactly() -> None:
    from rsretrieve.search import exact_filter_limit

    assert exact_filter_limit(0) == exact_filter_limit(100_000) == EXACT_FILTER_LIMIT == 4096
    assert exact_filter_limit(1_000_000) == 15_625
