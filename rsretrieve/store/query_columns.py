"""The query side's columns: copies of table columns laid out for search, one row per chip (row = fid).

A LanceDB take costs ~2 ms plus ~0.6 ms per column at 1M rows, and its bbox SQL 50–190 ms; these files answer
the same questions from the page cache (benchmarks/speed.py): the filters and vectors in well under a millisecond;
the records of format 3 at ~1 ms a hit (see below):

- ``vectors.i8``: the vectors for the exact re-rank and every other reader of stored vectors, in compact form
  (``vector_codes``: int8 components and a float32 scale per row, ``dim + 4`` bytes), memory-mapped; the only copy
  of the vectors (format 3; formats 1-2 kept float32 ones in LanceDB and ``vectors.f32``);
- ``vectors.lo4``: 4 finer bits of each component (``vector_codes.encode_fine``, ``dim / 2`` bytes), read with
  ``vectors.i8`` so that the re-rank orders near-ties as float32 would (an index written before it existed gets the
  file filled from ``vectors.i8``, i.e. no finer bits for those rows);
- ``bounds.f64``: the filter matrix (``chips.FILTER_FIELDS``: WGS84 bbox, acquisition day), raw (n, 5) float64;
- ``records/<first>-<end>.arrow``: the chip records (``chips.RECORD_COLUMNS``) as Arrow IPC files, one per
  committed batch, memory-mapped; any Arrow reader opens them (``pyarrow.ipc.open_file``). Since format 3 each file
  is LZ4-compressed record batches of ``RECORD_BATCH_ROWS`` rows (its schema's ``rows_per_batch``): a result reads
  only the batches holding its rows — ~1 ms each on a quiet 2-core machine (every column's buffers are
  decompressed: 0.6–0.8 ms even at 32–128 rows; 0.36 ms uncompressed), so 10 hits at 1M take ~10 ms against
  < 1 ms with the one mapped table of format 2: the next thing to mend — and records take ~60 bytes a chip
  instead of ~370 with the speed benchmark's footprints (``benchmarks/speed.py``); files of formats 1-2 (one plain
  batch) are read whole.

Each column is derived from rows of the LanceDB table by one function, used both when a batch is appended and
when a column is rebuilt from LanceDB (an older index, or a damaged file), so the two never disagree in form.
Files are only appended to (records: new files). The manifest's count says how many rows are committed: readers
use that prefix, and the writer cuts rows beyond it (an interrupted batch) when it opens the index.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from rsretrieve.chips import FILTER_FIELDS, RECORD_COLUMNS, filter_matrix, record_columns, vectors_of
from rsretrieve.files import atomic_write
from rsretrieve.store.vector_codes import encode, encode_fine, fine_bytes, row_bytes

VECTORS = "vectors.i8"
FINE_VECTORS = "vectors.lo4"
OLD_VECTORS = "vectors.f32"  # formats 1-2: float32 vectors, replaced by ``vectors.i8``
BOUNDS = "bounds.f64"
RECORDS = "records"
OLD_FILES = ("records.jsonl", "records.end", OLD_VECTORS)  # replaced by ``records/`` (format 2), ``vectors.i8`` (3)
REBUILD_ROWS = 65536
RECORD_BATCH_ROWS = 512
RECORD_COMPRESSION = "lz4"
ROWS_PER_BATCH = b"rows_per_batch"  # schema metadata of a record file written in batches


def append_durably(path: Path, data: bytes) -> None:
    """Append bytes to ``path``, flushed and fsynced (before the batch is committed)."""
    with path.open("ab") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


class MatrixFile:
    """Append-only (n, width) matrix of one numeric dtype in one raw file."""

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


class RecordFiles:
    """Chip records as Arrow IPC files ``<first>-<end>.arrow`` (fids first..end-1), each written whole (tmp+rename).

    Which rows exist is known from the names alone; a file is memory-mapped the first time a result needs it, and
    of a file written in compressed batches only the batches holding the wanted rows are decompressed.
    """

    suffix = ".arrow"

    def __init__(self, folder: Path):
        self.path = folder
        self._opened: dict[Path, pa.Table] = {}
        self._readers: dict[Path, tuple[pa.ipc.RecordBatchFileReader, int] | None] = {}
        self._covered: tuple[int, list[tuple[int, int, Path]] | None] = (-1, None)  # last count asked, its files

    def _spans(self) -> list[tuple[int, int, Path]]:
        """(first, end, path) of every file, sorted."""
        spans = []
        for path in self.path.glob(f"*{self.suffix}") if self.path.is_dir() else []:
            first, _, end = path.stem.partition("-")
            if first.isdigit() and end.isdigit():
                spans.append((int(first), int(end), path))
        return sorted(spans)

    def _covering(self, count: int) -> list[tuple[int, int, Path]] | None:
        """The files holding rows 0..count-1 without a gap, or None when some are missing."""
        covered, chosen = 0, []
        for first, end, path in self._spans():
            if covered >= count:
                break
            if first != covered:
                return None
            chosen.append((first, end, path))
            covered = end
        return chosen if covered >= count else None

    def rows_on_disk(self) -> int:
        """Rows held without a gap from fid 0."""
        covered = 0
        for first, end, _ in self._spans():
            if first != covered:
                break
            covered = end
        return covered

    def read(self, fids: np.ndarray | list[int], count: int, columns: list[str] | None = None) -> pa.Table | None:
        """Record rows of ``fids`` in order (only ``columns`` when given), or None when the files hold fewer than
        ``count`` rows."""
        if self._covered[0] != count:  # committed files never change: list the folder once per version
            self._covered = (count, self._covering(count))
        spans = self._covered[1]
        if spans is None:
            return None
        fids = np.asarray(fids, np.int64)
        if len(fids) == 0:
            empty = record_columns(pa.table({}))
            return empty.select(columns) if columns else empty
        which = np.searchsorted([first for first, _, _ in spans], fids, side="right") - 1
        found = _gathered(which, lambda span, rows: self._rows(spans[span][2], rows - spans[span][0]), fids)
        return found.select(columns) if columns else found

    def _rows(self, path: Path, offsets: np.ndarray) -> pa.Table:
        """Rows at ``offsets`` of one file, in order (all record columns)."""
        reader = self._reader(path)
        if reader is None:  # one plain batch (formats 1-2): the mapped table
            return self._table(path).take(pa.array(offsets))
        file, per_batch = reader
        found = _gathered(offsets // per_batch, lambda batch, rows: _batch_rows(file, batch, rows % per_batch), offsets)
        return record_columns(found)

    def _reader(self, path: Path) -> tuple[pa.ipc.RecordBatchFileReader, int] | None:
        """The open reader of a file written in batches and its rows per batch, or None for a one-batch file."""
        if path not in self._readers:
            file = pa.ipc.open_file(pa.memory_map(str(path)))
            per_batch = (file.schema.metadata or {}).get(ROWS_PER_BATCH)
            self._readers[path] = (file, int(per_batch)) if per_batch else None
        return self._readers[path]

    def _table(self, path: Path) -> pa.Table:
        """The whole table of one file, opened once: memory-mapped (one plain batch) or decompressed (a rewrite)."""
        table = self._opened.get(path)
        if table is None:
            with pa.memory_map(str(path)) as source:  # files written before a column existed read it as null
                table = self._opened[path] = record_columns(pa.ipc.open_file(source).read_all())
        return table

    def append(self, records: pa.Table, first: int) -> None:
        """Write the records of fids first.. as a new file (before the batch is committed)."""
        self.path.mkdir(exist_ok=True)
        path = self.path / f"{first:012d}-{first + records.num_rows:012d}{self.suffix}"

        records = records.combine_chunks()  # batches of exactly RECORD_BATCH_ROWS rows, the last one shorter
        schema = records.schema.with_metadata({ROWS_PER_BATCH: str(RECORD_BATCH_ROWS)})
        options = pa.ipc.IpcWriteOptions(compression=RECORD_COMPRESSION)

        def write(tmp: Path) -> None:
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema, options=options) as writer:
                writer.write_table(records.replace_schema_metadata(schema.metadata), max_chunksize=RECORD_BATCH_ROWS)

        atomic_write(path, write)

    def compress(self) -> None:
        """Rewrite files of formats 1-2 (one plain batch) as compressed batches (``rsretrieve upgrade``)."""
        for first, _, path in self._spans():
            if self._reader(path) is None:
                table = self._table(path)
                self._opened.pop(path, None)
                self._readers.pop(path, None)
                self.append(table, first)  # the same name, replaced atomically

    def truncate(self, count: int) -> None:
        """Drop records beyond ``count``: whole files past it, and the tail of a file across it."""
        self._covered = (-1, None)
        for first, end, path in self._spans():
            if first >= count:
                path.unlink()
            elif end > count:
                kept = self._table(path).slice(0, count - first)
                self._opened.pop(path, None)
                self._readers.pop(path, None)
                path.unlink()
                self.append(kept, first)

    def remove(self) -> None:
        """Delete every record file."""
        for _, _, path in self._spans():
            path.unlink()
        self._opened.clear()
        self._readers.clear()
        self._covered = (-1, None)


def _gathered(groups: np.ndarray, rows_of: Callable[[int, np.ndarray], pa.Table], wanted: np.ndarray) -> pa.Table:
    """The rows of ``wanted`` in order, read group by group (``rows_of(group, wanted values in it)``)."""
    if groups.min() == groups.max():  # one file or batch: the usual top k
        return rows_of(int(groups[0]), wanted)
    parts, order = [], []
    for group in np.unique(groups).tolist():
        rows = np.flatnonzero(groups == group)
        parts.append(rows_of(group, wanted[rows]))
        order.append(rows)
    return pa.concat_tables(parts).take(pa.array(np.argsort(np.concatenate(order), kind="stable")))


def _batch_rows(file: pa.ipc.RecordBatchFileReader, batch: int, offsets: np.ndarray) -> pa.Table:
    """Rows at ``offsets`` of one record batch (decompressed once for them)."""
    return pa.Table.from_batches([file.get_batch(batch)]).take(pa.array(offsets))


@dataclass(frozen=True)
class QueryColumn:
    """One query-side column: its file, the table columns it is derived from, and how."""

    file: MatrixFile | RecordFiles
    columns: tuple[str, ...]
    derive: Callable[[pa.Table], Any]

    def append(self, batch: pa.Table, first: int) -> None:
        """Append the derived rows of table rows first.. (fids)."""
        if isinstance(self.file, RecordFiles):
            self.file.append(self.derive(batch), first)
        else:
            self.file.append(self.derive(batch))


class QueryColumns:
    """The query-side columns of an index folder, appended and cut together by the store's writer."""

    def __init__(self, db: Path, dim: int):
        self.db = db
        self.vectors = QueryColumn(
            MatrixFile(db / VECTORS, np.int8, row_bytes(dim)),
            ("vector",),
            lambda t: encode(vectors_of(t, dim)),
        )
        self.fine_vectors = QueryColumn(
            MatrixFile(db / FINE_VECTORS, np.uint8, fine_bytes(dim)),
            ("vector",),
            lambda t: encode_fine(vectors_of(t, dim)),
        )
        self.old_vectors = MatrixFile(db / OLD_VECTORS, np.float32, dim)  # read until the folder is upgraded
        bound_columns = (*FILTER_FIELDS[:4], "date")
        self.bounds = QueryColumn(MatrixFile(db / BOUNDS, np.float64, len(FILTER_FIELDS)), bound_columns, filter_matrix)
        self.records = QueryColumn(RecordFiles(db / RECORDS), tuple(RECORD_COLUMNS), record_columns)
        # the finer bits first: rebuilt for an older index, they are taken from its float32 vectors while those exist
        self.all = (self.fine_vectors, self.vectors, self.bounds, self.records)

    def append(self, batch: pa.Table, first: int) -> None:
        """Append the columns of a batch of table rows with fids first.. (before the batch is committed)."""
        for column in self.all:
            column.append(batch, first)

    def sync(
        self,
        count: int,
        read_rows: Callable[[np.ndarray, list[str]], pa.Table],
        on_rebuild: Callable[[str], None] = lambda name: None,
    ) -> None:
        """Make every column hold exactly ``count`` rows: cut an interrupted batch, or rebuild it with ``read_rows``
        (``on_rebuild`` is told the file's name first: at 1M chips a rebuild takes tens of seconds)."""
        for column in self.all:
            if column.file.rows_on_disk() >= count:
                column.file.truncate(count)
                continue
            on_rebuild(column.file.path.name)
            column.file.remove()
            for start in range(0, count, REBUILD_ROWS):
                fids = np.arange(start, min(start + REBUILD_ROWS, count), dtype=np.int64)
                column.append(read_rows(fids, list(column.columns)), start)
        for name in OLD_FILES:
            (self.db / name).unlink(missing_ok=True)

    def remove(self) -> None:
        """Delete every column (the index starts over)."""
        for column in self.all:
            column.file.remove()

    def rows(self) -> dict[str, int]:
        """Rows on disk of each column file, by name (``rsretrieve info``)."""
        return {column.file.path.name: column.file.rows_on_disk() for column in self.all}
