"""Tests for rsretrieve/models.py: registry, weight loading, random weights, pixel path, trimmed text tower."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from rsretrieve import models
from rsretrieve.images import fit_to_model
from rsretrieve.models import (
    MODELS,
    EmbeddingModel,
    ModelError,
    embedding_dim,
    encode_text_trimmed,
    load_model,
    load_weights,
    pooled_positions,
    resolve_spec,
    text_trimmable,
    unwrap_state_dict,
)

DESIGN_MODELS = {
    "remoteclip-rn50": ("RN50-quickgelu", 1024),
    "remoteclip-vit-b-32": ("ViT-B-32-quickgelu", 512),
    "remoteclip-vit-l-14": ("ViT-L-14-quickgelu", 768),
    "georsclip-vit-b-32": ("ViT-B-32-quickgelu", 512),
    "georsclip-vit-b-32-ret2": ("ViT-B-32-quickgelu", 512),
    "georsclip-vit-l-14": ("ViT-L-14-quickgelu", 768),
    "georsclip-vit-l-14-336": ("ViT-L-14-336-quickgelu", 768),
    "georsclip-vit-h-14": ("ViT-H-14", 1024),
}


@pytest.mark.parametrize("name", sorted(DESIGN_MODELS))
def test_registry_uses_the_architecture_the_authors_evaluated(name: str) -> None:
    spec = resolve_spec(name)
    architecture, dim = DESIGN_MODELS[name]
    assert spec.architecture == architecture
    assert embedding_dim(spec) == dim
    assert spec.hf_repo in {"chendelong/RemoteCLIP", "Zilun/GeoRSCLIP"}
    assert spec.strict == name.startswith("remoteclip")


def test_any_open_clip_architecture_resolves_and_unknown_names_fail() -> None:
    assert resolve_spec("ViT-B-16").architecture == "ViT-B-16"
    with pytest.raises(ModelError, match="unknown model 'no-such-model'"):
        resolve_spec("no-such-model")


def test_offline_without_weights_fails_fast_naming_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(ModelError) as error:
        load_model("remoteclip-vit-b-32", device="cpu")
    assert time.perf_counter() - started < 10
    message = str(error.value)
    assert "RemoteCLIP-ViT-B-32.pt" in message and "--checkpoint" in message
    assert "\n" not in message


def test_missing_checkpoint_file(tmp_path) -> None:
    with pytest.raises(ModelError, match="checkpoint not found"):
        load_model("tiny-test", checkpoint=tmp_path / "none.pt", device="cpu")


def test_random_weights_are_the_same_in_every_load() -> None:
    first = load_model("tiny-test", device="cpu", random_weights=True)
    second = load_model("tiny-test", device="cpu", random_weights=True)
    texts = ["an airport", "a river crossing farmland"]
    np.testing.assert_array_equal(first.encode_text(texts), second.encode_text(texts))
    assert first.checkpoint == "random-seed0"


def test_text_embeddings_are_normalised_and_long_text_is_truncated(tiny_model) -> None:
    vectors = tiny_model.encode_text(["farmland", "x " * 5000])
    assert vectors.shape == (2, tiny_model.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def _perturbed_state(model) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return {key: value + torch.randn(value.shape, generator=generator) * 0.01 if value.is_floating_point() else value
            for key, value in model.model.state_dict().items()}  # fmt: skip


@pytest.mark.parametrize("wrap", ["plain", "nested", "ddp"])
def test_checkpoint_round_trip(tmp_path, tiny_model, wrap: str) -> None:
    state = _perturbed_state(tiny_model)
    saved = {
        "plain": state,
        "nested": {"epoch": 3, "state_dict": state},
        "ddp": {f"module.{key}": value for key, value in state.items()},
    }[wrap]
    path = tmp_path / "weights.pt"
    torch.save(saved, path)
    loaded = load_model("rsretrieve-tiny", checkpoint=path, device="cpu")
    for key, value in loaded.model.state_dict().items():
        torch.testing.assert_close(value, state[key])
    assert loaded.checkpoint != "random-seed0" and len(loaded.checkpoint) == 16


def test_strict_loading_refuses_unexpected_keys_and_lenient_loading_ignores_them(tmp_path, tiny_model) -> None:
    state = dict(tiny_model.model.state_dict())
    state["extra.weight"] = torch.zeros(2)
    path = tmp_path / "extra.pt"
    torch.save(state, path)
    with pytest.raises(ModelError, match="1 unexpected keys"):
        load_weights(tiny_model.model, path, strict=True)
    load_weights(tiny_model.model, path, strict=False)  # GeoRSCLIP style


def test_missing_keys_and_wrong_shapes_are_refused(tmp_path, tiny_model) -> None:
    state = dict(tiny_model.model.state_dict())
    state.pop("logit_scale")
    path = tmp_path / "missing.pt"
    torch.save(state, path)
    with pytest.raises(ModelError, match="1 missing keys"):
        load_weights(tiny_model.model, path, strict=False)
    state = dict(tiny_model.model.state_dict())
    state["text_projection"] = torch.zeros(3, 3)
    torch.save(state, path)
    with pytest.raises(ModelError, match="does not match this architecture"):
        load_weights(tiny_model.model, path, strict=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="not a readable torch checkpoint"):
        load_weights(tiny_model.model, path, strict=True)


def test_unwrap_rejects_empty_checkpoints() -> None:
    with pytest.raises(ModelError):
        unwrap_state_dict({})


@pytest.mark.parametrize("shape", [(300, 250), (224, 224), (120, 500)])
def test_pixel_path_matches_open_clip_preprocess(tiny_model, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    expected = tiny_model.preprocess(Image.fromarray(pixels)).numpy()
    fitted = fit_to_model(pixels, tiny_model.image_size).transpose(2, 0, 1) / 255.0
    mean = np.array(tiny_model.mean).reshape(3, 1, 1)
    std = np.array(tiny_model.std).reshape(3, 1, 1)
    np.testing.assert_allclose((fitted - mean) / std, expected, atol=1e-5)


def test_vit_b_32_quickgelu_shapes_with_random_weights() -> None:
    model = load_model("remoteclip-vit-b-32", device="cpu", random_weights=True)
    assert (model.dim, model.image_size, model.architecture) == (512, 224, "ViT-B-32-quickgelu")
    images = [np.zeros((224, 224, 3), np.uint8), np.full((100, 300, 3), 200, np.uint8)]
    assert model.encode_images(images).shape == (2, 512)


def test_registry_names_are_unique_and_described() -> None:
    assert all(spec.description for spec in MODELS.values())
    assert "tiny-test" in MODELS


# Mixed token counts: empty (SOT + EOT), short, long, and over 77 tokens (open_clip truncates it to end in EOT).
TEXTS = [
    "a large airport with several planes parked next to the terminal building and a long runway beside it",
    "",
    "farmland",
    "river " * 100,
    "a bridge over a river",
    "many buildings and some green trees are around a playground",
]


@pytest.fixture(scope="module")
def vit_b_32() -> EmbeddingModel:
    """ViT-B-32-quickgelu straight from open_clip with seeded random weights, wrapped like a loaded model."""
    tiny = load_model("tiny-test", device="cpu", random_weights=True)
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32-quickgelu").eval()
    tokenizer = open_clip.get_tokenizer("ViT-B-32-quickgelu")
    return dataclasses.replace(
        tiny,
        name="vit-b-32-random",
        architecture="ViT-B-32-quickgelu",
        dim=512,
        image_size=224,
        model=model,
        tokenizer=tokenizer,
    )


@pytest.fixture(params=["tiny", "vit-b-32"])
def text_model(request, tiny_model, vit_b_32) -> EmbeddingModel:
    return {"tiny": tiny_model, "vit-b-32": vit_b_32}[request.param]


def _padded(model: EmbeddingModel, texts: list[str]) -> torch.Tensor:
    """open_clip's own normalised text embeddings of the full 77-token context."""
    with torch.inference_mode():
        return F.normalize(model.model.encode_text(model.tokenizer(texts)), dim=-1)


def _trimmed(model: EmbeddingModel, texts: list[str]) -> torch.Tensor:
    with torch.inference_mode():
        return F.normalize(encode_text_trimmed(model.model, model.tokenizer(texts)), dim=-1)


def test_open_clip_text_towers_are_trimmable(text_model) -> None:
    assert text_trimmable(text_model.model) and text_model.trims_text
    lengths = pooled_positions(text_model.model, text_model.tokenizer(TEXTS)) + 1
    assert lengths.tolist() == [20, 2, 3, 77, 7, 12]  # SOT + words + EOT; the long text is cut at 77


@pytest.mark.parametrize("text", TEXTS)
def test_trimmed_text_tower_matches_padded_for_one_text(text_model, text: str) -> None:
    torch.testing.assert_close(_trimmed(text_model, [text]), _padded(text_model, [text]), atol=1e-5, rtol=0)


def test_trimmed_text_tower_matches_padded_for_a_mixed_batch(text_model) -> None:
    short = [text for text in TEXTS if len(text) < 100]  # trimmed to the longest of these, well under 77
    for batch in (TEXTS, short):
        torch.testing.assert_close(_trimmed(text_model, batch), _padded(text_model, batch), atol=1e-5, rtol=0)


def test_encode_text_batches_by_length_and_keeps_the_order(text_model, monkeypatch: pytest.MonkeyPatch) -> None:
    widths: list[int] = []

    def spy(model, tokens):
        widths.append(int(pooled_positions(model, tokens).max()) + 1)
        return encode_text_trimmed(model, tokens)

    monkeypatch.setattr(models, "encode_text_trimmed", spy)
    vectors = text_model.encode_text(TEXTS, batch_size=2)
    expected = torch.cat([_padded(text_model, [text]) for text in TEXTS]).numpy()
    np.testing.assert_allclose(vectors, expected, atol=1e-5, rtol=0)
    assert widths == sorted(widths) and len(widths) == 3 and widths[-1] == 77
    assert text_model.encode_text([]).shape == (0, text_model.dim)


def _tiny_custom_text_clip() -> torch.nn.Module:
    """A CustomTextCLIP (the class HF text towers use) with a causal, argmax-pooled text tower."""
    config = open_clip.get_model_config("rsretrieve-tiny")
    return open_clip.CustomTextCLIP(config["embed_dim"], config["vision_cfg"], config["text_cfg"]).eval()


@pytest.mark.parametrize("change", ["no-mask", "bidirectional-mask", "last-pool", "custom-text", "not-open-clip"])
def test_towers_that_trimming_could_change_are_not_trimmable(change: str) -> None:
    model = load_model("tiny-test", device="cpu", random_weights=True).model
    if change == "no-mask":
        model.attn_mask = None
    elif change == "bidirectional-mask":
        model.attn_mask = torch.zeros_like(model.attn_mask)
    elif change == "last-pool":
        model.text_pool_type = "last"
    elif change == "custom-text":
        model = _tiny_custom_text_clip()
    else:
        model = torch.nn.Linear(2, 2)
    assert not text_trimmable(model)


def test_encode_text_falls_back_to_open_clip_for_other_towers(tiny_model, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    fallback = dataclasses.replace(tiny_model, model=_tiny_custom_text_clip())

    def refuse(model, tokens):
        raise AssertionError("trimmed path taken for a tower it does not apply to")

    monkeypatch.setattr(models, "encode_text_trimmed", refuse)
    assert not fallback.trims_text
    expected = _padded(fallback, TEXTS).numpy()
    np.testing.assert_allclose(fallback.encode_text(TEXTS, batch_size=4), expected, atol=1e-6, rtol=0)
