"""The FAISS layer: choose, build, train, fill, search and persist the ANN index (docs/architecture.md §5).

Vectors are L2-normalised float32 compared by inner product; ids are int64 row ordinals assigned by
the store. Every index this module hands out is in CPU form: GPUs are used for training and, through
a clone cached on the index object, for unfiltered search. LanceDB is not touched here.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import faiss
import numpy as np

from rsretrieve.errors import UserError
from rsretrieve.files import atomic_write

DEFAULT_FLAT_THRESHOLD = 50_000
MIN_IVFPQ_VECTORS = 2**8  # an 8-bit PQ needs 256 training vectors
NLIST_FACTOR = 4
MIN_POINTS_PER_CENTROID = 39
MAX_POINTS_PER_CENTROID = 256
MAX_TRAINING_SAMPLES = 2**18
MAX_NLIST = 4096
MAX_CODE_BYTES = 64
MIN_SUB_DIM = 4
GPU_PQ_CODE_BYTES = (1, 2, 3, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 96)
GPU_FLOAT32_MAX_M = 48
GPU_MAX_K = 2048
GPU_ADD_MIN_VECTORS = 16_384  # fewer are encoded on the CPU: the GPU's set-up would cost more than it saves
FILTER_CANDIDATE_FACTOR = 2
MIN_FILTER_CANDIDATES = 2048
ID_BYTES = 8
EXACT_CHUNK_ELEMENTS = 2**24
_GPU_CLONES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # CPU index → (ntotal, GPU clone, resources)


class AnnIndexError(UserError):
    """An ANN index file is missing or cannot be read."""


@dataclass(frozen=True)
class IndexParams:
    """How to build the ANN index: exact `flat` or `ivfpq` (IVF{nlist},PQ{m}x{nbits})."""

    kind: Literal["flat", "ivfpq"]
    nlist: int | None = None
    m: int | None = None
    nbits: int = 8
    nprobe: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("flat", "ivfpq"):
            raise ValueError(f"unknown index kind {self.kind!r} (flat or ivfpq)")
        if self.kind == "ivfpq" and not (self.nlist and self.m):
            raise ValueError("an ivfpq index needs nlist and m")

    def as_dict(self) -> dict:
        """Plain dict, e.g. for the manifest."""
        return asdict(self)


@dataclass(frozen=True)
class AnnSettings:
    """Which FAISS index the writer builds: ``auto`` (flat below ``flat_threshold`` chips, else IVF-PQ), ``flat`` or
    ``ivfpq``, and the nprobe stored with it (None: ``default_nprobe``). For very large archives: a fixed number of
    IVF lists (None: ``choose_nlist``) and a cap on the k-means sample (None: ``max_training_samples``)."""

    kind: str = "auto"
    flat_threshold: int = DEFAULT_FLAT_THRESHOLD
    nprobe: int | None = None
    nlist: int | None = None
    training_samples: int | None = None


def choose_params(
    n: int,
    dim: int,
    kind: str = "auto",
    flat_threshold: int = DEFAULT_FLAT_THRESHOLD,
    nprobe: int | None = None,
    nlist: int | None = None,
) -> IndexParams:
    """Index parameters for `n` vectors of `dim` dimensions.

    - kind "auto": `flat` (exact IndexFlatIP) below `flat_threshold` vectors, `ivfpq` at or above.
    - nlist = 4·√n rounded to the nearest power of two (1M → 4096, 100k → 1024, 50k → 1024), at most
      4096 and at most n/39 (so the sample of `max_training_samples` ≥ 39·nlist stays ≤ 2^18 and
      exists). The factor is the low end of FAISS's 4–16·√n: 16·√n would mean 16384 lists at 1M,
      k-means on ≥ 640k samples (16× the training cost of 4096 lists) and a 4× dearer coarse search,
      while lists of ~250 vectors at 1M keep each probe cheap and the recall target is reached by
      probing more lists (see `default_nprobe`).
    - m = the largest number of PQ sub-quantisers with dim % m == 0, m ≤ 64 bytes per code,
      dim/m ≥ 4 dimensions each and a code length the GPU IVF-PQ supports (512-d → 64, i.e. 8
      dimensions per byte; 768 → 64; 64 → 16); nbits = 8. Codes plus 8-byte ids: 72 bytes/vector.
    - nprobe = `default_nprobe(nlist)` = max(8, nlist/128) unless given.
    - `nlist` given: that many lists, as long as n/39 vectors can train them (else as many as can).
    """
    if kind == "auto":
        kind = "flat" if n < flat_threshold else "ivfpq"
    if kind == "flat":
        return IndexParams(kind="flat")
    if kind != "ivfpq":
        raise ValueError(f"unknown index kind {kind!r} (auto, flat or ivfpq)")
    if n < MIN_IVFPQ_VECTORS:
        raise ValueError(f"an ivfpq index needs at least 256 vectors to train, got {n}")
    nlist = choose_nlist(n) if nlist is None else max(1, min(nlist, n // MIN_POINTS_PER_CENTROID))
    return IndexParams(
        kind="ivfpq",
        nlist=nlist,
        m=choose_m(dim),
        nbits=8,
        nprobe=nprobe or default_nprobe(nlist),
    )


def choose_nlist(n: int) -> int:
    """4·√n rounded to a power of two, capped at MAX_NLIST and at n/39 (see `choose_params`)."""
    nearest = 2 ** round(math.log2(NLIST_FACTOR * math.sqrt(n)))
    trainable = 2 ** int(math.log2(max(n // MIN_POINTS_PER_CENTROID, 1)))
    return max(1, min(nearest, MAX_NLIST, trainable))


def choose_m(dim: int) -> int:
    """Largest GPU-supported PQ code length ≤ 64 bytes dividing dim with ≥ 4 dimensions per byte."""
    fits = [m for m in GPU_PQ_CODE_BYTES if m <= MAX_CODE_BYTES and dim % m == 0 and dim // m >= MIN_SUB_DIM]
    return max(fits, default=1)


def default_nprobe(nlist: int) -> int:
    """nlist/128, at least 8 (and at most nlist): 32 lists of 4096 at 1M and 10M, 8 of 1024 at 100k.

    Measured on seeded 512-d Gaussian mixtures (2-core CPU): with 1,000 candidates re-ranked exactly, recall@10 at
    1M is 0.987 at nprobe 16, 32 and 64 of 4096 lists (benchmarks/results/speed-1m-nprobe-cpu.json, QPS 808 at 32
    against 576 at 64); at 2M the true top 10 lie in the 32 probed lists of 4096 every time and in 16 of them 99.85 %
    (recall-stages-cpu.json). nlist/128 is one doubling past that knee; the FAISS stage grows with nprobe.
    """
    return min(nlist, max(8, nlist // 128))


def max_training_samples(params: IndexParams) -> int:
    """How many vectors to sample for training: 0 for flat.

    ≥ 39·nlist (FAISS's minimum for k-means) and up to 256 per centroid of either the coarse
    quantiser or a PQ sub-quantiser (FAISS subsamples beyond that), capped at 2^18.
    """
    if params.kind == "flat":
        return 0
    useful = MAX_POINTS_PER_CENTROID * max(params.nlist, 2**params.nbits)
    return max(MIN_POINTS_PER_CENTROID * params.nlist, min(useful, MAX_TRAINING_SAMPLES))


def new_index(dim: int, params: IndexParams) -> faiss.Index:
    """An empty index: IndexIDMap2(IndexFlatIP) for flat, an untrained IVF-PQ (inner product) otherwise."""
    if params.kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    description = f"IVF{params.nlist},PQ{params.m}x{params.nbits}np"
    index = faiss.index_factory(dim, description, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    ivf.nprobe = params.nprobe or default_nprobe(params.nlist)
    # Small archives train on few points per centroid by design; FAISS would print a warning per PQ sub-space.
    ivf.cp.min_points_per_centroid = ivf.pq.cp.min_points_per_centroid = 1
    return index


def train(index: faiss.Index, sample: np.ndarray) -> None:
    """Train `index` in place on `sample`; a no-op for an index already trained (flat always is).

    With a GPU the coarse k-means (the dominant cost) runs there through the IVF's clustering index;
    the PQ codebooks are trained on the CPU. The index stays in CPU form.
    """
    if index.is_trained:
        return
    sample = _as_matrix(sample)
    ivf = _ivf(index)
    needed = max(ivf.nlist, 2**ivf.pq.nbits)
    if len(sample) < needed:
        raise ValueError(f"training needs at least {needed} vectors, got {len(sample)}")
    if faiss.get_num_gpus() > 0:
        _train_with_gpu_kmeans(index, sample)
    else:
        index.train(sample)


def _train_with_gpu_kmeans(index: faiss.Index, sample: np.ndarray) -> None:
    """Train with the coarse k-means assigning on GPU 0."""
    ivf = faiss.extract_index_ivf(index)
    resources = faiss.StandardGpuResources()
    gpu_flat = faiss.index_cpu_to_gpu(resources, 0, faiss.IndexFlatIP(ivf.d))
    ivf.clustering_index = gpu_flat
    try:
        index.train(sample)
    finally:
        ivf.clustering_index = None


def add(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray) -> None:
    """Append vectors under the given ids, without retraining.

    With a GPU, an empty IVF-PQ (a new index, or a shard of ``ann_shards``) of GPU_ADD_MIN_VECTORS or more is filled
    there: cloned to GPU 0, filled, copied back and its lists moved into ``index`` (1M vectors: 2.3 s against 22 s
    on 16 cores, benchmarks/gpu). A non-empty index is filled on the CPU: a clone would copy all its codes.
    """
    vectors, ids = _as_matrix(vectors), np.ascontiguousarray(ids, dtype=np.int64)
    ivf = _ivf(index)
    if ivf is not None and index.ntotal == 0 and len(vectors) >= GPU_ADD_MIN_VECTORS and faiss.get_num_gpus() > 0:
        _fill_on_gpu(ivf, vectors, ids)
    else:
        index.add_with_ids(vectors, ids)


def encode(index: faiss.Index, vectors: np.ndarray) -> np.ndarray:
    """Standalone codes of vectors for a trained IVF-PQ (list number + PQ code a row), as ``add_codes`` takes them."""
    return index.sa_encode(_as_matrix(vectors))


def add_codes(index: faiss.Index, codes: np.ndarray, ids: np.ndarray) -> None:
    """Append codes made by ``encode`` under the given ids: the same lists as ``add`` of their vectors."""
    index.add_sa_codes(np.ascontiguousarray(codes, dtype=np.uint8), np.ascontiguousarray(ids, dtype=np.int64))


def _fill_on_gpu(ivf: faiss.IndexIVFPQ, vectors: np.ndarray, ids: np.ndarray) -> None:
    """Fill the empty, trained ``ivf`` with vectors encoded on GPU 0."""
    resources = faiss.StandardGpuResources()
    gpu = faiss.index_cpu_to_gpu(resources, 0, ivf, _gpu_options(ivf))
    gpu.add_with_ids(vectors, ids)
    filled = faiss.index_gpu_to_cpu(gpu)
    ivf.merge_from(faiss.extract_index_ivf(filled), 0)


def search(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    nprobe: int | None = None,
    allowed_ids: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, ids), each (n_queries, k); id -1 and score -inf where fewer results exist.

    Scores are approximate (PQ) for ivfpq. `nprobe` defaults to the one stored on the index.
    `allowed_ids` restricts the search to those ids through an IDSelectorBitmap (ids are row
    ordinals; for 500k of 1M ids it builds in 4 ms vs 130 ms for IDSelectorBatch and searches 5-9×
    faster; IDSelectorArray is linear per test). With a filter on ivfpq, nprobe is raised so that the
    probed lists are expected to hold max(2·k, 2048) allowed vectors (see `_filtered_ivf_search`), and
    queries still short of k results are searched again over all lists: k results are returned
    whenever k allowed ids are in the index. A GPU serves unfiltered searches only (FAISS's GPU
    flat and IVF-PQ indexes ignore ID selectors); filtered ones run on the CPU.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    queries = _as_matrix(queries)
    ivf = _ivf(index)
    nprobe = (nprobe or ivf.nprobe) if ivf is not None else None
    if allowed_ids is None:
        searcher = _gpu_clone(index) if _gpu_can_search(k, nprobe) else index
        return _run_search(searcher, queries, k, _search_params(nprobe))
    mask = _allowed_mask(allowed_ids)
    n_allowed = int(np.count_nonzero(mask))
    if n_allowed == 0:
        return _empty_result(len(queries), k)
    selector = faiss.IDSelectorBitmap(np.packbits(mask, bitorder="little"))
    if ivf is None:
        return _run_search(index, queries, k, faiss.SearchParameters(sel=selector))
    return _filtered_ivf_search(index, queries, k, nprobe, n_allowed, selector)


def _filtered_ivf_search(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    nprobe: int,
    n_allowed: int,
    selector: faiss.IDSelector,
) -> tuple[np.ndarray, np.ndarray]:
    """IVF search restricted by `selector`, widened until each query has k results if it can.

    A selective filter leaves most probed lists nearly empty, so nprobe is raised until the probed lists are
    expected to hold max(2·k, 2048) allowed vectors: the floor keeps the nearest allowed vectors, which lie
    further out than unfiltered ones, inside the probed lists even when k is small. Measured at 1M (IVF4096,
    filters keeping 0.5–22 %): with k = 100 candidates (re-rank k·10) recall@10 equals that of probing as many
    allowed vectors as an unfiltered search sees (0.991 / 0.996 / 0.989 / 0.908) in 4–9 ms instead of 8–16 ms;
    2·k alone lost recall (0.962 at 0.5 %); at k = 1000 (k·100) all three give 0.999–1.000.
    """
    nlist = faiss.extract_index_ivf(index).nlist
    wanted = max(FILTER_CANDIDATE_FACTOR * k, MIN_FILTER_CANDIDATES)
    params = _search_params(min(nlist, max(nprobe, math.ceil(wanted * nlist / n_allowed))), selector)
    scores, ids = _run_search(index, queries, k, params)
    short = ids[:, -1] < 0
    if short.any() and params.nprobe < nlist:
        full = _search_params(nlist, selector)
        scores[short], ids[short] = _run_search(index, queries[short], k, full)
    return scores, ids


def _run_search(
    index: faiss.Index, queries: np.ndarray, k: int, params: faiss.SearchParameters | None
) -> tuple[np.ndarray, np.ndarray]:
    """index.search with missing results scored -inf; one query on the calling thread alone (``_one_thread``)."""
    with _one_thread(len(queries) == 1):
        scores, ids = index.search(queries, k, params=params)
    scores[ids < 0] = -np.inf
    return scores, ids


@contextmanager
def _one_thread(active: bool) -> Iterator[None]:
    """FAISS's OpenMP, and the OpenMP-built BLAS it ships, limited to the calling thread within the block (the
    setting is per thread). One query gains nothing from more, and their threads spin after each call: a flat
    search of 316 chips cost 3.8 ms of CPU instead of 0.8 ms on 2 cores."""
    if not active:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _search_params(nprobe: int | None, selector: faiss.IDSelector | None = None) -> faiss.SearchParameters | None:
    """SearchParametersIVF for IVF (nprobe given), SearchParameters for flat, None when nothing is set."""
    if nprobe is not None:
        params = faiss.SearchParametersIVF(nprobe=nprobe)
        if selector is not None:
            params.sel = selector
        return params
    return faiss.SearchParameters(sel=selector) if selector is not None else None


def _allowed_mask(allowed_ids: np.ndarray) -> np.ndarray:
    """Boolean mask over ids 0..max of the non-negative `allowed_ids` (any order, repeats allowed).

    Packed little-endian, it is FAISS's IDSelectorBitmap layout. No sort or unique: at 200k allowed ids of 1M,
    np.unique cost 40 ms a query, ten times the filtered search itself.
    """
    allowed = np.asarray(allowed_ids, dtype=np.int64).ravel()
    allowed = allowed[allowed >= 0]
    mask = np.zeros(int(allowed.max()) + 1 if allowed.size else 0, dtype=bool)
    mask[allowed] = True
    return mask


def _empty_result(n_queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """All-missing (scores, ids)."""
    scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
    return scores, np.full((n_queries, k), -1, dtype=np.int64)


def _gpu_can_search(k: int, nprobe: int | None) -> bool:
    """Whether a GPU exists and k and nprobe are within FAISS's GPU selection limit."""
    return faiss.get_num_gpus() > 0 and k <= GPU_MAX_K and (nprobe or 0) <= GPU_MAX_K


def _gpu_clone(index: faiss.Index) -> faiss.Index:
    """GPU copy of `index`, cached while the index lives and refreshed when ntotal changes.

    (FAISS's Python objects refuse new attributes, so the cache is a weak map beside them.)
    """
    cached = _GPU_CLONES.get(index)
    if cached is not None and cached[0] == index.ntotal:
        return cached[1]
    resources = faiss.StandardGpuResources()
    clone = faiss.index_cpu_to_gpu(resources, 0, index, _gpu_options(_ivf(index)))
    _GPU_CLONES[index] = (index.ntotal, clone, resources)
    return clone


def _gpu_options(ivf: faiss.IndexIVFPQ | None) -> faiss.GpuClonerOptions:
    """Cloner options: float16 lookup tables beyond GPU_FLOAT32_MAX_M sub-quantisers (FAISS's float32 limit)."""
    options = faiss.GpuClonerOptions()
    options.useFloat16 = ivf is not None and ivf.pq.M > GPU_FLOAT32_MAX_M
    return options


def describe(index: faiss.Index) -> dict:
    """Type, size and parameters of `index`.

    bytes_per_vector: what the ANN structure stores per vector (code + 8-byte id); for flat the
    code is the float32 vector itself (IndexIDMap2's in-memory reverse map is not counted).
    """
    ivf = _ivf(index)
    if ivf is None:
        return {
            "index_type": "flat",
            "ntotal": int(index.ntotal),
            "dim": int(index.d),
            "nlist": None,
            "m": None,
            "nbits": None,
            "nprobe": None,
            "bytes_per_vector": 4 * int(index.d) + ID_BYTES,
        }
    return {
        "index_type": "ivfpq",
        "ntotal": int(index.ntotal),
        "dim": int(index.d),
        "nlist": int(ivf.nlist),
        "m": int(ivf.pq.M),
        "nbits": int(ivf.pq.nbits),
        "nprobe": int(ivf.nprobe),
        "bytes_per_vector": int(ivf.code_size) + ID_BYTES,
    }


def write_index(index: faiss.Index, path: Path) -> None:
    """Write `index` atomically (see `rsretrieve.files.atomic_write`); always the CPU form."""
    atomic_write(Path(path), lambda tmp: faiss.write_index(index, str(tmp)))


def read_index(path: Path) -> faiss.Index:
    """Read an index written by `write_index`; AnnIndexError if the file is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise AnnIndexError(f"ANN index file not found: {path}")
    try:
        return faiss.read_index(str(path))
    except (RuntimeError, MemoryError) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise AnnIndexError(f"cannot read ANN index {path}: {reason}") from None


def exact_search(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k inner product of `queries` over the rows `vectors` named `ids`.

    Returns (scores, ids) like `search`; equal scores are ordered by id ascending.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    vectors, queries = _as_matrix(vectors), _as_matrix(queries)
    ids = np.asarray(ids, dtype=np.int64)
    out_scores, out_ids = _empty_result(len(queries), k)
    chunk = max(1, EXACT_CHUNK_ELEMENTS // max(len(vectors), 1))
    for start in range(0, len(queries), chunk):
        if len(queries) == 1:  # a search's re-rank or exact filtered scoring: on this thread
            scores = _inner_products(vectors, queries[0])[None]
        else:
            scores = queries[start : start + chunk] @ vectors.T
        for row, row_scores in enumerate(scores, start=start):
            top = _top_k(row_scores, ids, k)
            out_scores[row, : len(top)] = row_scores[top]
            out_ids[row, : len(top)] = ids[top]
    return out_scores, out_ids


def _inner_products(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``vectors @ query`` with FAISS's SIMD kernel on the calling thread (C-contiguous float32 inputs).

    numpy's OpenBLAS spreads even a 1,000×512 product over every core, and its threads then spin: on 2 cores a
    re-rank of 0.1 ms cost ~6 ms of CPU per search and 5-10 ms of wall time when the machine was busy.
    """
    if vectors.shape[1] != len(query):
        raise ValueError(f"vectors of dimension {vectors.shape[1]} against a query of {len(query)}")
    out = np.empty(len(vectors), np.float32)
    if len(vectors):
        faiss.fvec_inner_products_ny(
            faiss.swig_ptr(out), faiss.swig_ptr(query), faiss.swig_ptr(vectors), vectors.shape[1], len(vectors)
        )
    return out


def _top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k best scores, ties by id ascending."""
    candidates = np.arange(len(scores))
    if k < len(scores):
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        candidates = np.flatnonzero(scores >= kth)
    order = np.lexsort((ids[candidates], -scores[candidates]))
    return candidates[order[:k]]


def _ivf(index: faiss.Index) -> faiss.IndexIVFPQ | None:
    """The IVF-PQ inside `index`, or None for flat."""
    ivf = faiss.try_extract_index_ivf(index)
    return None if ivf is None else faiss.downcast_index(ivf)


def _as_matrix(x: np.ndarray) -> np.ndarray:
    """C-contiguous float32 2-d array."""
    return np.ascontiguousarray(np.atleast_2d(x), dtype=np.float32)
