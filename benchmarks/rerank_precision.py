"""Which compact form of the stored vectors the exact re-rank can use (issue 16, DESIGN §5/§8): recall and bytes.

    python benchmarks/rerank_precision.py [--sizes 100000] [--dim 512] [--mixture clusters places] [--out FILE.json]

The product's search at each size: IVF-PQ (``ann.choose_params``, default nprobe) fetches k × rerank-factor
candidates, which are re-ranked exactly by inner product with the stored vectors, here kept in each form:

- float32 (formats 1-2: 4·dim bytes), float16 (2·dim);
- int8-row: int8 components with one float32 scale per row (``rsretrieve.store.vector_codes``: dim + 4), what the
  store keeps from format 3 on;
- sq8-dim: FAISS ``ScalarQuantizer`` QT_8bit (per-dimension min/max: dim bytes), trained on all the vectors, and
  sq8-dim-first: trained on the first 1% only (what an append-only store would have to do: later rows are clipped).

Per form: recall@10 of the whole search against exact float32 search, the mean score error of the re-rank
(``max |q·decode(v) − q·v|`` over candidates, averaged over queries) and bytes per vector. Seeded synthetic vectors
(``speed.Mixture``: 2048 clusters; ``places``: tight groups of ~64, whose neighbours are near-ties).
"""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from speed import CLUSTERS, PLACE_ROWS, Mixture

from rsretrieve import ann, search
from rsretrieve.store import vector_codes

RESULTS = Path(__file__).resolve().parent / "results"
K = 10
FIRST_SHARE = 0.01


def scalar_quantiser(train: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Encode-decode through FAISS's per-dimension 8-bit scalar quantiser trained on ``train``."""
    quantiser = faiss.ScalarQuantizer(train.shape[1], faiss.ScalarQuantizer.QT_8bit)
    quantiser.train(train)
    return lambda vectors: quantiser.decode(quantiser.compute_codes(np.ascontiguousarray(vectors)))


def forms(vectors: np.ndarray) -> dict[str, tuple[Callable[[np.ndarray], np.ndarray], int]]:
    """Each stored form: (what re-rank reads back for some vectors, bytes per vector)."""
    dim = vectors.shape[1]
    return {
        "float32": (lambda v: v, 4 * dim),
        "float16": (lambda v: v.astype(np.float16).astype(np.float32), 2 * dim),
        "int8-row": (lambda v: vector_codes.decode(vector_codes.encode(v)), vector_codes.row_bytes(dim)),
        "sq8-dim": (scalar_quantiser(vectors), dim),
        "sq8-dim-first": (scalar_quantiser(vectors[: max(int(len(vectors) * FIRST_SHARE), 256)]), dim),
    }


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of the true top k found."""
    return float(np.mean([len(np.intersect1d(row, want)) / K for row, want in zip(found, truth, strict=True)]))


def measure(vectors: np.ndarray, queries: np.ndarray, rerank: int) -> list[dict[str, Any]]:
    """One record per stored form."""
    n, dim = vectors.shape
    params = ann.choose_params(n, dim, "ivfpq")
    index = ann.new_index(dim, params)
    sample = np.random.default_rng(0).choice(n, min(n, ann.max_training_samples(params)), replace=False)
    ann.train(index, vectors[np.sort(sample)])
    ann.add(index, vectors, np.arange(n))
    _, truth = ann.exact_search(vectors, np.arange(n), queries, K)
    _, candidates = ann.search(index, queries, K * rerank)
    records = []
    for name, (stored, size) in forms(vectors).items():
        found, errors = [], []
        for query, fids in zip(queries, candidates, strict=True):
            fids = fids[fids >= 0]
            kept = stored(vectors[fids])
            scores = kept @ query
            errors.append(float(np.abs(scores - vectors[fids] @ query).max()))
            found.append(fids[np.argsort(-scores, kind="stable")[:K]])
        records.append(
            {
                "form": name,
                "recall_at_10": round(recall(np.array(found), truth), 4),
                "max_score_error": round(float(np.mean(errors)), 6),
                "bytes_per_vector": size,
                **{key: params.as_dict()[key] for key in ("nlist", "m", "nprobe")},
                "rerank_factor": rerank,
            }
        )
    return records


def main() -> None:
    """Measure every size and mixture; write the JSON and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--mixture", nargs="+", choices=["clusters", "places"], default=["clusters", "places"])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "rerank-precision-cpu.json")
    args = parser.parse_args()
    base = {"cpu": platform.processor() or platform.machine(), "faiss_threads": faiss.omp_get_max_threads()}
    records = []
    for n in args.sizes:
        for mixture_kind in args.mixture:
            mixture = Mixture(args.dim, args.seed, n // PLACE_ROWS if mixture_kind == "places" else 0)
            vectors, queries = mixture.sample(n, stream=1), mixture.sample(args.queries, stream=2)
            data = {"n": n, "dim": args.dim, "data": mixture.description, "clusters": CLUSTERS}
            for record in measure(vectors, queries, search.DEFAULT_RERANK_FACTOR):
                records.append({**base, **data, **record})
                print(
                    json.dumps(
                        {
                            key: records[-1][key]
                            for key in ("n", "data", "form", "recall_at_10", "max_score_error", "bytes_per_vector")
                        }
                    )
                )
    args.out.write_text(json.dumps(records, indent=2) + "\n")


if __name__ == "__main__":
    main()
