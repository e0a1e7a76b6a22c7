"""IVF-PQ through the real store and Searcher: index choice, recall, exact scores, filters, reopen, append, retrain."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from types import SimpleNamespace

import faiss
import numpy as np
import pytest

from rsretrieve import ann
from rsretrieve.ann import AnnSettings
from rsretrieve.query import Filters, Query
from rsretrieve.search import Results, Searcher
from rsretrieve.store import ChipStore, StoreWriter, vector_codes
from tests.rsretrieve.test_search import make_chips

DIM = 32  # PQ8: 8 sub-quantisers of 4 dimensions
MODEL = SimpleNamespace(name="ivfpq-test", architecture="synthetic", checkpoint="seed0", dim=DIM)
THRESHOLD = 1000
COUNT = 3 * THRESHOLD
K = 10


def clustered(count: int, seed: int) -> np.ndarray:
    """Unit vectors around 64 fixed centres of uneven spread (different seeds, same mixture)."""
    mixture = np.random.default_rng(0)
    centres = mixture.normal(size=(64, DIM))
    spread = mixture.uniform(0.3, 1.0, 64)
    rng = np.random.default_rng(seed)
    cluster = rng.integers(64, size=count)
    vectors = centres[cluster] / np.sqrt(DIM) + spread[cluster, None] * rng.normal(size=(count, DIM)) / np.sqrt(DIM)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def append(writer: StoreWriter, vectors: np.ndarray) -> None:
    """Append ``vectors`` as the next chips (grid rows from test_search) in one batch."""
    start = writer.manifest.count
    chips = make_chips(start + len(vectors))[start:]
    writer.append(chips, vectors, new_files=1)


def build(db: Path, batches: list[np.ndarray], finish: bool = True) -> None:
    """A store with the flat → IVF-PQ switch at THRESHOLD, one append per batch."""
    writer = StoreWriter.open(db, MODEL, AnnSettings(flat_threshold=THRESHOLD))
    try:
        for batch in batches:
            append(writer, batch)
        if finish:
            writer.finish()
    finally:
        writer.close()


def exact_top(vectors: np.ndarray, query: np.ndarray, allowed: np.ndarray) -> list[int]:
    """Brute-force top-k fids among ``allowed``."""
    return ann.exact_search(vectors[allowed], allowed, query, K)[1][0].tolist()


def search(searcher: Searcher, query: np.ndarray, filters: Filters | None = None, **settings) -> Results:
    """The top k of a query vector."""
    return searcher.search(Query.build(vectors=[query], k=K, filters=filters or Filters(), **settings))


def found(searcher: Searcher, queries: np.ndarray, filters: Filters | None = None, **settings) -> list[list[int]]:
    """fids of the top k of each query, best first."""
    return [[int(hit.chip.id, 16) for hit in search(searcher, query, filters, **settings)] for query in queries]


def recall(results: list[list[int]], vectors: np.ndarray, queries: np.ndarray, allowed: np.ndarray) -> float:
    """Share of the exact top k among ``allowed`` that the results hold."""
    pairs = zip(results, queries, strict=True)
    hits = sum(len(set(got) & set(exact_top(vectors, query, allowed))) for got, query in pairs)
    return hits / (len(queries) * min(K, len(allowed)))


def matching(count: int, filters: Filters) -> np.ndarray:
    """fids of the first ``count`` grid chips that pass ``filters`` (the SQL's intersects and date range)."""
    chips = make_chips(count)
    minx, miny, maxx, maxy = filters.bbox or (-180.0, -90.0, 180.0, 90.0)
    start, end = filters.start or date.min, filters.end or date.max
    return np.array(
        [
            i
            for i, chip in enumerate(chips)
            if chip.bbox[2] >= minx and chip.bbox[0] <= maxx and chip.bbox[3] >= miny and chip.bbox[1] <= maxy
            if start <= chip.date <= end
        ],
        np.int64,
    )


@pytest.fixture(scope="module")
def ivfpq_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """3000 clustered chips appended 1000 at a time: IVF-PQ from the first batch on, retrained at finish."""
    db = tmp_path_factory.mktemp("ivfpq") / "db"
    vectors = clustered(COUNT, seed=1)
    build(db, np.split(vectors, 3))
    return db, vectors


@pytest.fixture(scope="module")
def searcher(ivfpq_index) -> Searcher:
    return Searcher(ivfpq_index[0], model=MODEL)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    """Held-out vectors of the same mixture."""
    return clustered(100, seed=2)


def test_auto_index_is_flat_below_the_threshold_and_ivfpq_at_it(tmp_path: Path) -> None:
    db = tmp_path / "db"
    vectors = clustered(THRESHOLD + 1, seed=3)
    writer = StoreWriter.open(db, MODEL, AnnSettings(flat_threshold=THRESHOLD))
    try:
        kinds = []  # after 999, 1000 and 1001 chips
        for batch in (vectors[: THRESHOLD - 1], vectors[THRESHOLD - 1 : THRESHOLD], vectors[THRESHOLD:]):
            append(writer, batch)
            kinds.append(ChipStore(db).info()["index_type"])
    finally:
        writer.close()
    assert kinds == ["flat", "ivfpq", "ivfpq"]
    info = ChipStore(db).info()
    assert info["rows"] == info["index_vectors"] == info["manifest_count"] == THRESHOLD + 1


def test_finish_retrains_when_the_lists_are_four_times_too_few(ivfpq_index) -> None:
    info = ChipStore(ivfpq_index[0]).info()
    wanted = ann.choose_params(COUNT, DIM, "ivfpq")
    assert ann.choose_params(THRESHOLD, DIM, "ivfpq").nlist * 4 == wanted.nlist  # trained at 1000, too few at 3000
    assert info["index_type"] == "ivfpq"
    assert (info["index"]["nlist"], info["index"]["m"]) == (wanted.nlist, wanted.m)
    assert info["rows"] == info["unique_ids"] == info["index_vectors"] == info["manifest_count"] == COUNT


def test_recall_at_10_against_exact_search(searcher, ivfpq_index, queries) -> None:
    _, vectors = ivfpq_index
    assert recall(found(searcher, queries), vectors, queries, np.arange(COUNT)) >= 0.9


def test_reranked_scores_are_inner_products_with_the_stored_vectors(searcher, ivfpq_index, queries) -> None:
    _, vectors = ivfpq_index
    for query in queries[:10]:
        results = search(searcher, query)
        scores = [hit.score for hit in results]
        assert len(results) == K and scores == sorted(scores, reverse=True)
        stored = vector_codes.round_trip(vectors[[int(hit.chip.id, 16) for hit in results]])
        np.testing.assert_allclose(scores, stored @ query, atol=1e-5)  # the stored form (8 + 4 bits), decoded
        assert results.path == "ivfpq" and K < results.candidates <= K * 100  # what the probed lists hold
        assert {"ann", "rerank"} <= set(results.timings)


def test_rerank_sets_how_many_candidates_are_scored_exactly(searcher, ivfpq_index, queries) -> None:
    _, vectors = ivfpq_index
    assert search(searcher, queries[0], rerank=3).candidates == 3 * K
    few = recall(found(searcher, queries, rerank=1), vectors, queries, np.arange(COUNT))
    many = recall(found(searcher, queries, rerank=50), vectors, queries, np.arange(COUNT))
    assert few < many  # PQ order alone (k candidates) misses neighbours that exact re-rank of 50·k recovers


def test_a_larger_archive_gets_at_least_one_candidate_per_so_many_chips(searcher, queries, monkeypatch) -> None:
    monkeypatch.setattr("rsretrieve.search.CHIPS_PER_CANDIDATE", 50)  # as if the 3,000 chips were 60 times more
    assert search(searcher, queries[0], rerank=3).candidates == COUNT // 50
    monkeypatch.setattr("rsretrieve.search.MAX_POOL_CANDIDATES", 40)
    assert search(searcher, queries[0], rerank=3).candidates == 40
    assert search(searcher, queries[0], rerank=5).candidates == 5 * K  # k × factor when that is more


def test_nprobe_sets_how_many_lists_are_searched(searcher, ivfpq_index, queries) -> None:
    _, vectors = ivfpq_index
    nlist = ChipStore(ivfpq_index[0]).info()["index"]["nlist"]
    one = recall(found(searcher, queries, nprobe=1), vectors, queries, np.arange(COUNT))
    every = recall(found(searcher, queries, nprobe=nlist), vectors, queries, np.arange(COUNT))
    assert one < every and every >= 0.95


FILTERS = [
    Filters(bbox=(0.005, 0.005, 0.095, 0.295)),  # 10 columns × 30 rows: 300 chips
    Filters(bbox=(0.105, 0.0, 0.2, 3.0), start=date(2023, 1, 1), end=date(2026, 12, 31)),  # 731 chips
    Filters(start=date(2020, 1, 3), end=date(2020, 1, 17)),  # 15 chips
    Filters(bbox=(0.0, 0.0, 0.04, 0.0)),  # 5 chips: fewer than k
]


@pytest.mark.parametrize("exact_limit", [None, 0], ids=["exact-path", "faiss-path"])
@pytest.mark.parametrize("filters", FILTERS)
def test_filters_return_only_matching_chips_and_k_of_them(
    searcher, ivfpq_index, queries, monkeypatch, filters: Filters, exact_limit: int | None
) -> None:
    if exact_limit is not None:
        monkeypatch.setattr("rsretrieve.search.EXACT_FILTER_LIMIT", exact_limit)
        monkeypatch.setattr("rsretrieve.search.EXACT_FILTER_SHARE", 2**62)
    _, vectors = ivfpq_index
    allowed = matching(COUNT, filters)
    results = found(searcher, queries[:20], filters)
    path = search(searcher, queries[0], filters).path
    assert path == ("exact-filtered" if exact_limit is None else "faiss-filtered")
    assert all(set(got) <= set(allowed.tolist()) and len(got) == min(K, len(allowed)) for got in results)
    # exact scoring of the matches reads the 8-bit vectors: near-ties of these 32-d vectors may swap
    assert recall(results, vectors, queries[:20], allowed) >= (0.97 if exact_limit is None else 0.9)


def test_index_reopened_from_disk_answers_the_same(tmp_path: Path, queries) -> None:
    db = tmp_path / "db"
    vectors = clustered(THRESHOLD + 500, seed=4)
    writer = StoreWriter.open(db, MODEL, AnnSettings(flat_threshold=THRESHOLD))
    try:
        append(writer, vectors)
        in_memory = ann.search(writer.index, queries, 50)
    finally:
        writer.close()
    reopened = ChipStore(db).index
    assert ann.describe(reopened) == ann.describe(writer.index)
    for got, want in zip(ann.search(reopened, queries, 50), in_memory, strict=True):
        np.testing.assert_array_equal(got, want)


def coarse_centroids(db: Path) -> np.ndarray:
    index = ChipStore(db).index  # keeps the index alive while its quantizer is read
    quantizer = faiss.extract_index_ivf(index).quantizer
    return quantizer.reconstruct_n(0, quantizer.ntotal)


def test_append_without_retrain_keeps_earlier_results(tmp_path: Path, queries) -> None:
    db = tmp_path / "db"
    build(db, [clustered(THRESHOLD, seed=5)])
    before = ChipStore(db).info()["index"]
    centroids = coarse_centroids(db)
    first = [search(Searcher(db, model=MODEL), query).hits for query in queries[:10]]
    far = -queries[:10].mean(axis=0)  # new chips all point away from the queries: none can enter their top k
    build(db, [np.tile(far / np.linalg.norm(far), (1000, 1)).astype(np.float32)])
    after = ChipStore(db).info()
    assert after["index"]["nlist"] == before["nlist"] and after["index_vectors"] == THRESHOLD + 1000
    np.testing.assert_array_equal(coarse_centroids(db), centroids)
    searcher = Searcher(db, model=MODEL)
    assert [search(searcher, query).hits for query in queries[:10]] == first


def test_retrain_keeps_counts_consistent(tmp_path: Path, queries) -> None:
    db = tmp_path / "db"
    vectors = clustered(THRESHOLD + 1000, seed=6)
    build(db, [vectors[:THRESHOLD], vectors[THRESHOLD:]], finish=False)
    writer = StoreWriter.open(db, MODEL, AnnSettings(flat_threshold=THRESHOLD))
    try:
        writer.retrain()
    finally:
        writer.close()
    info = ChipStore(db).info()
    assert info["rows"] == info["unique_ids"] == info["index_vectors"] == info["manifest_count"] == len(vectors)
    assert info["index"]["nlist"] == ann.choose_params(len(vectors), DIM, "ivfpq").nlist
    assert recall(found(Searcher(db, model=MODEL), queries), vectors, queries, np.arange(len(vectors))) >= 0.9


def test_a_large_k_gets_every_rank_exactly(searcher, ivfpq_index, queries, monkeypatch) -> None:
    stored = searcher.current().vectors(np.arange(COUNT))  # the exact ranking of the vectors as stored (8-bit)
    wanted = ann.exact_search(stored, np.arange(COUNT), queries[0], COUNT)[1][0].tolist()
    results = searcher.search(Query.build(vectors=[queries[0]], k=2500))  # more than the probed lists hold: a scan
    assert results.path == "exact-scan" and [int(hit.chip.id, 16) for hit in results] == wanted[:2500]
    assert results.next_offset == 2500
    ranked = searcher.rank(Query.build(vectors=[queries[0]], k=COUNT))
    assert len(ranked) == COUNT and not ranked.more and list(ranked.fids) == wanted
    monkeypatch.setattr("rsretrieve.search.SCAN_BLOCK", 500)  # k·rerank candidates ≥ half the index: scan at once
    assert searcher.search(Query.build(vectors=[queries[1]], k=20)).path == "exact-scan"


def test_pages_of_an_ivfpq_search_are_ranks_of_one_search(searcher, queries) -> None:
    whole = searcher.search(Query.build(vectors=[queries[2]], k=150))
    page = searcher.search(Query.build(vectors=[queries[2]], k=50), offset=100)
    assert page.path == "ivfpq" and page.offset == 100 and page.next_offset == 150
    assert [(hit.chip.id, hit.score) for hit in page] == [(hit.chip.id, hit.score) for hit in whole.hits[100:]]
