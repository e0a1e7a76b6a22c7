"""Tests for indexer/build.py: a whole run into a real store, resume, append, bad files, strict mode."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import rasterio
from rasterio.warp import transform_bounds
from rasterio.windows import Window, bounds

from indexer.build import (
    BadSourceError,
    ChipOptions,
    NothingIndexedError,
    RunOptions,
    estimate_chips,
    index_archive,
)
from rsretrieve.query import Query
from rsretrieve.raster import ChipReader, find_sources, plan_scene
from rsretrieve.search import Searcher
from rsretrieve.store import ChipStore
from tests.conftest import captured_logs

CHIPS = ChipOptions(chip_size=64)
RUN = RunOptions(batch_size=16, workers=0, commit_chips=10)
SMALL_ARCHIVE_CHIPS = 12 + 12 + 4 + 2 + 1  # see write_small_archive in conftest.py


def build(sources: list[Path], db: Path, model, chips: ChipOptions = CHIPS, run: RunOptions = RUN):
    return index_archive(find_sources(sources), db, model, chips, run, show_progress=False)


@pytest.fixture
def build_log() -> Iterator[list[logging.LogRecord]]:
    """Records logged under ``indexer`` during the test."""
    with captured_logs("indexer") as records:
        yield records


def test_index_then_resume_then_append(tmp_path: Path, small_archive: Path, tiny_model) -> None:
    db = tmp_path / "db"
    first = build([small_archive / "utm"], db, tiny_model)
    assert (first.new_chips, first.files_indexed, first.files_skipped) == (24, 2, 0)
    again = build([small_archive / "utm"], db, tiny_model)
    assert (again.new_chips, again.already_indexed, again.files_skipped) == (0, 24, 2)
    more = build([small_archive], db, tiny_model)
    assert (more.new_chips, more.already_indexed, more.files_skipped) == (SMALL_ARCHIVE_CHIPS - 24, 24, 2)
    info = ChipStore(db).info()
    assert info["rows"] == info["unique_ids"] == info["index_vectors"] == SMALL_ARCHIVE_CHIPS
    assert info["files"] == 5


def test_stored_metadata_matches_the_rasters(tmp_path: Path, small_archive: Path, tiny_model) -> None:
    db = tmp_path / "db"
    build([small_archive / "utm", small_archive / "plain.jpg"], db, tiny_model)
    rows = ChipStore(db).rows(range(25)).to_pylist()
    for row in rows:
        if row["path"].endswith(".jpg"):
            assert row["crs"] is None and row["minx"] is None and row["date"] is None
            continue
        with rasterio.open(row["path"]) as src:
            window = Window(row["col_off"], row["row_off"], row["width"], row["height"])
            expected = transform_bounds(src.crs, "EPSG:4326", *bounds(window, src.transform), densify_pts=21)
        assert [row["minx"], row["miny"], row["maxx"], row["maxy"]] == pytest.approx(expected, abs=1e-9)
        assert json.loads(row["footprint"])["type"] == "Polygon"
        assert row["date"].isoformat() in {"2015-06-01", "2019-07-15"}


def test_stored_chips_are_the_planned_chips(tmp_path: Path, small_archive: Path, tiny_model) -> None:
    db = tmp_path / "db"
    build([small_archive / "wgs84"], db, tiny_model)
    store = ChipStore(db)
    planned = [chip for path in find_sources([small_archive / "wgs84"]) for chip in plan_scene(path, 64).chips]
    assert store.chips(range(len(store))) == planned


def test_a_chip_image_finds_itself_first(tmp_path: Path, small_archive: Path, tiny_model) -> None:
    db = tmp_path / "db"
    build([small_archive], db, tiny_model)
    searcher = Searcher(db, model=tiny_model)
    scene = small_archive / "wgs84" / "tile_2018-03-02.tif"
    plan = plan_scene(scene, chip_size=64)
    reader = ChipReader()
    for chip in plan.chips:
        results = searcher.search(Query.build(images=[reader.read(plan, chip)], k=1))
        assert results.chips[0].id == chip.id
    reader.close()


def test_bad_files_are_skipped_with_a_reason(tmp_path: Path, small_archive: Path, tiny_model, build_log) -> None:
    archive = tmp_path / "archive"
    shutil.copytree(small_archive / "wgs84", archive)
    (archive / "empty.tif").write_bytes(b"")
    (archive / "notes.tif").write_text("not a raster")
    summary = build([archive], tmp_path / "db", tiny_model)
    assert (summary.files_indexed, summary.files_failed, summary.new_chips) == (2, 2, 6)
    warnings = [record.getMessage() for record in build_log if record.levelno == logging.WARNING]
    assert len(warnings) == 2 and all(line.startswith("skipped ") for line in warnings)
    assert "empty.tif" in warnings[0] and "notes.tif" in warnings[1]
    assert len(summary.failures) == 2


def test_only_bad_files_into_a_new_index_is_an_error(tmp_path: Path, small_archive: Path, tiny_model) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.tif").write_bytes(b"")
    (bad / "notes.tif").write_text("not a raster")
    with pytest.raises(NothingIndexedError, match="none of the 2 given files could be read"):
        build([bad], tmp_path / "db", tiny_model)
    assert len(ChipStore(tmp_path / "db")) == 0
    build([small_archive / "wgs84"], tmp_path / "db", tiny_model)
    summary = build([bad], tmp_path / "db", tiny_model)  # an index that holds chips: bad files are only counted
    assert (summary.files_failed, summary.new_chips, summary.total_chips) == (2, 0, 6)


def test_strict_mode_stops_at_the_first_bad_file(tmp_path: Path, small_archive: Path, tiny_model) -> None:
    archive = tmp_path / "archive"
    shutil.copytree(small_archive / "wgs84", archive)
    (archive / "zz_broken.tif").write_bytes(b"II*\x00garbage")
    run = RunOptions(workers=0, commit_chips=1, strict=True)
    with pytest.raises(BadSourceError, match=r"zz_broken\.tif"):
        build([archive], tmp_path / "db", tiny_model, run=run)
    store = ChipStore(tmp_path / "db")
    assert not any("zz_broken" in path for path in store.indexed_paths())


def test_commits_are_minutes_of_work_on_either_device() -> None:
    from indexer.build import default_commit_chips

    assert default_commit_chips("cpu") == 2048 and default_commit_chips("cuda:0") == 65536


def test_progress_totals_come_from_headers_without_gdal_noise(shared_data: Path, tmp_path: Path, caplog) -> None:
    odd = shared_data / "geotiff" / "landsat_peru" / "1985.tif"  # GDAL warns about its ExtraSamples
    if not odd.exists():
        pytest.skip(f"{odd} is not in the shared data")
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\0 not really a tiff")
    with caplog.at_level(logging.DEBUG, logger="rasterio"):
        assert estimate_chips([odd, broken], 64, 0) == len(plan_scene(odd, 64).chips) + 1
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING], caplog.text
