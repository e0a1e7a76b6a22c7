"""Tests for rsretrieve/store/lock.py: one writer per index folder, stale locks taken over."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rsretrieve.store import LOCK, StoreError, StoreWriter, WriteLock
from tests.rsretrieve.store.conftest import MODEL, messages, write_store


def test_a_second_writer_is_refused_and_a_stale_lock_is_taken_over(tmp_path: Path, store_log) -> None:
    db = tmp_path / "db"
    write_store(db, [2])
    writer = StoreWriter.open(db, MODEL)
    try:
        with pytest.raises(StoreError, match=f"another indexer \\(pid {os.getpid()}\\)"):
            StoreWriter.open(db, MODEL)
    finally:
        writer.close()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (db / LOCK).write_text(dead.stdout)
    lock = WriteLock(db)
    lock.acquire()
    assert f"stale lock left by process {dead.stdout.strip()}" in messages(store_log)
    lock.release()


def test_check_free_tells_early_and_release_removes_the_file(tmp_path: Path) -> None:
    lock = WriteLock(tmp_path)
    lock.check_free()  # no lock file: free
    lock.acquire()
    assert lock.held and (tmp_path / LOCK).read_text() == f"{os.getpid()}\n"
    with pytest.raises(StoreError, match="being written by another indexer"):
        WriteLock(tmp_path).check_free()
    lock.release()
    assert not lock.held and not (tmp_path / LOCK).exists()
    WriteLock(tmp_path).check_free()
