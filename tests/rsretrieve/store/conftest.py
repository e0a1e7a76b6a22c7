"""Helpers of the store tests: a stand-in model, chips on a grid, unit vectors, a store written batch by batch."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from rsretrieve.chips import Chip, Window
from rsretrieve.store import StoreWriter, vector_codes
from tests.conftest import captured_logs

MODEL = SimpleNamespace(name="tiny-test", architecture="rsretrieve-tiny", checkpoint="random-seed0", dim=8)


def make_chips(count: int, start: int = 0) -> list[Chip]:
    """Chips on a 0.1° grid along the equator, one per day from 2020-01-01, four per source file."""
    return [
        Chip(
            id=f"{start + i:016x}",
            path=f"/data/scene_{(start + i) // 4}.tif",
            window=Window(0, 0, 64, 64),
            crs="EPSG:4326",
            bbox=((start + i) * 0.1, 0.0, (start + i) * 0.1 + 0.05, 0.05),
            footprint=None,
            date=date.fromordinal(date(2020, 1, 1).toordinal() + start + i),
        )
        for i in range(count)
    ]


def unit_vectors(count: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    """Seeded random L2-normalised float32 vectors."""
    vectors = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def write_store(db: Path, batches: list[int], **open_args) -> np.ndarray:
    """Write batches of ``make_chips`` (one new file each) and finish; the vectors written."""
    writer = StoreWriter.open(db, MODEL, **open_args)
    vectors = unit_vectors(sum(batches))
    start = 0
    try:
        for size in batches:
            writer.append(make_chips(size, start), vectors[start : start + size], new_files=1)
            start += size
        writer.finish()
    finally:
        writer.close()
    return vectors


@pytest.fixture
def store_log() -> Iterator[list[logging.LogRecord]]:
    """Records logged under ``rsretrieve`` during the test."""
    with captured_logs("rsretrieve") as records:
        yield records


def messages(records: list[logging.LogRecord]) -> str:
    """The messages of log records, one a line."""
    return "\n".join(record.getMessage() for record in records)


def as_stored(vectors: np.ndarray) -> np.ndarray:
    """The vectors as the store gives them back (its 8-bit form and finer bits, decoded)."""
    return vector_codes.round_trip(vectors)


def write_old_record_file(path: Path, records, batch_rows: int | None = None) -> None:
    """Write a record file as an older rsretrieve did: one plain batch (formats 1-2), or LZ4-compressed batches of
    ``batch_rows`` rows marked with ``rows_per_batch`` (format 3)."""
    import pyarrow as pa

    options = pa.ipc.IpcWriteOptions(compression="lz4" if batch_rows else None)
    if batch_rows:
        records = records.replace_schema_metadata({b"rows_per_batch": str(batch_rows).encode()})
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, records.schema, options=options) as writer:
        writer.write_table(records.combine_chunks(), max_chunksize=batch_rows)


def old_record_files(db: Path, batch_rows: int | None = None) -> None:
    """Rewrite the record files of an index as ``write_old_record_file`` writes them (the same records)."""
    from rsretrieve.store.query_columns import RecordFiles

    files = RecordFiles(db / "records")
    for path in sorted((db / "records").iterdir()):
        first, _, end = path.stem.partition("-")
        records = files.read(np.arange(int(first), int(end)), int(end))
        write_old_record_file(path, records, batch_rows)


def make_format_3(db: Path) -> None:
    """Turn a current index into one written by rsretrieve format 3: record files of LZ4 batches of 4 rows."""
    import json

    from rsretrieve.store import MANIFEST

    old_record_files(db, batch_rows=4)
    manifest = json.loads((db / MANIFEST).read_text())
    (db / MANIFEST).write_text(json.dumps({**manifest, "format_version": 3}))


def make_format_2(db: Path, vectors: np.ndarray) -> None:
    """Turn a current index into one written by rsretrieve format 2: the float32 vectors in the LanceDB table and in
    ``vectors.f32``, no ``vectors.i8``, record files of one plain batch, ``format_version`` 2 (the table rewritten as
    format 2's writer wrote it)."""
    import json

    from rsretrieve.chips import chips_table
    from rsretrieve.store import MANIFEST, ChipStore
    from rsretrieve.store.table import TABLE, connect

    store = ChipStore(db)
    fids = np.arange(len(store))
    old_rows = chips_table(store.chips(fids), fids, vectors)  # with the vector column
    connection = connect(db)
    connection.drop_table(TABLE)
    table = connection.create_table(TABLE, old_rows)
    (db / "vectors.f32").write_bytes(np.ascontiguousarray(vectors, np.float32).tobytes())
    (db / "vectors.i8").unlink()
    old_record_files(db)
    manifest = json.loads((db / MANIFEST).read_text())
    (db / MANIFEST).write_text(json.dumps({**manifest, "format_version": 2, "lance_version": table.version}))


def make_format_1(db: Path, vectors: np.ndarray) -> None:
    """Turn a current index into one written by rsretrieve format 1: format 2's vectors, and records in
    ``records.jsonl`` + ``records.end`` (each chip's JSON line and the byte where it ends), no ``records/`` folder."""
    import json
    import shutil

    from rsretrieve.store import MANIFEST, ChipStore

    make_format_2(db, vectors)
    store = ChipStore(db)
    lines = [
        json.dumps({**chip.record(), "footprint": chip.footprint}, separators=(",", ":")).encode() + b"\n"
        for chip in store.chips(range(len(store)))
    ]
    (db / "records.jsonl").write_bytes(b"".join(lines))
    (db / "records.end").write_bytes(np.cumsum([len(line) for line in lines], dtype=np.int64).tobytes())
    shutil.rmtree(db / "records")
    manifest = json.loads((db / MANIFEST).read_text())
    (db / MANIFEST).write_text(json.dumps({**manifest, "format_version": 1}))
