"""How chip records are laid out in a record file of format 4: uncompressed and compact, so that a mapped file
answers a few rows by indexing its buffers, without decompressing or copying the rest.

``encode`` turns the record columns (``chips.RECORD_COLUMNS``) into the stored columns, and ``MappedRecords.values``
turns rows of those back into exactly the same values:

- the repetitive strings (``path``, ``crs``, ``item_id``, ``collection``) are dictionary-encoded, with the narrowest
  index type that holds the file's dictionary (int8 up to 127 distinct values, int16 up to 32,767);
- the GeoJSON footprint text becomes ``footprint_ring``: the outer ring of a one-ring polygon as flat x, y numbers,
  closing point left out. When every ring of the file lies exactly on a 1e-7° grid (footprints of indexed rasters
  are rounded so) they are grid integers: int16 steps from each ring's first point, which ``footprint_start`` holds
  (int32 x, y), when every step fits, else int32 coordinates; otherwise float64 coordinates. An empty ring is the
  bbox rectangle (minx miny, maxx miny, maxx maxy, minx maxy). The text is rebuilt as ``json.dumps`` wrote it; a
  footprint whose text would not come back byte for byte stays text, in the dictionary-encoded
  ``footprint_geojson``;
- the rest (``id``, window, bbox, ``date``) is stored as it is: strings, fixed-width numbers and dates are what
  ``MappedRecords`` reads (a record column of another type needs a reader there).

The schema metadata ``record_layout`` (``LAYOUT``) marks such a file; any Arrow reader opens it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rsretrieve.chips import BBOX_FIELDS, RECORD_COLUMNS, day_date

LAYOUT_KEY = b"record_layout"
LAYOUT = b"4"
GRID = 1e7  # the int32 ring grid: 1e-7°, as ``raster.georef.FOOTPRINT_DECIMALS`` rounds footprints
DICTIONARY_COLUMNS = ("path", "crs", "item_id", "collection")
RING = "footprint_ring"
START = "footprint_start"
TEXT = "footprint_geojson"
INT32_LIMIT = 2**31 - 1
INT16_LIMIT = 2**15 - 1


def is_encoded(schema: pa.Schema) -> bool:
    """Whether a record file's schema is this layout."""
    return (schema.metadata or {}).get(LAYOUT_KEY) == LAYOUT


def encode(records: pa.Table) -> pa.Table:
    """The stored columns of a table of chip records (``chips.RECORD_COLUMNS``), one chunk, marked as this layout."""
    records = records.combine_chunks()
    columns: dict[str, pa.Array] = {}
    for name, kind in RECORD_COLUMNS.items():
        column = pa.concat_arrays(records.column(name).chunks) if records.num_rows else pa.array([], kind)
        if name == "footprint":
            columns.update(_encode_footprints(column, records))
        elif name in DICTIONARY_COLUMNS:
            columns[name] = _dictionary(column)
        else:
            columns[name] = column
    return pa.table(columns).replace_schema_metadata({LAYOUT_KEY: LAYOUT})


def footprint_text(ring: list[float] | np.ndarray) -> str:
    """The GeoJSON text of a polygon with one ring (flat x, y numbers, closing point left out), as ``json.dumps``
    writes ``{"type": "Polygon", "coordinates": [ring]}``."""
    values = ring.tolist() if isinstance(ring, np.ndarray) else ring
    points = [f"[{values[i]!r}, {values[i + 1]!r}]" for i in range(0, len(values), 2)]
    points.append(points[0])
    return '{"type": "Polygon", "coordinates": [[' + ", ".join(points) + "]]}"


def footprint_geometry(ring: list[float]) -> dict[str, Any]:
    """What ``json.loads`` makes of ``footprint_text(ring)``: the GeoJSON polygon as a dict."""
    points = [ring[i : i + 2] for i in range(0, len(ring), 2)]
    points.append(list(points[0]))
    return {"type": "Polygon", "coordinates": [points]}


def _dictionary(column: pa.Array) -> pa.DictionaryArray:
    """A string column dictionary-encoded, with the narrowest index type for its dictionary."""
    encoded = pc.dictionary_encode(column)
    size = len(encoded.dictionary)
    kind = pa.int8() if size <= 127 else pa.int16() if size <= 32767 else pa.int32()
    return pa.DictionaryArray.from_arrays(encoded.indices.cast(kind), encoded.dictionary)


def _box_ring(box: tuple[float, ...]) -> list[float]:
    """The bbox rectangle as a flat ring: minx miny, maxx miny, maxx maxy, minx maxy."""
    minx, miny, maxx, maxy = box
    return [minx, miny, maxx, miny, maxx, maxy, minx, maxy]


def _flat_ring(text: str, box: tuple[Any, ...]) -> list[float] | None:
    """The ring of a footprint text as flat x, y floats (closing point left out; empty: the bbox rectangle), or None
    when its text would not be rebuilt exactly from them (``footprint_text``)."""
    if None not in box and footprint_text(_box_ring(box)) == text:
        return []
    try:
        (ring,) = json.loads(text)["coordinates"]
    except (ValueError, TypeError, KeyError):
        return None
    if type(ring) is not list or len(ring) < 4 or any(type(point) is not list or len(point) != 2 for point in ring):
        return None
    flat = [value for point in ring[:-1] for value in point]
    if any(type(value) is not float for value in flat):
        return None
    return flat if footprint_text(flat) == text else None


def _encode_footprints(column: pa.Array, records: pa.Table) -> dict[str, pa.Array]:
    """The stored footprint columns of a footprint text column (see the module docstring)."""
    boxes = zip(*(records.column(name).to_pylist() for name in BBOX_FIELDS), strict=True)
    rings: list[list[float] | None] = []
    texts: list[str | None] = []
    for text, box in zip(column.to_pylist(), boxes, strict=True):
        flat = _flat_ring(text, box) if text else None
        rings.append(flat)
        texts.append(text if text and flat is None else None)
    return {**_ring_columns(rings), TEXT: _dictionary(pa.array(texts, pa.string()))}


def _ring_columns(rings: list[list[float] | None]) -> dict[str, pa.Array]:
    """Flat rings as ``footprint_ring`` (and ``footprint_start``): on the 1e-7° grid when all of them lie on it
    exactly — int16 steps from each ring's first point when every step fits, else int32 — else float64."""
    missing = pa.array([ring is None for ring in rings], pa.bool_())
    lengths = np.array([len(ring) if ring is not None else 0 for ring in rings], np.int64)
    values = np.array([value for ring in rings if ring for value in ring], np.float64)
    grid = np.rint(values * GRID)
    on_grid = np.all(np.abs(grid) <= INT32_LIMIT)  # and bit for bit (no -0.0 either):
    on_grid = on_grid and np.array_equal((grid.astype(np.int32) / GRID).view(np.int64), values.view(np.int64))
    if not on_grid:
        return {RING: _list(lengths, pa.array(values), missing)}
    ints = grid.astype(np.int64)
    firsts = (np.cumsum(lengths) - lengths)[lengths > 0]
    first_point = np.zeros(len(ints), bool)
    first_point[firsts], first_point[firsts + 1] = True, True
    steps = (ints - np.concatenate([ints[:2], ints[:-2]]))[~first_point]  # each number minus its point's previous
    if not len(firsts) or np.abs(steps).max(initial=0) > INT16_LIMIT:
        return {RING: _list(lengths, pa.array(ints.astype(np.int32)), missing)}
    starts = np.zeros((len(rings), 2), np.int32)
    starts[lengths > 0] = np.column_stack([ints[firsts], ints[firsts + 1]])
    no_start = pa.array(lengths == 0)
    return {
        RING: _list(np.maximum(lengths - 2, 0), pa.array(steps.astype(np.int16)), missing),
        START: pa.FixedSizeListArray.from_arrays(pa.array(starts.ravel()), 2, mask=no_start),
    }


def _list(lengths: np.ndarray, values: pa.Array, missing: pa.Array) -> pa.ListArray:
    """A list column of rows of ``lengths`` values (null where ``missing``)."""
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, values, mask=missing)


# --- reading -------------------------------------------------------------------------------------


class MappedRecords:
    """The rows of one record file of this layout, read by indexing its (memory-mapped) buffers with numpy: a few
    rows cost microseconds whatever the file's size. Each column's views are made once, when first needed (its
    dictionary as a Python list)."""

    def __init__(self, batch: pa.RecordBatch):
        self.batch = batch
        self._names = set(batch.schema.names)
        self._views: dict[str, tuple[Any, ...]] = {}

    def __len__(self) -> int:
        return self.batch.num_rows

    def values(self, offsets: np.ndarray, columns: list[str], parsed: bool = False) -> dict[str, list[Any]]:
        """Record columns ``columns`` of the rows at ``offsets`` as Python values (as Arrow's ``to_pylist`` gives
        those of the records), in order; with ``parsed``, footprints as GeoJSON dicts (``json.loads`` of the text,
        made without writing it)."""
        offsets = np.asarray(offsets, np.int64)
        return {name: self._column(name, offsets, parsed) for name in columns}

    def _view(self, name: str) -> tuple[Any, ...]:
        """(kind, values, validity bitmap or None, offset, and per kind: the dictionary as a list, string data, or
        ring numbers and whether they are on the grid) of a stored column."""
        view = self._views.get(name)
        if view is None:
            array = self.batch.column(name)
            bitmap = np.frombuffer(array.buffers()[0], np.uint8) if array.null_count else None
            if pa.types.is_dictionary(array.type):
                indices = array.indices
                values = _buffer(indices, 1, indices.type.to_pandas_dtype())
                view = ("dictionary", values, bitmap, array.offset, [*array.dictionary.to_pylist(), None])
            elif pa.types.is_string(array.type):
                view = (
                    "string",
                    _buffer(array, 1, np.int32, extra=1),
                    bitmap,
                    array.offset,
                    memoryview(array.buffers()[2] or b""),
                )
            elif pa.types.is_list(array.type):
                grid = pa.types.is_integer(array.type.value_type)
                numbers = _buffer(array.values, 1, array.type.value_type.to_pandas_dtype())
                view = ("ring", _buffer(array, 1, np.int32, extra=1), bitmap, array.offset, numbers, grid)
            elif pa.types.is_fixed_size_list(array.type):  # the first points of rings stored as int16 steps
                view = ("points", _buffer(array.values, 1, np.int32)[2 * array.offset :], bitmap, array.offset)
            else:
                dtype = np.int32 if pa.types.is_date32(array.type) else array.type.to_pandas_dtype()
                view = (
                    "date" if pa.types.is_date32(array.type) else "number",
                    _buffer(array, 1, dtype),
                    bitmap,
                    array.offset,
                )
            self._views[name] = view
        return view

    def _column(self, name: str, offsets: np.ndarray, parsed: bool = False) -> list[Any]:
        if name == "footprint":
            return self._footprints(offsets, footprint_geometry if parsed else footprint_text)
        if name not in self._names:  # a record column added after the file was written
            return [None] * len(offsets)
        kind, values, bitmap, first, *rest = self._view(name)
        if kind == "dictionary":
            positions = values[offsets].astype(np.int64)
            if bitmap is not None:
                positions[~_valid(bitmap, first, offsets)] = -1  # the None at the end of the dictionary
            return [rest[0][position] for position in positions.tolist()]
        if kind == "string":  # values: where each row's text starts in the data
            data = rest[0]
            found = [str(data[values[offset] : values[offset + 1]], "utf-8") for offset in offsets.tolist()]
        elif kind == "date":
            found = [day_date(day) for day in values[offsets].tolist()]
        else:
            found = values[offsets].tolist()
        if bitmap is None:
            return found
        return [value if ok else None for value, ok in zip(found, _valid(bitmap, first, offsets).tolist(), strict=True)]

    def _footprints(self, offsets: np.ndarray, write: Callable[[list[float]], Any]) -> list[Any]:
        """Footprints of the rows at ``offsets``, ``write`` making each ring's (text or dict): texts kept as such
        (parsed when ``write`` makes dicts), rings and bbox rectangles written."""
        if self._view(RING)[2] is not None:  # some rows kept as text (or without a footprint)
            texts = self._column(TEXT, offsets)
            out = texts if write is footprint_text else [json.loads(text) if text else None for text in texts]
        else:
            out = [None] * len(offsets)
        rows, coordinates, ends = self._rings(offsets)
        flat, start = coordinates.tolist(), 0
        for row, end in zip(rows.tolist(), ends.tolist(), strict=True):
            out[row] = write(flat[start:end])
            start = end
        boxes, corners = self._boxes(offsets)
        for row, box in zip(boxes.tolist(), corners.tolist(), strict=True):
            out[row] = write(_box_ring(tuple(box)))
        return out

    def shapes(self, offsets: np.ndarray) -> np.ndarray:
        """Footprints of the rows at ``offsets`` as shapely geometries (None where there is none), in order: made
        from the rings, no GeoJSON text written or parsed but for footprints kept as text."""
        import shapely

        offsets = np.asarray(offsets, np.int64)
        out = np.full(len(offsets), None, object)
        if self._view(RING)[2] is not None:  # some rows kept as text (or without a footprint)
            texts = np.asarray(self._column(TEXT, offsets), object)
            out[:] = shapely.from_geojson(texts)
        rows, coordinates, ends = self._rings(offsets)
        boxes, corners = self._boxes(offsets)
        placed = np.concatenate([rows, boxes])
        if len(placed):
            flat = np.concatenate([coordinates, corners[:, [0, 1, 2, 1, 2, 3, 0, 3]].ravel()])
            points = np.concatenate([np.diff(ends, prepend=0) // 2, np.full(len(boxes), 4)])
            rings = shapely.linearrings(flat.reshape(-1, 2), indices=np.repeat(np.arange(len(placed)), points))
            out[placed] = shapely.polygons(rings)
        return out

    def _boxes(self, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(which rows of ``offsets`` have the bbox rectangle as their footprint, their bboxes (n, 4))."""
        _, begins, bitmap, first, _, _ = self._view(RING)
        empty = begins[offsets] == begins[offsets + 1]  # the bbox rectangle, or a null list
        if bitmap is not None:
            empty &= _valid(bitmap, first, offsets)
        boxes = np.flatnonzero(empty)
        return boxes, np.column_stack([self._view(name)[1][offsets[boxes]] for name in BBOX_FIELDS])

    def _rings(self, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(which rows of ``offsets`` have a stored ring, their flat x, y coordinates one ring after the other as
        float64, closing points left out, and where each ring's coordinates end), all rings decoded at once."""
        _, begins, _, _, numbers, grid = self._view(RING)
        begin, end = begins[offsets], begins[offsets + 1]
        rows = np.flatnonzero(end > begin)
        if not len(rows):
            return rows, np.empty(0), np.empty(0, np.int64)
        counts = (end - begin)[rows].astype(np.int64)
        index = np.arange(int(counts.sum())) + np.repeat(begin[rows] - (np.cumsum(counts) - counts), counts)
        taken = numbers[index]
        if numbers.dtype != np.int16:
            return rows, taken / GRID if grid else taken, np.cumsum(counts)
        origins = self._view(START)[1].reshape(-1, 2)[offsets[rows]].astype(np.int64)  # and int16 steps from them
        points = counts // 2
        walked = np.cumsum(taken.reshape(-1, 2), axis=0, dtype=np.int64)
        before = np.vstack([np.zeros((1, 2), np.int64), walked])[np.cumsum(points) - points]
        walked += np.repeat(origins - before, points, axis=0)
        is_origin = np.zeros(len(walked) + len(rows), bool)
        is_origin[np.cumsum(points + 1) - points - 1] = True
        ring = np.empty((len(is_origin), 2), np.int64)
        ring[is_origin], ring[~is_origin] = origins, walked
        return rows, ring.ravel() / GRID, np.cumsum(counts + 2)


def _buffer(array: pa.Array, index: int, dtype: Any, extra: int = 0) -> np.ndarray:
    """Buffer ``index`` of an array as numpy values of its rows, zero-copy (``extra``: values past them, offsets)."""
    return np.frombuffer(array.buffers()[index], dtype)[array.offset : array.offset + len(array) + extra]


def _valid(bitmap: np.ndarray, first: int, offsets: np.ndarray) -> np.ndarray:
    """Whether the rows at ``offsets`` of an array (its validity bitmap, its offset) are not null."""
    at = offsets + first
    return ((bitmap[at >> 3] >> (at & 7)) & 1).astype(bool)
