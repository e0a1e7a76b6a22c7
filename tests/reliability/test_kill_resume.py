"""``kill -9`` of ``rsretrieve index`` at random moments and inside commits, then the same command again.

Every round indexes 24 scenes (120 chips, one file per commit) into a fresh index, kills the indexer,
checks that what is committed is consistent, resumes, and compares the chip ids with an uninterrupted
build: no chip may be lost or duplicated, and LanceDB rows == unique ids == FAISS vectors == manifest count.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from rsretrieve import ann
from rsretrieve.chips import FILTER_FIELDS, RECORD_COLUMNS, chips_from_table, filter_matrix
from rsretrieve.store import LOCK, MANIFEST, ChipStore, Manifest
from tests.reliability.conftest import TINY, json_summary, scene_chips

ARGS = [*TINY, "--chip-size", "64", "--commit-chips", "4"]
RANDOM_KILLS = 10
FAULTS = [  # (step of the commit protocol, nth time): see forked_cli.py
    ("lance_appended", 1),  # the very first batch is in LanceDB, nothing is committed
    ("records_written", 2),  # the second batch's records file is in place, its FAISS file and manifest not
    ("faiss_tmp_written", 3),
    ("manifest_tmp_written", 7),
    ("committed", 12),  # manifest replaced, old FAISS files not yet tidied
    ("lance_appended", 25),  # inside finish(): scalar indexes built, not committed
]


@pytest.fixture(scope="module")
def reference(forked_cli, scenes: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An uninterrupted build: its db, chip ids and duration (the shorter of two runs: the machine is shared)."""
    db = tmp_path_factory.mktemp("reference") / "db"
    runs = [
        forked_cli.run("index", scenes, "--db", db, *ARGS, *rebuild, log=db.parent / "log")
        for rebuild in [[], ["--rebuild"]]
    ]
    assert all(run["rc"] == 0 for run in runs), (db.parent / "log").read_text()
    return {"db": db, "ids": sorted_ids(db), "seconds": min(run["seconds"] for run in runs)}


def sorted_ids(db: Path) -> list[str]:
    return sorted(ChipStore(db).column("id").to_pylist())


def committed_chips(db: Path) -> int:
    """Chips of the committed version, after checking that both stores and the manifest agree on them."""
    if not (db / MANIFEST).exists():
        return 0
    info = ChipStore(db).info()
    assert info["rows"] == info["unique_ids"] == info["index_vectors"] == info["manifest_count"], info
    assert min(info["column_rows"].values()) >= info["rows"], info  # the columns may hold an uncommitted batch
    return info["rows"]


def assert_columns_agree_with_the_table(db: Path) -> None:
    """The query side's columns hold exactly the committed rows, the same as LanceDB's."""
    store = ChipStore(db)
    fids = np.arange(len(store))
    table = store.rows(fids, list(RECORD_COLUMNS))
    assert set(store.info()["column_rows"].values()) == {len(store)}
    assert store.chips(fids) == chips_from_table(table)
    matrix = np.column_stack([getattr(store.filter_columns(), name) for name in FILTER_FIELDS])
    np.testing.assert_array_equal(matrix, filter_matrix(table))
    if len(fids) and ann.describe(store.index)["index_type"] == "flat":  # the index holds the float32 vectors
        flat = np.vstack([store.index.reconstruct(int(fid)) for fid in fids])
        np.testing.assert_allclose(store.vectors(fids), flat, atol=np.abs(flat).max() / 127)


def moment_of_kill(db: Path, rc: int) -> str:
    """Where the indexer was when it died, read from what it left on disk."""
    if rc == 0:
        return "after the run ended"
    if not (db / MANIFEST).exists():
        return "before the index was created"
    committed_at = (db / MANIFEST).stat().st_mtime_ns
    if any(path.stat().st_mtime_ns > committed_at for path in db.rglob("*") if path.is_file() and path.name != LOCK):
        return "inside a commit"  # LanceDB files, a FAISS file or a temporary file newer than the manifest
    return "before the first commit" if Manifest.read(db).count == 0 else "between commits"


def kill_and_resume(forked_cli, scenes: Path, db: Path, reference: dict, **kill) -> dict:
    """One round; returns its figures."""
    killed = forked_cli.run("index", scenes, "--db", db, *ARGS, log=db.with_suffix(".killed.log"), **kill)
    moment = moment_of_kill(db, killed["rc"])
    committed = committed_chips(db)
    log = db.with_suffix(".resumed.log")
    resumed = forked_cli.run("index", scenes, "--db", db, *ARGS, "--json", log=log)
    assert resumed["rc"] == 0, log.read_text()
    summary = json_summary(log)
    ids = sorted_ids(db)
    info = ChipStore(db).info()
    assert info["rows"] == info["unique_ids"] == info["index_vectors"] == info["manifest_count"] == len(ids)
    assert_columns_agree_with_the_table(db)
    assert summary["already_indexed"] == committed and summary["new_chips"] == len(ids) - committed
    assert not Manifest.read(db).pending_finish
    return {
        "kill": kill,
        "rc": killed["rc"],
        "moment": moment,
        "committed_at_kill": committed,
        "lost": len(set(reference["ids"]) - set(ids)),
        "duplicated": len(ids) - len(set(ids)),
        "extra": len(set(ids) - set(reference["ids"])),
    }


def test_sigkill_at_any_moment_then_resume_indexes_every_chip_once(
    forked_cli, scenes: Path, reference: dict, tmp_path: Path
) -> None:
    assert len(reference["ids"]) == len(set(reference["ids"])) == scene_chips(24)
    delays = np.random.default_rng(8).uniform(0.02, 1.0, RANDOM_KILLS) * reference["seconds"]
    kills = [{"kill_after": round(float(delay), 3)} for delay in delays]
    kills += [{"fault": fault} for fault in FAULTS]
    rounds = [
        kill_and_resume(forked_cli, scenes, tmp_path / f"db{i}", reference, **kill) for i, kill in enumerate(kills)
    ]
    for figures in rounds:
        print(figures)
    moments = Counter(r["moment"] for r in rounds[:RANDOM_KILLS])
    print(f"random kills (reference run {reference['seconds']} s): {dict(moments)}")
    assert all(r["lost"] == r["duplicated"] == r["extra"] == 0 for r in rounds)
    assert all(r["rc"] == -9 for r in rounds[RANDOM_KILLS:])
    assert [r["moment"] for r in rounds[RANDOM_KILLS:]] == ["inside a commit"] * 4 + ["between commits"] + [
        "inside a commit"
    ]


def test_a_second_run_skips_finished_files_and_rebuild_starts_over(
    forked_cli, scenes: Path, reference: dict, tmp_path: Path
) -> None:
    db = tmp_path / "db"
    shutil.copytree(reference["db"], db)
    manifest = (db / MANIFEST).read_bytes()
    log = tmp_path / "log"
    assert forked_cli.run("index", scenes, "--db", db, *ARGS, log=log)["rc"] == 0
    assert "0 new chips from 0 files, 120 already indexed, 24 files skipped, 0 bad files" in log.read_text()
    assert (db / MANIFEST).read_bytes() == manifest  # nothing re-embedded, nothing written
    assert forked_cli.run("index", scenes, "--db", db, *ARGS, "--rebuild", log=log)["rc"] == 0
    assert "120 new chips from 24 files, 0 already indexed, 0 files skipped" in log.read_text()
    assert sorted_ids(db) == reference["ids"]
    assert committed_chips(db) == 120


def test_ctrl_c_exits_130_and_keeps_what_was_committed(forked_cli, scenes: Path, tmp_path: Path, reference) -> None:
    """SIGINT during a run (Ctrl-C): exit 130 with one line saying so; the same command resumes to the same index."""
    db = tmp_path / "db"
    log = tmp_path / "interrupted.log"
    interrupted = forked_cli.run("index", scenes, "--db", db, *ARGS, log=log, fault=("committed", 3, "SIGINT"))
    assert interrupted["rc"] == 130, log.read_text()
    assert "interrupted: committed work is kept; run the same command again to resume" in log.read_text()
    assert "Traceback" not in log.read_text()
    committed = committed_chips(db)
    assert 0 < committed < len(reference["ids"])
    resumed = forked_cli.run("index", scenes, "--db", db, *ARGS, "--json", log=tmp_path / "resumed.log")
    assert resumed["rc"] == 0 and json_summary(tmp_path / "resumed.log")["already_indexed"] == committed
    assert sorted_ids(db) == reference["ids"]
    assert_columns_agree_with_the_table(db)
