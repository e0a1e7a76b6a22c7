"""Filling a trained index shard by shard in parallel gives the index one sequential add gives."""

import faiss
import numpy as np

from rsretrieve import ann, ann_shards


def unit_vectors(count: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def inverted_lists(index: faiss.Index) -> list[tuple[list[int], bytes]]:
    """(ids, codes) of every IVF list, in list order."""
    ivf = faiss.extract_index_ivf(index)
    lists = ivf.invlists
    found = []
    for number in range(ivf.nlist):
        size = lists.list_size(number)
        ids = faiss.rev_swig_ptr(lists.get_ids(number), size).tolist()
        codes = faiss.rev_swig_ptr(lists.get_codes(number), size * lists.code_size).tobytes()
        found.append((ids, codes))
    return found


def test_sharded_fill_equals_sequential_add() -> None:
    vectors, queries = unit_vectors(3000, 32, seed=1), unit_vectors(20, 32, seed=2)
    params = ann.IndexParams(kind="ivfpq", nlist=16, m=8, nprobe=4)
    trained = ann.new_index(32, params)
    ann.train(trained, vectors[:1000])
    sequential, sharded = faiss.clone_index(trained), faiss.clone_index(trained)
    ann.add(sequential, vectors, np.arange(len(vectors)))
    blocks = [(first, vectors[first : first + 700]) for first in range(0, len(vectors), 700)]
    ann_shards.fill(sharded, blocks, ann_shards.threaded_map(3))

    assert sharded.ntotal == sequential.ntotal == len(vectors)
    lists = inverted_lists(sharded)
    assert lists == inverted_lists(sequential) and sum(len(ids) for ids, _ in lists) == len(vectors)
    for nprobe in (4, 16):
        got, want = ann.search(sharded, queries, 10, nprobe=nprobe), ann.search(sequential, queries, 10, nprobe=nprobe)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])


def test_a_flat_index_is_filled_in_order() -> None:
    vectors = unit_vectors(500, 16, seed=3)
    index = ann.new_index(16, ann.IndexParams(kind="flat"))
    ann_shards.fill(index, [(0, vectors[:200]), (200, vectors[200:])])
    _, fids = ann.search(index, vectors[[7, 300]], 1)
    assert fids[:, 0].tolist() == [7, 300]
