"""Indexing archives where they live (issue 15): s3:// and http:// COGs index as the local files do; remote faults
are one warning line each and the run goes on; a server gone mid-run loses nothing committed and the same command
resumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexer.build import BadSourceError, ChipOptions, RunOptions, index_archive
from rsretrieve.raster import find_sources
from rsretrieve.store import ChipStore

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


def test_a_server_gone_mid_run_loses_nothing_and_the_same_command_resumes(
    tmp_path: Path, tiny_model, cog_folder: Path, s3_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stop the S3 server right after the first commit; restart it on the same port and rerun: every chip once."""
    from rsretrieve.store import StoreWriter
    from tests.servers import S3Server, upload

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(4):  # 4 scenes of 66 chips, committed one by one
        (folder / f"scene_{2000 + i}0101.tif").write_bytes((cog_folder / LANDSAT[i % 2]).read_bytes())
    server = S3Server().start()
    upload(folder, "resume", server.env())
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CPL_VSIL_CURL_NON_CACHED", "/vsis3/resume/")  # this process outlives the outage: no
    # cached failures (a new process, as a rerun of the command is, starts with an empty cache anyway)
    append = StoreWriter.append

    def append_then_cut(self, *args, **kwargs):
        append(self, *args, **kwargs)
        server.stop()  # the network is gone right after a commit

    sources = find_sources(["s3://resume/"])
    with monkeypatch.context() as patch:
        patch.setattr(StoreWriter, "append", append_then_cut)
        first = _index(sources, tmp_path / "db", tiny_model, commit_chips=60)
    assert first.new_chips == 66 and first.files_indexed == 1 and first.files_failed == 3
    assert all(reason.startswith("s3://resume/scene_200") for reason in first.failures)
    network = ("Could not connect to server", "nothing received from the server")  # at open / mid-read
    assert all(any(text in reason for text in network) for reason in first.failures), first.failures
    assert ChipStore(tmp_path / "db").manifest.count == 66  # the committed group is kept
    with S3Server(port=server.port):  # moto keeps the objects in this process: the same store comes back
        again = _index(sources, tmp_path / "db", tiny_model, commit_chips=60)
    assert again.files_failed == 0 and again.files_skipped == 1 and again.new_chips == 3 * 66
    store = ChipStore(tmp_path / "db")
    ids = store.column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 4 * 66  # every chip once
    assert set(store.column("path").to_pylist()) == {f"s3://resume/scene_{2000 + i}0101.tif" for i in range(4)}
