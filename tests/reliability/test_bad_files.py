"""An archive with broken and unusual files: each is indexed correctly or skipped with one warning line."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

from rsretrieve.store import ChipStore
from rsretrieve.store.table import TABLE, connect
from tests.reliability.conftest import BAD_FILES, GOOD_FILES, TINY, json_summary

ARGS = [*TINY, "--chip-size", "64", "--json"]
RANDOM_WEIGHTS = "warning: random weights: results are meaningless (for tests and speed runs only)"


def chips_per_file(db: Path) -> Counter:
    info = ChipStore(db).info()
    assert info["rows"] == info["unique_ids"] == info["index_vectors"]
    return Counter(Path(path).name for path in ChipStore(db).column("path").to_pylist())


def warnings_by_file(log: Path, names: list[str]) -> dict[str, list[str]]:
    """Warning lines naming each file; fails on any other line than the expected ones."""
    lines = log.read_text().split("\n{", 1)[0].splitlines()  # stderr, then the JSON summary
    found = {name: [line for line in lines if f"/{name}:" in line] for name in names}
    others = [line for line in lines if line != RANDOM_WEIGHTS and not any(line in v for v in found.values())]
    assert len(others) == 1 and " new chips from " in others[0], lines  # the summary line
    return found


def test_bad_files_are_skipped_with_one_warning_each_and_the_rest_is_indexed(
    forked_cli, bad_archive: Path, tmp_path: Path
) -> None:
    db, log = tmp_path / "db", tmp_path / "log"
    assert forked_cli.run("index", bad_archive, "--db", db, *ARGS, log=log)["rc"] == 0
    assert chips_per_file(db) == GOOD_FILES
    warned = warnings_by_file(log, [*GOOD_FILES, *BAD_FILES])
    for name, reason in BAD_FILES.items():
        assert len(warned[name]) == 1 and warned[name][0].startswith(f"warning: skipped {bad_archive}/{name}: ")
        assert reason in warned[name][0]
    assert not any(warned[name] for name in GOOD_FILES)
    summary = json_summary(log)
    assert (summary["files_indexed"], summary["files_failed"]) == (len(GOOD_FILES), len(BAD_FILES))
    assert summary["new_chips"] == sum(GOOD_FILES.values())


def test_the_real_odd_files_of_the_shared_data(forked_cli, shared_data: Path, tmp_path: Path) -> None:
    misc = shared_data / "geotiff" / "misc"
    names = sorted(path.name for path in misc.glob("*.tif"))
    db, log = tmp_path / "db", tmp_path / "log"
    assert forked_cli.run("index", misc, "--db", db, *ARGS, log=log)["rc"] == 0
    indexed = chips_per_file(db)
    warned = warnings_by_file(log, names)
    assert all((indexed[name] > 0) != bool(warned[name]) and len(warned[name]) <= 1 for name in names)
    assert set(indexed) == set(names)  # all of them are valid rasters


def test_strict_mode_stops_at_the_first_bad_file_and_writes_none_of_it(
    forked_cli, bad_archive: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    for name, source in [("a_good", "sixteen_bit_4band"), ("b_bad", "truncated"), ("c_good", "no_georeference")]:
        shutil.copy(bad_archive / f"{source}.tif", archive / f"{name}.tif")
    db, log = tmp_path / "db", tmp_path / "log"
    assert forked_cli.run("index", archive, "--db", db, *ARGS, "--strict", "--commit-chips", "1", log=log)["rc"] == 1
    errors = [line for line in log.read_text().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {archive}/b_bad.tif: cannot read window")
    assert chips_per_file(db) == {"a_good.tif": 4}  # committed before the bad file
    latest = connect(db).open_table(TABLE).search().select(["path"]).limit(None).to_arrow()
    assert not any("b_bad" in path or "c_good" in path for path in latest.column("path").to_pylist())
