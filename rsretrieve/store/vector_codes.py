"""The stored vectors in compact form: 8-bit scalar quantisation with one float32 scale per row, and 4 finer bits.

Each vector ``v`` is kept as ``c = round(v / s)`` in int8 with ``s = max|v_i| / 127`` followed by ``s`` itself
(4 bytes): ``dim + 4`` bytes a chip (516 at 512-d) instead of 2,048 in float32 (``vectors.i8``). The scale belongs
to the row, so nothing is trained and appending never re-encodes earlier rows (a per-dimension range learnt on the
first batch would clip later ones). Its rounding error, up to ``s / 2`` a component, moves an inner product of unit
vectors by ~4e-4 at 512-d: more than the gap between neighbours ranked 10 and 11 of a dense 2M-10M archive, where
re-ranking with it lost 3-4 points of recall@10 against float32 (benchmarks/results/recall-stages-cpu.json).

So a second file (``vectors.lo4``, ``fine_bytes(dim)``: 256 bytes a chip at 512-d) keeps 4 more bits of each
component: ``f = round((v / s - c) · 15)`` in -7..7, two a byte (low nibble first), and ``v ≈ s · (c + f / 15)``
(error ≤ s / 30: the precision of float16 for 3/4 of its bytes). The int8 part alone stays a valid, coarser form:
rows of an index written before the finer file existed get f = 0 (``encode_fine`` of their decoded rows).
"""

from __future__ import annotations

import numpy as np

LEVELS = 127
SCALE_BYTES = 4
FINE_STEPS = 15  # finer steps per int8 step; f in -7..7 fits a signed nibble
FINE_LIMIT = 7


def row_bytes(dim: int) -> int:
    """Bytes of one encoded row."""
    return dim + SCALE_BYTES


def fine_bytes(dim: int) -> int:
    """Bytes of one row of finer bits (two components a byte)."""
    return (dim + 1) // 2


def encode(vectors: np.ndarray) -> np.ndarray:
    """(n, dim + 4) int8 rows: the quantised components, then the row's float32 scale."""
    vectors = np.asarray(vectors, np.float32)
    scale = _scales(vectors)
    codes = np.empty((len(vectors), row_bytes(vectors.shape[1])), np.int8)
    codes[:, :-SCALE_BYTES] = np.rint(vectors / scale)
    codes[:, -SCALE_BYTES:] = scale.astype("<f4").view(np.int8)
    return codes


def encode_fine(vectors: np.ndarray) -> np.ndarray:
    """(n, fine_bytes(dim)) uint8 rows: each component's 4 finer bits (see the module's docstring)."""
    vectors = np.asarray(vectors, np.float32)
    steps = vectors / _scales(vectors)
    fine = np.clip(np.rint((steps - np.rint(steps)) * FINE_STEPS), -FINE_LIMIT, FINE_LIMIT).astype(np.int8)
    if fine.shape[1] % 2:
        fine = np.pad(fine, ((0, 0), (0, 1)))
    nibbles = fine.view(np.uint8) & 0x0F
    return nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)


def decode(codes: np.ndarray, fine: np.ndarray | None = None) -> np.ndarray:
    """float32 (n, dim) vectors of encoded rows, refined by their ``fine`` rows when given."""
    codes = np.ascontiguousarray(codes, np.int8)
    scale = codes[:, -SCALE_BYTES:].copy().view("<f4")
    steps = codes[:, :-SCALE_BYTES].astype(np.float32)
    if fine is not None:
        steps += _unpacked(np.asarray(fine, np.uint8), steps.shape[1]) * np.float32(1 / FINE_STEPS)
    steps *= scale
    return steps


def round_trip(vectors: np.ndarray) -> np.ndarray:
    """The vectors as the store gives them back (both files decoded)."""
    return decode(encode(vectors), encode_fine(vectors))


def _scales(vectors: np.ndarray) -> np.ndarray:
    """(n, 1) per-row scales max|v_i| / 127 (1 for a zero row, which stays zero)."""
    scale = np.abs(vectors).max(axis=1, keepdims=True) / LEVELS
    scale[scale == 0] = 1.0
    return scale


def _unpacked(fine: np.ndarray, dim: int) -> np.ndarray:
    """(n, dim) int8 finer steps of packed rows (signed nibbles, low first)."""
    both = np.empty((len(fine), 2 * fine.shape[1]), np.int8)
    both[:, 0::2] = (fine & 0x0F).view(np.int8)
    both[:, 1::2] = (fine >> 4).view(np.int8)
    return ((both ^ 8) - 8)[:, :dim]
