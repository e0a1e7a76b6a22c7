"""Tests for rsretrieve.ann on small seeded Gaussian-mixture data (20k × 64, IVF512,PQ8)."""

from __future__ import annotations

import dataclasses

import faiss
import numpy as np
import pytest

from rsretrieve import ann

N, DIM, N_QUERIES, K = 20_000, 64, 50, 10
# choose_params' nlist for N, with PQ8 rather than its PQ16: PQ training dominates and is 4× cheaper
PARAMS = dataclasses.replace(ann.choose_params(N, DIM, kind="ivfpq"), m=8)


def clustered(n: int, dim: int, seed: int = 0, n_centres: int = 200, noise: float = 0.35):
    """L2-normalised points around `n_centres` random unit centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_centres, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    points = centres[rng.integers(0, n_centres, n)]
    points = points + noise * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    return _normalise(points)


def near(points: np.ndarray, n: int, seed: int = 1, noise: float = 0.2) -> np.ndarray:
    """Queries drawn near randomly chosen data points."""
    rng = np.random.default_rng(seed)
    picked = points[rng.integers(0, len(points), n)]
    return _normalise(picked + noise * rng.standard_normal(picked.shape) / np.sqrt(points.shape[1]))


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute_force(points: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference top-k by numpy: (scores, row ids)."""
    scores = queries @ points.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of the true neighbours found, per query."""
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


@pytest.fixture(scope="module")
def points() -> np.ndarray:
    return clustered(N, DIM)


@pytest.fixture(scope="module")
def queries(points: np.ndarray) -> np.ndarray:
    return near(points, N_QUERIES)


@pytest.fixture(scope="module")
def trained_empty(points: np.ndarray) -> faiss.Index:
    """A trained, empty IVF-PQ index (clone it before adding)."""
    index = ann.new_index(DIM, PARAMS)
    ann.train(index, points[: ann.max_training_samples(PARAMS)])
    return index


@pytest.fixture(scope="module")
def ivfpq(trained_empty: faiss.Index, points: np.ndarray) -> faiss.Index:
    index = faiss.clone_index(trained_empty)
    ann.add(index, points, np.arange(N))
    return index


@pytest.fixture(scope="module")
def flat(points: np.ndarray) -> faiss.Index:
    index = ann.new_index(DIM, ann.choose_params(N, DIM))
    ann.train(index, points)
    ann.add(index, points, np.arange(N))
    return index


# choose_params


@pytest.mark.parametrize(
    ("n", "kind"),
    [(0, "flat"), (49_999, "flat"), (50_000, "ivfpq"), (1_000_000, "ivfpq")],
)
def test_choose_params_switches_at_threshold(n: int, kind: str) -> None:
    assert ann.choose_params(n, 512).kind == kind


def test_choose_params_kind_and_threshold_overrides() -> None:
    assert ann.choose_params(1_000_000, 512, kind="flat") == ann.IndexParams(kind="flat")
    assert ann.choose_params(5_000, 512, kind="ivfpq").kind == "ivfpq"
    assert ann.choose_params(5_000, 512, flat_threshold=1_000).kind == "ivfpq"
    assert ann.choose_params(1_000_000, 512, nprobe=7).nprobe == 7


@pytest.mark.parametrize("n", [300, 1_000, 20_000, 50_000, 100_000, 1_000_000, 10_000_000])
@pytest.mark.parametrize("dim", [64, 512, 768, 1024])
def test_choose_params_are_valid(n: int, dim: int) -> None:
    params = ann.choose_params(n, dim, kind="ivfpq")
    samples = ann.max_training_samples(params)
    assert dim % params.m == 0 and dim // params.m >= 4
    assert params.m <= 64 and params.nbits == 8
    assert params.nlist >= 1 and params.nlist & (params.nlist - 1) == 0
    assert samples >= 39 * params.nlist
    assert n >= 39 * params.nlist or params.nlist == 1
    assert samples <= ann.MAX_TRAINING_SAMPLES
    assert 1 <= params.nprobe <= params.nlist


def test_choose_params_for_design_target() -> None:
    params = ann.choose_params(1_000_000, 512)
    assert (params.nlist, params.m, params.nbits, params.nprobe) == (4096, 64, 8, 32)  # nprobe: nlist/128
    assert ann.default_nprobe(1024) == 8 and ann.default_nprobe(16) == 8 and ann.default_nprobe(4) == 4
    assert params.m + ann.ID_BYTES <= 80
    assert ann.max_training_samples(ann.IndexParams(kind="flat")) == 0


def test_choose_params_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="256"):
        ann.choose_params(100, 64, kind="ivfpq")
    with pytest.raises(ValueError, match="kind"):
        ann.choose_params(100, 64, kind="hnsw")
    with pytest.raises(ValueError, match="nlist"):
        ann.IndexParams(kind="ivfpq")
    assert ann.IndexParams(kind="ivfpq", nlist=8, m=4).as_dict() == {
        "kind": "ivfpq",
        "nlist": 8,
        "m": 4,
        "nbits": 8,
        "nprobe": None,
    }


# search


def test_flat_search_equals_brute_force(flat, points, queries) -> None:
    scores, ids = ann.search(flat, queries, K)
    ref_scores, ref_ids = brute_force(points, queries, K)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    assert recall(ids, ref_ids) == 1.0


def test_flat_search_pads_when_k_exceeds_ntotal(points) -> None:
    index = ann.new_index(DIM, ann.IndexParams(kind="flat"))
    ann.add(index, points[:3], np.array([10, 11, 12]))
    scores, ids = ann.search(index, points[:1], 5)
    assert sorted(ids[0, :3]) == [10, 11, 12]
    assert list(ids[0, 3:]) == [-1, -1] and np.isneginf(scores[0, 3:]).all()


def test_ivfpq_recall_after_exact_rerank(ivfpq, points, queries) -> None:
    _, candidates = ann.search(ivfpq, queries, K * 10)
    reranked = np.stack(
        [ann.exact_search(points[c], c, q[None], K)[1][0] for c, q in zip(candidates, queries, strict=True)]
    )
    assert recall(reranked, brute_force(points, queries, K)[1]) >= 0.9


def test_search_nprobe_override(ivfpq, queries) -> None:
    everything = ann.search(ivfpq, queries, K, nprobe=ann.describe(ivfpq)["nlist"])
    assert not np.array_equal(ann.search(ivfpq, queries, K, nprobe=1)[1], everything[1])


@pytest.mark.parametrize("index_name", ["flat", "ivfpq"])
@pytest.mark.parametrize("n_allowed", [10_000, 400, 25, 3])
def test_allowed_ids_restrict_and_fill_k(request, index_name, n_allowed, queries) -> None:
    index = request.getfixturevalue(index_name)
    allowed = np.random.default_rng(n_allowed).choice(N, n_allowed, replace=False)
    scores, ids = ann.search(index, queries, K, allowed_ids=allowed)
    found = ids[ids >= 0]
    assert np.isin(found, allowed).all()
    assert ((ids >= 0).sum(axis=1) == min(K, n_allowed)).all()
    assert np.isneginf(scores[ids < 0]).all()


def test_filtered_ivfpq_retries_short_queries_over_all_lists(ivfpq, queries, monkeypatch) -> None:
    monkeypatch.setattr(ann, "FILTER_CANDIDATE_FACTOR", 0)
    monkeypatch.setattr(ann, "MIN_FILTER_CANDIDATES", 0)  # probe only nprobe lists: most queries come up short
    allowed = np.arange(0, N, N // 25)
    _, ids = ann.search(ivfpq, queries, K, allowed_ids=allowed)
    assert np.isin(ids, allowed).all()


def test_filtered_flat_search_is_exact(flat, points, queries) -> None:
    allowed = np.arange(0, N, 7)
    _, ids = ann.search(flat, queries, K, allowed_ids=allowed)
    _, exact_ids = ann.exact_search(points[allowed], allowed, queries, K)
    assert recall(ids, exact_ids) == 1.0


def test_allowed_ids_ignore_unknown_and_empty(ivfpq, queries) -> None:
    _, ids = ann.search(ivfpq, queries, K, allowed_ids=np.array([-5, 3, 3, N + 100]))
    assert (ids[:, 0] == 3).all() and (ids[:, 1:] == -1).all()
    scores, ids = ann.search(ivfpq, queries, K, allowed_ids=np.array([], dtype=np.int64))
    assert (ids == -1).all() and np.isneginf(scores).all()


def test_add_without_retrain_keeps_earlier_results(trained_empty, points, queries) -> None:
    index = faiss.clone_index(trained_empty)
    first, second = np.arange(N // 2), np.arange(N // 2, N)
    ann.add(index, points[first], first)
    before = ann.search(index, queries, K, allowed_ids=first)
    centroids = index.quantizer.reconstruct_n(0, index.nlist)
    ann.add(index, points[second], second)
    after = ann.search(index, queries, K, allowed_ids=first)
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(index.quantizer.reconstruct_n(0, index.nlist), centroids)
    assert index.ntotal == N
    assert N // 2 + 1 in ann.search(index, points[N // 2 + 1], K)[1][0]


def test_train_is_noop_for_flat_and_checks_sample_size(points) -> None:
    index = ann.new_index(DIM, ann.IndexParams(kind="flat"))
    ann.train(index, points[:1])
    assert index.is_trained
    ivf = ann.new_index(DIM, ann.IndexParams(kind="ivfpq", nlist=16, m=8))
    with pytest.raises(ValueError, match="at least 256"):
        ann.train(ivf, points[:100])


# persistence and description


@pytest.mark.parametrize("index_name", ["flat", "ivfpq"])
def test_write_read_roundtrip(request, index_name, queries, tmp_path) -> None:
    index = request.getfixturevalue(index_name)
    path = tmp_path / "chips.faiss"
    path.write_bytes(b"an older index")
    ann.write_index(index, path)
    loaded = ann.read_index(path)
    assert [p.name for p in tmp_path.iterdir()] == ["chips.faiss"]
    assert ann.describe(loaded) == ann.describe(index)
    for a, b in zip(ann.search(loaded, queries, K), ann.search(index, queries, K), strict=True):
        np.testing.assert_array_equal(a, b)


def test_nprobe_survives_write_read(trained_empty, tmp_path) -> None:
    index = faiss.clone_index(trained_empty)
    faiss.extract_index_ivf(index).nprobe = 7
    ann.write_index(index, tmp_path / "i.faiss")
    assert ann.describe(ann.read_index(tmp_path / "i.faiss"))["nprobe"] == 7


@pytest.mark.parametrize("damage", ["missing", "garbage", "truncated", "empty"])
def test_read_index_errors(flat, tmp_path, damage) -> None:
    path = tmp_path / "chips.faiss"
    if damage != "missing":
        ann.write_index(flat, path)
        data = path.read_bytes()
        cut = {"garbage": b"\x00not a faiss index" * 10, "truncated": data[: len(data) // 2]}
        path.write_bytes(cut.get(damage, b""))
    with pytest.raises(ann.AnnIndexError) as info:
        ann.read_index(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_describe(flat, ivfpq) -> None:
    assert ann.describe(flat) == {
        "index_type": "flat",
        "ntotal": N,
        "dim": DIM,
        "nlist": None,
        "m": None,
        "nbits": None,
        "nprobe": None,
        "bytes_per_vector": 4 * DIM + 8,
    }
    assert ann.describe(ivfpq) == {
        "index_type": "ivfpq",
        "ntotal": N,
        "dim": DIM,
        "nlist": PARAMS.nlist,
        "m": PARAMS.m,
        "nbits": 8,
        "nprobe": PARAMS.nprobe,
        "bytes_per_vector": PARAMS.m + 8,
    }


# exact_search


def test_exact_search_breaks_ties_by_id() -> None:
    vectors = np.array([[1, 0], [0, 1], [1, 0], [1, 0], [0.6, 0.8]], dtype=np.float32)
    ids = np.array([42, 7, 9, 3, 100])
    scores, found = ann.exact_search(vectors, ids, np.array([[1, 0]], dtype=np.float32), 4)
    assert found.tolist() == [[3, 9, 42, 100]]
    np.testing.assert_allclose(scores, [[1, 1, 1, 0.6]])
    _, found = ann.exact_search(vectors, ids, np.array([[1, 0]], dtype=np.float32), 2)
    assert found.tolist() == [[3, 9]]


def test_exact_search_pads_and_matches_brute_force(points, queries) -> None:
    scores, ids = ann.exact_search(points[:5], np.arange(5), queries, 8)
    assert (ids[:, 5:] == -1).all() and np.isneginf(scores[:, 5:]).all()
    scores, ids = ann.exact_search(points, np.arange(N), queries, K)
    ref_scores, ref_ids = brute_force(points, queries, K)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-6)


def test_exact_search_of_one_query_matches_brute_force(points, queries) -> None:
    for query in queries[:3]:  # one query: FAISS's kernel on this thread instead of numpy's matrix product
        scores, ids = ann.exact_search(points, np.arange(N), query[None], K)
        ref_scores, ref_ids = brute_force(points, query[None], K)
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_allclose(scores, ref_scores, rtol=1e-6)
    with pytest.raises(ValueError, match="dimension"):
        ann.exact_search(points[:, :8], np.arange(N), queries[:1], K)


def test_one_query_searches_on_the_calling_thread_and_restores_the_setting(flat, ivfpq, points, queries) -> None:
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(2)
    try:
        for index in (flat, ivfpq):
            one = ann.search(index, queries[:1], K)
            assert faiss.omp_get_max_threads() == 2  # limited to one thread within the call only
            np.testing.assert_array_equal(one[1], ann.search(index, queries[:2], K)[1][:1])  # same ids as batched
    finally:
        faiss.omp_set_num_threads(before)


# GPU paths, simulated: FAISS's GPU calls are replaced by CPU clones, so the logic around them runs on CPU


class FakeGpu:
    """Stands in for FAISS's GPU API; records what was sent to the 'GPU'."""

    def __init__(self) -> None:
        self.cloned: list[tuple[str, bool]] = []

    def index_cpu_to_gpu(self, resources, device: int, index: faiss.Index, options=None) -> faiss.Index:
        assert device == 0
        use_float16 = bool(options.useFloat16) if options is not None else False
        self.cloned.append((type(faiss.downcast_index(index)).__name__, use_float16))
        return faiss.clone_index(index)


@pytest.fixture
def fake_gpu(monkeypatch) -> FakeGpu:
    gpu = FakeGpu()
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "StandardGpuResources", lambda: object(), raising=False)
    monkeypatch.setattr(faiss, "GpuClonerOptions", lambda: type("Options", (), {"useFloat16": False})(), raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", gpu.index_cpu_to_gpu, raising=False)
    return gpu


def test_an_index_trained_on_a_gpu_is_saved_in_cpu_form_and_reopens(fake_gpu, points, queries, tmp_path) -> None:
    index = ann.new_index(DIM, PARAMS)
    ann.train(index, points[: ann.max_training_samples(PARAMS)])
    assert fake_gpu.cloned == [("IndexFlatIP", False)]  # the coarse k-means assigned on the GPU
    assert faiss.extract_index_ivf(index).clustering_index is None  # no GPU object left inside the index
    ann.add(index, points, np.arange(N))
    ann.write_index(index, tmp_path / "gpu.faiss")
    reopened = ann.read_index(tmp_path / "gpu.faiss")
    assert ann.describe(reopened) == ann.describe(index)
    _, truth = brute_force(points, queries, K)
    _, found = ann.search(reopened, queries, 10 * K)
    candidates = [set(row) for row in found]
    assert np.mean([len(set(t) & c) / K for t, c in zip(truth, candidates, strict=True)]) >= 0.9


def test_gpu_serves_unfiltered_searches_from_one_cached_clone(fake_gpu, ivfpq, points, queries) -> None:
    expected = ann.search(ivfpq, queries, K)  # (the fake GPU answers as the CPU index would)
    for _ in range(2):
        got = ann.search(ivfpq, queries, K)
        np.testing.assert_array_equal(got[1], expected[1])
    assert fake_gpu.cloned == [("IndexIVFPQ", False)]  # PQ8: float32 lookup tables; cloned once
    ann.search(ivfpq, queries, K, allowed_ids=np.arange(100))  # ID selectors run on the CPU
    ann.search(ivfpq, queries, ann.GPU_MAX_K + 1)  # beyond the GPU's k limit: CPU
    assert len(fake_gpu.cloned) == 1
    ann.add(index := faiss.clone_index(ivfpq), points[:5], np.arange(N, N + 5))
    ann.search(index, queries, K)
    ann.search(index, queries, K)
    assert len(fake_gpu.cloned) == 2  # another index: its own clone


def test_gpu_clone_uses_float16_lookup_tables_beyond_48_sub_quantisers(fake_gpu, points) -> None:
    params = ann.IndexParams(kind="ivfpq", nlist=16, m=64, nprobe=4)
    index = ann.new_index(DIM, params)
    ann.train(index, points[:4096])
    ann.add(index, points[:1000], np.arange(1000))
    ann.search(index, points[:2], K)
    assert fake_gpu.cloned[-1] == ("IndexIVFPQ", True)


def test_an_empty_ivfpq_is_filled_through_a_gpu_clone(trained_empty, ivfpq, points, queries, monkeypatch) -> None:
    # No GPU here: CPU copies stand in for FAISS's GPU clones; the branch, the copy back and the merge are tested
    clones = []

    def to_gpu(resources: object, device: int, index: faiss.Index, options: object = None) -> faiss.Index:
        clones.append(index.ntotal)
        return faiss.clone_index(index)

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "StandardGpuResources", lambda: None)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", to_gpu)
    monkeypatch.setattr(faiss, "index_gpu_to_cpu", faiss.clone_index)
    monkeypatch.setattr(ann, "GPU_ADD_MIN_VECTORS", 100)
    index = faiss.clone_index(trained_empty)
    ann.add(index, points, np.arange(N))  # empty and large enough: filled on the "GPU"
    assert clones == [0] and index.ntotal == N
    for list_no in range(index.nlist):  # the same lists, in the same order, as the CPU's add
        assert index.invlists.list_size(list_no) == ivfpq.invlists.list_size(list_no)
    np.testing.assert_array_equal(ann.search(index, queries, K)[1], ann.search(ivfpq, queries, K)[1])
    clones.clear()  # (the searches cloned the index too, as with a GPU)
    ann.add(index, points[:200], np.arange(N, N + 200))  # not empty: the CPU adds, nothing is cloned
    assert clones == [] and index.ntotal == N + 200
