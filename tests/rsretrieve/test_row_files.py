"""Tests for rsretrieve/row_files.py: append-only matrix and JSON-record files cut to a committed count."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from rsretrieve.row_files import MatrixFile, RecordFile


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


def encoded(documents: list[dict]) -> list[bytes]:
    return [json.dumps(document, separators=(",", ":")).encode() for document in documents]


def test_record_file_reads_records_in_the_asked_order(tmp_path: Path) -> None:
    records = RecordFile(tmp_path)
    assert records.rows_on_disk() == 0 and records.read([0], 1) is None
    first = [{"id": "a", "n": 1}, {"id": "b", "text": 'ünïcode, "quoted"\nline'}]
    records.append(encoded(first))
    records.append(encoded([{"id": "c", "nested": {"x": [1.5, None]}}]))
    assert records.rows_on_disk() == 3
    assert records.read([2, 0, 1, 0], 3) == [{"id": "c", "nested": {"x": [1.5, None]}}, first[0], first[1], first[0]]
    assert records.read([0], 4) is None


def test_a_torn_record_write_is_not_a_record_and_is_cut(tmp_path: Path) -> None:
    records = RecordFile(tmp_path)
    records.append(encoded([{"id": "a"}, {"id": "b"}]))
    records.append(encoded([{"id": "c"}]))
    (tmp_path / "records.jsonl").write_bytes((tmp_path / "records.jsonl").read_bytes()[:-3])  # lines cut short
    assert records.rows_on_disk() == 2 and records.read([1], 2) == [{"id": "b"}]
    records.truncate(2)
    records.append(encoded([{"id": "d"}]))
    assert records.rows_on_disk() == 3 and records.read([2, 0], 3) == [{"id": "d"}, {"id": "a"}]
    records.truncate(1)
    assert records.rows_on_disk() == 1 and (tmp_path / "records.jsonl").read_text() == '{"id":"a"}\n'
    records.remove()
    assert not any(tmp_path.iterdir())
