"""A read-only or full file system under --db: a clear error, and the index still answers as before.

The index lives on a small tmpfs (root may ignore chmod, not a read-only mount or a full disk). Where mounting is
not permitted those tests skip, and the full disk is simulated instead: the writer's file-system calls fail with
ENOSPC at each step of a commit (``test_enospc_at_each_step_...``, which runs everywhere).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from rsretrieve.query import Query
from rsretrieve.search import Searcher
from rsretrieve.store import LOCK, ChipStore
from tests.reliability.conftest import TINY, scene_chips, write_scenes

ARGS = [*TINY, "--chip-size", "64", "--commit-chips", "4"]
INFO_KEYS = ("model", "dim", "rows", "unique_ids", "index_vectors", "index_type", "files", "updated")
FREE_BYTES = [0, 12 << 10, 48 << 10, 160 << 10]  # left free before each run that must fail


def mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs, unmounted afterwards."""
    folder = tmp_path / "mnt"
    folder.mkdir()
    result = mount("-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)) if shutil.which("mount") else None
    if result is None or result.returncode != 0:
        reason = result.stderr.strip() if result else "no mount command"
        pytest.skip(f"cannot mount a tmpfs here ({reason}): the ENOSPC test below simulates a full disk instead")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def answers(db: Path, model) -> tuple[dict, list[str]]:
    """Counts of the index and the ids of a query's results."""
    info = ChipStore(db).info()
    assert info["rows"] == info["unique_ids"] == info["index_vectors"] == info["manifest_count"], info
    return info, [chip.id for chip in Searcher(db, model=model).search(Query.build(text="farmland", k=100)).chips]


def one_error(log: Path) -> str:
    errors = [line for line in log.read_text().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in log.read_text(), log.read_text()
    log.unlink()
    return errors[0]


def fill(folder: Path, free: int) -> Path:
    """A file taking all the space of the file system but ``free`` bytes."""
    stat = os.statvfs(folder)
    filler = folder / "filler"
    with filler.open("wb") as handle:
        handle.write(bytes(max(0, stat.f_bavail * stat.f_frsize - free)))
    return filler


def test_a_read_only_index_refuses_writes_and_still_answers(forked_cli, tmpfs: Path, tmp_path: Path, tiny_model):
    db, log = tmpfs / "db", tmp_path / "log"
    assert forked_cli.run("index", write_scenes(tmp_path / "first", 4), "--db", db, *ARGS, log=log)["rc"] == 0
    before = answers(db, tiny_model)
    assert mount("-o", "remount,ro", str(tmpfs)).returncode == 0
    result = forked_cli.run("index", write_scenes(tmp_path / "more", 2), "--db", db, *ARGS, log=log)
    assert result["rc"] == 1
    assert one_error(log) == f"error: {db} is not writable (Read-only file system)"
    assert answers(db, tiny_model) == before
    assert forked_cli.run("info", "--db", db, "--json", log=log)["rc"] == 0
    info = json.loads(log.read_text())
    assert {key: info[key] for key in INFO_KEYS} == {key: before[0][key] for key in INFO_KEYS}


def test_a_full_disk_fails_cleanly_keeps_what_was_committed_and_resumes(
    forked_cli, tmpfs: Path, tmp_path: Path, tiny_model
) -> None:
    db, log = tmpfs / "db", tmp_path / "log"
    assert forked_cli.run("index", write_scenes(tmp_path / "first", 4), "--db", db, *ARGS, log=log)["rc"] == 0
    more = write_scenes(tmp_path / "more", 24)
    committed = [answers(db, tiny_model)[0]["rows"]]
    for free in FREE_BYTES:
        ids_before = set(ChipStore(db).column("id").to_pylist())
        filler = fill(tmpfs, free)
        result = forked_cli.run("index", more, "--db", db, *ARGS, log=log)
        assert result["rc"] == 1
        assert one_error(log) in {  # the lock file cannot be written, or a commit cannot
            f"error: {db} is not writable (No space left on device)",
            f"error: cannot write to {db}: No space left on device",
        }
        filler.unlink()
        info, found = answers(db, tiny_model)  # what was there, and whole files committed before the disk filled
        assert ids_before <= set(ChipStore(db).column("id").to_pylist()) and len(found) == min(100, info["rows"])
        assert not (db / LOCK).exists() or not (db / LOCK).read_text()
        committed.append(info["rows"])
    assert committed == sorted(committed) and committed[-1] < scene_chips(4) + scene_chips(24)
    assert forked_cli.run("index", more, "--db", db, *ARGS, log=log)["rc"] == 0
    assert answers(db, tiny_model)[0]["rows"] == scene_chips(4) + scene_chips(24)


@pytest.mark.parametrize(
    ("point", "nth"),
    [("columns_appended", 3), ("records_written", 2), ("faiss_tmp_written", 2), ("manifest_tmp_written", 2)],
)
def test_enospc_at_each_step_of_a_commit_fails_cleanly_and_resumes(
    forked_cli, tmp_path: Path, tiny_model, point: str, nth: int
) -> None:
    """A disk that fills during the second batch (real file-system calls raising ENOSPC, no mount needed)."""
    db, log = tmp_path / "db", tmp_path / "log"
    assert forked_cli.run("index", write_scenes(tmp_path / "first", 4), "--db", db, *ARGS, log=log)["rc"] == 0
    ids_before = set(ChipStore(db).column("id").to_pylist())
    more = write_scenes(tmp_path / "more", 6)
    result = forked_cli.run("index", more, "--db", db, *ARGS, log=log, fault=(point, nth, "ENOSPC"))
    assert result["rc"] == 1
    assert one_error(log) == f"error: cannot write to {db}: No space left on device"
    info, found = answers(db, tiny_model)  # consistent: the old chips and whole groups committed before the failure
    assert ids_before <= set(ChipStore(db).column("id").to_pylist()) and len(found) == min(100, info["rows"])
    assert not (db / LOCK).exists()
    assert forked_cli.run("index", more, "--db", db, *ARGS, log=log)["rc"] == 0
    assert answers(db, tiny_model)[0]["rows"] == scene_chips(4) + scene_chips(6)
