"""Bad queries and arguments end with one clear error line and write nothing (cases beyond test_cli.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rsretrieve import cli
from rsretrieve.store import FORMAT_VERSION, MANIFEST

TINY = ["--model", "tiny-test", "--random-weights"]


def run_cli(capsys: pytest.CaptureFixture, *args: str | Path) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``rsretrieve ARGS`` run in this process."""
    try:
        code = cli.main([str(arg) for arg in args])
    except SystemExit as error:  # argparse
        code = error.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Size and modification time of every file under a folder."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def index(small_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small archive indexed at 64 px (31 chips)."""
    db = tmp_path_factory.mktemp("queries") / "db"
    assert cli.main(["index", str(small_archive), "--db", str(db), *TINY, "--chip-size", "64", "--quiet"]) == 0
    return db


@pytest.fixture
def odd_indexes(index: Path, tmp_path: Path) -> dict[str, Path]:
    """Copies of the index with a newer format version or a manifest of some other tool, and a foreign folder."""
    newer, other_tool, foreign = tmp_path / "newer", tmp_path / "other_tool", tmp_path / "foreign"
    for copy in (newer, other_tool):
        shutil.copytree(index, copy)
    manifest = json.loads((index / MANIFEST).read_text())
    (newer / MANIFEST).write_text(json.dumps({**manifest, "format_version": FORMAT_VERSION + 1}))
    (other_tool / MANIFEST).write_text(json.dumps({"name": "some other tool", "files": []}))
    foreign.mkdir()
    (foreign / "notes.txt").write_text("my notes")
    return {"newer": newer, "other_tool": other_tool, "foreign": foreign}


def test_queries_that_are_answered(capsys, index: Path) -> None:
    code, out, err = run_cli(capsys, "query", ("farmland " * 1112)[:10_000], "--db", index, "--json", "-k", "3")
    assert code == 0 and len(json.loads(out)) == 3, err  # 10,000 characters: the tokenizer truncates
    code, out, err = run_cli(capsys, "query", "farmland", "--db", index, "--json", "-k", "100000")
    assert code == 0 and len(json.loads(out)) == 31, err  # k beyond the index: every chip
    code, out, err = run_cli(capsys, "query", "farmland", "--db", index, "--json", "-k", "99", "--bbox=-180,-90,180,90")
    assert code == 0 and len(json.loads(out)) == 30, err  # all but the plain JPEG, which has no footprint


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("query", "", "--db", "{index}"), "the text query is empty"),
        (("query", "   ", "--db", "{index}"), "the text query is empty"),
        (("query", "farmland", "--db", "{index}", "-k", "-3"), "-k must be at least 1 (got -3)"),
        (("query", "--like", "x' OR '1'='1", "--db", "{index}"), "no chip with id"),
        (("query", "farmland", "--db", "{index}", "--bbox", "nan,0,1,1"), "bbox must be four finite numbers"),
        (("query", "farmland", "--db", "{index}", "--bbox", "0,0,200,10"), "bbox is out of range"),
        (("query", "farmland", "--db", "{foreign}"), "is not an rsretrieve index (no manifest.json)"),
        (("query", "farmland", "--db", "{other_tool}"), "is not an rsretrieve index (manifest.json has no format"),
        (("query", "farmland", "--db", "{newer}"), "was written by a newer rsretrieve"),
        (("info", "--db", "{newer}"), "was written by a newer rsretrieve"),
        (("index", "{archive}", "--db", "{newer}", *TINY), "was written by a newer rsretrieve"),
        (("index", "{archive}", "--db", "{foreign}", *TINY), "exists and is not an rsretrieve index"),
        (("index", "{archive}", "--db", "{foreign}/notes.txt", *TINY), "cannot create index folder"),
        (("index", "{archive}", "--db", "{index}", "--model", "RN50", "--random-weights"), "built with model"),
        (("index", "{archive}", "--db", "{index}", *TINY, "--chip-size", "32"), "built with --chip-size 64"),
    ],
)
def test_errors_are_one_line_and_write_nothing(
    capsys, index: Path, odd_indexes: dict[str, Path], small_archive: Path, args: tuple[str, ...], message: str
) -> None:
    folders = {"index": index, "archive": small_archive, **odd_indexes}
    before = {name: snapshot(folder) for name, folder in folders.items()}
    code, out, err = run_cli(capsys, *(arg.format(**folders) for arg in args))
    assert code == 1 and out == ""
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
    assert {name: snapshot(folder) for name, folder in folders.items()} == before


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--bbox", "a,b,c,d", "is not minx,miny,maxx,maxy"),
        ("--bbox", "1,2,3,4,5", "four numbers"),
        ("--start", "2020-13-45", "is not a date YYYY-MM-DD"),
        ("--end", "yesterday", "is not a date YYYY-MM-DD"),
        ("-k", "ten", "invalid int value"),
    ],
)
def test_malformed_arguments_are_usage_errors(capsys, index: Path, option: str, value: str, message: str) -> None:
    code, out, err = run_cli(capsys, "query", "farmland", "--db", index, option, value)
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and out == "" and len(errors) == 1 and message in errors[0], err
