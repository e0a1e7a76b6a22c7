"""Tests for rsretrieve/store.py: commits, roll-back of uncommitted versions, lock, validation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from rsretrieve.store import FORMAT_VERSION, ChipStore, Manifest, StoreError, StoreWriter, WriteLock

MODEL = SimpleNamespace(name="tiny-test", architecture="rsretrieve-tiny", checkpoint="random-seed0", dim=8)


def make_rows(count: int, start: int = 0) -> list[dict]:
    """Rows on a 0.1° grid along the equator, one per day from 2020-01-01."""
    return [
        {
            "id": f"{start + i:016x}",
            "path": f"/data/scene_{(start + i) // 4}.tif",
            "col_off": 0,
            "row_off": 0,
            "width": 64,
            "height": 64,
            "crs": "EPSG:4326",
            "minx": (start + i) * 0.1,
            "miny": 0.0,
            "maxx": (start + i) * 0.1 + 0.05,
            "maxy": 0.05,
            "footprint": None,
            "date": date.fromordinal(date(2020, 1, 1).toordinal() + start + i),
        }
        for i in range(count)
    ]


def unit_vectors(count: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def write_store(db: Path, batches: list[int]) -> np.ndarray:
    writer = StoreWriter.open(db, MODEL)
    vectors = unit_vectors(sum(batches))
    start = 0
    try:
        for size in batches:
            writer.append(make_rows(size, start), vectors[start : start + size], new_files=1)
            start += size
        writer.finish()
    finally:
        writer.close()
    return vectors


def test_appends_commit_rows_vectors_and_manifest_together(tmp_path: Path) -> None:
    vectors = write_store(tmp_path / "db", [5, 7])
    store = ChipStore(tmp_path / "db")
    info = store.info()
    assert info["rows"] == info["unique_ids"] == info["index_vectors"] == info["manifest_count"] == 12
    assert info["files"] == 2 and info["index_type"] == "flat" and info["model"] == "tiny-test"
    np.testing.assert_array_equal(store.vectors([11, 0, 5]), vectors[[11, 0, 5]])
    assert store.rows([3, 1], ["id"]).column("id").to_pylist() == [f"{3:016x}", f"{1:016x}"]
    assert store.fid_of(f"{7:016x}") == 7 and store.fid_of("ffffffffffffffff") is None
    assert store.indexed_paths() == {f"/data/scene_{i}.tif" for i in range(3)}
    assert not (tmp_path / "db" / "write.lock").exists()


def test_sql_filters_select_matching_fids(tmp_path: Path) -> None:
    write_store(tmp_path / "db", [20])
    store = ChipStore(tmp_path / "db")
    assert store.where_fids("minx <= 0.35").tolist() == [0, 1, 2, 3]
    assert store.where_fids("date >= date '2020-01-19'").tolist() == [18, 19]


def test_uncommitted_rows_are_invisible_and_rolled_back(tmp_path: Path) -> None:
    db = tmp_path / "db"
    write_store(db, [6])
    writer = StoreWriter.open(db, MODEL)
    writer.table.add(writer.table.to_arrow().slice(0, 3))  # a crash after the LanceDB write, before the manifest
    writer.lock.release()
    reader = ChipStore(db)
    assert reader.info()["rows"] == 6
    writer = StoreWriter.open(db, MODEL)  # the next writer restores the committed version
    try:
        assert writer.table.count_rows() == 6
        writer.append(make_rows(2, 6), unit_vectors(2, seed=1), new_files=1)
    finally:
        writer.close()
    info = ChipStore(db).info()
    assert info["rows"] == info["unique_ids"] == info["index_vectors"] == 8


def test_a_second_writer_is_refused_and_a_stale_lock_is_taken_over(tmp_path: Path, capsys) -> None:
    db = tmp_path / "db"
    write_store(db, [2])
    writer = StoreWriter.open(db, MODEL)
    try:
        with pytest.raises(StoreError, match=f"another indexer \\(pid {os.getpid()}\\)"):
            StoreWriter.open(db, MODEL)
    finally:
        writer.close()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (db / "write.lock").write_text(dead.stdout)
    lock = WriteLock(db)
    lock.acquire()
    assert "stale lock" in capsys.readouterr().err
    lock.release()


def test_other_model_or_weights_are_refused(tmp_path: Path) -> None:
    db = tmp_path / "db"
    write_store(db, [2])
    other = SimpleNamespace(**{**vars(MODEL), "name": "remoteclip-vit-b-32"})
    with pytest.raises(StoreError, match="built with model 'tiny-test'"):
        StoreWriter.open(db, other)
    retrained = SimpleNamespace(**{**vars(MODEL), "checkpoint": "0123456789abcdef"})
    with pytest.raises(StoreError, match="other weights"):
        StoreWriter.open(db, retrained)
    assert not (db / "write.lock").exists()


def test_rebuild_starts_over(tmp_path: Path) -> None:
    db = tmp_path / "db"
    write_store(db, [4])
    writer = StoreWriter.open(db, MODEL, rebuild=True)
    writer.close()
    assert len(ChipStore(db)) == 0


def test_folders_that_are_not_indexes(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="index not found"):
        ChipStore(tmp_path / "missing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("hello")
    with pytest.raises(StoreError, match="not an rsretrieve index"):
        ChipStore(tmp_path / "other")
    with pytest.raises(StoreError, match="not an rsretrieve index"):
        StoreWriter.open(tmp_path / "other", MODEL)
    db = tmp_path / "db"
    write_store(db, [1])
    manifest = json.loads((db / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (db / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="newer rsretrieve"):
        Manifest.read(db)
    (db / "manifest.json").write_text("{not json")
    with pytest.raises(StoreError, match="unreadable manifest"):
        ChipStore(db)


def test_readers_see_new_commits_only_when_they_reopen(tmp_path: Path) -> None:
    db = tmp_path / "db"
    write_store(db, [3])
    reader = ChipStore(db)
    writer = StoreWriter.open(db, MODEL)
    try:
        writer.append(make_rows(2, 3), unit_vectors(2, seed=2), new_files=1)
    finally:
        writer.close()
    assert reader.info()["rows"] == 3
    assert reader.changed_on_disk()
    assert ChipStore(db).info()["rows"] == 5


def test_query_copies_hold_exactly_the_committed_rows(tmp_path: Path) -> None:
    db = tmp_path / "db"
    vectors = write_store(db, [4, 3])
    writer = StoreWriter.open(db, MODEL)
    batch_rows = make_rows(2, 7)
    for copy in writer.copies.all:  # a crash after these writes, before the manifest
        copy.file.append(copy.derive(_table(batch_rows, unit_vectors(2, seed=9))))
    writer.lock.release()
    reader = ChipStore(db)
    np.testing.assert_array_equal(reader.vectors([6, 0]), vectors[[6, 0]])  # readers use the committed prefix
    assert len(reader.bounds()) == 7 and reader.records([6])[0]["id"] == f"{6:016x}"
    StoreWriter.open(db, MODEL).close()  # the next writer cuts the uncommitted rows
    assert [copy.file.rows_on_disk() for copy in ChipStore(db).copies.all] == [7, 7, 7]


def _table(rows: list[dict], vectors: np.ndarray):
    import pyarrow as pa

    from rsretrieve.store import chip_schema

    columns = {name: [row.get(name) for row in rows] for name in rows[0]}
    columns["fid"], columns["vector"] = list(range(len(rows))), list(vectors)
    return pa.Table.from_pydict(columns, schema=chip_schema(MODEL.dim))


@pytest.mark.parametrize("missing", [["vectors.f32"], ["bounds.f64", "records.jsonl", "records.end"]])
def test_missing_query_copies_are_read_from_lancedb_then_rebuilt(tmp_path: Path, missing: list[str], capsys) -> None:
    db = tmp_path / "db"
    vectors = write_store(db, [5])
    expected = ChipStore(db)
    records, bounds = expected.records([4, 1]), np.array(expected.bounds())
    for name in missing:
        (db / name).unlink()
    for store in (ChipStore(db), None):  # read from LanceDB, then from the copies the next writer rebuilds
        if store is None:
            capsys.readouterr()
            StoreWriter.open(db, MODEL).close()
            assert f"note: writing {missing[0]} for the 5 indexed chips" in capsys.readouterr().err
            store = ChipStore(db)
            assert [copy.file.rows_on_disk() for copy in store.copies.all] == [5, 5, 5]
        np.testing.assert_array_equal(store.vectors([4, 1]), vectors[[4, 1]])
        np.testing.assert_array_equal(store.bounds(), bounds)
        assert store.records([4, 1]) == records


def test_ivfpq_asked_for_a_small_archive_stays_flat_until_it_can_train(tmp_path: Path) -> None:
    from rsretrieve.store import IndexSettings

    writer = StoreWriter.open(tmp_path / "db", MODEL, IndexSettings(kind="ivfpq"))
    try:
        writer.append(make_rows(10), unit_vectors(10), new_files=1)
        writer.finish()
    finally:
        writer.close()
    assert ChipStore(tmp_path / "db").info()["index_type"] == "flat"


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
    from rsretrieve.store import reason

    assert reason(error) == expected
