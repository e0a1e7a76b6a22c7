from __future__ import annotations

import numpy as np
import pytest

from rsretrieve.store import vector_codes


def unit_rows(n: int, dim: int) -> np.ndarray:
    rows = np.random.default_rng(dim).normal(size=(n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.mark.parametrize("dim", [512, 7])
def test_the_finer_bits_cut_the_error_fifteenfold(dim: int) -> None:
    vectors = unit_rows(200, dim)
    codes, fine = vector_codes.encode(vectors), vector_codes.encode_fine(vectors)
    assert codes.shape == (200, vector_codes.row_bytes(dim)) and fine.shape == (200, vector_codes.fine_bytes(dim))
    step = np.abs(vectors).max(axis=1, keepdims=True) / vector_codes.LEVELS
    coarse = np.abs(vector_codes.decode(codes) - vectors) / step
    finer = np.abs(vector_codes.decode(codes, fine) - vectors) / step
    assert coarse.max() <= 0.5 + 1e-3 and finer.max() <= 1 / 30 + 1e-3
    np.testing.assert_array_equal(vector_codes.round_trip(vectors), vector_codes.decode(codes, fine))


def test_rows_already_at_8_bits_have_no_finer_bits_and_zero_stays_zero() -> None:
    eight_bits = vector_codes.decode(vector_codes.encode(unit_rows(50, 64)))
    assert not vector_codes.encode_fine(eight_bits).any()
    np.testing.assert_array_equal(vector_codes.round_trip(np.zeros((2, 6), np.float32)), np.zeros((2, 6)))
