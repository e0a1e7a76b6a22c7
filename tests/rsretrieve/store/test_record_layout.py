"""Tests for rsretrieve/store/record_layout.py: the compact record layout gives back exactly the records written."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import shapely

from rsretrieve.chips import RECORD_COLUMNS, Chip, Window, record_table
from rsretrieve.store.record_layout import RING, START, TEXT, MappedRecords, encode, footprint_text


def polygon(*points: tuple[float, float]) -> dict:
    """A GeoJSON polygon of one ring closed on its first point."""
    return {"type": "Polygon", "coordinates": [[list(point) for point in (*points, points[0])]]}


BOX = (10.25, 45.5, 10.375, 45.625)
FOOTPRINTS = {  # "none" first: the first chip has no bbox (``chips_with``)
    "none": None,
    "the bbox rectangle": polygon((10.25, 45.5), (10.375, 45.5), (10.375, 45.625), (10.25, 45.625)),
    "on the 1e-7 grid": polygon((10.2500001, 45.5), (10.3749999, 45.5000002), (10.375, 45.625), (-0.0001, 45.625)),
    "off the grid": polygon((10.25000000001, 45.5), (10.375, 45.5), (10.375, 45.625), (1e-05, 45.625)),
    "a hole": {"type": "Polygon", "coordinates": [polygon((0.0, 0.0), (4.0, 0.0), (4.0, 4.0))["coordinates"][0]] * 2},
    "integers": polygon((10, 45), (11, 45), (11, 46)),
    "negative zero": polygon((-0.0, 45.5), (10.375, 45.5), (10.375, 45.625)),
    "a multipolygon": {
        "type": "MultiPolygon",
        "coordinates": [polygon((0.0, 0.0), (1.0, 0.0), (1.0, 1.0))["coordinates"]],
    },
    "three dimensions": polygon((1.0, 2.0, 3.0), (2.0, 2.0, 3.0), (2.0, 3.0, 3.0)),
}


def chips_with(footprints: list[dict | None]) -> list[Chip]:
    """A chip per footprint, every third without window, bbox, date or CRS; a STAC item for every other."""
    return [
        Chip(
            id=f"chip{row}",
            path=f"/data/scene_{row}.tif",
            window=Window(row, 0, 64, 64) if row % 3 else None,
            crs="EPSG:32632" if row % 3 else None,
            bbox=BOX if row % 3 else None,
            footprint=footprint,
            date=dt.date(2020, 1, 1 + row % 28) if row % 3 else None,
            item_id=f"item-{row}" if row % 2 else None,
            collection="sentinel-2-l2a" if row % 2 else None,
        )
        for row, footprint in enumerate(footprints)
    ]


def stored(records: pa.Table, path: Path) -> MappedRecords:
    """Write records in this layout and map the file back, as ``RecordFiles`` does."""
    table = encode(records)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return MappedRecords(pa.ipc.open_file(pa.memory_map(str(path))).get_batch(0))


@pytest.mark.parametrize("kind", sorted(FOOTPRINTS))
def test_every_footprint_comes_back_as_its_text(kind: str, tmp_path: Path) -> None:
    records = record_table(chips_with([FOOTPRINTS[kind]] * 4))
    mapped = stored(records, tmp_path / "r.arrow")
    assert mapped.values(np.arange(4), list(RECORD_COLUMNS)) == records.to_pydict()
    assert (
        mapped.values(np.array([3, 1, 1]), ["footprint", "id"])
        == records.take([3, 1, 1]).select(["footprint", "id"]).to_pydict()
    )
    parsed = [json.loads(text) if text else None for text in records.column("footprint").to_pylist()]
    assert mapped.values(np.arange(4), ["footprint"], parsed=True) == {"footprint": parsed}  # made without text


def test_all_records_come_back_in_any_order_and_nulls_stay_null(tmp_path: Path) -> None:
    records = record_table(chips_with(list(FOOTPRINTS.values()) * 3))
    mapped = stored(records, tmp_path / "r.arrow")
    offsets = np.random.default_rng(0).integers(0, records.num_rows, 40)
    assert mapped.values(offsets, list(RECORD_COLUMNS)) == records.take(offsets).to_pydict()
    assert len(mapped) == records.num_rows


def test_footprints_are_stored_as_rings_where_their_text_comes_back_exactly(tmp_path: Path) -> None:
    kinds = list(FOOTPRINTS)
    table = encode(record_table(chips_with([FOOTPRINTS[kind] for kind in kinds]))).to_pydict()
    rings = dict(zip(kinds, table[RING], strict=True))
    texts = dict(zip(kinds, table[TEXT], strict=True))
    assert rings["the bbox rectangle"] == [] and texts["the bbox rectangle"] is None  # nothing but the bbox
    assert rings["off the grid"][:2] == [10.25000000001, 45.5]  # float64: one ring of the file is off the grid
    assert repr(rings["negative zero"][0]) == "-0.0"
    for kind in ("a hole", "integers", "a multipolygon", "three dimensions"):
        assert rings[kind] is None and json.loads(texts[kind]) == FOOTPRINTS[kind]
    assert rings["none"] is None and texts["none"] is None


def test_rings_on_the_grid_are_int32_and_strings_narrow_dictionaries(tmp_path: Path) -> None:
    footprints = [FOOTPRINTS["on the 1e-7 grid"], FOOTPRINTS["the bbox rectangle"]] * 100
    table = encode(record_table(chips_with(footprints)))
    assert table.schema.field(RING).type == pa.list_(pa.int32())
    grid = [102500001, 455000000, 103749999, 455000002, 103750000, 456250000, -1000, 456250000]
    assert table.column(RING)[0].as_py() == grid and table.column(RING)[1].as_py() == []  # the bbox rectangle
    assert table.schema.field("path").type == pa.dictionary(pa.int16(), pa.string())  # 200 paths
    assert table.schema.field("item_id").type == pa.dictionary(pa.int8(), pa.string())  # 100 items
    assert table.schema.metadata == {b"record_layout": b"4"}
    with_negative_zero = encode(record_table(chips_with([*footprints, FOOTPRINTS["negative zero"]])))
    assert with_negative_zero.schema.field(RING).type == pa.list_(pa.float64())  # -0.0 is not on the int grid
    mapped = stored(record_table(chips_with(footprints)), tmp_path / "r.arrow")
    assert mapped.values(np.array([0]), ["footprint"])["footprint"] == [json.dumps(footprints[0])]


def test_small_rings_on_the_grid_are_int16_steps_from_their_first_point(tmp_path: Path) -> None:
    corners = [(10.0, 45.0), (10.002, 45.0), (10.0021234, 45.0029999), (9.9999999, 45.003)]  # steps ≤ 0.0032767°
    footprints = [None, polygon(*corners), FOOTPRINTS["the bbox rectangle"], polygon(*corners[::-1])]
    records = record_table(chips_with(footprints))
    table = encode(records)
    assert table.schema.field(RING).type == pa.list_(pa.int16())
    assert table.column(START)[1].as_py() == [100000000, 450000000] and table.column(START)[2].as_py() is None
    assert table.column(RING)[1].as_py() == [20000, 0, 1234, 29999, -21235, 1]  # steps between the points
    mapped = stored(records, tmp_path / "r.arrow")
    assert mapped.values(np.array([3, 0, 1, 2]), list(RECORD_COLUMNS)) == records.take([3, 0, 1, 2]).to_pydict()
    far = polygon((10.0, 45.0), (10.0032768, 45.0), (10.0, 45.001))  # one step too long: absolute int32
    assert encode(record_table(chips_with([*footprints, far]))).schema.field(RING).type == pa.list_(pa.int32())


@pytest.mark.parametrize("rings", ["float64", "int16 steps"])
def test_shapes_are_the_footprints_as_geometries_with_the_same_coordinates(rings: str, tmp_path: Path) -> None:
    corners = [(10.0, 45.0), (10.002, 45.0), (10.0021234, 45.0029999)]
    kinds = list(FOOTPRINTS) if rings == "float64" else ["none", "the bbox rectangle", "a hole", "integers"]
    footprints = [FOOTPRINTS[kind] for kind in kinds] + [polygon(*corners)] * 2
    records = record_table(chips_with(footprints * 2))
    mapped = stored(records, tmp_path / "r.arrow")
    offsets = np.arange(records.num_rows)[::-1]
    expected = shapely.from_geojson(np.asarray(records.column("footprint").to_pylist(), object))[offsets]
    assert shapely.to_wkb(mapped.shapes(offsets)).tolist() == shapely.to_wkb(expected).tolist()


def test_a_ring_text_is_what_json_dumps_writes() -> None:
    ring = [0.1, 0.2, 1e-05, 45.0, 179.9999999, -89.5]
    closed = [ring[i : i + 2] for i in range(0, 6, 2)] + [ring[:2]]
    assert footprint_text(ring) == json.dumps({"type": "Polygon", "coordinates": [closed]})
    assert footprint_text(np.array(ring)) == footprint_text(ring)


def test_a_record_column_added_after_a_file_was_written_reads_as_null(tmp_path: Path) -> None:
    older = encode(record_table(chips_with([None, None]))).drop_columns(["collection"])
    with pa.OSFile(str(tmp_path / "r.arrow"), "wb") as sink, pa.ipc.new_file(sink, older.schema) as writer:
        writer.write_table(older)
    mapped = MappedRecords(pa.ipc.open_file(pa.memory_map(str(tmp_path / "r.arrow"))).get_batch(0))
    assert mapped.values(np.array([1, 0]), ["id", "collection"]) == {"id": ["chip1", "chip0"], "collection": [None] * 2}


def test_no_records_make_an_empty_table() -> None:
    records = record_table([])
    table = encode(records)
    assert table.num_rows == 0 and table.schema.metadata == {b"record_layout": b"4"}
