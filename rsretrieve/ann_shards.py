"""Filling a trained FAISS index shard by shard, the shards encoded in parallel (issue 16, DESIGN §8).

A large archive's IVF-PQ is trained on a sample (``ann.max_training_samples``); filling it is the long part (each
vector is assigned to its list and PQ-encoded). Here each block of vectors becomes a shard: an empty copy of the
trained index, filled by a worker (a thread here, a Ray task in ``indexer.distributed``), handed back serialised,
and merged into the index in block order (``merge_from``: its inverted lists appended list by list). Merged in
order, every list holds the same codes in the same order as one sequential ``add``, so the index and its search
results are the same. A flat index is filled in this process (there is nothing to encode).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import faiss
import numpy as np

from rsretrieve import ann

Result = TypeVar("Result")
ShardMap = Callable[[Callable[..., np.ndarray], Iterable[tuple]], Iterator[np.ndarray]]
"""Applies a function to argument tuples, yielding the results in order, a few in flight at a time."""


def fill_shard(trained: np.ndarray, first: int, vectors: np.ndarray) -> np.ndarray:
    """A serialised copy of the (serialised) empty trained index holding ``vectors`` under ids first..."""
    shard = faiss.deserialize_index(trained)
    ann.add(shard, vectors, np.arange(first, first + len(vectors), dtype=np.int64))
    return faiss.serialize_index(shard)


def threaded_map(workers: int) -> ShardMap:
    """A ``ShardMap`` on ``workers`` threads (FAISS releases the GIL), at most ``workers + 1`` shards in memory."""

    def mapped(function: Callable[..., Result], arguments: Iterable[tuple]) -> Iterator[Result]:
        with ThreadPoolExecutor(workers) as pool:
            pending: deque = deque()
            for item in arguments:
                pending.append(pool.submit(function, *item))
                if len(pending) > workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    return mapped


def fill(index: faiss.Index, blocks: Iterable[tuple[int, np.ndarray]], shard_map: ShardMap | None = None) -> None:
    """Add every (first id, vectors) block to the trained, still empty ``index``: IVF shards filled by ``shard_map``
    (default: two threads) and merged in order; a flat index directly."""
    ivf = faiss.extract_index_ivf(index) if ann.describe(index)["index_type"] == "ivfpq" else None
    if ivf is None:
        for first, vectors in blocks:
            ann.add(index, vectors, np.arange(first, first + len(vectors), dtype=np.int64))
        return
    trained = faiss.serialize_index(index)
    shards = (shard_map or threaded_map(2))(fill_shard, ((trained, first, vectors) for first, vectors in blocks))
    for shard in shards:
        part = faiss.deserialize_index(shard)  # held: the IVF extracted from it points into it
        ivf.merge_from(faiss.extract_index_ivf(part), 0)
