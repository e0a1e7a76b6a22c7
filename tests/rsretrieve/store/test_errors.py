"""Tests for rsretrieve/store/errors.py: failed writes told in a few words."""

from __future__ import annotations

from pathlib import Path

import pytest

from rsretrieve.store import StoreError, reason, writing


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OSError(28, "No space left on device"), "No space left on device"),
        (RuntimeError("LanceError(IO): Generic LocalFileSystem error: (os error 30)"), "Read-only file system"),
        (
            RuntimeError(
                "Error in void faiss::write_index(...) at impl/io.cpp:93: 4014 != 5632 (No space left on device)"
            ),
            "No space left on device",
        ),
        (RuntimeError("first line (not an errno)\nsecond"), "first line (not an errno)"),
    ],
)
def test_write_failures_are_told_in_a_few_words(error: BaseException, expected: str) -> None:
    assert reason(error) == expected


def test_a_failed_write_is_a_store_error_naming_the_folder(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=f"cannot write to {tmp_path}: No space left on device"), writing(tmp_path):
        raise OSError(28, "No space left on device")
