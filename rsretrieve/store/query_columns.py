"""The query side's columns: copies of table columns laid out for search, one row per chip (row = fid).

A LanceDB take costs ~2 ms plus ~0.6 ms per column at 1M rows, and its bbox SQL 50–190 ms; these files answer
the same questions from the page cache (benchmarks/speed.py), each in well under a millisecond:

- ``vectors.i8``: the vectors for the exact re-rank and every other reader of stored vectors, in compact form
  (``vector_codes``: int8 components and a float32 scale per row, ``dim + 4`` bytes), memory-mapped; the only copy
  of the vectors (format 3; formats 1-2 kept float32 ones in LanceDB and ``vectors.f32``);
- ``vectors.lo4``: 4 finer bits of each component (``vector_codes.encode_fine``, ``dim / 2`` bytes), read with
  ``vectors.i8`` so that the re-rank orders near-ties as float32 would (an index written before it existed gets the
  file filled from ``vectors.i8``, i.e. no finer bits for those rows);
- ``bounds.f64``: the filter matrix (``chips.FILTER_FIELDS``: WGS84 bbox, acquisition day), raw (n, 5) float64;
- ``records/<first>-<end>.arrow``: the chip records (``chips.RECORD_COLUMNS``) as Arrow IPC files, one per
  committed batch, memory-mapped; any Arrow reader opens them (``pyarrow.ipc.open_file``). Since format 4 each is
  one uncompressed batch in the compact layout of ``record_layout`` (dictionary-encoded strings, footprints as
  coordinate rings): a result's rows are read by indexing the mapped buffers, nothing else is touched or decoded
  (tens of microseconds a hit), and records take ~80 bytes a chip with the speed benchmark's footprints. Files of
  format 3 (LZ4-compressed batches of 512 rows, ~1 ms a hit: every column of the batch decompressed) and of
  formats 1-2 (one plain batch, ~370 bytes a chip) are still read, until ``rsretrieve upgrade`` rewrites them.

Each column is derived from rows of the LanceDB table by one function, used both when a batch is appended and
when a column is rebuilt from LanceDB (an older index, or a damaged file), so the two never disagree in form.
Files are only appended to (records: new files). The manifest's count says how many rows are committed: readers
use that prefix, and the writer cuts rows beyond it (an interrupted batch) when it opens the index.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from rsretrieve.chips import FILTER_FIELDS, RECORD_COLUMNS, filter_matrix, record_columns, vectors_of
from rsretrieve.files import atomic_write
from rsretrieve.store.record_layout import MappedRecords, encode, is_encoded
from rsretrieve.store.vector_codes import encode as encode_vectors
from rsretrieve.store.vector_codes import encode_fine, fine_bytes, row_bytes

VECTORS = "vectors.i8"
FINE_VECTORS = "vectors.lo4"
OLD_VECTORS = "vectors.f32"  # formats 1-2: float32 vectors, replaced by ``vectors.i8``
BOUNDS = "bounds.f64"
RECORDS = "records"
OLD_FILES = ("records.jsonl", "records.end", OLD_VECTORS)  # replaced by ``records/`` (format 2), ``vectors.i8`` (3)
REBUILD_ROWS = 65536
ROWS_PER_BATCH = b"rows_per_batch"  # schema metadata of a format-3 record file (compressed batches)
RECORD_SCHEMA = pa.schema(list(RECORD_COLUMNS.items()))


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

    Which rows exist is known from the names alone; a file is memory-mapped the first time a result needs it and its
    rows read from the map (``record_layout``); of a format-3 file only the batches holding the wanted rows are
    decompressed, and a format 1-2 file (one plain batch) is a mapped table.
    """

    suffix = ".arrow"

    def __init__(self, folder: Path):
        self.path = folder
        self._opened: dict[Path, MappedRecords | pa.Table | tuple[pa.ipc.RecordBatchFileReader, int]] = {}
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

    def values(
        self, fids: np.ndarray | list[int], count: int, columns: list[str] | None = None, parsed: bool = False
    ) -> dict[str, list[Any]] | None:
        """Record values of ``fids`` in order, column by column (only ``columns`` when given; as ``to_pylist`` gives
        them, footprints as GeoJSON dicts with ``parsed``), or None when the files hold fewer than ``count`` rows."""
        columns = columns or list(RECORD_COLUMNS)
        return self._gather(fids, count, lambda path, offsets: self._rows(path, offsets, columns, parsed), columns)

    def footprints(self, fids: np.ndarray | list[int], count: int) -> list[Any] | None:
        """Footprints of ``fids`` as shapely geometries (None for a chip without one), in order, or None when the
        files hold fewer than ``count`` rows."""
        found = self._gather(
            fids, count, lambda path, offsets: {"footprint": self._shapes(path, offsets)}, ["footprint"]
        )
        return None if found is None else found["footprint"]

    def _gather(
        self,
        fids: np.ndarray | list[int],
        count: int,
        rows_of: Callable[[Path, np.ndarray], dict[str, list[Any]]],
        columns: list[str],
    ) -> dict[str, list[Any]] | None:
        """``rows_of(file, offsets)`` of ``fids`` file by file, in the order of ``fids`` (or None when the files hold
        fewer than ``count`` rows)."""
        if self._covered[0] != count:  # committed files never change: list the folder once per version
            self._covered = (count, self._covering(count))
        spans = self._covered[1]
        if spans is None:
            return None
        fids = np.asarray(fids, np.int64)
        if len(fids) == 0:
            return {name: [] for name in columns}
        which = np.searchsorted([first for first, _, _ in spans], fids, side="right") - 1
        return _gathered(which, lambda span, rows: rows_of(spans[span][2], rows - spans[span][0]), fids)

    def read(self, fids: np.ndarray | list[int], count: int, columns: list[str] | None = None) -> pa.Table | None:
        """Record rows of ``fids`` in order (only ``columns`` when given) as an Arrow table, or None when the files
        hold fewer than ``count`` rows."""
        found = self.values(fids, count, columns)
        if found is None:
            return None
        return pa.Table.from_pydict(found, schema=pa.schema([(name, RECORD_COLUMNS[name]) for name in found]))

    def _rows(self, path: Path, offsets: np.ndarray, columns: list[str], parsed: bool = False) -> dict[str, list[Any]]:
        """Values of the rows at ``offsets`` of one file, in order (footprints as GeoJSON dicts with ``parsed``)."""
        opened = self._open(path)
        if isinstance(opened, MappedRecords):
            return opened.values(offsets, columns, parsed)
        if isinstance(opened, pa.Table):  # one plain batch (formats 1-2): the mapped table
            found = _values_of(opened.take(pa.array(offsets)), columns)
        else:
            file, per_batch = opened  # compressed batches (format 3): each decompressed for the rows it holds
            found = _gathered(
                offsets // per_batch,
                lambda batch, rows: _values_of(file.get_batch(batch).take(pa.array(rows % per_batch)), columns),
                offsets,
            )
        if parsed and "footprint" in found:
            found["footprint"] = [json.loads(text) if text else None for text in found["footprint"]]
        return found

    def _shapes(self, path: Path, offsets: np.ndarray) -> list[Any]:
        """Footprints of the rows at ``offsets`` of one file as shapely geometries, in order."""
        import shapely

        opened = self._open(path)
        if isinstance(opened, MappedRecords):
            return list(opened.shapes(offsets))
        return list(shapely.from_geojson(np.asarray(self._rows(path, offsets, ["footprint"])["footprint"], object)))

    def _open(self, path: Path) -> MappedRecords | pa.Table | tuple[pa.ipc.RecordBatchFileReader, int]:
        """A file opened once: its mapped records (format 4), a mapped table (formats 1-2), or a reader of its
        compressed batches and their rows per batch (format 3)."""
        opened = self._opened.get(path)
        if opened is None:
            file = pa.ipc.open_file(pa.memory_map(str(path)))
            per_batch = (file.schema.metadata or {}).get(ROWS_PER_BATCH)
            if is_encoded(file.schema):
                opened = MappedRecords(file.get_batch(0) if file.num_record_batches == 1 else _one_batch(file))
            elif per_batch:
                opened = (file, int(per_batch))
            else:  # files written before a column existed read it as null
                opened = record_columns(file.read_all())
            self._opened[path] = opened
        return opened

    def _table(self, path: Path) -> pa.Table:
        """All records of one file (to cut or rewrite it)."""
        opened = self._open(path)
        if isinstance(opened, MappedRecords):
            return pa.Table.from_pydict(
                opened.values(np.arange(len(opened)), list(RECORD_COLUMNS)), schema=RECORD_SCHEMA
            )
        if isinstance(opened, pa.Table):
            return opened
        return record_columns(opened[0].read_all())

    def append(self, records: pa.Table, first: int) -> None:
        """Write the records of fids first.. as a new file (before the batch is committed)."""
        self.path.mkdir(exist_ok=True)
        path = self.path / f"{first:012d}-{first + records.num_rows:012d}{self.suffix}"
        stored = encode(records)

        def write(tmp: Path) -> None:
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, stored.schema) as writer:
                writer.write_table(stored)

        atomic_write(path, write)

    def rewrite_older(self) -> None:
        """Rewrite files of formats 1-3 in this format (``rsretrieve upgrade``)."""
        for first, _, path in self._spans():
            if not isinstance(self._open(path), MappedRecords):
                table = self._table(path)
                self._opened.pop(path, None)
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
                path.unlink()
                self.append(kept, first)

    def remove(self) -> None:
        """Delete every record file."""
        for _, _, path in self._spans():
            path.unlink()
        self._opened.clear()
        self._covered = (-1, None)


def _one_batch(file: pa.ipc.RecordBatchFileReader) -> pa.RecordBatch:
    """The rows of a file as one record batch (a file of this format holds one; an empty one none)."""
    table = file.read_all().combine_chunks()
    return table.to_batches()[0] if table.num_rows else pa.RecordBatch.from_pylist([], schema=file.schema)


def _values_of(rows: pa.Table | pa.RecordBatch, columns: list[str]) -> dict[str, list[Any]]:
    """Record values of Arrow rows, column by column (nulls for record columns the rows lack)."""
    records = record_columns(pa.Table.from_batches([rows]) if isinstance(rows, pa.RecordBatch) else rows)
    return {name: records.column(name).to_pylist() for name in columns}


def _gathered(
    groups: np.ndarray, rows_of: Callable[[int, np.ndarray], dict[str, list[Any]]], wanted: np.ndarray
) -> dict[str, list[Any]]:
    """The values of ``wanted`` in order, read group by group (``rows_of(group, wanted values in it)``)."""
    if groups.min() == groups.max():  # one file or batch: the usual top k
        return rows_of(int(groups[0]), wanted)
    parts, order = [], []
    for group in np.unique(groups).tolist():
        rows = np.flatnonzero(groups == group)
        parts.append(rows_of(group, wanted[rows]))
        order.append(rows)
    position = np.argsort(np.concatenate(order), kind="stable").tolist()
    joined = {name: [value for part in parts for value in part[name]] for name in parts[0]}
    return {name: [values[i] for i in position] for name, values in joined.items()}


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
            lambda t: encode_vectors(vectors_of(t, dim)),
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
