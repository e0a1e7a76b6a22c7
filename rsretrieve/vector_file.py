"""``vectors.f32``: the stored vectors as a raw float32 matrix (row = fid), memory-mapped for exact re-rank.

A copy of LanceDB's ``vector`` column laid out for random access: re-ranking a few hundred IVF-PQ candidates
reads them from the page cache in well under a millisecond instead of a LanceDB take. The file is only ever
appended to; the manifest's count says how many rows are committed, so readers map that prefix, and the
writer truncates rows beyond it (an interrupted batch) when it opens the index.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

VECTORS = "vectors.f32"


class VectorFile:
    """Append-only (n, dim) float32 matrix in one file."""

    def __init__(self, path: Path, dim: int):
        self.path = path
        self.row_bytes = 4 * dim
        self.dim = dim

    def rows_on_disk(self) -> int:
        """Whole rows in the file (0 when it does not exist)."""
        try:
            return self.path.stat().st_size // self.row_bytes
        except FileNotFoundError:
            return 0

    def view(self, count: int) -> np.ndarray | None:
        """Read-only map of the first ``count`` rows, or None when the file holds fewer."""
        if count == 0 or self.rows_on_disk() < count:
            return None
        return np.memmap(self.path, np.float32, mode="r", shape=(count, self.dim))

    def truncate(self, count: int) -> None:
        """Drop rows beyond ``count`` (written by a batch that was never committed)."""
        if self.path.exists() and self.path.stat().st_size > count * self.row_bytes:
            os.truncate(self.path, count * self.row_bytes)

    def append(self, vectors: np.ndarray) -> None:
        """Append rows durably (flushed and fsynced before the batch is committed)."""
        with self.path.open("ab") as handle:
            handle.write(np.ascontiguousarray(vectors, np.float32).tobytes())
            handle.flush()
            os.fsync(handle.fileno())

    def remove(self) -> None:
        """Delete the file (the index starts over)."""
        self.path.unlink(missing_ok=True)
