"""Indexes of embeddings made elsewhere (``rsretrieve import-embeddings``): the model stand-in that cannot encode.

An index of imported embeddings records the model the user named (or ``none``). When rsretrieve can load that
model, the index records its checkpoint and is searched like any other. When it cannot, the index records
``IMPORTED_CHECKPOINT`` and its ``Searcher`` holds a ``VectorOnlyModel``: chip ids (``--like``, ``--labels``) and
raw vectors are searched as usual, while texts and images are refused with one line (``EncodingUnavailable``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from rsretrieve.query import Part, QueryError

IMPORTED_CHECKPOINT = "imported"  # the checkpoint an index records for embeddings of a model rsretrieve cannot load
NO_MODEL = "none"  # ``--model none``: the embeddings' model is not named
ENCODED_KINDS = ("text", "image")  # query parts that need the model


class EncodingUnavailable(QueryError):
    """A text or image query on an index whose model rsretrieve cannot load."""


def is_vector_only(checkpoint: str) -> bool:
    """Whether an index with this recorded checkpoint holds embeddings of a model rsretrieve cannot load."""
    return checkpoint == IMPORTED_CHECKPOINT


@dataclass(frozen=True)
class VectorOnlyModel:
    """What a ``Searcher`` holds for an index of imported embeddings without a loadable model: its name and
    dimension, and encoders that refuse with one clear line."""

    name: str
    dim: int
    imported_from: str
    architecture: str = ""
    checkpoint: str = IMPORTED_CHECKPOINT
    device: str = "cpu"
    random_weights: bool = False

    @classmethod
    def of(cls, manifest: Any) -> VectorOnlyModel:
        """The stand-in for an index's manifest."""
        return cls(manifest.model, manifest.dim, manifest.imported_from or "another tool")

    def refusal(self) -> str:
        """The one line that says why texts and images cannot be searched, and what can."""
        made = "an unnamed model" if self.name == NO_MODEL else f"'{self.name}'"
        return (
            f"this index holds embeddings imported from {self.imported_from} (made by {made}); text and image search "
            "need a model rsretrieve can load: search by --like CHIP_ID, --labels CLASS or a vector, or import them "
            "again with --model NAME (`rsretrieve models`) if that model made them"
        )

    def encode_text(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Refused: raises ``EncodingUnavailable``."""
        raise EncodingUnavailable(self.refusal())

    def encode_images(self, images: list[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """Refused: raises ``EncodingUnavailable``."""
        raise EncodingUnavailable(self.refusal())


def refuse_encoding(model: Any, parts: Iterable[Part]) -> None:
    """Raise ``EncodingUnavailable`` before any work when ``parts`` need a model that ``model`` stands in for."""
    if isinstance(model, VectorOnlyModel) and any(part.kind in ENCODED_KINDS for part in parts):
        raise EncodingUnavailable(model.refusal())
