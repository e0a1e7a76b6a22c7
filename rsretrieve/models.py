"""Model registry and loading: one place that knows how to build each remote-sensing CLIP.

The registry maps short names to the open_clip architecture the authors evaluated with (the QuickGELU
variants for RemoteCLIP and GeoRSCLIP B/L, docs/architecture.md §3) and to the Hugging Face file holding the weights.
Any other open_clip architecture works with ``--checkpoint PATH`` or ``--random-weights``.
torch and open_clip are imported lazily so that light CLI paths stay fast.

Text is embedded on tokens trimmed to the batch's longest real sequence where the text tower provably gives
the same result (``text_trimmable``, ``encode_text_trimmed``): under a causal mask with EOT pooling no position
after the pooled one can change the embedding (``benchmarks/text_speed.py`` measures what it saves).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import socket
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rsretrieve.errors import UserError
from rsretrieve.images import fit_to_model, to_chw

if TYPE_CHECKING:
    import torch

CONFIG_DIR = Path(__file__).parent / "model_configs"
RANDOM_SEED = 0
RANDOM_CHECKPOINT = f"random-seed{RANDOM_SEED}"  # the checkpoint an index records for seeded random weights
DEFAULT_MODEL = "remoteclip-vit-b-32"


def is_random_checkpoint(checkpoint: str) -> bool:
    """Whether a recorded checkpoint stands for seeded random weights (``--random-weights``)."""
    return checkpoint.startswith("random-seed")


class ModelError(UserError):
    """A model that cannot be built or loaded; the message is one line for the user."""


@dataclass(frozen=True)
class ModelSpec:
    """A named model: its open_clip architecture and where its weights live."""

    name: str
    architecture: str
    hf_repo: str | None = None
    hf_filename: str | None = None
    strict: bool = True
    description: str = ""

    @property
    def download_url(self) -> str | None:
        """Browser URL of the weights file on the Hugging Face Hub."""
        if not self.hf_repo:
            return None
        return f"https://huggingface.co/{self.hf_repo}/blob/main/{self.hf_filename}"


def _remoteclip(name: str, architecture: str, filename: str, description: str) -> ModelSpec:
    return ModelSpec(name, architecture, "chendelong/RemoteCLIP", filename, True, description)


def _georsclip(name: str, architecture: str, filename: str, description: str) -> ModelSpec:
    return ModelSpec(name, architecture, "Zilun/GeoRSCLIP", filename, False, description)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        _remoteclip("remoteclip-rn50", "RN50-quickgelu", "RemoteCLIP-RN50.pt", "RemoteCLIP RN50"),
        _remoteclip("remoteclip-vit-b-32", "ViT-B-32-quickgelu", "RemoteCLIP-ViT-B-32.pt", "RemoteCLIP ViT-B/32"),
        _remoteclip("remoteclip-vit-l-14", "ViT-L-14-quickgelu", "RemoteCLIP-ViT-L-14.pt", "RemoteCLIP ViT-L/14"),
        _georsclip("georsclip-vit-b-32", "ViT-B-32-quickgelu", "ckpt/RS5M_ViT-B-32.pt", "GeoRSCLIP ViT-B/32 (RS5M)"),
        _georsclip(
            "georsclip-vit-b-32-ret2",
            "ViT-B-32-quickgelu",
            "ckpt/RS5M_ViT-B-32_RET-2.pt",
            "GeoRSCLIP ViT-B/32 fine-tuned for RSITMD+RSICD retrieval",
        ),
        _georsclip("georsclip-vit-l-14", "ViT-L-14-quickgelu", "ckpt/RS5M_ViT-L-14.pt", "GeoRSCLIP ViT-L/14 (RS5M)"),
        _georsclip(
            "georsclip-vit-l-14-336",
            "ViT-L-14-336-quickgelu",
            "ckpt/RS5M_ViT-L-14-336.pt",
            "GeoRSCLIP ViT-L/14 336 px (RS5M)",
        ),
        _georsclip("georsclip-vit-h-14", "ViT-H-14", "ckpt/RS5M_ViT-H-14.pt", "GeoRSCLIP ViT-H/14 (RS5M)"),
        ModelSpec("tiny-test", "rsretrieve-tiny", description="tiny random model for tests and demos"),
    )
}


def _open_clip() -> Any:
    """Import open_clip with the project's own configs registered."""
    import open_clip

    if "rsretrieve-tiny" not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_DIR)
    return open_clip


def resolve_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``, or a bare spec for any open_clip architecture."""
    if name in MODELS:
        return MODELS[name]
    if name in _open_clip().list_models():
        return ModelSpec(name, name, description="open_clip architecture (needs --checkpoint)")
    raise ModelError(f"unknown model '{name}': run `rsretrieve models` to list the available ones")


def embedding_dim(spec: ModelSpec) -> int:
    """Output dimension of the model, read from its open_clip config (no model is built)."""
    return int(_open_clip().get_model_config(spec.architecture)["embed_dim"])


def cached_weights(spec: ModelSpec) -> Path | None:
    """The weights file in the local Hugging Face cache, if it is there."""
    if not spec.hf_repo:
        return None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(spec.hf_repo, spec.hf_filename)
    return Path(found) if isinstance(found, str) else None


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers quickly (an offline lookup otherwise hangs for ~30 s)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"}:
        return False
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def weights_path(spec: ModelSpec, checkpoint: str | Path | None) -> Path:
    """Local path of the weights: the given checkpoint, the hub cache, or a fresh download."""
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise ModelError(f"checkpoint not found: {path}")
        return path
    if not spec.hf_repo:
        raise ModelError(f"model '{spec.name}' has no published weights: pass --checkpoint PATH or --random-weights")
    cached = cached_weights(spec)
    if cached is not None:
        return cached
    hint = (
        f"weights for '{spec.name}' are not available offline: download {spec.hf_filename} from "
        f"{spec.download_url} and pass --checkpoint PATH"
    )
    if not _hub_reachable():
        raise ModelError(hint)
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(spec.hf_repo, spec.hf_filename))
    except Exception as error:  # network, auth or disk problems all end the same way for the user
        raise ModelError(f"{hint} ({type(error).__name__})") from error


def file_fingerprint(path: Path, block: int = 4 << 20) -> str:
    """sha256 of a file's size, first and last 4 MiB: identifies a checkpoint in well under a second."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    digest.update(str(size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(block))
        if size > block:
            handle.seek(max(block, size - block))
            digest.update(handle.read(block))
    return digest.hexdigest()[:16]


def unwrap_state_dict(checkpoint: Any) -> dict[str, Any]:
    """The plain state dict inside a checkpoint: nested ``state_dict`` and ``module.`` prefixes removed."""
    state = checkpoint
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state:
        raise ModelError("checkpoint holds no state dict")
    if all(name.startswith("module.") for name in state):
        state = {name[len("module.") :]: value for name, value in state.items()}
    return state


def load_weights(model: torch.nn.Module, path: Path, strict: bool) -> None:
    """Load a checkpoint file into ``model``; missing keys (or unexpected ones when strict) are fatal."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ModelError(f"{path}: not a readable torch checkpoint ({type(error).__name__})") from error
    state = unwrap_state_dict(checkpoint)
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or (strict and unexpected):
        problems = [f"{len(missing)} missing keys (e.g. {missing[:3]})"] if missing else []
        problems += [f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})"] if unexpected else []
        raise ModelError(f"{path} does not match this architecture: " + ", ".join(problems))
    if unexpected:
        logging.getLogger(__name__).warning("ignoring %d unexpected keys in %s", len(unexpected), path)
    try:
        model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[-1].strip()
        raise ModelError(f"{path} does not match this architecture: {first}") from error


def pick_device(device: str = "auto") -> str:
    """'cuda' when asked for or available under 'auto', else 'cpu'."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for but no CUDA GPU is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise ModelError(f"unknown device '{device}': use auto, cpu or cuda")
    return device


@dataclass
class EmbeddingModel:
    """A loaded model in eval mode with what is needed to embed text and pixels."""

    name: str
    architecture: str
    checkpoint: str
    dim: int
    device: str
    image_size: int
    model: Any = field(repr=False)
    tokenizer: Any = field(repr=False)
    preprocess: Any = field(repr=False)
    mean: tuple[float, ...] = field(repr=False, default=())
    std: tuple[float, ...] = field(repr=False, default=())

    @property
    def random_weights(self) -> bool:
        """Whether the model has seeded random weights (its results are meaningless)."""
        return is_random_checkpoint(self.checkpoint)

    def _autocast(self) -> Any:
        import torch

        if self.device.startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    @functools.cached_property
    def trims_text(self) -> bool:
        """Whether ``encode_text`` runs the text tower on trimmed tokens (decided once per model)."""
        return text_trimmable(self.model)

    def encode_text(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """L2-normalised float32 text embeddings (n, dim) in the order given; long texts are truncated.

        With a trimmable text tower, texts are batched by token count so that short ones are not padded
        to long ones, and each batch runs on its longest real sequence.
        """
        import torch

        tokens = self.tokenizer(texts)
        if self.trims_text:
            order = torch.argsort(pooled_positions(self.model, tokens), stable=True)
            encode = functools.partial(encode_text_trimmed, self.model)
        else:
            order = torch.arange(len(tokens))
            encode = self.model.encode_text
        out = np.empty((len(tokens), self.dim), np.float32)
        for start in range(0, len(tokens), batch_size):
            rows = order[start : start + batch_size]
            with torch.inference_mode(), self._autocast():
                features = encode(tokens[rows].to(self.device))
            out[rows.numpy()] = _normalised(features)
        return out

    def encode_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """Embed a uint8 batch (n, 3, S, S) already at the model's input size; normalised on the device."""
        import torch

        batch = pixels.to(self.device, non_blocking=True).float().div_(255.0)
        mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
        batch = (batch - mean) / std
        with torch.inference_mode(), self._autocast():
            features = self.model.encode_image(batch)
        return _normalised(features)

    def encode_images(self, images: list[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """Embed in-memory (H, W, 3) uint8 images (query images) through the same pixel path as chips."""
        import torch

        out = [np.empty((0, self.dim), np.float32)]
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            pixels = np.stack([to_chw(fit_to_model(image, self.image_size)) for image in chunk])
            out.append(self.encode_pixels(torch.from_numpy(pixels)))
        return np.concatenate(out)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """Silence open_clip's root-logger warning about building a model without pretrained weights."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def text_trimmable(model: torch.nn.Module) -> bool:
    """Whether ``encode_text_trimmed(model, tokens)`` provably equals ``model.encode_text(tokens)``.

    True for open_clip's ``CLIP`` text path (not a subclass that changes it, not ``CustomTextCLIP`` or CoCa)
    with a causal mask over an absolute positional embedding of the full context and EOT pooling
    (``argmax`` or ``eos``): then no position up to the pooled one attends to a later token, and the pooled
    position is found the same way in the trimmed tokens.
    """
    import torch
    from open_clip.model import CLIP
    from open_clip.transformer import Transformer

    if not isinstance(model, CLIP) or type(model).encode_text is not CLIP.encode_text:
        return False
    if type(model.transformer) is not Transformer or model.text_pool_type not in ("argmax", "eos"):
        return False
    if model.text_pool_type == "eos" and model.text_eos_id is None:
        return False
    mask = model.attn_mask
    context = model.context_length
    if mask is None or tuple(mask.shape) != (context, context) or model.positional_embedding.shape[0] != context:
        return False
    return torch.equal(mask, torch.full_like(mask, float("-inf")).triu(1))


def pooled_positions(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The position each row's embedding is pooled from (its EOT token) for a ``text_trimmable`` model."""
    if model.text_pool_type == "eos":
        return (tokens == model.text_eos_id).int().argmax(dim=-1)
    return tokens.argmax(dim=-1)


def encode_text_trimmed(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(tokens)`` run on the tokens up to the batch's last pooled position.

    Only for models where ``text_trimmable(model)`` holds; the positional embedding and the causal mask are
    sliced to the same length. Mirrors open_clip 3.3's ``CLIP.encode_text`` step for step.
    """
    import torch
    from open_clip.transformer import text_global_pool

    length = int(pooled_positions(model, tokens).max()) + 1
    tokens = tokens[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = text_global_pool(model.ln_final(x), tokens, model.text_pool_type, eos_token_id=model.text_eos_id)
    if isinstance(model.text_projection, torch.nn.Linear):
        return model.text_projection(x)
    return x if model.text_projection is None else x @ model.text_projection


def _normalised(features: torch.Tensor) -> np.ndarray:
    vectors = features.float().cpu().numpy()
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def load_model(
    name: str = DEFAULT_MODEL,
    checkpoint: str | Path | None = None,
    device: str = "auto",
    random_weights: bool = False,
) -> EmbeddingModel:
    """Build ``name`` in eval mode on ``device`` with its weights (or seeded random weights).

    Random weights are seeded so that every process builds the same model: an index built with
    ``--random-weights`` can be queried from another process.
    """
    spec = resolve_spec(name)
    path = None if random_weights else weights_path(spec, checkpoint)
    device = pick_device(device)
    open_clip = _open_clip()
    import torch

    torch.manual_seed(RANDOM_SEED)
    with warnings.catch_warnings(), _quiet_root_logger():
        warnings.simplefilter("ignore")
        model, _, preprocess = open_clip.create_model_and_transforms(spec.architecture)
    if path is not None:
        load_weights(model, path, strict=spec.strict)
    model = model.to(device).eval()
    size = model.visual.image_size
    return EmbeddingModel(
        name=spec.name,
        architecture=spec.architecture,
        checkpoint=RANDOM_CHECKPOINT if path is None else file_fingerprint(path),
        dim=embedding_dim(spec),
        device=device,
        image_size=int(size[0] if isinstance(size, (tuple, list)) else size),
        model=model,
        tokenizer=open_clip.get_tokenizer(spec.architecture),
        preprocess=preprocess,
        mean=tuple(model.visual.image_mean or open_clip.OPENAI_DATASET_MEAN),
        std=tuple(model.visual.image_std or open_clip.OPENAI_DATASET_STD),
    )
