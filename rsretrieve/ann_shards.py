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
from typing import Any

import faiss
import numpy as np

from rsretrieve import ann

Blocks = Iterable[tuple[int, np.ndarray]]
ShardFill = Callable[[np.ndarray, int, np.ndarray], np.ndarray]
ShardMap = Callable[[ShardFill, np.ndarray, Blocks], Iterator[np.ndarray]]
"""``shard_map(fill_shard, trained, blocks)`` yields ``fill_shard(trained, first, vectors)`` of every block, in
order, a few in flight at a time (``trained`` is the same for every block: a cluster ships it once)."""


def fill_shard(trained: np.ndarray, first: int, vectors: np.ndarray) -> np.ndarray:
    """A serialised copy of the (serialised) empty trained index holding ``vectors`` under ids first..."""
    shard = faiss.deserialize_index(trained)
    ann.add(shard, vectors, np.arange(first, first + len(vectors), dtype=np.int64))
    return faiss.serialize_index(shard)


def threaded_map(workers: int) -> ShardMap:
    """A ``ShardMap`` on ``workers`` threads (FAISS releases the GIL), at most ``workers + 1`` shards in memory."""

    def mapped(function: ShardFill, trained: np.ndarray, blocks: Blocks) -> Iterator[np.ndarray]:
        with ThreadPoolExecutor(workers) as pool:
            yield from in_order((pool.submit(function, trained, first, vectors) for first, vectors in blocks), workers)

    return mapped


def in_order(started: Iterator[Any], window: int, result: Callable[[Any], Any] = lambda job: job.result()):
    """Results of jobs as ``started`` starts them, in order, with at most ``window + 1`` started and not yet taken."""
    pending: deque = deque()
    for job in started:
        pending.append(job)
        if len(pending) > window:
            yield result(pending.popleft())
    while pending:
        yield result(pending.popleft())


def fill(index: faiss.Index, blocks: Iterable[tuple[int, np.ndarray]], shard_map: ShardMap | None = None) -> None:
    """Add every (first id, vectors) block to the trained, still empty ``index``: IVF shards filled by ``shard_map``
    (default: two threads) and merged in order; a flat index directly."""
    ivf = faiss.extract_index_ivf(index) if ann.describe(index)["index_type"] == "ivfpq" else None
    if ivf is None:
        for first, vectors in blocks:
            ann.add(index, vectors, np.arange(first, first + len(vectors), dtype=np.int64))
        return
    shards = (shard_map or threaded_map(2))(fill_shard, faiss.serialize_index(index), blocks)
    for shard in shards:
        part = faiss.deserialize_index(shard)  # held: the IVF extracted from it points into it
        ivf.merge_from(faiss.extract_index_ivf(part), 0)
