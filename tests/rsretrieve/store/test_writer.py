"""Tests for rsretrieve/store/writer.py: commits, roll-back of uncommitted versions, chipping checks, upgrades."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import faiss
import numpy as np
import pyarrow as pa
import pytest

from rsretrieve.ann import AnnSettings
from rsretrieve.chips import chips_table
from rsretrieve.store import FORMAT_VERSION, LOCK, MANIFEST, ChipStore, Manifest, StoreError, StoreWriter, vector_codes
from tests.rsretrieve.store.conftest import (
    MODEL,
    as_stored,
    make_chips,
    make_format_1,
    make_format_3,
    messages,
    unit_vectors,
    write_store,
)

COLUMN_FILES = ("vectors.lo4", "vectors.i8", "bounds.f64", "records")


def column_rows(db: Path) -> list[int]:
    """Rows on disk of each query-side column of an index."""
    rows = ChipStore(db).info()["column_rows"]
    return [rows[name] for name in COLUMN_FILES]


def filter_matrix_of(store: ChipStore) -> np.ndarray:
    columns = store.filter_columns()
    return np.column_stack([columns.minx, columns.miny, columns.maxx, columns.maxy, columns.day])


def test_appends_commit_rows_vectors_and_manifest_together(tmp_path: Path) -> None:
    vectors = write_store(tmp_path / "db", [5, 7])
    store = ChipStore(tmp_path / "db")
    info = store.info()
    assert info["rows"] == info["unique_ids"] == info["index_vectors"] == info["manifest_count"] == 12
    assert info["files"] == 2 and info["index_type"] == "flat" and info["model"] == "tiny-test"
    assert info["format_version"] == FORMAT_VERSION
    np.testing.assert_array_equal(store.vectors([11, 0, 5]), as_stored(vectors[[11, 0, 5]]))
    assert store.rows([3, 1], ["id"]).column("id").to_pylist() == [f"{3:016x}", f"{1:016x}"]
    assert store.fid_of(f"{7:016x}") == 7 and store.fid_of("ffffffffffffffff") is None
    assert store.indexed_paths() == {f"/data/scene_{i}.tif" for i in range(3)}
    assert not (tmp_path / "db" / LOCK).exists()


def test_uncommitted_rows_are_invisible_and_rolled_back(tmp_path: Path, store_log) -> None:
    db = tmp_path / "db"
    write_store(db, [6])
    writer = StoreWriter.open(db, MODEL)
    writer.table.add(writer.table.to_arrow().slice(0, 3))  # a crash after the LanceDB write, before the manifest
    writer.lock.release()
    reader = ChipStore(db)
    assert reader.info()["rows"] == 6
    writer = StoreWriter.open(db, MODEL)  # the next writer restores the committed version
    try:
        assert "rolling back an interrupted batch" in messages(store_log)
        assert writer.table.count_rows() == 6
        writer.append(make_chips(2, 6), unit_vectors(2, seed=1), new_files=1)
    finally:
        writer.close()
    info = ChipStore(db).info()
    assert info["rows"] == info["unique_ids"] == info["index_vectors"] == 8


def test_other_model_or_weights_are_refused(tmp_path: Path) -> None:
    db = tmp_path / "db"
    write_store(db, [2])
    other = SimpleNamespace(**{**vars(MODEL), "name": "remoteclip-vit-b-32"})
    with pytest.raises(StoreError, match="built with model 'tiny-test'"):
        StoreWriter.open(db, other)
    retrained = SimpleNamespace(**{**vars(MODEL), "checkpoint": "0123456789abcdef"})
    with pytest.raises(StoreError, match="other weights"):
        StoreWriter.open(db, retrained)
    assert not (db / LOCK).exists()


def test_resuming_with_other_chipping_is_refused_in_one_line(tmp_path: Path) -> None:
    db = tmp_path / "db"
    StoreWriter.open(db, MODEL, chip_size=64, overlap=0).close()
    for change, flag in [({"overlap": 16}, "--overlap 0"), ({"chip_size": 128}, "--chip-size 64")]:
        with pytest.raises(StoreError, match=flag) as error:
            StoreWriter.open(db, MODEL, **{"chip_size": 64, "overlap": 0, **change})
        assert "\n" not in str(error.value) and "--rebuild" in str(error.value)
    with pytest.raises(StoreError, match="--bands the default bands"):
        StoreWriter.open(db, MODEL, chip_size=64, overlap=0, bands=[4, 3, 2])
    assert not (db / LOCK).exists()
    StoreWriter.open(db, MODEL, chip_size=64, overlap=0).close()  # the same chipping resumes
    StoreWriter.open(db, MODEL).close()  # so does a writer that does not chip (upgrade, retrain)
    rebuilt = StoreWriter.open(db, MODEL, rebuild=True, chip_size=64, overlap=16)
    rebuilt.close()
    assert (Manifest.read(db).chip_size, Manifest.read(db).overlap) == (64, 16)


def test_rebuild_starts_over(tmp_path: Path) -> None:
    db = tmp_path / "db"
    write_store(db, [4])
    created = Manifest.read(db).created
    writer = StoreWriter.open(db, MODEL, rebuild=True)
    writer.close()
    assert len(ChipStore(db)) == 0 and Manifest.read(db).created == created
    assert column_rows(db) == [0, 0, 0, 0]


def test_query_columns_hold_exactly_the_committed_rows(tmp_path: Path) -> None:
    db = tmp_path / "db"
    vectors = write_store(db, [4, 3])
    writer = StoreWriter.open(db, MODEL)
    batch = chips_table(make_chips(2, 7), np.arange(7, 9), unit_vectors(2, seed=9))
    writer.columns.append(batch, 7)  # a crash after these writes, before the manifest
    writer.lock.release()
    assert column_rows(db) == [9, 9, 9, 9]
    reader = ChipStore(db)
    np.testing.assert_array_equal(reader.vectors([6, 0]), as_stored(vectors[[6, 0]]))  # the committed prefix
    assert len(reader.filter_columns()) == 7 and reader.chips([6])[0].id == f"{6:016x}"
    StoreWriter.open(db, MODEL).close()  # the next writer cuts the uncommitted rows
    assert column_rows(db) == [7, 7, 7, 7]


@pytest.mark.parametrize("missing", [["bounds.f64"], ["bounds.f64", "records"]])
def test_missing_query_columns_are_read_from_lancedb_then_rebuilt(tmp_path: Path, missing: list[str], store_log):
    db = tmp_path / "db"
    vectors = write_store(db, [5])
    expected = ChipStore(db)
    chips, bounds = expected.chips([4, 1]), filter_matrix_of(expected)
    for name in missing:
        shutil.rmtree(db / name) if (db / name).is_dir() else (db / name).unlink()
    for store in (ChipStore(db), None):  # read from LanceDB, then from the columns the next writer rebuilds
        if store is None:
            store_log.clear()
            StoreWriter.open(db, MODEL).close()
            assert f"writing {missing[0]} for the 5 indexed chips" in messages(store_log)
            store = ChipStore(db)
            assert column_rows(db) == [5, 5, 5, 5]
        np.testing.assert_array_equal(store.vectors([4, 1]), as_stored(vectors[[4, 1]]))
        np.testing.assert_array_equal(filter_matrix_of(store), bounds)
        assert store.chips([4, 1]) == chips


@pytest.mark.parametrize("how", ["upgrade", "append"])
def test_a_format_1_index_is_rewritten_by_its_next_writer(tmp_path: Path, how: str) -> None:
    db = tmp_path / "db"
    vectors = write_store(db, [5, 3])
    fids = list(range(8))
    expected = ChipStore(db).chips(fids)
    make_format_1(db, vectors)
    old_version = ChipStore(db).manifest.lance_version
    writer = StoreWriter.open(db, MODEL)
    try:
        assert column_rows(db) == [8, 8, 8, 8]  # records/ and vectors.i8 rebuilt when the writer opened
        assert not any((db / name).exists() for name in ("records.jsonl", "records.end", "vectors.f32"))
        if how == "upgrade":
            writer.upgrade()
        else:
            writer.append(make_chips(1, 8), unit_vectors(1, seed=3), new_files=1)
            expected += make_chips(1, 8)
            fids.append(8)
    finally:
        writer.close()
    assert json.loads((db / MANIFEST).read_text())["format_version"] == FORMAT_VERSION
    store = ChipStore(db)
    assert store.chips(fids) == expected
    assert store.columns.records.file.read(fids, len(store)) is not None  # answered from records/ now
    np.testing.assert_array_equal(store.vectors(range(8)), as_stored(vectors))  # from vectors.i8, once
    assert "vector" not in store.table.schema.names  # dropped, and the versions that held it removed
    for path in (db / "records").iterdir():  # records/ rebuilt from format 1's records.jsonl in format 4's layout
        assert pa.ipc.open_file(path).schema.metadata == {b"record_layout": b"4"}
    assert min(version["version"] for version in store.table.list_versions()) > old_version
    info = store.info()
    assert info["rows"] == info["index_vectors"] == info["manifest_count"] == len(fids)


def test_a_format_3_index_reads_then_upgrades_to_the_same_records(tmp_path: Path, store_log) -> None:
    db = tmp_path / "db"
    chips = [  # with footprints: a ring on the 1e-7 grid, the bbox rectangle, none
        replace(chip, footprint=footprint_of(fid, chip.bbox)) for fid, chip in enumerate(make_chips(9))
    ]
    writer = StoreWriter.open(db, MODEL)
    try:
        writer.append(chips[:5], unit_vectors(5), new_files=1)
        writer.append(chips[5:], unit_vectors(4, seed=1), new_files=1)
    finally:
        writer.close()
    fids = [8, 0, 4, 4, 2, 6]
    records = ChipStore(db).records(range(9))
    assert ChipStore(db).chips(fids) == [chips[fid] for fid in fids]
    make_format_3(db)  # LZ4 batches of 4 rows
    old = ChipStore(db)
    assert old.manifest.format_version == 3 and "format 3: result records in compressed batches" in messages(store_log)
    assert old.chips(fids) == [chips[fid] for fid in fids] and old.records(range(9)).equals(records)
    StoreWriter.open(db, MODEL).close()  # as ``rsretrieve upgrade`` does
    upgraded = ChipStore(db)
    assert upgraded.manifest.format_version == FORMAT_VERSION
    assert upgraded.chips(fids) == [chips[fid] for fid in fids] and upgraded.records(range(9)).equals(records)
    for path in (db / "records").iterdir():
        assert pa.ipc.open_file(path).schema.metadata == {b"record_layout": b"4"}


def footprint_of(fid: int, box: tuple[float, float, float, float]) -> dict | None:
    """A triangle with a corner on the 1e-7 grid, the bbox rectangle or none, by fid."""
    minx, miny, maxx, maxy = box
    corner = [round(minx + 0.0123456789, 7), miny]
    rings = ([corner, [maxx, miny], [maxx, maxy], corner], [[minx, miny], [maxx, miny], [maxx, maxy], [minx, maxy]])
    if fid % 3 == 2:
        return None
    ring = rings[fid % 3]
    return {"type": "Polygon", "coordinates": [ring if ring[0] == ring[-1] else [*ring, ring[0]]]}


def test_ivfpq_asked_for_a_small_archive_stays_flat_until_it_can_train(tmp_path: Path, store_log) -> None:
    writer = StoreWriter.open(tmp_path / "db", MODEL, AnnSettings(kind="ivfpq"))
    try:
        writer.append(make_chips(10), unit_vectors(10), new_files=1)
        writer.finish()
    finally:
        writer.close()
    assert ChipStore(tmp_path / "db").info()["index_type"] == "flat"
    assert "too few to train IVF-PQ" in messages(store_log)


def test_a_large_archive_can_fix_its_ivf_lists_and_training_sample(tmp_path: Path) -> None:
    settings = AnnSettings(kind="ivfpq", nlist=8, training_samples=300)
    writer = StoreWriter.open(tmp_path / "db", MODEL, settings)
    try:
        for start in (0, 400):
            writer.append(make_chips(400, start), unit_vectors(400, seed=start), new_files=1)
        writer.finish()
    finally:
        writer.close()
    info = ChipStore(tmp_path / "db").info()
    assert (info["index_type"], info["index"]["nlist"], info["index_vectors"]) == ("ivfpq", 8, 800)


def test_ivfpq_commits_append_codes_until_a_share_of_the_index_file(tmp_path: Path) -> None:
    db = tmp_path / "db"
    writer = StoreWriter.open(db, MODEL, AnnSettings(kind="ivfpq", nlist=8, training_samples=300))
    vectors = unit_vectors(700)
    try:
        writer.append(make_chips(400), vectors[:400], new_files=1)  # trains: the whole index is written
        assert writer.manifest.index_appended == []
        base = writer.manifest.index_file
        for start in range(400, 600, 50):  # 200 rows appended: half the 400 in the index file
            writer.append(make_chips(50, start), vectors[start : start + 50], new_files=1)
            assert writer.manifest.index_file == base and not (db / f"index-{writer.table.version}.faiss").exists()
        assert [part["rows"] for part in writer.manifest.index_appended] == [50] * 4
        assert {p.name for p in db.glob("index-*")} == {base} | {p["file"] for p in writer.manifest.index_appended}
        in_memory = writer.index
        reader = ChipStore(db)
        loaded = reader.index  # the index file and the four code files
        assert loaded.ntotal == 600
        for list_no in range(8):  # the same lists, in the same order, as the writer's own adds
            assert loaded.invlists.list_size(list_no) == in_memory.invlists.list_size(list_no)
            np.testing.assert_array_equal(ivf_ids(loaded, list_no), ivf_ids(in_memory, list_no))
        writer.finish()  # nothing to rebuild: the FAISS side stays as it is
        assert writer.manifest.index_file == base and len(writer.manifest.index_appended) == 4
        writer.append(make_chips(100, 600), vectors[600:], new_files=1)  # 300 > half of 400: written whole
        assert writer.manifest.index_file != base and writer.manifest.index_appended == []
    finally:
        writer.close()
    assert ChipStore(db).index.ntotal == 700


def ivf_ids(index, list_no: int) -> np.ndarray:
    """The ids in one inverted list of an IVF index."""
    size = index.invlists.list_size(list_no)
    return faiss.rev_swig_ptr(index.invlists.get_ids(list_no), size).copy()


def test_a_missing_code_file_is_one_store_error(tmp_path: Path) -> None:
    db = tmp_path / "db"
    write_store(db, [400, 50], settings=AnnSettings(kind="ivfpq", nlist=8, training_samples=300))
    manifest = Manifest.read(db)
    (db / manifest.index_appended[0]["file"]).unlink()
    with pytest.raises(StoreError, match="appended codes") as error:
        _ = ChipStore(db).index
    assert "\n" not in str(error.value)


def test_an_index_without_finer_bits_is_read_at_8_bits_and_its_next_writer_adds_them(tmp_path: Path) -> None:
    db = tmp_path / "db"
    vectors = write_store(db, [5])
    (db / "vectors.lo4").unlink()  # written before the finer bits existed
    eight_bits = vector_codes.decode(vector_codes.encode(vectors))
    np.testing.assert_array_equal(ChipStore(db).vectors(range(5)), eight_bits)
    more = unit_vectors(2, seed=4)
    with_writer = StoreWriter.open(db, MODEL)
    try:
        with_writer.append(make_chips(2, 5), more, new_files=1)
    finally:
        with_writer.close()
    store = ChipStore(db)
    assert column_rows(db) == [7, 7, 7, 7]
    np.testing.assert_array_equal(store.vectors(range(5)), eight_bits)  # its old rows: no finer bits to be had
    np.testing.assert_array_equal(store.vectors([5, 6]), as_stored(more))
    assert (
        np.abs(store.vectors([5, 6]) - more).max() < np.abs(vector_codes.decode(vector_codes.encode(more)) - more).max()
    )
