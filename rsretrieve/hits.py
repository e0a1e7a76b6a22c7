"""One search result: a chip and its score (a light module: the page imports it without FAISS)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rsretrieve.chips import Chip


@dataclass(frozen=True)
class Hit:
    """One matching chip and its score (cosine similarity to the query, or a classifier's probability)."""

    score: float
    chip: Chip

    def record(self) -> dict[str, Any]:
        """Score and the chip's machine-readable record (``--json``'s and the service's shape)."""
        return {"score": self.score, **self.chip.record()}
