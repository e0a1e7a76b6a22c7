"""Readers while an indexer appends, a second indexer on the same index, and a stale lock."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from rsretrieve import cli, models
from rsretrieve.query import Filters, Query
from rsretrieve.search import Searcher
from rsretrieve.store import LOCK, ChipStore
from tests.reliability.conftest import TINY, scene_chips, write_scenes

ARGS = [*TINY, "--chip-size", "64", "--commit-chips", "4"]


class Background(threading.Thread):
    """A forked_cli job run in a thread; ``result`` once it ends."""

    def __init__(self, forked_cli, *argv: str | Path, log: Path, **options) -> None:
        super().__init__(daemon=True)
        self.call = lambda: forked_cli.run(*argv, log=log, **options)
        self.result: dict | None = None
        self.start()

    def run(self) -> None:
        self.result = self.call()


def wait_for_lock_owner(db: Path) -> int:
    """The pid written in the lock file by an indexer that has started."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = (db / LOCK).read_text().strip() if (db / LOCK).exists() else ""
        if text:
            return int(text)
        time.sleep(0.01)
    raise AssertionError("the indexer never took the lock")


def test_queries_during_an_append_never_fail(forked_cli, tmp_path: Path, tiny_model) -> None:
    first, second = write_scenes(tmp_path / "first", 8), write_scenes(tmp_path / "second", 16)
    db = tmp_path / "db"
    assert forked_cli.run("index", first, "--db", db, *ARGS, log=tmp_path / "log")["rc"] == 0
    searcher = Searcher(db, model=tiny_model)
    chip_id = searcher.search(Query.build(text="farmland", k=1)).hits[0].chip.id
    everywhere = Filters(bbox=(-180.0, -90.0, 180.0, 90.0))
    queries = [
        lambda k: searcher.search(Query.build(text="a river crossing farmland", k=k)).chips,
        lambda k: searcher.search(Query.build(text="fields", k=k, filters=everywhere)).chips,
        lambda k: searcher.search(Query.build(like=[chip_id], k=k)).chips,
    ]
    writer = Background(forked_cli, "index", second, "--db", db, *ARGS, log=tmp_path / "log")
    counts, failures = [], []
    while writer.is_alive() or not counts:
        try:
            results = queries[len(counts) % len(queries)](1000)
        except Exception as error:  # every failure counts, whatever its kind
            failures.append(repr(error))
            continue
        assert len({result.id for result in results}) == len(results)
        counts.append(len(results))
    writer.join()
    total = scene_chips(8) + scene_chips(16)
    print(f"{len(counts)} queries during the append, result counts {sorted(set(counts))}")
    assert writer.result["rc"] == 0 and failures == []
    assert counts == sorted(counts) and set(counts) <= {scene_chips(8) + scene_chips(n) for n in range(17)}
    assert len(searcher.search(Query.build(text="farmland", k=1000))) == len(ChipStore(db)) == total


def test_a_second_indexer_is_refused_and_a_dead_ones_lock_is_taken_over(
    forked_cli, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenes = write_scenes(tmp_path / "scenes", 8)
    db, log = tmp_path / "db", tmp_path / "log"
    first = Background(forked_cli, "index", scenes, "--db", db, *ARGS, log=log, fault=("committed", 3, "SIGSTOP"))
    owner = wait_for_lock_owner(db)
    monkeypatch.setattr(models, "load_model", lambda *args, **kwargs: pytest.fail("loaded a model"))
    assert cli.main(["index", str(scenes), "--db", str(db), *ARGS]) == 1
    errors = capsys.readouterr().err.splitlines()
    assert errors == [f"error: {db} is being written by another indexer (pid {owner}); let it finish"]
    os.kill(owner, signal.SIGKILL)  # the stopped indexer dies holding the lock
    first.join()
    assert first.result["rc"] == -9 and (db / LOCK).exists()
    assert forked_cli.run("index", scenes, "--db", db, *ARGS, log=log)["rc"] == 0
    assert f"warning: taking over a stale lock left by process {owner}" in log.read_text()
    assert len(ChipStore(db)) == scene_chips(8) and not (db / LOCK).exists()


def test_a_lock_naming_a_live_process_without_holding_it_is_stale(forked_cli, tmp_path: Path) -> None:
    scenes = write_scenes(tmp_path / "scenes", 2)
    db, log = tmp_path / "db", tmp_path / "log"
    assert forked_cli.run("index", scenes, "--db", db, *ARGS, log=log)["rc"] == 0
    (db / LOCK).write_text(f"{os.getpid()}\n")  # a pid reused by another process after a crash
    more = write_scenes(tmp_path / "more", 2)
    assert forked_cli.run("index", more, "--db", db, *ARGS, log=log)["rc"] == 0
    assert f"taking over a stale lock left by process {os.getpid()}" in log.read_text()
    assert len(ChipStore(db)) == 2 * scene_chips(2)
