"""Tests for rsretrieve/store/query_columns.py: the matrix and record files, what the columns hold, and their sync."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import shapely

from rsretrieve.chips import (
    RECORD_COLUMNS,
    Chip,
    Window,
    chips_from_table,
    chips_from_values,
    chips_table,
    filter_matrix,
    record_columns,
)
from rsretrieve.store import vector_codes
from rsretrieve.store.query_columns import OLD_FILES, MatrixFile, QueryColumns, RecordFiles
from tests.rsretrieve.store.conftest import write_old_record_file

FOOTPRINT = {"type": "Polygon", "coordinates": [[[1.0, 2.0], [1.5, 2.0], [1.5, 2.5], [1.0, 2.0]]]}


def make_chips(count: int) -> list[Chip]:
    """Even chips georeferenced and dated, odd ones neither."""
    return [
        Chip(
            id=f"chip{fid}",
            path=f"/data/{fid}.tif",
            window=Window(fid, 2 * fid, 64, 32),
            crs="EPSG:32633" if fid % 2 == 0 else None,
            bbox=(1.0 + fid, 2.0, 1.5 + fid, 2.5) if fid % 2 == 0 else None,
            footprint=FOOTPRINT if fid % 2 == 0 else None,
            date=dt.date(1970, 1, 1 + fid) if fid % 2 == 0 else None,
        )
        for fid in range(count)
    ]


def table_of(count: int, dim: int = 4) -> pa.Table:
    """Rows of the chips table for ``make_chips(count)``; the vector of fid f is [f, f, f, f]."""
    vectors = np.repeat(np.arange(count, dtype=np.float32)[:, None], dim, axis=1)
    return chips_table(make_chips(count), np.arange(count), vectors)


def records_of(count: int, first: int = 0) -> pa.Table:
    """The record columns of chips first..count-1."""
    return record_columns(table_of(count).slice(first))


def file_name(first: int, end: int) -> str:
    """The name of the record file of fids first..end-1."""
    return f"{first:012d}-{end:012d}.arrow"


# --- matrix files --------------------------------------------------------------------------------


def test_matrix_file_appends_maps_a_prefix_and_truncates(tmp_path: Path) -> None:
    matrix = MatrixFile(tmp_path / "m.f64", np.float64, 3)
    assert matrix.rows_on_disk() == 0 and matrix.view(1) is None
    rows = np.arange(12, dtype=np.float64).reshape(4, 3)
    matrix.append(rows[:1])
    matrix.append(rows[1:])
    with (tmp_path / "m.f64").open("ab") as handle:
        handle.write(b"\0" * 5)  # part of a row: not a row
    assert matrix.rows_on_disk() == 4
    np.testing.assert_array_equal(matrix.view(3), rows[:3])
    assert matrix.view(5) is None
    matrix.truncate(2)
    assert matrix.rows_on_disk() == 2 and (tmp_path / "m.f64").stat().st_size == 2 * 3 * 8
    matrix.remove()
    assert matrix.rows_on_disk() == 0


# --- record files --------------------------------------------------------------------------------


@pytest.fixture
def record_files(tmp_path: Path) -> RecordFiles:
    """Records of 10 chips in three files: fids 0-3, 4-5 and 6-9."""
    files = RecordFiles(tmp_path / "records")
    records = records_of(10)
    for first, end in [(0, 4), (4, 6), (6, 10)]:
        files.append(records.slice(first, end - first), first)
    return files


def test_record_files_are_named_by_their_fids(record_files: RecordFiles) -> None:
    names = sorted(path.name for path in record_files.path.iterdir())
    assert names == [file_name(0, 4), file_name(4, 6), file_name(6, 10)]
    assert record_files.rows_on_disk() == 10
    stored = pa.ipc.open_file(record_files.path / names[1]).read_all()  # any Arrow reader opens them
    assert stored.column("id").to_pylist() == ["chip4", "chip5"] and stored.schema.metadata == {b"record_layout": b"4"}
    assert RecordFiles(record_files.path.parent / "absent").rows_on_disk() == 0


def test_record_files_read_fids_across_files_in_the_asked_order(record_files: RecordFiles) -> None:
    fids = [9, 0, 5, 5, 3, 6, 1, 4]
    found = record_files.read(fids, 10)
    assert found.schema == pa.schema(list(RECORD_COLUMNS.items()))
    assert found.equals(records_of(10).take(fids))
    assert chips_from_table(found) == [make_chips(10)[fid] for fid in fids]
    assert record_files.read(np.array([2]), 3).column("id").to_pylist() == ["chip2"]  # a committed prefix
    assert record_files.read([], 10).num_rows == 0
    assert record_files.read([0], 11) is None  # fewer rows than committed


def test_a_gap_in_the_record_files_reads_as_none(record_files: RecordFiles) -> None:
    (record_files.path / file_name(4, 6)).unlink()
    assert record_files.rows_on_disk() == 4
    assert record_files.read([0], 10) is None and record_files.read([7], 10) is None
    assert record_files.read([1], 4).column("id").to_pylist() == ["chip1"]  # the prefix before the gap still reads


def test_truncate_keeps_the_first_rows_of_a_file_across_the_count(record_files: RecordFiles) -> None:
    assert record_files.read([7], 10).column("id").to_pylist() == ["chip7"]  # mapped before the cut
    record_files.truncate(8)
    assert record_files.rows_on_disk() == 8
    assert record_files.read(range(8), 8).equals(records_of(8))
    assert record_files.read([0], 9) is None
    record_files.truncate(4)  # at a file boundary: whole files go
    assert sorted(path.name for path in record_files.path.iterdir()) == [file_name(0, 4)]
    record_files.append(records_of(6, 4), 4)  # appending again after a cut
    assert record_files.read([5, 4, 0], 6).equals(records_of(6).take([5, 4, 0]))
    record_files.remove()
    assert record_files.rows_on_disk() == 0 and not any(record_files.path.iterdir())


def test_record_files_of_format_3_are_read_one_compressed_batch_at_a_time(tmp_path: Path) -> None:
    files = RecordFiles(tmp_path / "records")
    records = records_of(23)
    files.append(records.slice(0, 10), 0)  # this format, beside
    files.path.mkdir(exist_ok=True)
    write_old_record_file(files.path / file_name(10, 23), records.slice(10, 13), batch_rows=4)  # 4+4+4+1 rows
    fids = [22, 0, 5, 5, 11, 9, 3, 20]  # across files and batches, repeated, out of order
    assert files.read(fids, 23).equals(records.take(fids))
    assert files.read([22, 12], 23, ["id", "date"]).equals(records.select(["id", "date"]).take([22, 12]))
    assert chips_from_values(files.values(fids, 23, parsed=True)) == [make_chips(23)[fid] for fid in fids]
    texts = np.asarray(records.column("footprint").to_pylist(), object)[fids]
    assert shapely.to_wkb(files.footprints(fids, 23)).tolist() == shapely.to_wkb(shapely.from_geojson(texts)).tolist()
    files.rewrite_older()  # rsretrieve upgrade: the same records, in this format
    assert pa.ipc.open_file(files.path / file_name(10, 23)).schema.metadata == {b"record_layout": b"4"}
    assert RecordFiles(files.path).read(fids, 23).equals(records.take(fids))


def test_a_record_file_of_format_2_is_read_whole(tmp_path: Path) -> None:
    folder = tmp_path / "records"
    folder.mkdir()
    older = records_of(6).drop_columns(["item_id", "collection"])  # one plain batch, before these columns existed
    write_old_record_file(folder / file_name(0, 6), older)
    found = RecordFiles(folder).read([4, 1], 6)
    assert found.column("id").to_pylist() == ["chip4", "chip1"] and found.column("item_id").null_count == 2


def test_a_file_left_half_written_is_not_a_record_file(record_files: RecordFiles) -> None:
    (record_files.path / f".{file_name(10, 12)}.tmp-123").write_bytes(b"ARROW1\0\0 cut short")
    (record_files.path / "notes.arrow").write_text("not ours")
    assert record_files.rows_on_disk() == 10
    assert record_files.read([9], 10).column("id").to_pylist() == ["chip9"]


# --- what the columns hold -----------------------------------------------------------------------


def test_the_filter_matrix_holds_box_and_day_with_nan_where_missing() -> None:
    bounds = filter_matrix(table_of(3))
    np.testing.assert_array_equal(bounds[0], [1.0, 2.0, 1.5, 2.5, 0.0])
    np.testing.assert_array_equal(bounds[2], [3.0, 2.0, 3.5, 2.5, 2.0])
    assert np.isnan(bounds[1]).all() and bounds.dtype == np.float64
    assert filter_matrix(table_of(0)).shape == (0, 5)


def test_records_are_what_a_result_shows() -> None:
    placed, bare = chips_from_table(record_columns(table_of(2)))
    assert placed.record() == {
        "id": "chip0",
        "path": "/data/0.tif",
        "window": {"col_off": 0, "row_off": 0, "width": 64, "height": 32},
        "bbox": [1.0, 2.0, 1.5, 2.5],
        "date": "1970-01-01",
        "crs": "EPSG:32633",
        "item_id": None,
        "collection": None,
    }
    assert placed.footprint == FOOTPRINT
    record = bare.record()
    assert record["bbox"] is None and record["date"] is None and record["crs"] is None and bare.footprint is None


# --- the columns together ------------------------------------------------------------------------


def test_sync_cuts_extra_rows_and_rebuilds_short_columns(tmp_path: Path) -> None:
    table = table_of(6)
    columns = QueryColumns(tmp_path, 4)
    columns.append(table.slice(0, 4), 0)
    columns.records.file.remove()  # e.g. an index written before the column existed
    for name in OLD_FILES:  # and its format-1 records
        (tmp_path / name).write_bytes(b"old")
    asked = []

    def read_rows(fids: np.ndarray, names: list[str]) -> pa.Table:
        asked.append(names)
        return table.take(fids).select(names)

    rebuilt = []
    columns.sync(3, read_rows, rebuilt.append)
    assert asked == [list(columns.records.columns)] and rebuilt == ["records"]  # only the short column is rebuilt
    assert columns.rows() == {"vectors.lo4": 3, "vectors.i8": 3, "bounds.f64": 3, "records": 3}
    assert columns.records.file.read([2], 3).equals(record_columns(table.slice(2, 1)))
    np.testing.assert_array_equal(vector_codes.decode(columns.vectors.file.view(3)), [[0.0] * 4, [1.0] * 4, [2.0] * 4])
    assert not any((tmp_path / name).exists() for name in OLD_FILES)
    columns.remove()
    assert [path.name for path in tmp_path.iterdir()] == ["records"] and not any((tmp_path / "records").iterdir())
