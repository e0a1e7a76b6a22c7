"""``rsretrieve index/query/serve --db s3://...`` against a moto S3 server on loopback: a run killed with SIGKILL
between uploading a version and publishing its pointer resumes to every chip once while readers only ever see
committed versions; queries answer as the local index does;
``serve`` picks up a new version without a restart."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from indexer.build import ChipOptions, RunOptions, index_archive
from rsretrieve.raster import find_sources
from rsretrieve.store import ChipStore
from rsretrieve.store.remote_db import RemoteDb, local_db
from tests.conftest import assert_one_line_error, run_cli

TINY = ["--model", "tiny-test", "--random-weights", "--chip-size", "64", "--quiet", "--workers", "0"]
SCENES = 4  # copies of the two Landsat COGs: 66 chips each


@pytest.fixture
def scenes(cog_folder: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "scenes"
    folder.mkdir()
    for i in range(SCENES):
        (folder / f"scene_{2000 + i}0101.tif").write_bytes((cog_folder / ("1985.tif", "1990.tif")[i % 2]).read_bytes())
    return folder


def environment() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "RUST_LOG": "error", "OMP_NUM_THREADS": "1"}


def in_process(*args: str | Path) -> str:
    """stdout of ``rsretrieve ARGS`` run in this process (the CLI's code path without a fresh interpreter)."""
    from rsretrieve.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main([str(arg) for arg in args]) == 0
    return out.getvalue()


KILLED_AT_SECOND_POINTER = """
import os, signal, sys
from rsretrieve import cli
from rsretrieve.store import object_store
write_pointer, calls = object_store.Bucket.write_pointer, []
def dying(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return write_pointer(*args, **kwargs)
object_store.Bucket.write_pointer = dying
sys.exit(cli.main(sys.argv[1:]))
"""  # rsretrieve ARGS, killed as it is about to publish its second version


class Watcher(threading.Thread):
    """Syncs a reading copy of an s3:// index in a loop and checks every version it sees is whole."""

    def __init__(self, uri: str, cache: Path):
        super().__init__(daemon=True)
        self.remote = RemoteDb(uri, cache)
        self.seen: list[int] = []
        self.broken: list[dict] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                changed = self.remote.sync(require=False)  # no pointer yet: an empty copy
            except Exception as error:  # reported by the test
                self.broken.append({"error": repr(error)})
                return
            if changed and (self.remote.path / "manifest.json").exists():
                info = ChipStore(self.remote.path).info()
                counts = {info[key] for key in ("rows", "unique_ids", "index_vectors", "manifest_count")}
                if len(counts) != 1 or info["manifest_count"] % 66:
                    self.broken.append(info)
                self.seen.append(info["manifest_count"])
            time.sleep(0.05)


def test_a_killed_run_into_s3_resumes_to_every_chip_once_and_queries_answer_as_locally(
    scenes: Path, s3_bucket: str, tmp_path: Path, tiny_model
) -> None:
    uri = f"s3://{s3_bucket}/archive.lance"
    command = ["index", scenes, "--db", uri, "--cache-dir", tmp_path / "w", *TINY, "--commit-chips", "60"]
    from rsretrieve.store.table import connect

    connect(tmp_path)  # LanceDB imported before the race: the watcher must keep up with the indexer
    watcher = Watcher(uri, tmp_path / "watch")
    watcher.start()
    process = subprocess.Popen(  # kill -9 after the second version's blocks are uploaded, before its pointer
        [sys.executable, "-c", KILLED_AT_SECOND_POINTER, *map(str, command)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == -signal.SIGKILL, stderr
    time.sleep(0.5)
    assert watcher.seen == [66]  # the first file's version; the half-published second one is invisible
    summary = json.loads(in_process(*command, "--json"))  # the same command again (here: imports paid once)
    assert summary["already_indexed"] + summary["new_chips"] == SCENES * 66 and summary["db"] == uri
    time.sleep(0.3)
    watcher.done.set()
    watcher.join()
    assert not watcher.broken and watcher.seen == sorted(watcher.seen)  # readers saw whole versions only
    with local_db(uri, tmp_path / "r") as path:
        store = ChipStore(path)
        ids = store.column("id").to_pylist()
        assert len(ids) == len(set(ids)) == SCENES * 66  # every chip once

    local = tmp_path / "local.lance"
    index_archive(
        find_sources([scenes]), local, tiny_model, ChipOptions(chip_size=64), RunOptions(workers=0), show_progress=False
    )
    query = ["query", "a harbour", "-k", "5", "--json", "--model", "tiny-test", "--random-weights"]
    remote_hits = json.loads(in_process(*query, "--db", uri, "--cache-dir", tmp_path / "r"))
    local_hits = json.loads(in_process(*query, "--db", local))
    assert [hit["id"] for hit in remote_hits] == [hit["id"] for hit in local_hits]
    np.testing.assert_allclose([h["score"] for h in remote_hits], [h["score"] for h in local_hits], atol=1e-5)


def test_serve_picks_up_a_new_version_without_a_restart(
    scenes: Path, s3_bucket: str, tmp_path: Path, tiny_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.rsretrieve.service import test_server

    monkeypatch.setattr(test_server, "ENV", {**test_server.ENV, **environment()})  # the S3 server's variables

    uri = f"s3://{s3_bucket}/served.lance"
    files = sorted(scenes.iterdir())

    def index(sources: list[Path]) -> None:
        with local_db(uri, tmp_path / "w", write=True) as path:
            index_archive(sources, path, tiny_model, ChipOptions(chip_size=64), RunOptions(workers=0), False)

    index(files[:1])
    server = test_server.Server(
        tmp_path / "serve.log", "--db", uri, "--cache-dir", tmp_path / "r", "--refresh-seconds", "0.2"
    )
    try:
        server.wait_ready()
        count = lambda: httpx.get(f"{server.url}/v1/indexes").json()["indexes"][0]["chips"]  # noqa: E731
        assert count() == 66
        index(files[1:2])  # a new version is published while it serves
        deadline = time.monotonic() + 30
        while count() != 132 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert count() == 132
        hits = httpx.post(f"{server.url}/v1/search", json={"text": "a river", "k": 200}).json()
        assert len(hits["results"]) == 132
    finally:
        log = server.stop()
    assert "Traceback" not in log


def test_object_store_faults_are_one_error_line(s3_bucket: str, tmp_path: Path, s3_env) -> None:
    env = {**environment(), "AWS_MAX_ATTEMPTS": "1"}
    missing = run_cli("info", "--db", "s3://no-such-bucket/x.lance", "--cache-dir", tmp_path, env=env)
    assert_one_line_error(missing, "s3://no-such-bucket/x.lance: cannot read the index pointer (no such bucket")
    s3_env.deny.add(f"/{s3_bucket}/denied.lance/_rsretrieve/HEAD.json")
    try:
        uri = f"s3://{s3_bucket}/denied.lance"
        denied = run_cli("index", tmp_path, "--db", uri, "--cache-dir", tmp_path, *TINY, env=env)
    finally:
        s3_env.deny.clear()
    assert_one_line_error(denied, "denied.lance: cannot read the index pointer (access denied (403))")
    other = run_cli("info", "--db", "gs://bucket/x.lance", env=env)
    assert_one_line_error(other, "must be on s3://")
