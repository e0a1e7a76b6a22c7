"""The query path's copies of the chips table: vectors, filter bounds and result records (see ``row_files``).

Each copy is derived from rows of the LanceDB table by one function, used both when a batch is appended and
when a copy is rebuilt from LanceDB (an index written before the copy existed, or a damaged file), so the two
can never disagree in form.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rsretrieve.row_files import BOUNDS, VECTORS, MatrixFile, RecordFile

BOUND_COLUMNS = ("minx", "miny", "maxx", "maxy", "date")
RECORD_COLUMNS = ("id", "path", "col_off", "row_off", "width", "height", "crs", *BOUND_COLUMNS[:4], "footprint", "date")
WINDOW_COLUMNS = ("col_off", "row_off", "width", "height")
REBUILD_ROWS = 65536
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def day_number(day: date) -> int:
    """Days since 1970-01-01: how ``bounds.f64`` stores an acquisition date."""
    return day.toordinal() - EPOCH_ORDINAL


def day_date(number: float) -> date:
    """The date of a day number (inverse of ``day_number``)."""
    return date.fromordinal(EPOCH_ORDINAL + int(number))


def vectors_of(table: pa.Table, dim: int) -> np.ndarray:
    """The ``vector`` column as an (n, dim) float32 array."""
    if table.num_rows == 0:
        return np.empty((0, dim), np.float32)
    flat = table.column("vector").combine_chunks().values.to_numpy(zero_copy_only=False)
    return flat.reshape(-1, dim).astype(np.float32, copy=False)


def bounds_of(table: pa.Table) -> np.ndarray:
    """(n, 5) float64: minx, miny, maxx, maxy in WGS84 and the acquisition day (days since 1970-01-01); NaN if null."""
    columns = [table.column(name) for name in BOUND_COLUMNS[:4]]
    columns.append(pc.cast(table.column("date"), pa.int32()))
    filled = [pc.fill_null(pc.cast(column, pa.float64()), np.nan) for column in columns]
    return np.column_stack([column.to_numpy() for column in filled]) if table.num_rows else np.empty((0, 5))


def record_lines(table: pa.Table) -> list[bytes]:
    """Each row's record as one JSON document (see ``records_of``), built column by column.

    The footprint column already holds GeoJSON text and is spliced in as it is: parsing and re-encoding it was
    most of the cost (~45 µs a row, against the indexer's budget of 500 µs a chip at 2,000 chips/s on a GPU).
    """
    column = {name: table.column(name).to_pylist() for name in RECORD_COLUMNS if name not in ("date", "footprint")}
    dates = pc.cast(table.column("date"), pa.string()).to_pylist()  # ISO 8601
    footprints = table.column("footprint").to_pylist()
    lines = []
    for row in range(table.num_rows):
        bbox = [column[name][row] for name in BOUND_COLUMNS[:4]]
        record = {
            "id": column["id"][row],
            "path": column["path"][row],
            "window": {name: column[name][row] for name in WINDOW_COLUMNS},
            "bbox": bbox if bbox[0] is not None else None,
            "date": dates[row],
            "crs": column["crs"][row],
        }
        text = json.dumps(record, separators=(",", ":"))
        lines.append(f'{text[:-1]},"footprint":{footprints[row] or "null"}}}'.encode())
    return lines


def records_of(table: pa.Table) -> list[dict[str, Any]]:
    """What a search result shows of each row: id, path, window, bbox, date (ISO), crs, footprint (GeoJSON)."""
    return [json.loads(line) for line in record_lines(table)]


@dataclass(frozen=True)
class Copy:
    """One copy: its file, the table columns it is derived from, and how."""

    file: MatrixFile | RecordFile
    columns: tuple[str, ...]
    derive: Callable[[pa.Table], Any]


class QueryCopies:
    """The three copies of an index folder, appended and cut together by the store's writer."""

    def __init__(self, db: Path, dim: int):
        self.vectors = Copy(MatrixFile(db / VECTORS, np.float32, dim), ("vector",), lambda t: vectors_of(t, dim))
        self.bounds = Copy(MatrixFile(db / BOUNDS, np.float64, len(BOUND_COLUMNS)), BOUND_COLUMNS, bounds_of)
        self.records = Copy(RecordFile(db), RECORD_COLUMNS, record_lines)
        self.all = (self.vectors, self.bounds, self.records)

    def append(self, batch: pa.Table) -> None:
        """Append the copies of a batch of table rows (before the batch is committed)."""
        for copy in self.all:
            copy.file.append(copy.derive(batch))

    def sync(
        self,
        count: int,
        read_rows: Callable[[np.ndarray, list[str]], pa.Table],
        on_rebuild: Callable[[str], None] = lambda name: None,
    ) -> None:
        """Make every copy hold exactly ``count`` rows: cut an interrupted batch, or rebuild it with ``read_rows``
        (``on_rebuild`` is told the file's name first: at 1M chips a rebuild takes tens of seconds)."""
        for copy in self.all:
            if copy.file.rows_on_disk() >= count:
                copy.file.truncate(count)
                continue
            on_rebuild(copy.file.path.name)
            copy.file.remove()
            for start in range(0, count, REBUILD_ROWS):
                fids = np.arange(start, min(start + REBUILD_ROWS, count), dtype=np.int64)
                copy.file.append(copy.derive(read_rows(fids, list(copy.columns))))

    def remove(self) -> None:
        """Delete every copy (the index starts over)."""
        for copy in self.all:
            copy.file.remove()
