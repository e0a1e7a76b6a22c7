"""Tests for rsretrieve.evaluation.metrics on hand-made similarity setups with known answers."""

import numpy as np
import pytest

from rsretrieve.evaluation import metrics
from rsretrieve.evaluation.metrics import recall_from_ranked_ids, retrieval_metrics

KEYS = ["i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "mR"]


def one_hot(rows: list[int], dim: int) -> np.ndarray:
    """Unit vectors along the given axes."""
    return np.eye(dim, dtype=np.float32)[rows]


def naive_metrics(image_emb, text_emb, text_to_image, ks=(1, 5, 10)) -> dict[str, float]:
    """Straightforward per-query loops: pessimistic ranks of the best positive."""
    sim = text_emb.astype(np.float64) @ image_emb.T.astype(np.float64)
    t2i = [np.sum(np.delete(row, j) >= row[j]) for row, j in zip(sim, text_to_image, strict=True)]
    i2t = []
    for image, column in enumerate(sim.T):
        positive = text_to_image == image
        i2t.append(np.sum(column[~positive] >= column[positive].max()))
    out = {f"i2t_R@{k}": 100 * np.mean(np.array(i2t) < k) for k in ks}
    out |= {f"t2i_R@{k}": 100 * np.mean(np.array(t2i) < k) for k in ks}
    out["mR"] = np.mean(list(out.values()))
    return out


def test_perfect_retrieval_scores_100_everywhere():
    images = one_hot([0, 1, 2], 3)
    texts = one_hot([0, 0, 1, 2, 2], 3)
    result = retrieval_metrics(images, texts, np.array([0, 0, 1, 2, 2]))
    assert list(result) == KEYS
    assert result == dict.fromkeys(KEYS, 100.0)


def test_worst_case_scores_zero_at_k_below_the_candidate_count():
    # Each caption is orthogonal to its own image and equal to all others: ranks are last.
    images = one_hot(list(range(12)), 12)
    texts = 1.0 - images
    result = retrieval_metrics(images, texts, np.arange(12), ks=(1, 10, 11, 12))
    for direction in ("i2t", "t2i"):
        assert result[f"{direction}_R@1"] == 0.0
        assert result[f"{direction}_R@10"] == 0.0
        assert result[f"{direction}_R@11"] == 0.0  # 11 negatives score higher: rank 11
        assert result[f"{direction}_R@12"] == 100.0


def test_positive_tied_with_negative_is_not_a_hit_at_1():
    images = np.array([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32)  # two identical images
    texts = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    result = retrieval_metrics(images, texts, np.array([0, 1]), ks=(1, 2))
    # caption 0: image 0 ties with image 1 -> rank 1; caption 1: both images score 0 -> rank 1.
    assert result["t2i_R@1"] == 0.0
    assert result["t2i_R@2"] == 100.0
    # image 0: its caption scores 1, caption 1 scores 0 -> hit; image 1: its caption scores 0 < 1 -> miss.
    assert result["i2t_R@1"] == 50.0


def test_duplicate_captions_on_different_images_stay_separate_queries():
    images = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], dtype=np.float32)
    texts = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], dtype=np.float32)
    text_to_image = np.array([0, 1, 1, 2])  # the same text describes images 0 and 1
    result = retrieval_metrics(images, texts, text_to_image, ks=(1,))
    # t2i: caption 0 finds image 0 (hit); its duplicate, caption 1, also finds image 0 (miss); caption 2 hits;
    # caption 3 scores 0.5 on image 2 and 0.5 on images 0 and 1: a tie, so a miss.
    assert result["t2i_R@1"] == 50.0
    # i2t: image 0's best is caption 0 (1.0), tied with caption 1 of image 1 -> miss;
    # image 1's caption 2 wins; image 2's caption 3 (0.5) ties with captions 0, 1, 2 -> miss.
    assert result["i2t_R@1"] == pytest.approx(100 / 3)


def test_identical_captions_of_one_image_do_not_push_each_other_down():
    images = one_hot([0, 1], 2)
    texts = one_hot([0, 0, 1], 2)
    result = retrieval_metrics(images, texts, np.array([0, 0, 1]), ks=(1,))
    assert result["i2t_R@1"] == 100.0


def test_image_with_five_captions_one_in_top_1():
    # Image 0 has five captions; only caption 0 beats the other images' captions.
    images = one_hot([0, 1], 4)
    texts = np.zeros((7, 4), dtype=np.float32)
    texts[0, 0] = 1.0
    texts[1:5, 0] = 0.25
    texts[1:5, 2] = 1.0
    texts[5, [0, 1]] = [0.5, 0.5]
    texts[6, 1] = 1.0
    text_to_image = np.array([0, 0, 0, 0, 0, 1, 1])
    result = retrieval_metrics(images, texts, text_to_image, ks=(1, 5))
    assert result["i2t_R@1"] == 100.0
    # t2i: captions 1-4 score 0.25 on image 0 and 0 on image 1 -> hits; caption 5 ties 0.5/0.5 -> miss.
    assert result["t2i_R@1"] == pytest.approx(100 * 6 / 7)
    assert result["t2i_R@5"] == 100.0
    assert result["mR"] == pytest.approx(np.mean([100, 100, 100 * 6 / 7, 100]))


def test_block_processing_matches_naive_computation(monkeypatch):
    rng = np.random.default_rng(0)
    images = rng.standard_normal((37, 16)).astype(np.float32)
    texts = rng.standard_normal((170, 16)).astype(np.float32)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    text_to_image = np.concatenate([np.arange(37), rng.integers(0, 37, 170 - 37)])
    expected = naive_metrics(images, texts, text_to_image)
    monkeypatch.setattr(metrics, "BLOCK_ELEMENTS", 100)  # a few rows per block, and 1 row for i2t
    result = retrieval_metrics(images, texts, text_to_image)
    assert result == pytest.approx(expected)
    assert 0 < result["t2i_R@1"] < 100


def test_inputs_are_not_renormalised():
    images = np.array([[2.0, 0.0], [0.0, 1.0]])
    texts = np.array([[0.6, 0.8], [1.0, 0.0]])  # caption 0 prefers image 0 (1.2 > 0.8) only without renormalising
    result = retrieval_metrics(images, texts, np.array([1, 0]), ks=(1,))
    assert result["t2i_R@1"] == 50.0


@pytest.mark.parametrize(
    ("images", "texts", "text_to_image", "message"),
    [
        (np.ones((2, 3)), np.ones((2, 4)), [0, 1], "dims differ"),
        (np.ones((2, 3)), np.ones((2, 3)), [0, 2], r"\[0, 2\)"),
        (np.ones((2, 3)), np.ones((2, 3)), [0, -1], r"\[0, 2\)"),
        (np.ones((2, 3)), np.ones((2, 3)), [0], "one per caption"),
        (np.ones((2, 3)), np.ones((2, 3)), [0.0, 1.0], "integer"),
        (np.ones((0, 3)), np.ones((2, 3)), [0, 0], "no images"),
        (np.ones((2, 3)), np.ones((0, 3)), [], "no images or no captions"),
        (np.ones(3), np.ones((2, 3)), [0, 0], "2-D"),
        (np.ones((2, 3)), np.ones((2, 3)), [0, 0], "no caption"),
        (np.full((1, 3), np.nan), np.ones((1, 3)), [0], "NaN"),
    ],
)
def test_invalid_inputs_raise_clear_errors(images, texts, text_to_image, message):
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(images, texts, np.array(text_to_image))


@pytest.mark.parametrize("ks", [(), (0, 1), (5, 1), (1, 1)])
def test_invalid_ks_raise(ks):
    with pytest.raises(ValueError, match="ks must be"):
        retrieval_metrics(np.eye(2), np.eye(2), np.array([0, 1]), ks=ks)


def test_recall_from_ranked_ids_with_padding():
    ranked = np.array(
        [
            [3, 1, 2, -1, -1],  # positive 3 at rank 0
            [0, 2, 4, 1, -1],  # positive 1 at rank 3
            [5, -1, -1, -1, -1],  # positive 2 never returned
            [-1, -1, -1, -1, -1],  # nothing returned
        ]
    )
    result = recall_from_ranked_ids(ranked, np.array([3, 1, 2, 0]), ks=(1, 4, 5))
    assert result == {1: 25.0, 4: 50.0, 5: 50.0}


def test_recall_from_ranked_ids_agrees_with_exact_t2i_without_ties():
    rng = np.random.default_rng(1)
    images = rng.standard_normal((20, 8)).astype(np.float32)
    texts = rng.standard_normal((60, 8)).astype(np.float32)
    text_to_image = np.tile(np.arange(20), 3)
    ranked = np.argsort(-(texts @ images.T), axis=1)[:, :10]
    expected = retrieval_metrics(images, texts, text_to_image)
    result = recall_from_ranked_ids(ranked, text_to_image)
    assert result == pytest.approx({k: expected[f"t2i_R@{k}"] for k in (1, 5, 10)})


@pytest.mark.parametrize(
    ("ranked", "positive", "message"),
    [
        (np.zeros((2, 10), dtype=int), np.zeros(3, dtype=int), "n_queries"),
        (np.zeros((0, 10), dtype=int), np.zeros(0, dtype=int), "no queries"),
        (np.zeros((2, 5), dtype=int), np.zeros(2, dtype=int), "at least 10"),
        (np.zeros((2, 10)), np.zeros(2, dtype=int), "integer"),
        (np.zeros((2, 10), dtype=int), np.array([0, -1]), ">= 0"),
    ],
)
def test_recall_from_ranked_ids_rejects_bad_input(ranked, positive, message):
    with pytest.raises(ValueError, match=message):
        recall_from_ranked_ids(ranked, positive)
