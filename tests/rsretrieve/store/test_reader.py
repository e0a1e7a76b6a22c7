"""Tests for rsretrieve/store/reader.py: what a ChipStore reads at its committed version, and from where."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pytest

from rsretrieve.chips import FilterColumns, day_number
from rsretrieve.store import ChipStore, StoreError, StoreWriter
from tests.rsretrieve.store.conftest import MODEL, make_chips, make_format_1, messages, unit_vectors, write_store


def filter_matrix_of(columns: FilterColumns) -> np.ndarray:
    """The (n, 5) filter matrix back from its named columns."""
    return np.column_stack([columns.minx, columns.miny, columns.maxx, columns.maxy, columns.day])


def test_chips_and_filter_columns_are_the_stored_chips(tmp_path: Path) -> None:
    db = tmp_path / "db"
    write_store(db, [5, 3])
    store = ChipStore(db)
    assert store.chips([7, 0, 7, 4]) == [make_chips(8)[fid] for fid in (7, 0, 7, 4)]
    assert store.chips([]) == []
    filters = store.filter_columns()
    assert len(filters) == 8
    np.testing.assert_allclose(filters.minx, np.arange(8) * 0.1)
    np.testing.assert_array_equal(filters.day, np.arange(8) + day_number(date(2020, 1, 1)))
    assert store.info()["column_rows"] == {"vectors.lo4": 8, "vectors.i8": 8, "bounds.f64": 8, "records": 8}


def test_an_empty_index_reads_as_empty(tmp_path: Path) -> None:
    StoreWriter.open(tmp_path / "db", MODEL).close()
    store = ChipStore(tmp_path / "db")
    assert len(store) == 0 and store.table is None and store.chips([]) == []
    assert len(store.filter_columns()) == 0 and store.where_fids("minx > 0").size == 0
    assert store.info()["rows"] == 0 and store.indexed_paths() == set()


def test_sql_filters_select_matching_fids(tmp_path: Path) -> None:
    write_store(tmp_path / "db", [20])
    store = ChipStore(tmp_path / "db")
    assert store.where_fids("minx <= 0.35").tolist() == [0, 1, 2, 3]
    assert store.where_fids("date >= date '2020-01-19'").tolist() == [18, 19]


def test_readers_see_new_commits_only_when_they_reopen(tmp_path: Path) -> None:
    db = tmp_path / "db"
    write_store(db, [3])
    reader = ChipStore(db)
    writer = StoreWriter.open(db, MODEL)
    try:
        writer.append(make_chips(2, 3), unit_vectors(2, seed=2), new_files=1)
    finally:
        writer.close()
    assert reader.info()["rows"] == 3 and len(reader.filter_columns()) == 3
    assert reader.changed_on_disk()
    assert ChipStore(db).info()["rows"] == 5


def test_a_format_1_index_answers_chips_from_lancedb(tmp_path: Path, store_log) -> None:
    db = tmp_path / "db"
    vectors = write_store(db, [5, 3])
    fresh = ChipStore(db)
    fids = [7, 2, 5, 2, 0]
    expected, bounds = fresh.chips(fids), filter_matrix_of(fresh.filter_columns())
    make_format_1(db, vectors)
    old = ChipStore(db)
    assert old.manifest.format_version == 1
    assert "written by an older rsretrieve" in messages(store_log) and "rsretrieve upgrade" in messages(store_log)
    assert old.chips(fids) == expected
    np.testing.assert_array_equal(filter_matrix_of(old.filter_columns()), bounds)
    np.testing.assert_array_equal(old.vectors(fids), vectors[fids])  # float32 from vectors.f32
    (db / "vectors.f32").unlink()
    np.testing.assert_array_equal(ChipStore(db).vectors(fids), vectors[fids])  # and from LanceDB
    assert not (db / "records").exists() and not (db / "vectors.i8").exists()  # a reader never writes


def test_a_current_index_without_its_vector_file_says_so(tmp_path: Path) -> None:
    db = tmp_path / "db"
    write_store(db, [3])
    (db / "vectors.i8").unlink()
    with pytest.raises(StoreError, match=r"vectors\.i8 is missing"):
        ChipStore(db).vectors([0])
