"""Tests for rsretrieve/models.py: registry, weight loading, random weights, pixel path."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image

from rsretrieve.images import fit_to_model
from rsretrieve.models import (
    MODELS,
    ModelError,
    embedding_dim,
    load_model,
    load_weights,
    resolve_spec,
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
