"""Where IVF-PQ search loses recall@10 on a large archive (issue 16, DESIGN §8): stage by stage.

    python benchmarks/recall_stages.py [--size 2000000] [--nlist 1024 4096] [--nprobe 8 16 32 64]
        [--candidates 1000 2000 4000 8000] [--training-samples N] [--out FILE.json]

Seeded synthetic vectors (``speed.Mixture``: 2048 clusters, the generator of benchmarks/speed.py, so that the density
per cluster grows with the size as at 10M). For each nlist an IVF-PQ (``ann.new_index``, m from ``ann.choose_m``) is
trained on a sample and filled; for each nprobe and candidate count, per query, the share of the exact top 10:

- ``probed``: in the nprobe lists the coarse quantiser picks (the bound the coarse quantiser sets);
- ``candidates``: among the IVF-PQ candidates (what the PQ ranking keeps of them);
- ``rerank_<form>``: in the top 10 after the exact re-rank of those candidates with the stored vectors kept in each
  form: float32 (exact), int8-row (``vectors.i8`` alone: what the store kept before ``vectors.lo4``), int8+lo4
  (``vector_codes.round_trip``: with the 4 finer bits, what the store keeps now), int8-centred (int8 of the
  difference from the archive's mean vector, one scale per row: the mean's share of the score is exact).

Also: ``ann_ms``, the FAISS search time of one query on one thread (median), and the build times. ``--rerank-only``:
no IVF-PQ, the candidates are the exact top C, so that the re-rank alone can lose recall (its forms compared).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from speed import Mixture

from rsretrieve import ann
from rsretrieve.store import vector_codes

RESULTS = Path(__file__).resolve().parent / "results"
K = 10
BLOCK = 262_144
TIMED_QUERIES = 30


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    """Ids of the exact top k of each query over all vectors, a block at a time."""
    best_scores = np.full((len(queries), k), -np.inf, np.float32)
    best_ids = np.full((len(queries), k), -1, np.int64)
    for start in range(0, len(vectors), BLOCK):
        block = vectors[start : start + BLOCK]
        scores, ids = ann.exact_search(block, np.arange(start, start + len(block)), queries, k)
        scores, ids = np.hstack([best_scores, scores]), np.hstack([best_ids, ids])
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        best_scores, best_ids = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
    return best_ids


def share(found: list[np.ndarray], truth: np.ndarray) -> float:
    """Mean share of each query's true top K within its found ids."""
    return round(float(np.mean([np.isin(want, got).mean() for got, want in zip(found, truth, strict=True)])), 4)


class StoredForms:
    """The vectors as each re-rank form reads them back (each form is row by row: encoded from the float32 rows of the
    candidates, as the store would have encoded them)."""

    def __init__(self, vectors: np.ndarray):
        self.vectors = vectors
        self.mean = vectors[:: max(1, len(vectors) // 65536)].mean(axis=0)

    def scores(self, form: str, ids: np.ndarray, query: np.ndarray) -> np.ndarray:
        """Re-rank scores of the rows ``ids`` for ``query`` in ``form``."""
        rows = self.vectors[ids]
        if form == "float32":
            return rows @ query
        if form == "int8-row":
            return vector_codes.decode(vector_codes.encode(rows)) @ query
        if form == "int8+lo4":
            return vector_codes.round_trip(rows) @ query
        return vector_codes.decode(vector_codes.encode(rows - self.mean)) @ query + float(self.mean @ query)


FORMS = ("float32", "int8-row", "int8+lo4", "int8-centred")


def build(vectors: np.ndarray, nlist: int, samples: int) -> tuple[faiss.Index, dict[str, float]]:
    """A trained, filled IVF-PQ of ``nlist`` lists and its build seconds."""
    n, dim = vectors.shape
    params = ann.IndexParams(kind="ivfpq", nlist=nlist, m=ann.choose_m(dim), nprobe=8)
    index = ann.new_index(dim, params)
    sample = np.sort(np.random.default_rng(0).choice(n, min(n, samples), replace=False))
    started = time.perf_counter()
    ann.train(index, vectors[sample])
    trained = time.perf_counter()
    for start in range(0, n, BLOCK):
        ann.add(index, vectors[start : start + BLOCK], np.arange(start, min(start + BLOCK, n)))
    added = time.perf_counter()
    return index, {
        "train_s": round(trained - started, 1),
        "add_s": round(added - trained, 1),
        "train_samples": len(sample),
    }


def timed_ms(index: faiss.Index, queries: np.ndarray, candidates: int, nprobe: int) -> float:
    """Median milliseconds of one single-threaded FAISS search."""
    times = []
    for query in queries[:TIMED_QUERIES]:
        started = time.perf_counter()
        ann.search(index, query[None], candidates, nprobe=nprobe)
        times.append((time.perf_counter() - started) * 1000)
    return round(float(np.median(times)), 2)


def measure(
    index: faiss.Index, stored: StoredForms, queries: np.ndarray, truth: np.ndarray, nprobe: int, candidates: int
) -> dict[str, Any]:
    """Recall at each stage for one (nprobe, candidates)."""
    ivf = faiss.extract_index_ivf(index)
    _, probed_lists = ivf.quantizer.search(queries, nprobe)
    _, truth_lists = ivf.quantizer.search(stored.vectors[truth.ravel()], 1)
    truth_lists = truth_lists.reshape(truth.shape)
    probed = float(
        np.mean([np.isin(lists, probe).mean() for lists, probe in zip(truth_lists, probed_lists, strict=True)])
    )
    _, found = ann.search(index, queries, candidates, nprobe=nprobe)
    found = [row[row >= 0] for row in found]
    record = {
        "probed": round(probed, 4),
        "candidates_recall": share(found, truth),
        **reranked(stored, queries, found, truth),
    }
    record["ann_ms"] = timed_ms(index, queries, candidates, nprobe)
    return record


def reranked(stored: StoredForms, queries: np.ndarray, found: list[np.ndarray], truth: np.ndarray) -> dict[str, float]:
    """Recall@10 after the exact re-rank of each query's ``found`` candidates, per stored form."""
    record = {}
    for form in FORMS:
        top = [
            ids[np.argsort(-stored.scores(form, ids, q), kind="stable")[:K]]
            for ids, q in zip(found, queries, strict=True)
        ]
        record[f"rerank_{form}"] = share(top, truth)
    return record


def main() -> None:
    """Measure every nlist × nprobe × candidates; write the JSON after each record."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=2_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--nlist", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--candidates", type=int, nargs="+", default=[1000, 2000, 4000, 8000])
    parser.add_argument("--training-samples", type=int, help="k-means sample (default: max(65,536, 39·nlist))")
    parser.add_argument(
        "--rerank-only", action="store_true", help="no IVF-PQ: re-rank the exact top C (the re-rank's own loss)"
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "recall-stages-cpu.json")
    args = parser.parse_args()
    mixture = Mixture(args.dim, args.seed)
    vectors = np.empty((args.size, args.dim), np.float32)
    for start in range(0, args.size, BLOCK):
        vectors[start : start + BLOCK] = mixture.rows(start, min(start + BLOCK, args.size), args.size, stream=1)
    queries = mixture.sample(args.queries, stream=2)
    truth = exact_top(vectors, queries)
    stored = StoredForms(vectors)
    base = {"cpu": platform.processor() or platform.machine(), "faiss_threads": faiss.omp_get_max_threads()}
    base.update({"n": args.size, "dim": args.dim, "data": mixture.description, "queries": args.queries})
    records = []
    if args.rerank_only:  # candidates: the exact top C (all true), so that only the re-rank's precision can lose
        top = exact_top(vectors, queries, max(args.candidates))
        for candidates in args.candidates:
            found = list(top[:, :candidates])
            records.append({**base, "candidates": candidates, **reranked(stored, queries, found, truth)})
            print(json.dumps(records[-1]), file=sys.stderr, flush=True)
            args.out.write_text(json.dumps(records, indent=2) + "\n")
        args.nlist = []
    for nlist in args.nlist:
        samples = args.training_samples or max(65_536, ann.MIN_POINTS_PER_CENTROID * nlist)
        index, built = build(vectors, nlist, samples)
        for nprobe in args.nprobe:
            for candidates in args.candidates:
                record = {**base, "nlist": nlist, "m": ann.choose_m(args.dim), **built, "nprobe": nprobe}
                record.update({"candidates": candidates, **measure(index, stored, queries, truth, nprobe, candidates)})
                records.append(record)
                print(json.dumps({key: record[key] for key in list(record)[6:]}), file=sys.stderr, flush=True)
                args.out.write_text(json.dumps(records, indent=2) + "\n")


if __name__ == "__main__":
    main()
