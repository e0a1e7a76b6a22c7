"""End-to-end tests of the rsretrieve CLI as a subprocess: index, query, info, models, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "RUST_LOG": "error"}
RANDOM = ["--model", "tiny-test", "--random-weights"]


def rsretrieve(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "rsretrieve.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr


@pytest.fixture(scope="module")
def cli_index(tmp_path_factory: pytest.TempPathFactory, small_archive: Path) -> Path:
    db = tmp_path_factory.mktemp("cli") / "demo.lance"
    result = rsretrieve("index", small_archive, "--db", db, *RANDOM, "--chip-size", "64", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["new_chips"] == 31 and summary["files_failed"] == 0
    assert "31 new chips from 5 files" in result.stderr
    return db


def test_text_query_as_json(cli_index: Path) -> None:
    result = rsretrieve("query", "a river crossing farmland", "--db", cli_index, "-k", "4", "--json")
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert len(records) == 4
    assert set(records[0]) == {"score", "id", "path", "window", "bbox", "date", "crs"}
    assert [r["score"] for r in records] == sorted((r["score"] for r in records), reverse=True)


def test_like_query_with_filters_as_geojson(cli_index: Path) -> None:
    listed = json.loads(rsretrieve("query", "farmland", "--db", cli_index, "-k", "31", "--json").stdout)
    utm = next(r for r in listed if r["date"] == "2019-07-15")
    minx, miny, maxx, maxy = utm["bbox"]
    bbox = f"{minx - 1},{miny - 1},{maxx + 1},{maxy + 1}"
    result = rsretrieve(
        "query", "--like", utm["id"], "--db", cli_index, "-k", "50",
        "--bbox", bbox, "--start", "2019-01-01", "--end", "2019-12-31", "--geojson",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    collection = json.loads(result.stdout)
    features = collection["features"]
    assert features[0]["properties"]["id"] == utm["id"]
    assert len(features) == 12  # every chip of the 2019 scene, nothing else
    assert {f["properties"]["date"] for f in features} == {"2019-07-15"}
    assert all(f["geometry"]["type"] == "Polygon" for f in features)


def test_image_query_and_table_output(cli_index: Path, small_archive: Path) -> None:
    result = rsretrieve("query", "--image", small_archive / "plain.jpg", "--db", cli_index, "-k", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["#", "score", "chip"]
    assert "plain.jpg" in lines[1]  # the image itself is indexed, so it comes first
    assert "warning: random weights" in result.stderr


def test_csv_output(cli_index: Path) -> None:
    result = rsretrieve("query", "farmland", "--db", cli_index, "-k", "3", "--csv", "--nprobe", "2", "--rerank", "3")
    lines = result.stdout.splitlines()
    assert lines[0].startswith("rank,score,id,path") and len(lines) == 4


def test_info_json_counts_agree(cli_index: Path) -> None:
    result = rsretrieve("info", "--db", cli_index, "--json")
    info = json.loads(result.stdout)
    assert info["rows"] == info["unique_ids"] == info["index_vectors"] == 31
    assert info["model"] == "tiny-test" and info["index_type"] == "flat" and info["files"] == 5
    assert info["copy_rows"] == {"vectors.f32": 31, "bounds.f64": 31, "records.jsonl": 31}
    shown = rsretrieve("info", "--db", cli_index).stdout
    assert "chips: 31 rows, 31 unique ids, 31 in FAISS" in shown and "records.jsonl 31 rows" in shown


def test_models_lists_the_registry() -> None:
    rows = json.loads(rsretrieve("models", "--json").stdout)
    names = {row["name"] for row in rows}
    assert {"remoteclip-vit-b-32", "georsclip-vit-b-32-ret2", "georsclip-vit-h-14"} <= names
    assert all(row["cached"] is False for row in rows)


def test_help_does_not_import_torch() -> None:
    code = "import sys, rsretrieve.cli as c; c.build_parser(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    assert result.stdout.strip() == "False"


def test_bad_input_gives_one_error_line(tmp_path: Path, cli_index: Path, small_archive: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    cases = [
        (("index", tmp_path / "missing", "--db", tmp_path / "x", *RANDOM), "missing"),
        (("index", tmp_path / "empty", "--db", tmp_path / "x", *RANDOM), "no images"),
        (("index", small_archive, "--db", tmp_path / "x", "--model", "no-such-model"), "unknown model"),
        (("query", "farmland", "--db", tmp_path / "nothing.lance"), "index not found"),
        (("query", "farmland", "--db", cli_index, "--bbox", "10,0,5,1"), "min must not exceed max"),
        (("query", "farmland", "--db", cli_index, "--start", "2020-01-01", "--end", "2019-01-01"), "after end"),
        (("query", "--image", tmp_path / "broken.png", "--db", cli_index), "cannot read query image"),
        (("query", "farmland", "--db", cli_index, "--model", "remoteclip-vit-b-32"), "built with model"),
        (("query", "--like", "0000000000000000", "--db", cli_index), "no chip with id"),
        (("query", "farmland", "--db", cli_index, "-k", "0"), "-k must be at least 1"),
        (("query", "--db", cli_index), "exactly one query"),
        (("info", "--db", tmp_path), "not an rsretrieve index"),
    ]
    for args, fragment in cases:
        assert_one_line_error(rsretrieve(*args), fragment)


def test_offline_model_download_fails_fast_with_instructions(tmp_path: Path, small_archive: Path) -> None:
    result = rsretrieve("index", small_archive, "--db", tmp_path / "db", "--model", "remoteclip-vit-b-32", timeout=60)
    assert_one_line_error(result, "RemoteCLIP-ViT-B-32.pt")
    assert "--checkpoint" in result.stderr
    assert not (tmp_path / "db").exists()


def test_argument_errors_are_usage_errors(cli_index: Path) -> None:
    result = rsretrieve("query", "farmland", "--db", cli_index, "--bbox", "1,2,3")
    assert result.returncode == 2 and "four numbers" in result.stderr and "Traceback" not in result.stderr


def test_demo_indexes_and_queries(tmp_path: Path, small_archive: Path) -> None:
    result = rsretrieve("demo", small_archive / "utm", "--db", tmp_path / "demo.lance", *RANDOM)
    assert result.returncode == 0, result.stderr
    assert "4 new chips from 2 files" in result.stderr  # 224 px chips: two per 256×192 scene
    assert result.stdout.count("scene_2019") + result.stdout.count("scene_2015") >= 5  # result tables
