"""The chip record: what a chip is, how it is stored, and how machines see it — in one module.

A chip is a pixel window of a source raster with where and when it was taken. The indexer plans ``Chip``
objects, the store keeps them as rows of the ``chips`` table (``table_schema``, built column-wise by
``chips_table``), the query side reads them back (``chips_from_table``, ``chips_from_values``) and every renderer
shows ``Chip.record()`` (``--json``, CSV, HTTP) or ``Chip.feature()`` (GeoJSON).

Adding a field means: a field of ``Chip``, its column in ``RECORD_COLUMNS`` (Arrow type: a string, number or
date, which ``store.record_layout`` stores as it is), one line in ``record_table`` and in ``chips_from_values``, and
``record()`` if machines should see it — nothing elsewhere.
Index folders written before the field existed read it as null (``chips_from_table`` tolerates a missing
column); list it in ``LATER_COLUMNS`` too, so that appending to such an index adds the column to its table.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()

# Stored columns that make up a chip record (the table adds ``fid`` and ``vector``).
RECORD_COLUMNS: dict[str, pa.DataType] = {
    "id": pa.string(),
    "path": pa.string(),
    "col_off": pa.int32(),
    "row_off": pa.int32(),
    "width": pa.int32(),
    "height": pa.int32(),
    "crs": pa.string(),
    "minx": pa.float64(),
    "miny": pa.float64(),
    "maxx": pa.float64(),
    "maxy": pa.float64(),
    "footprint": pa.string(),  # GeoJSON geometry text (EPSG:4326)
    "date": pa.date32(),
    "item_id": pa.string(),  # STAC item the chip's source came from (null for files named directly)
    "collection": pa.string(),  # and its STAC collection
}
# Columns added after the first index format: an older table lacks them (``missing_columns``).
LATER_COLUMNS = ("item_id", "collection")
WINDOW_FIELDS = ("col_off", "row_off", "width", "height")
BBOX_FIELDS = ("minx", "miny", "maxx", "maxy")
# the record columns as flat attributes beside a geometry (GeoParquet): all but the bbox and the footprint
ATTRIBUTE_COLUMNS = tuple(name for name in RECORD_COLUMNS if name not in (*BBOX_FIELDS, "footprint"))
FILTER_FIELDS = (*BBOX_FIELDS, "day")  # the in-memory filter matrix: bbox and acquisition day
INDEXED_COLUMNS = ("fid", "id", "minx", "miny", "maxx", "maxy", "date")  # B-trees: id lookups, users' own SQL
# what a chip id may hold: the indexer's hex hashes and the ids of imported embeddings (Major TOM's hex unique_id,
# Clay's numbers, ``name_row``); nothing that needs quoting in the id lookups' SQL
CHIP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,255}$")


def is_chip_id(value: object) -> bool:
    """Whether ``value`` is a string a chip id can be (``CHIP_ID``)."""
    return isinstance(value, str) and CHIP_ID.match(value) is not None


@dataclass(frozen=True)
class Window:
    """A pixel window of a source file."""

    col_off: int
    row_off: int
    width: int
    height: int

    def as_dict(self) -> dict[str, int]:
        """The window as a plain dict (for JSON; spelled out: ``dataclasses.asdict`` deep-copies, 10× slower)."""
        return {"col_off": self.col_off, "row_off": self.row_off, "width": self.width, "height": self.height}


@dataclass(frozen=True)
class Chip:
    """Where and when one chip is: source path or URI, pixel window, native CRS, WGS84 bbox and footprint, date,
    and the STAC item and collection of its source when it came from a catalogue.

    ``window`` is None for a chip of imported embeddings (``rsretrieve import-embeddings``): its ``path`` names
    where the embedding came from, and there is no raster to cut it from (no thumbnail)."""

    id: str
    path: str
    window: Window | None
    crs: str | None = None
    bbox: tuple[float, float, float, float] | None = None
    footprint: dict[str, Any] | None = None
    date: dt.date | None = None
    item_id: str | None = None
    collection: str | None = None

    def record(self) -> dict[str, Any]:
        """The machine-readable record (``--json``, CSV, HTTP); the footprint goes to GeoJSON geometry."""
        return {
            "id": self.id,
            "path": self.path,
            "window": self.window.as_dict() if self.window is not None else None,
            "bbox": list(self.bbox) if self.bbox is not None else None,
            "date": self.date.isoformat() if self.date is not None else None,
            "crs": self.crs,
            "item_id": self.item_id,
            "collection": self.collection,
        }

    def feature(self, **properties: Any) -> dict[str, Any]:
        """A GeoJSON Feature: the footprint (null without georeference) and ``properties`` + the record."""
        return {
            "type": "Feature",
            "id": self.id,
            "geometry": self.footprint,
            "properties": {**properties, **self.record()},
        }


def table_schema(dim: int) -> pa.Schema:
    """Arrow schema of a batch of chips as the writer receives it: fid (= FAISS id), the record columns, the vector
    (the LanceDB ``chips`` table keeps all but the vector since format 3: ``store.vector_codes`` holds it)."""
    return pa.schema([("fid", pa.int64()), *RECORD_COLUMNS.items(), ("vector", pa.list_(pa.float32(), dim))])


def record_table(chips: Sequence[Chip]) -> pa.Table:
    """The record columns of ``chips`` (``RECORD_COLUMNS``), built column by column."""
    bboxes = [chip.bbox or (None, None, None, None) for chip in chips]
    columns: dict[str, Any] = {
        "id": [chip.id for chip in chips],
        "path": [chip.path for chip in chips],
        **{name: [getattr(chip.window, name, None) for chip in chips] for name in WINDOW_FIELDS},
        "crs": [chip.crs for chip in chips],
        **{name: [bbox[i] for bbox in bboxes] for i, name in enumerate(BBOX_FIELDS)},
        "footprint": [json.dumps(chip.footprint) if chip.footprint else None for chip in chips],
        "date": [chip.date for chip in chips],
        "item_id": [chip.item_id for chip in chips],
        "collection": [chip.collection for chip in chips],
    }
    return pa.Table.from_pydict(columns, schema=pa.schema(list(RECORD_COLUMNS.items())))


def chips_table(chips: Sequence[Chip], fids: np.ndarray, vectors: np.ndarray) -> pa.Table:
    """Rows of the ``chips`` table for ``chips`` with their fids and vectors."""
    records = record_table(chips)
    columns = [pa.array(np.asarray(fids, np.int64)), *records.columns, vector_column(vectors)]
    return pa.Table.from_arrays(columns, schema=table_schema(vectors.shape[1]))


def vector_column(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """An (n, dim) matrix as the ``vector`` column: one fixed-size list of float32 a row."""
    flat = pa.array(np.ascontiguousarray(vectors, np.float32).ravel())
    return pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])


def record_columns(table: pa.Table) -> pa.Table:
    """The record columns of a table of chips (nulls for columns an older table lacks)."""
    present = set(table.column_names)
    if present.issuperset(RECORD_COLUMNS):
        return table.select(list(RECORD_COLUMNS))
    columns = [
        table.column(name) if name in present else pa.nulls(table.num_rows, kind)
        for name, kind in RECORD_COLUMNS.items()
    ]
    return pa.Table.from_arrays(columns, schema=pa.schema(list(RECORD_COLUMNS.items())))


def missing_columns(schema: pa.Schema) -> list[pa.Field]:
    """Record columns an older table lacks (``LATER_COLUMNS``), as fields to add to it."""
    return [pa.field(name, RECORD_COLUMNS[name]) for name in LATER_COLUMNS if name not in schema.names]


def chips_from_table(table: pa.Table) -> list[Chip]:
    """``Chip`` objects of the rows of a table holding the record columns, in order."""
    records = record_columns(table)
    columns = {name: records.column(name).to_pylist() for name in RECORD_COLUMNS}
    columns["footprint"] = [json.loads(text) if text else None for text in columns["footprint"]]
    return chips_from_values(columns)


def chips_from_values(columns: dict[str, list[Any]]) -> list[Chip]:
    """``Chip`` objects of record values given column by column (``RECORD_COLUMNS``, as ``to_pylist`` gives them
    but the footprints: GeoJSON dicts, parsed)."""
    chips = []
    for row in range(len(columns["id"])):
        bbox = tuple(columns[name][row] for name in BBOX_FIELDS)
        window = tuple(columns[name][row] for name in WINDOW_FIELDS)
        footprint = columns["footprint"][row]
        chips.append(
            Chip(
                id=columns["id"][row],
                path=columns["path"][row],
                window=Window(*window) if window[0] is not None else None,  # type: ignore[arg-type]
                crs=columns["crs"][row],
                bbox=bbox if bbox[0] is not None else None,  # type: ignore[arg-type]
                footprint=footprint or None,
                date=columns["date"][row],
                item_id=columns["item_id"][row],
                collection=columns["collection"][row],
            )
        )
    return chips


# --- the filter matrix ---------------------------------------------------------------------------


def day_number(day: dt.date) -> int:
    """Days since 1970-01-01: how the filter matrix stores an acquisition date."""
    return day.toordinal() - EPOCH_ORDINAL


def day_date(number: float) -> dt.date:
    """The date of a day number (inverse of ``day_number``)."""
    return dt.date.fromordinal(EPOCH_ORDINAL + int(number))


def filter_matrix(table: pa.Table) -> np.ndarray:
    """(n, 5) float64 in ``FILTER_FIELDS`` order: WGS84 bbox and acquisition day; NaN where null."""
    if table.num_rows == 0:
        return np.empty((0, len(FILTER_FIELDS)))
    columns = [table.column(name) for name in BBOX_FIELDS]
    columns.append(pc.cast(table.column("date"), pa.int32()))
    filled = [pc.fill_null(pc.cast(column, pa.float64()), np.nan) for column in columns]
    return np.column_stack([column.to_numpy() for column in filled])


@dataclass(frozen=True)
class FilterColumns:
    """Named columns of the filter matrix (each a float64 array over fids; NaN where unknown)."""

    minx: np.ndarray
    miny: np.ndarray
    maxx: np.ndarray
    maxy: np.ndarray
    day: np.ndarray

    @classmethod
    def of(cls, matrix: np.ndarray) -> FilterColumns:
        """Columns of a (n, 5) filter matrix (views, no copy)."""
        return cls(*(matrix[:, i] for i in range(len(FILTER_FIELDS))))

    def __len__(self) -> int:
        return len(self.minx)


def vectors_of(table: pa.Table, dim: int) -> np.ndarray:
    """The ``vector`` column as an (n, dim) float32 array."""
    if table.num_rows == 0:
        return np.empty((0, dim), np.float32)
    flat = table.column("vector").combine_chunks().values.to_numpy(zero_copy_only=False)
    return flat.reshape(-1, dim).astype(np.float32, copy=False)
