"""The stored re-rank vectors in compact form: 8-bit scalar quantisation with one float32 scale per row.

Each vector ``v`` is kept as ``round(v / s)`` in int8 with ``s = max|v_i| / 127`` followed by ``s`` itself (4 bytes):
``dim + 4`` bytes a chip (516 at 512-d) instead of 2,048 in float32. The scale belongs to the row, so nothing is
trained and appending never re-encodes earlier rows (a per-dimension range learnt on the first batch would clip
later ones). The rounding error is at most ``s / 2`` per component; for a unit vector of 512 dimensions that moves
an inner product by ~3e-4, well below the gaps between neighbours the re-rank orders (measured recall in
benchmarks/results/rerank-precision-cpu.json).
"""

from __future__ import annotations

import numpy as np

LEVELS = 127
SCALE_BYTES = 4


def row_bytes(dim: int) -> int:
    """Bytes of one encoded row."""
    return dim + SCALE_BYTES


def encode(vectors: np.ndarray) -> np.ndarray:
    """(n, dim + 4) int8 rows: the quantised components, then the row's float32 scale."""
    vectors = np.asarray(vectors, np.float32)
    scale = np.abs(vectors).max(axis=1, keepdims=True) / LEVELS
    scale[scale == 0] = 1.0  # a zero vector stays zero
    codes = np.empty((len(vectors), row_bytes(vectors.shape[1])), np.int8)
    codes[:, :-SCALE_BYTES] = np.rint(vectors / scale)
    codes[:, -SCALE_BYTES:] = scale.astype("<f4").view(np.int8)
    return codes


def decode(codes: np.ndarray) -> np.ndarray:
    """float32 (n, dim) vectors of encoded rows."""
    codes = np.ascontiguousarray(codes, np.int8)
    scale = codes[:, -SCALE_BYTES:].copy().view("<f4")
    return codes[:, :-SCALE_BYTES].astype(np.float32) * scale
