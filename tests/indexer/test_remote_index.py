"""Indexing archives where they live (issue 15): s3:// and http:// COGs index as the local files do; remote faults
are one warning line each and the run goes on; a server gone mid-run loses nothing committed and the same command
resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from indexer.build import BadSourceError, ChipOptions, RunOptions, index_archive
from rsretrieve.raster import find_sources
from rsretrieve.store import ChipStore

ROOT = Path(__file__).parents[2]
TINY = ["--model", "tiny-test", "--random-weights", "--quiet", "--workers", "0", "--chip-size", "64"]
LANDSAT = ("1985.tif", "1990.tif")


def _by_place(db: Path) -> dict[tuple, tuple]:
    """Chips of an index keyed by (file name, window): (chip, vector)."""
    store = ChipStore(db)
    fids = np.arange(len(store))
    chips, vectors = store.chips(fids), store.vectors(fids)
    return {(Path(c.path.split("?")[0]).name, c.window): (c, v) for c, v in zip(chips, vectors, strict=True)}


def _index(sources: list, db: Path, model, **run: object):
    return index_archive(
        sources, db, model, ChipOptions(chip_size=64), RunOptions(workers=0, **run), show_progress=False
    )


def test_s3_and_http_index_the_same_chips_as_local_files(
    tmp_path: Path, tiny_model, cog_folder: Path, s3_env, http_server
) -> None:
    local = _index([cog_folder / name for name in LANDSAT], tmp_path / "local", tiny_model)
    s3 = _index(find_sources(["s3://archive/scenes/19*.tif"]), tmp_path / "s3", tiny_model)
    http = _index([f"{http_server.url}/{name}" for name in LANDSAT], tmp_path / "http", tiny_model)
    assert local.new_chips == s3.new_chips == http.new_chips == 132 and not s3.failures and not http.failures
    expected = _by_place(tmp_path / "local")
    for db, prefix in ((tmp_path / "s3", "s3://archive/scenes/"), (tmp_path / "http", f"{http_server.url}/")):
        found = _by_place(db)
        assert found.keys() == expected.keys()
        for key, (chip, vector) in found.items():
            mine, theirs = expected[key]
            assert chip.path == prefix + key[0] and chip.id != mine.id  # the URI as given; ids hash it
            assert (chip.bbox, chip.footprint, chip.date, chip.crs) == (mine.bbox, mine.footprint, mine.date, mine.crs)
            np.testing.assert_allclose(vector, theirs, atol=1e-5)
    again = _index(find_sources(["s3://archive/scenes/19*.tif"]), tmp_path / "s3", tiny_model)
    assert again.new_chips == 0 and again.files_skipped == 2 and again.already_indexed == 132  # URIs as keys


def test_remote_faults_warn_and_the_run_goes_on(tmp_path: Path, tiny_model, cog_folder: Path, s3_env, caplog) -> None:
    from tests.servers import upload

    data = (cog_folder / "1985.tif").read_bytes()
    folder = tmp_path / "objects"
    folder.mkdir()
    (folder / "good.tif").write_bytes(data)
    (folder / "denied.tif").write_bytes(data)
    (folder / "truncated.tif").write_bytes(data[: len(data) // 3])
    upload(folder, "archive", s3_env.env(), prefix="run-faults/")
    s3_env.deny.add("/archive/run-faults/denied.tif")
    try:
        sources = [*find_sources(["s3://archive/run-faults/"]), "s3://archive/run-faults/missing.tif"]
        summary = _index(sources, tmp_path / "db", tiny_model)
        assert summary.new_chips == 66 and summary.files_indexed == 1 and summary.files_failed == 3
        reasons = "\n".join(summary.failures)
        assert "s3://archive/run-faults/denied.tif: access denied (403)" in reasons
        assert "s3://archive/run-faults/missing.tif: no such object (404)" in reasons
        assert "s3://archive/run-faults/truncated.tif: cannot read window" in reasons
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "skipped" in r.getMessage()]
        assert len(warnings) == 3 and all("\n" not in w for w in warnings)
        with pytest.raises(BadSourceError, match=r"denied\.tif: access denied"):
            _index(sources, tmp_path / "strict", tiny_model, strict=True)
    finally:
        s3_env.deny.discard("/archive/run-faults/denied.tif")


def _cli(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "rsretrieve.cli", *argv]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)


def test_a_server_gone_mid_run_loses_nothing_and_the_same_command_resumes(
    tmp_path: Path, cog_folder: Path, s3_server
) -> None:
    """Stop the S3 server right after the first commit; restart it on the same port and rerun: every chip once."""
    from tests.servers import S3Server, upload

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(6):  # 6 scenes of 66 chips, committed one by one
        (folder / f"scene_{2000 + i}0101.tif").write_bytes((cog_folder / LANDSAT[i % 2]).read_bytes())
    server = S3Server().start()
    upload(folder, "resume", server.env())
    env = {**os.environ, **server.env(), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "RUST_LOG": "error"}
    env["PYTHONPATH"] = str(ROOT)
    db = tmp_path / "db"
    argv = ("index", "s3://resume/", "--db", str(db), *TINY, "--commit-chips", "60", "--json")
    process = subprocess.Popen(
        [sys.executable, "-m", "rsretrieve.cli", *argv], env=env, cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            manifest = db / "manifest.json"
            if manifest.exists() and json.loads(manifest.read_text()).get("count", 0) > 0:
                break
            time.sleep(0.01)
        port = server.port
        server.stop()  # the network is gone mid-run
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    first = json.loads(out) if out.strip() else None
    committed = ChipStore(db).manifest.count
    assert 0 < committed < 6 * 66, err
    if first is not None:  # the run ended itself: the files it could not read were reported, not committed
        assert first["files_failed"] >= 1 and first["new_chips"] == committed
        assert all("s3://resume/" in reason for reason in first["failures"])
    server = S3Server(port=port).start()  # moto keeps the objects in this process: the same store comes back
    try:
        done = _cli(*argv, env=env)
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["files_failed"] == 0 and summary["total_chips"] == 6 * 66
    ids = ChipStore(db).column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 6 * 66  # every chip once
    paths = set(ChipStore(db).column("path").to_pylist())
    assert paths == {f"s3://resume/scene_{2000 + i}0101.tif" for i in range(6)}
