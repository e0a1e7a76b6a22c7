"""Tests for rsretrieve.evaluation.references: the published numbers of docs/architecture.md §6."""

import numpy as np
import pytest

from rsretrieve.evaluation.references import KEYS, PUBLISHED, SOURCES, compare_with_published

MODELS = [
    "remoteclip-rn50",
    "remoteclip-vit-b-32",
    "remoteclip-vit-l-14",
    "georsclip-vit-b-32",
    "georsclip-vit-b-32-ret2",
    "georsclip-vit-h-14",
]


def test_every_model_has_both_datasets_and_a_source():
    assert set(PUBLISHED) == {(model, dataset) for model in MODELS for dataset in ("rsitmd", "rsicd")}
    assert set(SOURCES) == set(MODELS)


@pytest.mark.parametrize("key", sorted(PUBLISHED))
def test_published_mean_recall_is_the_mean_of_the_six(key):
    numbers = PUBLISHED[key]
    assert tuple(numbers) == KEYS
    assert numbers["mR"] == pytest.approx(np.mean([numbers[k] for k in KEYS[:6]]), abs=0.01)


def test_spot_values_match_design():
    assert PUBLISHED["remoteclip-vit-b-32", "rsitmd"]["i2t_R@1"] == 27.88
    assert PUBLISHED["georsclip-vit-h-14", "rsicd"]["t2i_R@10"] == 44.41
    assert PUBLISHED["remoteclip-rn50", "rsitmd"]["i2t_R@10"] == 64.60


def test_remoteclip_and_ret2_are_not_zero_shot():
    assert [model for model in MODELS if not SOURCES[model].zero_shot] == [
        "remoteclip-rn50",
        "remoteclip-vit-b-32",
        "remoteclip-vit-l-14",
        "georsclip-vit-b-32-ret2",
    ]
    assert "not zero-shot" in SOURCES["remoteclip-vit-b-32"].note
    assert "RemoteCLIP paper" in SOURCES["remoteclip-vit-l-14"].source
    assert "RS5M" in SOURCES["georsclip-vit-h-14"].source


def test_compare_with_published_differences():
    measured = dict(PUBLISHED["remoteclip-vit-b-32", "rsicd"])
    measured["t2i_R@1"] += 1.5
    del measured["i2t_R@10"]
    result = compare_with_published("RemoteCLIP-ViT-B-32", "RSICD", measured)
    assert result["published"] == PUBLISHED["remoteclip-vit-b-32", "rsicd"]
    assert result["difference"]["t2i_R@1"] == pytest.approx(1.5)
    assert result["difference"]["mR"] == 0.0
    assert "i2t_R@10" not in result["difference"]
    assert result["note"] == SOURCES["remoteclip-vit-b-32"].note
    assert result["source"] == SOURCES["remoteclip-vit-b-32"].source


@pytest.mark.parametrize(("model", "dataset"), [("georsclip-vit-l-14", "rsitmd"), ("remoteclip-rn50", "ucm")])
def test_compare_without_published_numbers_is_none(model, dataset):
    assert compare_with_published(model, dataset, {"mR": 1.0}) is None
