"""Append-only files with one row per chip (row = fid), copies of LanceDB columns laid out for the query path.

A LanceDB take costs ~2 ms plus ~0.6 ms per column at 1M rows, and its bbox SQL 50–190 ms; these files answer
the same questions from the page cache in well under a millisecond (benchmarks/speed.py):

- ``vectors.f32``: the float32 vectors, memory-mapped for the exact re-rank of IVF-PQ candidates;
- ``bounds.f64``: minx, miny, maxx, maxy and the acquisition day of each chip, for bbox/date filters in numpy;
- ``records.jsonl`` + ``records.end``: each chip's metadata as one JSON line and the byte where it ends.

Files are only ever appended to. The manifest's count says how many rows are committed: readers use that
prefix, and the writer cuts rows beyond it (an interrupted batch) when it opens the index.
"""

from __future__ import annotations

import json
import mmap
import os
from pathlib import Path
from typing import Any

import numpy as np

VECTORS = "vectors.f32"
BOUNDS = "bounds.f64"
RECORDS = "records.jsonl"
RECORD_ENDS = "records.end"


def append_durably(path: Path, data: bytes) -> None:
    """Append bytes to ``path``, flushed and fsynced (before the batch is committed)."""
    with path.open("ab") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


class MatrixFile:
    """Append-only (n, width) matrix of one numeric dtype in one file."""

    def __init__(self, path: Path, dtype: type | np.dtype, width: int):
        self.path = path
        self.dtype = np.dtype(dtype)
        self.width = width
        self.row_bytes = self.dtype.itemsize * width

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
        return np.memmap(self.path, self.dtype, mode="r", shape=(count, self.width))

    def truncate(self, count: int) -> None:
        """Drop rows beyond ``count`` (written by a batch that was never committed)."""
        if self.path.exists() and self.path.stat().st_size > count * self.row_bytes:
            os.truncate(self.path, count * self.row_bytes)

    def append(self, rows: np.ndarray) -> None:
        """Append rows durably."""
        append_durably(self.path, np.ascontiguousarray(rows, self.dtype).reshape(-1, self.width).tobytes())

    def remove(self) -> None:
        """Delete the file (the index starts over)."""
        self.path.unlink(missing_ok=True)


class RecordFile:
    """Append-only JSON records: one line each in ``records.jsonl``, their end offsets (int64) in ``records.end``.

    The lines are written and synced before their offsets, so every committed offset points at whole lines.
    """

    def __init__(self, folder: Path):
        self.path = folder / RECORDS
        self.ends = MatrixFile(folder / RECORD_ENDS, np.int64, 1)

    def rows_on_disk(self) -> int:
        """Records whose lines are whole on disk."""
        rows = self.ends.rows_on_disk()
        ends = self.ends.view(rows)
        if ends is None:
            return 0
        size = self.path.stat().st_size if self.path.exists() else 0
        return int(np.searchsorted(ends[:, 0], size, side="right"))

    def read(self, fids: np.ndarray | list[int], count: int) -> list[dict[str, Any]] | None:
        """Records of ``fids`` in order, or None when the files hold fewer than ``count`` records."""
        ends = self.ends.view(count)
        if ends is None or not self.path.exists():
            return None
        with self.path.open("rb") as handle:
            if os.fstat(handle.fileno()).st_size < ends[-1, 0]:  # the last committed line is not whole
                return None
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as lines:
                return [json.loads(lines[_start(ends, fid) : int(ends[fid, 0])]) for fid in map(int, fids)]

    def truncate(self, count: int) -> None:
        """Drop records beyond ``count``."""
        self.ends.truncate(count)
        ends = self.ends.view(count)
        end = int(ends[-1, 0]) if ends is not None else 0
        if self.path.exists() and self.path.stat().st_size > end:
            os.truncate(self.path, end)

    def append(self, documents: list[bytes]) -> None:
        """Append JSON documents (one line each, without the newline) durably: the lines first, then their ends."""
        start = self.path.stat().st_size if self.path.exists() else 0
        append_durably(self.path, b"".join(document + b"\n" for document in documents))
        self.ends.append(start + np.cumsum([len(document) + 1 for document in documents], dtype=np.int64))

    def remove(self) -> None:
        """Delete both files."""
        self.path.unlink(missing_ok=True)
        self.ends.remove()


def _start(ends: np.ndarray, fid: int) -> int:
    return int(ends[fid - 1, 0]) if fid > 0 else 0
