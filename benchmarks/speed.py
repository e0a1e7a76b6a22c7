"""Search speed, recall and index size at growing archive sizes (issue 6 / docs/architecture.md §5 and §7).

    python benchmarks/speed.py [--sizes 10000 100000 1000000] [--dim 512] [--vectors FILE.npy]
        [--index flat ivfpq] [--nprobe 8 16 32 64] [--rerank-factors 10] [--out FILE.json]
        [--build-while-loading] [--nlist N] [--training-samples N]     # 10M: see below

Each size is stored through the real store (``StoreWriter``: LanceDB rows + FAISS index) with chips laid
out as 8×8-chip scenes at random places over Europe on random days, then searched through ``Searcher``:
exact Flat, and IVF-PQ at each nprobe (and re-rank factor). Vectors are a seeded Gaussian mixture on the
unit sphere shaped like image embeddings (a shared mean direction, 2048 clusters of uneven size and
spread; ``--mixture places``: tight groups of ~64 drawn from them, so neighbours stay as close at any
size), or the rows of ``--vectors`` (L2-normalised; queries are held-back rows).

Nothing holds all the vectors: they are made (or read) one block of ``APPEND_ROWS`` at a time, appended to the
store and searched exactly right away for the ground truth (with and without the filters), so a 10M-chip run
needs memory for a block, not 20 GB. ``--build-while-loading`` (with ``--index ivfpq`` alone) writes the store
with IVF-PQ from the first batch, as an indexer appending batch by batch would, instead of a flat index
committed at every batch (20 GB a commit at 10M) and rebuilt after; ``--nlist`` and ``--training-samples`` fix the
IVF lists and cap the k-means sample (``AnnSettings``) so that such a build fits in the time there is. Per record:

- recall@10 of the product's search (IVF-PQ candidates re-ranked exactly) against brute force, without
  and with a bbox filter that keeps ``--filter-fraction`` of the chips (several: ``filters`` holds the figures
  of each, the ``*_filtered`` keys those of the first); score_gap_at_10: the mean exact score of the true top 10
  minus that of the results (misses that are near-ties cost little); score_at_1/10/100: mean exact scores at
  those ranks (how crowded neighbours are);
- the path the searches took, as ``Results.path`` reports it: ``path`` (flat or ivfpq) and ``filter_path``
  (exact: the matches scored exactly; faiss: FAISS searched with allowed ids; ``path_filtered`` is the
  ``Results.path`` itself); ``candidates``/``candidates_filtered``: mean IVF-PQ candidates re-ranked exactly
  per query (``Results.candidates``, 0 when none);
- p50_cpu_ms (and _filtered): the CPU time of this process per query (all its threads), which a machine shared
  with other jobs does not stretch the way it stretches wall time;
- single-query latency p50/p95 of ``Searcher.search`` (CPU, no text encoding; results' records included), and
  p50 of its FAISS stage alone (``Results.timings["ann"]``; the rest: the bbox filter over ``bounds.f64``,
  re-rank from the stored vectors, reading the results' records; ``p50_ms_stages`` has every stage);
- qps: queries/s with all queries in one FAISS call, each query's candidates then re-ranked exactly as
  ``Searcher`` does (``search.rerank_top``: what a batch API would get);
- build_s = train_s + add_s: FAISS train and add as ``StoreWriter`` times them (its ``manifest.index``), building
  the index from the stored vectors (``StoreWriter.retrain``; read back from ``vectors.i8`` inside the timing,
  the FAISS file write apart); retrain_s: the whole retrain with its commit; lancedb_write_s: ``StoreWriter.append``
  wall time, all batches (LanceDB rows, the query-side columns and each batch's commit of the flat index);
  finish_s: ``StoreWriter.finish`` (scalar indexes);
- rss_mb: peak resident memory of a fresh process that opens the index with ``Searcher`` and answers the
  queries (what a server needs; the filter matrix, FAISS index and the pages of vectors and records it touched);
- bytes_per_vector: the FAISS file over the vectors (codes, ids, centroids and codebooks);
  code_bytes_per_vector: what one more vector costs (PQ code + 8-byte id); stored_vector_bytes: the 8-bit
  vectors and their finer bits (their one copy, the re-rank files ``vectors.i8`` and ``vectors.lo4``,
  vector_file_bytes; lancedb_bytes: the chip records in LanceDB);
  filter_and_record_bytes: the query path's other copies (``bounds.f64``, ``records/``);
  index_bytes_per_chip: the whole index folder over the chips (FAISS files of earlier commits, which the writer
  deletes a minute later, left out).

A markdown table of all records is printed; the JSON list is rewritten after each record.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any

os.environ.setdefault("RUST_LOG", "error")

import faiss
import numpy as np

from rsretrieve import ann, search
from rsretrieve.ann import AnnSettings
from rsretrieve.chips import Chip, Window
from rsretrieve.query import Filters, Query
from rsretrieve.search import Results, Searcher
from rsretrieve.store import ChipStore, StoreWriter, index_files, vector_codes
from rsretrieve.store.query_columns import BOUNDS, FINE_VECTORS, RECORDS, VECTORS

RESULTS = Path(__file__).resolve().parent / "results"
K = 10
CLUSTERS = 2048
CHUNK = 65_536  # rows generated per seeded chunk (so a smaller size is a prefix of a larger one)
REGION = (-10.0, 35.0, 30.0, 60.0)  # lon/lat box over which synthetic scenes are spread
SCENE_SIDE = 8  # chips per scene row and column
CHIP_DEGREES = 0.02  # chip side: 224 px at 10 m
CHIP_PIXELS = 224
FIRST_DAY = date(2015, 1, 1).toordinal()
DAYS = 3653
APPEND_ROWS = 4096 * SCENE_SIDE**2  # rows per StoreWriter.append: whole scenes, 262,144
WARM_UP_QUERIES = 3
PLACE_ROWS = 64  # --mixture places: one place per 64 rows on average
PLACE_SPREAD = (0.2, 0.5)  # noise length around a place: cosine to its centre 0.98 to 0.89
DIFFICULTY_RANK = 100  # mean exact scores at ranks 1, 10 and 100 tell how separable the neighbours are


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, float32."""
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


class Mixture:
    """Seeded Gaussian mixture on the unit sphere: a shared mean direction, clusters of uneven size and spread.

    With ``places``, the clusters are themes and each vector belongs to one of ``places`` tight groups drawn
    from them (a place seen on many dates, or overlapping chips): every place has close neighbours.
    """

    def __init__(self, dim: int, seed: int, places: int = 0):
        rng = np.random.default_rng([seed, 0])
        mean = unit(rng.normal(size=dim))
        self.dim, self.seed = dim, seed
        self.centres = unit(0.5 * mean + unit(rng.normal(size=(CLUSTERS, dim))))
        self.spread = rng.uniform(0.3, 1.0, CLUSTERS)  # noise length: cosine to the centre 0.96 to 0.71
        weights = rng.lognormal(0.0, 1.0, CLUSTERS)
        self.weights = weights / weights.sum()
        self.description = f"synthetic: {CLUSTERS} clusters"
        if places:
            self.centres = self.sample(places, stream=3)
            self.spread = rng.uniform(*PLACE_SPREAD, places)
            self.weights = np.full(places, 1 / places)
            self.description += f" × {places} places"

    def sample(self, n: int, stream: int) -> np.ndarray:
        """n unit vectors; the same (stream, n) always gives the same rows, and fewer rows are a prefix."""
        return self.rows(0, n, n, stream)

    def rows(self, start: int, stop: int, n: int, stream: int) -> np.ndarray:
        """Rows start..stop of the n of a stream, made chunk by chunk (any block of a 10M archive, never all of it)."""
        parts = []
        for first in range(start - start % CHUNK, stop, CHUNK):
            rng = np.random.default_rng([self.seed, stream, first // CHUNK])
            size = min(CHUNK, n - first)
            group = rng.choice(len(self.weights), size, p=self.weights)
            noise = rng.standard_normal((size, self.dim), dtype=np.float32)
            noise *= (self.spread[group] / np.sqrt(self.dim)).astype(np.float32)[:, None]
            chunk = unit(self.centres[group] + noise)
            parts.append(chunk[max(start - first, 0) : stop - first])
        return np.concatenate(parts) if parts else np.empty((0, self.dim), np.float32)


@dataclass(frozen=True)
class VectorSource:
    """The archive's vectors, read block by block (``rows``), and the queries."""

    rows: Callable[[int, int], np.ndarray]
    queries: np.ndarray
    description: str


def load_vectors(args: argparse.Namespace, n: int) -> VectorSource:
    """Synthetic vectors, or ``--vectors`` with queries held back at random; data rows are read per block."""
    if args.vectors is None:
        mixture = Mixture(args.dim, args.seed, n // PLACE_ROWS if args.mixture == "places" else 0)
        return VectorSource(
            lambda start, stop: mixture.rows(start, stop, n, stream=1),
            mixture.sample(args.queries, stream=2),
            mixture.description,
        )
    matrix = np.load(args.vectors, mmap_mode="r")
    if matrix.ndim != 2 or len(matrix) < n + args.queries:
        sys.exit(f"{args.vectors}: need an N×d matrix of at least {n} + {args.queries} rows, got {matrix.shape}")
    held = np.zeros(len(matrix), bool)
    held[np.random.default_rng(args.seed).choice(len(matrix), args.queries, replace=False)] = True
    kept = np.flatnonzero(~held)[:n]
    return VectorSource(lambda start, stop: unit(matrix[kept[start:stop]]), unit(matrix[held]), str(args.vectors))


class Layout:
    """Where and when each chip was taken: 8×8-chip scenes at random places in REGION, each on a random day."""

    def __init__(self, n: int, seed: int):
        rng = np.random.default_rng([seed, 3])
        scenes = -(-n // SCENE_SIDE**2)
        scene_degrees = SCENE_SIDE * CHIP_DEGREES
        origin = rng.uniform(REGION[:2], (REGION[2] - scene_degrees, REGION[3] - scene_degrees), (scenes, 2))
        fid = np.arange(n)
        self.scene, cell = divmod(fid, SCENE_SIDE**2)
        self.row, self.col = divmod(cell, SCENE_SIDE)
        self.minx = origin[self.scene, 0] + self.col * CHIP_DEGREES
        self.miny = origin[self.scene, 1] + self.row * CHIP_DEGREES
        self.day = rng.integers(0, DAYS, scenes)[self.scene]

    def __len__(self) -> int:
        return len(self.minx)

    def chips(self, start: int, stop: int) -> list[Chip]:
        """The chips start..stop (ids are the fids in hex)."""
        return [self._chip(fid) for fid in range(start, stop)]

    def _chip(self, fid: int) -> Chip:
        minx, miny = float(self.minx[fid]), float(self.miny[fid])
        maxx, maxy = minx + CHIP_DEGREES, miny + CHIP_DEGREES
        ring = [[minx, miny], [maxx, miny], [maxx, maxy], [minx, maxy], [minx, miny]]
        return Chip(
            id=f"{fid:016x}",
            path=f"/archive/scene_{self.scene[fid]:06d}.tif",
            window=Window(int(self.col[fid]) * CHIP_PIXELS, int(self.row[fid]) * CHIP_PIXELS, CHIP_PIXELS, CHIP_PIXELS),
            crs="EPSG:4326",
            bbox=(minx, miny, maxx, maxy),
            footprint={"type": "Polygon", "coordinates": [ring]},
            date=date.fromordinal(FIRST_DAY + int(self.day[fid])),
        )

    def scenes_in(self, start: int, stop: int) -> int:
        """Source files whose chips are start..stop."""
        return len(np.unique(self.scene[start:stop]))

    def intersecting(self, box: tuple[float, float, float, float]) -> np.ndarray:
        """fids of the chips whose bbox intersects ``box`` (as the bbox filter's SQL does)."""
        minx, miny, maxx, maxy = box
        hit = (self.minx + CHIP_DEGREES >= minx) & (self.minx <= maxx)
        hit &= (self.miny + CHIP_DEGREES >= miny) & (self.miny <= maxy)
        return np.flatnonzero(hit)

    def box_keeping(self, fraction: float) -> tuple[float, float, float, float]:
        """A box around the middle of REGION, grown until it intersects at least ``fraction`` of the chips."""
        cx, cy = (REGION[0] + REGION[2]) / 2, (REGION[1] + REGION[3]) / 2
        width, height = REGION[2] - REGION[0], REGION[3] - REGION[1]
        scale = np.sqrt(fraction) / 4
        while True:
            box = (cx - scale * width, cy - scale * height, cx + scale * width, cy + scale * height)
            if len(self.intersecting(box)) >= fraction * len(self) or scale >= 0.5:
                return tuple(round(float(value), 4) for value in box)
            scale *= 1.05


def write_store(
    db: Path,
    model: Any,
    source: VectorSource,
    layout: Layout,
    settings: AnnSettings,
    seen: Callable[[np.ndarray, int], None],
) -> tuple[StoreWriter, dict[str, float]]:
    """Append all chips to a new store (index ``settings``) in whole-scene batches and finish it; seconds per phase.

    Each block of vectors is made once, appended, and shown to ``seen`` (the streaming ground truth)."""
    writer = StoreWriter.open(db, model, settings)
    appending = 0.0
    for start in range(0, len(layout), APPEND_ROWS):
        stop = min(start + APPEND_ROWS, len(layout))
        vectors = source.rows(start, stop)
        seen(vectors, start)
        chips = layout.chips(start, stop)
        started = time.perf_counter()
        writer.append(chips, vectors, new_files=layout.scenes_in(start, stop))
        appending += time.perf_counter() - started
        print(f"loaded {stop:,} of {len(layout):,} chips ({appending:.0f} s appending)", file=sys.stderr, flush=True)
    started = time.perf_counter()
    writer.finish()
    return writer, {"lancedb_write_s": appending, "finish_s": time.perf_counter() - started}


class ImplausibleFigures(RuntimeError):
    """A measured figure that cannot be right: the benchmark would publish a wrong number."""


def rebuild(writer: StoreWriter, kind: str) -> dict[str, float]:
    """Build the store's FAISS index as ``kind`` from the stored vectors; seconds per phase, as the writer timed them.

    train_s and add_s are the writer's own timings of this build (``manifest.index``); they are checked to be
    plausible: present, not negative, within the retrain's wall time, and train_s > 0 for IVF-PQ.
    """
    writer.settings = dataclasses.replace(writer.settings, kind=kind)
    started = time.perf_counter()
    writer.retrain()
    retrain_s = time.perf_counter() - started
    committed = ChipStore(writer.db).manifest.index
    if committed.get("index_type") != kind or "train_s" not in committed or "add_s" not in committed:
        raise ImplausibleFigures(f"the retrained {kind} index has no build times in its manifest: {committed}")
    train_s, add_s = float(committed["train_s"]), float(committed["add_s"])
    if min(train_s, add_s) < 0 or train_s + add_s > retrain_s or (kind == "ivfpq" and train_s <= 0):
        raise ImplausibleFigures(f"{kind} build times train_s={train_s}, add_s={add_s} in a retrain of {retrain_s} s")
    return {"build_s": train_s + add_s, "train_s": train_s, "add_s": add_s, "retrain_s": retrain_s}


def built_while_loading(writer: StoreWriter, loaded: dict[str, float]) -> dict[str, float]:
    """Build figures of an IVF-PQ index built as the store was written, without a rebuild (``--build-while-loading``):
    build_s is the whole load (rows, columns, training when the archive outgrew the lists, every add and commit);
    train_s/add_s are the writer's last full build within it."""
    committed = writer.manifest.index
    return {
        "build_s": loaded["lancedb_write_s"] + loaded["finish_s"],
        "train_s": float(committed.get("train_s", 0.0)),
        "add_s": float(committed.get("add_s", 0.0)),
        "retrain_s": 0.0,
    }


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (0 when it does not exist)."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def index_sizes(db: Path, n: int, dim: int) -> dict[str, Any]:
    """Index parameters and bytes on disk of the committed store."""
    store = ChipStore(db)
    described = store.manifest.index
    current = index_files.files(store.manifest)  # the FAISS file and the code files appended to it
    index_bytes = sum((db / name).stat().st_size for name in current)
    stale = {path for path in db.glob(index_files.PATTERN) if path.name not in current}
    whole = sum(path.stat().st_size for path in db.rglob("*") if path.is_file() and path not in stale)
    vector_bytes = sum((db / name).stat().st_size for name in (VECTORS, FINE_VECTORS) if (db / name).exists())
    bounds_bytes = (db / BOUNDS).stat().st_size if (db / BOUNDS).exists() else 0
    return {
        "nlist": described["nlist"],
        "m": described["m"],
        "default_nprobe": described["nprobe"],
        "index_file_bytes": index_bytes,
        "bytes_per_vector": round(index_bytes / n, 2),
        "code_bytes_per_vector": described["bytes_per_vector"],
        "stored_vector_bytes": n * (vector_codes.row_bytes(dim) + vector_codes.fine_bytes(dim)),
        "lancedb_bytes": folder_bytes(db / "chips.lance"),
        "vector_file_bytes": vector_bytes,
        "filter_and_record_bytes": bounds_bytes + folder_bytes(db / RECORDS),
        "index_folder_bytes": whole,
        "index_bytes_per_chip": round(whole / n, 2),
    }


Ranking = tuple[np.ndarray, np.ndarray]
"""(scores, fids) of one query's results, or of every query's (one row each)."""


def accuracy(found: list[Ranking], truth: Ranking) -> tuple[float | None, float | None]:
    """Recall@k (mean share of each query's true top k found) and the mean score given up for it.

    The score gap is the mean exact score of the true top k minus that of the results: near zero when
    the misses are near-ties. Both are None when no query has any true result.
    """
    shares, gaps = [], []
    for (got_scores, got_ids), want_scores, want_ids in zip(found, *truth, strict=True):
        valid = want_ids >= 0
        if valid.any():
            shares.append(len(np.intersect1d(got_ids, want_ids[valid])) / valid.sum())
            gaps.append((want_scores[valid][: len(got_scores)].sum() - got_scores.sum()) / valid.sum())
    if not shares:
        return None, None
    gap = max(float(np.mean(gaps)), 0.0)  # results' scores are rounded to 6 decimals: exact ones may dip below 0
    return round(float(np.mean(shares)), 4), round(gap, 5)


@dataclass(frozen=True)
class Searched:
    """What ``Searcher.search`` did for each query: milliseconds (wall and CPU), results, path taken, candidates,
    stage timings."""

    milliseconds: np.ndarray
    cpu_milliseconds: np.ndarray
    found: list[Ranking]
    paths: list[str]
    candidates: list[int]
    timings: list[dict[str, float]]

    def p_ms(self, percentile: float, cpu: bool = False) -> float:
        """A percentile of the latency (or of the CPU time of this process per query), milliseconds."""
        return round(float(np.percentile(self.cpu_milliseconds if cpu else self.milliseconds, percentile)), 3)

    def path(self) -> str:
        """The ``Results.path`` the queries took (several joined by "+" if they differed)."""
        return "+".join(sorted(set(self.paths)))

    def mean_candidates(self) -> float:
        """Mean IVF-PQ candidates re-ranked per query."""
        return round(float(np.mean(self.candidates)), 1)

    def stage_p50_ms(self) -> dict[str, float]:
        """Median milliseconds of each stage of the search (``Results.timings``; 0 where a query skipped it)."""
        stages = sorted({stage for timings in self.timings for stage in timings})
        return {
            stage: round(float(np.median([timings.get(stage, 0.0) for timings in self.timings])) * 1000, 3)
            for stage in stages
        }


def timed_queries(searcher: Searcher, queries: np.ndarray, filters: Filters | None) -> Searched:
    """``Searcher.search`` query by query: its milliseconds, results, path and candidates."""
    built = [Query.build(vectors=[query], k=K, filters=filters or Filters()) for query in queries]
    for query in built[:WARM_UP_QUERIES]:
        searcher.search(query)
    milliseconds, cpu_milliseconds, answers = [], [], []
    for query in built:
        started, cpu_started = time.perf_counter(), time.process_time()
        results: Results = searcher.search(query)
        milliseconds.append((time.perf_counter() - started) * 1000)
        cpu_milliseconds.append((time.process_time() - cpu_started) * 1000)
        answers.append(results)
    found = [
        (
            np.array([hit.score for hit in results.hits], np.float32),
            np.array([int(hit.chip.id, 16) for hit in results.hits], np.int64),
        )
        for results in answers
    ]
    return Searched(
        np.array(milliseconds),
        np.array(cpu_milliseconds),
        found,
        [results.path for results in answers],
        [results.candidates for results in answers],
        [dict(results.timings) for results in answers],
    )


def is_approximate(searcher: Searcher) -> bool:
    """Whether the searcher's index is IVF-PQ, whose candidates Searcher re-ranks."""
    return ann.describe(searcher.store.index)["index_type"] != "flat"


def fetch_size(searcher: Searcher) -> int:
    """Candidates Searcher asks FAISS for: k × rerank factor for IVF-PQ, k for flat."""
    return K * searcher.rerank_factor if is_approximate(searcher) else K


def batched_qps(searcher: Searcher, queries: np.ndarray, nprobe: int | None) -> float:
    """Queries/s with all queries in one FAISS call, each query's candidates re-ranked as ``Searcher`` does."""
    store = searcher.store
    started = time.perf_counter()
    _, fids = ann.search(store.index, queries, fetch_size(searcher), nprobe=nprobe)
    if is_approximate(searcher):
        for query, row in zip(queries, fids, strict=True):
            search.rerank_top(query[None], store, row[row >= 0], K)
    return len(queries) / (time.perf_counter() - started)


class TopK:
    """The exact top k of each query over the blocks of vectors seen so far (equal scores: lower id first)."""

    def __init__(self, queries: np.ndarray, k: int):
        self.queries, self.k = queries, k
        self.scores = np.full((len(queries), k), -np.inf, np.float32)
        self.ids = np.full((len(queries), k), -1, np.int64)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Take the rows ``vectors`` named ``ids`` into account."""
        if len(ids) == 0:
            return
        scores, found = ann.exact_search(vectors, ids, self.queries, self.k)
        scores, found = np.hstack([self.scores, scores]), np.hstack([self.ids, found])
        order = np.lexsort((found, -scores), axis=-1)[:, : self.k]
        self.scores, self.ids = np.take_along_axis(scores, order, 1), np.take_along_axis(found, order, 1)

    def ranking(self, k: int = K) -> Ranking:
        """(scores, ids) of the top ``k``."""
        return self.scores[:, :k], self.ids[:, :k]


@dataclass(frozen=True)
class BboxCase:
    """A bbox filter keeping about ``fraction`` of the chips, and the exact top k of each query under it."""

    box: tuple[float, float, float, float]
    allowed: np.ndarray
    top: TopK

    @classmethod
    def build(cls, layout: Layout, fraction: float, queries: np.ndarray) -> BboxCase:
        """The case for ``fraction`` of the chips of ``layout`` (its truth filled block by block by ``add``)."""
        box = layout.box_keeping(fraction)
        return cls(box, layout.intersecting(box), TopK(queries, K))

    def add(self, vectors: np.ndarray, start: int) -> None:
        """Take the block of rows start.. into account."""
        rows = self.allowed[(self.allowed >= start) & (self.allowed < start + len(vectors))]
        self.top.add(vectors[rows - start], rows)

    @property
    def truth(self) -> Ranking:
        """The exact top k under the filter."""
        return self.top.ranking()

    def describe(self, n: int) -> dict[str, Any]:
        """What the filter is: its box and how many chips it keeps."""
        return {
            "filter_bbox": list(self.box),
            "filter_matches": len(self.allowed),
            "filter_fraction": round(len(self.allowed) / n, 4),
        }


def filtered_figures(searcher: Searcher, queries: np.ndarray, case: BboxCase) -> dict[str, Any]:
    """Recall, latency and the path taken by the searcher under one bbox filter."""
    searched = timed_queries(searcher, queries, Filters(bbox=case.box))
    recall, gap = accuracy(searched.found, case.truth)
    path = searched.path()
    return {
        "filter_path": "+".join(sorted({taken.removesuffix("-filtered") for taken in searched.paths})),
        "path_filtered": path,
        "candidates_filtered": searched.mean_candidates(),
        "recall_at_10_filtered": recall,
        "score_gap_at_10_filtered": gap,
        "p50_ms_filtered": searched.p_ms(50),
        "p50_cpu_ms_filtered": searched.p_ms(50, cpu=True),
        "p95_ms_filtered": searched.p_ms(95),
    }


SERVE = """
import re, sys, types
from pathlib import Path
import numpy as np
from rsretrieve.query import Query
from rsretrieve.search import Searcher
db, queries, nprobe, rerank = sys.argv[1], np.load(sys.argv[2]), int(sys.argv[3]) or None, int(sys.argv[4])
model = types.SimpleNamespace(name="speed-benchmark", architecture="synthetic", checkpoint="none", dim=queries.shape[1])
searcher = Searcher(db, model=model, rerank_factor=rerank, nprobe=nprobe)
for query in queries:
    searcher.search(Query.build(vectors=[query], k=10))
print(int(re.search(r"VmHWM:\\s*(\\d+) kB", Path("/proc/self/status").read_text())[1]) / 1024)
"""


def serving_rss_mb(db: Path, queries: np.ndarray, nprobe: int | None, rerank: int) -> float:
    """Peak resident memory of a fresh process that opens the index and answers the queries (what a server holds):
    its ``VmHWM``, not ``ru_maxrss``, which Linux carries over from this (much larger) process across fork+exec."""
    path = db.parent / "queries.npy"
    np.save(path, queries)
    command = [sys.executable, "-c", SERVE, str(db), str(path), str(nprobe or 0), str(rerank)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return round(float(done.stdout.strip().splitlines()[-1]), 1)


def measure(
    db: Path, model: Any, queries: np.ndarray, truth: Ranking, cases: list[BboxCase], nprobe: int | None, rerank: int
) -> dict[str, Any]:
    """Recall, latency and throughput of one searcher configuration; the ``*_filtered`` keys are the first case's,
    ``filters`` holds every case."""
    searcher = Searcher(db, model=model, rerank_factor=rerank, nprobe=nprobe)
    plain = timed_queries(searcher, queries, None)
    recall, gap = accuracy(plain.found, truth)
    filters = [{**case.describe(len(searcher.store)), **filtered_figures(searcher, queries, case)} for case in cases]
    stages = plain.stage_p50_ms()
    return {
        "recall_at_10": recall,
        "score_gap_at_10": gap,
        "path": plain.path(),
        "candidates": plain.mean_candidates(),
        "p50_ms": plain.p_ms(50),
        "p95_ms": plain.p_ms(95),
        "p50_cpu_ms": plain.p_ms(50, cpu=True),
        **filters[0],
        "filters": filters,
        "p50_ms_ann_stage": stages.get("ann"),
        "p50_ms_stages": stages,
        "qps": round(batched_qps(searcher, queries, nprobe), 1),
        "rss_mb": serving_rss_mb(db, queries, nprobe, rerank),
    }


def difficulty(top: TopK) -> dict[str, float]:
    """The mean exact scores at ranks 1, 10 and 100."""
    return {f"score_at_{rank}": round(float(top.scores[:, rank - 1].mean()), 4) for rank in (1, K, DIFFICULTY_RANK)}


def bench_size(
    n: int, source: VectorSource, args: argparse.Namespace, base: dict[str, Any], save: Callable[[list], None]
) -> list[dict[str, Any]]:
    """All records of one archive size (each handed to ``save`` with those before it as soon as it is measured);
    the exact top k (with and without filters) is found while the store is written, block by block."""
    queries = source.queries
    dim = queries.shape[1]
    layout = Layout(n, args.seed)
    cases = [BboxCase.build(layout, fraction, queries) for fraction in args.filter_fraction]
    top = TopK(queries, DIFFICULTY_RANK)

    def seen(vectors: np.ndarray, start: int) -> None:
        top.add(vectors, np.arange(start, start + len(vectors)))
        for case in cases:
            case.add(vectors, start)

    model = SimpleNamespace(name="speed-benchmark", architecture="synthetic", checkpoint="none", dim=dim)
    kinds = sorted({ann.choose_params(n, dim, kind, args.flat_threshold).kind for kind in args.index})
    records = []
    with tempfile.TemporaryDirectory(prefix="rsretrieve-speed-", dir=args.workdir) as folder:
        db = Path(folder) / "db"
        # a 10M store cannot commit a flat index at every batch (20 GB each): without flat, IVF-PQ from the start
        loading = AnnSettings(kind=kinds[0], nlist=args.nlist, training_samples=args.training_samples)
        writer, loaded = write_store(db, model, source, layout, loading, seen)
        truth, size = top.ranking(), {**base, "n": n, "dim": dim, **difficulty(top)}
        try:
            for kind in kinds:  # "flat" first: the store was loaded with a flat index, built again here to time it
                if args.build_while_loading and kind == kinds[0] == "ivfpq":
                    built = {**loaded, **built_while_loading(writer, loaded)}
                else:
                    built = {
                        **(loaded if kind == "flat" else {"lancedb_write_s": loaded["lancedb_write_s"]}),
                        **rebuild(writer, kind),
                    }
                sizes = index_sizes(db, n, dim)
                for nprobe, rerank in settings(kind, sizes["nlist"], args):
                    record = {**size, "index": kind, "nprobe": nprobe, "rerank_factor": rerank, **sizes}
                    record.update(
                        measure(db, model, queries, truth, cases, nprobe, rerank or search.DEFAULT_RERANK_FACTOR)
                    )
                    record.update({key: round(value, 3) for key, value in built.items()})
                    records.append(record)
                    save(records)
                    print(table_row(record), file=sys.stderr, flush=True)
        finally:
            writer.close()
    return records


def settings(kind: str, nlist: int | None, args: argparse.Namespace) -> list[tuple[int | None, int | None]]:
    """(nprobe, rerank factor) pairs to measure: one exact run for flat; for IVF-PQ, nprobe ≤ nlist."""
    if kind == "flat":
        return [(None, None)]
    nprobes = sorted({min(nprobe, nlist) for nprobe in args.nprobe})
    return [(nprobe, rerank) for nprobe in nprobes for rerank in args.rerank_factors]


COLUMNS = [
    ("n", "n"), ("index", "index"), ("nprobe", "nprobe"), ("rerank_factor", "rerank"), ("path", "path"),
    ("candidates", "candidates"),
    ("recall_at_10", "recall@10"), ("score_gap_at_10", "score gap"), ("recall_at_10_filtered", "recall@10 bbox"),
    ("filter_path", "bbox path"),
    ("p50_ms", "p50 ms"), ("p95_ms", "p95 ms"), ("p50_ms_filtered", "p50 ms bbox"),
    ("p50_ms_ann_stage", "p50 ms FAISS only"), ("qps", "QPS batched"),
    ("build_s", "build s"), ("lancedb_write_s", "LanceDB write s"), ("bytes_per_vector", "bytes/vector"),
    ("index_bytes_per_chip", "index bytes/chip"), ("p50_cpu_ms", "p50 CPU ms"), ("rss_mb", "serving RSS MB"),
]  # fmt: skip


def table_row(record: dict[str, Any]) -> str:
    """One markdown table row."""
    return "| " + " | ".join("–" if record[key] is None else str(record[key]) for key, _ in COLUMNS) + " |"


def markdown_table(records: list[dict[str, Any]]) -> str:
    """All records as a markdown table."""
    header = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|" + "---|" * len(COLUMNS)
    return "\n".join([header, rule, *map(table_row, records)])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", help="archive sizes (default 10k 100k 1M, or all --vectors)")
    parser.add_argument("--dim", type=int, default=512, help="dimensions of the synthetic vectors")
    parser.add_argument("--vectors", type=Path, help="an N×d float32 .npy of your own embeddings")
    parser.add_argument(
        "--mixture", choices=["clusters", "places"], default="clusters",
        help="synthetic vectors: 2048 clusters, or places (one per 64 rows) drawn from them",
    )  # fmt: skip
    parser.add_argument(
        "--index", nargs="+", choices=["auto", "flat", "ivfpq"], default=["flat", "ivfpq"],
        help="indexes to measure; auto: the one the store picks at each size (see --flat-threshold)",
    )  # fmt: skip
    parser.add_argument("--flat-threshold", type=int, default=ann.DEFAULT_FLAT_THRESHOLD, help="for --index auto")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64], help="IVF lists probed")
    parser.add_argument("--rerank-factors", type=int, nargs="+", default=[search.DEFAULT_RERANK_FACTOR])
    parser.add_argument("--queries", type=int, default=200, help="queries per measurement")
    parser.add_argument(
        "--filter-fraction", type=float, nargs="+", default=[0.05],
        help="shares of chips the bbox filters keep (the first fills the *_filtered keys; all go to 'filters')",
    )  # fmt: skip
    parser.add_argument("--exact-filter-limit", type=int, help="exact-scoring limit for filters (a fixed count)")
    parser.add_argument(
        "--chips-per-candidate", type=int,
        help="at least one IVF-PQ candidate per this many chips (default: the product's; large: k × factor only)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, help="FAISS OpenMP threads (default: FAISS's)")
    parser.add_argument(
        "--build-while-loading", action="store_true",
        help="with --index ivfpq alone: IVF-PQ built as the store is written, not rebuilt after (build_s: the load)",
    )  # fmt: skip
    parser.add_argument("--nlist", type=int, help="IVF lists (default: the store's 4·√N, ≤ 4096)")
    parser.add_argument("--training-samples", type=int, help="cap on the IVF-PQ k-means sample (default: the store's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="where the temporary stores go (default: system temp)")
    parser.add_argument("--out", type=Path, help="JSON out (default benchmarks/results/speed-<device>.json)")
    args = parser.parse_args(argv)
    if args.sizes is None and args.vectors is None:
        args.sizes = [10_000, 100_000, 1_000_000]
    return args


def main(argv: list[str] | None = None) -> None:
    """Measure every size and write the JSON and the table."""
    args = parse_args(argv)
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    if args.chips_per_candidate is not None:
        search.CHIPS_PER_CANDIDATE = args.chips_per_candidate
    if args.exact_filter_limit is not None:
        search.EXACT_FILTER_LIMIT, search.EXACT_FILTER_SHARE = args.exact_filter_limit, 2**62
    device = "cuda" if faiss.get_num_gpus() > 0 else "cpu"
    args.sizes = args.sizes or [len(np.load(args.vectors, mmap_mode="r")) - args.queries]
    out = args.out or RESULTS / f"speed-{device}.json"
    base = {
        "device": device,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "faiss_threads": faiss.omp_get_max_threads(),
        "faiss_version": faiss.__version__,
        "queries": args.queries,
        "k": K,
    }
    records: list[dict[str, Any]] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    for n in args.sizes:
        source = load_vectors(args, n)
        done = list(records)
        records += bench_size(
            n,
            source,
            args,
            {**base, "data": source.description},
            lambda new: out.write_text(json.dumps(done + new, indent=2) + "\n"),  # noqa: B023 (called within)
        )
    print(markdown_table(records))


if __name__ == "__main__":
    main()
