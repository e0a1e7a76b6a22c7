"""Image-text retrieval recall, computed as RemoteCLIP and GeoRSCLIP report it (docs/architecture.md §6).

Every caption is a text→image query whose single positive is its own image; every image is an image→text
query whose positives are all of its captions. recall@k is the percentage of queries with at least one
positive in the top k, and ``mR`` is the mean of the six recalls.
"""

from collections.abc import Sequence

import numpy as np

BLOCK_ELEMENTS = 1 << 22
"""Similarity entries scored at once (16 MiB of float32): bounds memory for any benchmark size."""


def retrieval_metrics(
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    text_to_image: np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Return ``i2t_R@k``, ``t2i_R@k`` (percent, for each k in ``ks``) and ``mR``, their mean.

    Similarity is the inner product of the given embeddings (L2-normalise them beforehand; nothing is
    renormalised here). ``text_to_image[i]`` is the row in ``image_emb`` of caption ``i``'s image.

    Ties never favour a positive: a query's rank is the number of negatives scoring at least as high as
    its best positive, so a positive tied with a negative counts as ranked below it. For a text→image
    query (one positive) this is the count of candidates scoring strictly higher plus the other candidates
    scoring equally. Positives tied with each other do not push each other down, since in any order one
    of them comes first (identical captions of one image score identically).
    """
    image_emb, text_emb, text_to_image = _validated(image_emb, text_emb, text_to_image)
    ks = _validated_ks(ks)
    image_ids = np.arange(len(image_emb))
    i2t = _ranks(image_emb, text_emb, image_ids, text_to_image)
    t2i = _ranks(text_emb, image_emb, text_to_image, image_ids)
    metrics = {f"i2t_R@{k}": _recall(i2t, k) for k in ks}
    metrics |= {f"t2i_R@{k}": _recall(t2i, k) for k in ks}
    metrics["mR"] = float(np.mean(list(metrics.values())))
    return metrics


def recall_from_ranked_ids(
    ranked: np.ndarray, positive: np.ndarray, ks: Sequence[int] = (1, 5, 10)
) -> dict[int, float]:
    """Return recall@k in percent from ranked candidate ids, e.g. image ids from an ANN index.

    ``ranked`` is (n_queries, k_max), best first, with -1 where the index returned nothing;
    ``positive`` holds each query's single positive id.
    """
    ranked = np.asarray(ranked)
    positive = np.asarray(positive)
    if ranked.ndim != 2 or positive.ndim != 1 or len(ranked) != len(positive):
        raise ValueError(
            f"ranked must be (n_queries, k_max) and positive (n_queries,); got {ranked.shape} and {positive.shape}"
        )
    if len(positive) == 0:
        raise ValueError("no queries: ranked and positive are empty")
    if not (_is_int(ranked) and _is_int(positive)):
        raise ValueError("ranked and positive must hold integer ids")
    if positive.min() < 0:
        raise ValueError("positive ids must be >= 0 (-1 only pads ranked)")
    ks = _validated_ks(ks)
    if ks[-1] > ranked.shape[1]:
        raise ValueError(f"recall@{ks[-1]} needs at least {ks[-1]} ranked ids per query, got {ranked.shape[1]}")
    hits = ranked == positive[:, None]
    first_hit = np.where(hits.any(axis=1), hits.argmax(axis=1), ranked.shape[1])
    return {k: _recall(first_hit, k) for k in ks}


def _ranks(
    queries: np.ndarray,
    candidates: np.ndarray,
    query_labels: np.ndarray,
    candidate_labels: np.ndarray,
) -> np.ndarray:
    """Rank of each query's best positive (0 = first), ties resolved against it; rows in blocks."""
    ranks = np.empty(len(queries), dtype=np.int64)
    step = max(1, BLOCK_ELEMENTS // len(candidates))
    for start in range(0, len(queries), step):
        rows = slice(start, start + step)
        sim = queries[rows] @ candidates.T
        positive = query_labels[rows, None] == candidate_labels[None, :]
        best = np.where(positive, sim, -np.inf).max(axis=1, keepdims=True)
        ranks[rows] = np.count_nonzero((sim >= best) & ~positive, axis=1)
    return ranks


def _recall(ranks: np.ndarray, k: int) -> float:
    """Percentage of ranks below k."""
    return 100.0 * float(np.count_nonzero(ranks < k)) / len(ranks)


def _validated(
    image_emb: np.ndarray, text_emb: np.ndarray, text_to_image: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check shapes, ids and values; return float arrays (float32 at least) and int64 ids."""
    dtype = np.result_type(image_emb, text_emb, np.float32)
    image_emb = np.asarray(image_emb, dtype=dtype)
    text_emb = np.asarray(text_emb, dtype=dtype)
    text_to_image = np.asarray(text_to_image)
    if image_emb.ndim != 2 or text_emb.ndim != 2:
        raise ValueError(f"embeddings must be 2-D; got image {image_emb.shape} and text {text_emb.shape}")
    if len(image_emb) == 0 or len(text_emb) == 0:
        raise ValueError(f"no images or no captions: image {image_emb.shape}, text {text_emb.shape}")
    if image_emb.shape[1] != text_emb.shape[1]:
        raise ValueError(f"embedding dims differ: image {image_emb.shape[1]}, text {text_emb.shape[1]}")
    if text_to_image.shape != (len(text_emb),) or not _is_int(text_to_image):
        raise ValueError(
            f"text_to_image must be {len(text_emb)} integer image rows, one per caption; "
            f"got {text_to_image.dtype} {text_to_image.shape}"
        )
    if text_to_image.min() < 0 or text_to_image.max() >= len(image_emb):
        raise ValueError(
            f"text_to_image must lie in [0, {len(image_emb)}): found {text_to_image.min()}..{text_to_image.max()}"
        )
    uncaptioned = np.setdiff1d(np.arange(len(image_emb)), text_to_image)
    if len(uncaptioned):
        raise ValueError(f"{len(uncaptioned)} image rows have no caption (first: {uncaptioned[0]})")
    if not (np.isfinite(image_emb).all() and np.isfinite(text_emb).all()):
        raise ValueError("embeddings contain NaN or infinite values")
    return image_emb, text_emb, text_to_image.astype(np.int64)


def _validated_ks(ks: Sequence[int]) -> tuple[int, ...]:
    """Check that ks is a non-empty, increasing sequence of positive ints."""
    ks = tuple(int(k) for k in ks)
    if not ks or ks[0] < 1 or list(ks) != sorted(set(ks)):
        raise ValueError(f"ks must be increasing positive integers, got {ks}")
    return ks


def _is_int(array: np.ndarray) -> bool:
    """Whether an array holds integers."""
    return np.issubdtype(array.dtype, np.integer)
