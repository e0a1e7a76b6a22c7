"""End-to-end tests of the rsretrieve CLI as a subprocess: index, query, info, models, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rsretrieve.store import FORMAT_VERSION
from tests.conftest import assert_one_line_error, run_cli

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "RUST_LOG": "error"}
RANDOM = ["--model", "tiny-test", "--random-weights"]


class WarmCli:
    """``rsretrieve`` commands run in forked children of one warm interpreter (tests/reliability/forked_cli.py): the
    real CLI, its exit code, stdout and stderr, without paying the imports (~6 s) for every command."""

    def __init__(self, folder: Path) -> None:
        from tests.reliability.conftest import ForkedCli

        self.runner = ForkedCli()
        self.folder = folder
        self.count = 0

    def __call__(self, *args: str | Path) -> subprocess.CompletedProcess:
        self.count += 1
        out, err = self.folder / f"{self.count}.out", self.folder / f"{self.count}.err"
        answer = self.runner.run(*args, log=err, out=out)
        return subprocess.CompletedProcess(args, answer["rc"], out.read_text(), err.read_text())


_WARM: list[WarmCli] = []


@pytest.fixture(scope="module", autouse=True)
def warm_cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One warm runner for this module's commands."""
    _WARM.append(WarmCli(tmp_path_factory.mktemp("cli-runs")))
    yield
    _WARM.pop().runner.close()


def rsretrieve(*args: str | Path) -> subprocess.CompletedProcess:
    """``rsretrieve ARGS`` through this module's warm runner."""
    return _WARM[-1](*args)


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
    assert set(records[0]) == {"score", "id", "path", "window", "bbox", "date", "crs", "item_id", "collection"}
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
    result = rsretrieve("query", "farmland", "--db", cli_index, "-k", "3", "--csv")
    lines = result.stdout.splitlines()
    assert lines[0].startswith("rank,score,id,path") and len(lines) == 4


def test_mixed_query_with_negatives_and_weights(cli_index: Path) -> None:
    listed = json.loads(rsretrieve("query", "farmland", "--db", cli_index, "-k", "31", "--json").stdout)
    first, second, unwanted = (record["id"] for record in listed[:3])
    result = rsretrieve(
        "query", "farmland", "--like", first, "--like", second, "--not", unwanted, "--not-text", "clouds",
        "--weights", "text=0.5,like=2", "--db", cli_index, "-k", "31", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    ranked = [record["id"] for record in json.loads(result.stdout)]
    from rsretrieve.query import Query
    from rsretrieve.search import Searcher

    query = Query.build(
        text="farmland", like=[first, second], not_like=[unwanted], not_text="clouds",
        weights={"text": 0.5, "like": 2}, k=31,
    )  # fmt: skip
    assert ranked == [hit.chip.id for hit in Searcher(cli_index).search(query)]
    assert ranked != [record["id"] for record in listed]


def test_info_json_counts_agree(cli_index: Path) -> None:
    result = rsretrieve("info", "--db", cli_index, "--json")
    info = json.loads(result.stdout)
    assert info["rows"] == info["unique_ids"] == info["index_vectors"] == 31
    assert info["model"] == "tiny-test" and info["index_type"] == "flat" and info["files"] == 5
    assert info["column_rows"] == {"vectors.lo4": 31, "vectors.i8": 31, "bounds.f64": 31, "records": 31}
    shown = rsretrieve("info", "--db", cli_index).stdout
    assert "chips: 31 rows, 31 unique ids, 31 in FAISS" in shown and "records 31 rows" in shown


@pytest.fixture(scope="module")
def ivfpq_index(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """The Landsat composites at 64 px (528 chips) in an IVF-PQ index (8 lists)."""
    db = tmp_path_factory.mktemp("cli-ivfpq") / "ivfpq.lance"
    landsat = shared_data / "geotiff" / "landsat_peru"
    result = rsretrieve("index", landsat, "--db", db, *RANDOM, "--chip-size", "64", "--index-type", "ivfpq", "--quiet")
    assert result.returncode == 0, result.stderr
    return db


def summary_of(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    return next(line for line in result.stderr.splitlines() if " results in " in line)


def test_nprobe_and_rerank_change_the_search_on_an_ivfpq_index(ivfpq_index: Path) -> None:
    info = json.loads(rsretrieve("info", "--db", ivfpq_index, "--json").stdout)
    assert info["index_type"] == "ivfpq" and info["index"]["nlist"] == 8
    query = ("query", "farmland", "--db", ivfpq_index, "-k", "10")
    default = summary_of(rsretrieve(*query))
    assert "(ivfpq, 528 candidates re-ranked" in default  # k·100 asked; the 8 probed lists hold every chip
    assert "(ivfpq, 30 candidates re-ranked" in summary_of(rsretrieve(*query, "--rerank", "3"))
    one_list = summary_of(rsretrieve(*query, "--nprobe", "1"))
    assert int(one_list.split("(ivfpq, ")[1].split()[0]) < 528 / 2  # one of 8 lists


def test_indexing_options_take_effect(tmp_path: Path, shared_data: Path) -> None:
    landsat = shared_data / "geotiff" / "landsat_peru" / "1985.tif"  # 697×377, 4 bands
    db = tmp_path / "options.lance"
    result = rsretrieve("index", landsat, "--db", db, *RANDOM, "--chip-size", "128", "--overlap", "64",
                        "--bands", "3,2,1", "--flat-threshold", "256", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["new_chips"] == 10 * 5  # stride 64 across 697 (10 columns) and 377 (5 rows)
    info = json.loads(rsretrieve("info", "--db", db, "--json").stdout)
    assert (info["chip_size"], info["overlap"], info["bands"]) == (128, 64, [3, 2, 1])
    assert info["index_type"] == "flat"  # 50 chips: below --flat-threshold 256
    other_overlap = rsretrieve("index", landsat, "--db", db, *RANDOM, "--chip-size", "128", "--overlap", "0",
                               "--bands", "3,2,1")  # fmt: skip
    assert_one_line_error(other_overlap, "built with --overlap 64")
    other_bands = rsretrieve("index", landsat, "--db", db, *RANDOM, "--chip-size", "128", "--overlap", "64")
    assert_one_line_error(other_bands, "built with --bands 3,2,1")
    retrained = rsretrieve(
        "index", landsat, "--db", db, "--chip-size", "128", "--overlap", "64", "--bands", "3,2,1", "--retrain", "--json"
    )  # fmt: skip  (no --random-weights: resumed as built)
    assert retrained.returncode == 0, retrained.stderr
    assert json.loads(retrained.stdout)["already_indexed"] == 50
    assert "warning: random weights" in retrained.stderr


def test_max_nodata_drops_chips_with_too_much_nodata(tmp_path: Path, make_geotiff) -> None:
    import numpy as np

    data = np.random.default_rng(0).integers(1, 255, (3, 128, 128)).astype("uint8")
    data[:, :, :72] = 0  # the left chips are all nodata, the right ones an eighth
    scene = make_geotiff(tmp_path / "half.tif", 128, 128, nodata=0, data=data)
    counts = []
    for fraction in ("1.0", "0.2"):
        db = tmp_path / f"nodata-{fraction}.lance"
        result = rsretrieve(
            "index", scene, "--db", db, *RANDOM, "--chip-size", "64", "--max-nodata", fraction, "--json"
        )
        assert result.returncode == 0, result.stderr
        counts.append(json.loads(result.stdout)["new_chips"])
    assert counts == [4, 2]


def test_checkpoint_file_is_loaded_and_recorded(tmp_path: Path, small_archive: Path) -> None:
    import torch

    from rsretrieve.models import file_fingerprint, load_model

    weights = tmp_path / "tiny.pt"
    torch.save(load_model("tiny-test", device="cpu", random_weights=True).model.state_dict(), weights)
    db = tmp_path / "ckpt.lance"
    result = rsretrieve("index", small_archive / "utm", "--db", db, "--model", "tiny-test", "--checkpoint", weights,
                        "--chip-size", "64", "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(rsretrieve("info", "--db", db, "--json").stdout)["checkpoint"] == file_fingerprint(weights)
    query = rsretrieve("query", "farmland", "--db", db, "--checkpoint", weights, "-k", "2", "--json")
    assert query.returncode == 0 and len(json.loads(query.stdout)) == 2
    assert_one_line_error(rsretrieve("query", "farmland", "--db", db, *RANDOM), "other weights")


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
        (("query", "--db", cli_index), "give something to search for"),
        (("query", "--not-text", "cloud", "--db", cli_index), "give something to search for"),
        (("query", "farmland", "--weights", "colour=2", "--db", cli_index), "unknown weight 'colour'"),
        (("query", "farmland", "--weights", "text=-1", "--db", cli_index), "weights must be positive"),
        (("index", Path(__file__), "--db", tmp_path / "bad", *RANDOM), "nothing indexed"),
        (("info", "--db", tmp_path), "not an rsretrieve index"),
    ]
    for args, fragment in cases:
        assert_one_line_error(rsretrieve(*args), fragment)


def test_offline_model_download_fails_fast_with_instructions(tmp_path: Path, small_archive: Path) -> None:
    result = run_cli(
        "index", small_archive, "--db", tmp_path / "db", "--model", "remoteclip-vit-b-32", env=ENV, timeout=60
    )
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


def test_demo_runs_on_the_archive_shipped_in_the_package(tmp_path: Path) -> None:
    """A fresh clone has no ../shared beside it: the demo's default archive travels with the package."""
    from rsretrieve.cli import DEMO_ARCHIVE

    assert sorted(path.name for path in DEMO_ARCHIVE.rglob("*.tif")) == [
        "1985.tif", "2000.tif", "2020.tif", "m_4709963_se_14_1_20090818.tif", "m_4709963_se_14_1_20200831.tif"
    ]  # fmt: skip
    command = [sys.executable, "-m", "rsretrieve.cli", "demo", "--db", "demo.lance", *RANDOM]
    result = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "new chips from 5 files" in result.stderr and "0 bad files" in result.stderr
    assert "landsat_peru" in result.stdout and "2020" in result.stdout  # the date-filtered query found 2015-2020 chips


def test_a_format_2_index_answers_then_upgrades_to_the_same_results(cli_index: Path, tmp_path: Path) -> None:
    """An index written before format 3 (float32 vectors in LanceDB and vectors.f32) keeps answering, and
    ``rsretrieve upgrade`` keeps the vectors once, in 8-bit form, with the same answers within tolerance."""
    import shutil

    import numpy as np
    import pyarrow as pa

    from rsretrieve.store import ChipStore
    from tests.rsretrieve.store.conftest import make_format_2

    db = tmp_path / "old.lance"
    shutil.copytree(cli_index, db)
    store = ChipStore(db)
    vectors = np.vstack([store.index.reconstruct(fid) for fid in range(len(store))])  # the flat index: float32
    make_format_2(db, vectors)
    first = store.chips([0])[0].id
    text = ("query", "a river crossing farmland", "--db", db, "-k", "10", "--json")
    like = ("query", "--like", first, "--db", db, "-k", "10", "--json")
    before = [json.loads(rsretrieve(*query).stdout) for query in (text, like)]
    upgraded = rsretrieve("upgrade", "--db", db)
    assert upgraded.returncode == 0 and f"upgraded from format 2 to {FORMAT_VERSION}" in upgraded.stderr
    assert not (db / "vectors.f32").exists() and (db / "vectors.i8").stat().st_size == 31 * (store.manifest.dim + 4)
    for path in (db / "records").iterdir():  # format 2's plain record files rewritten in format 4's layout
        assert pa.ipc.open_file(path).schema.metadata == {b"record_layout": b"4"}
    after = [json.loads(rsretrieve(*query).stdout) for query in (text, like)]
    assert after[0] == before[0]  # the flat index kept its float32 vectors: text queries are unchanged
    scores = {hit["id"]: hit["score"] for hit in after[1]}  # the --like vector now comes from the 8-bit form
    assert after[1][0]["id"] == first and len(set(scores) & {hit["id"] for hit in before[1]}) >= 9
    assert all(abs(scores[hit["id"]] - hit["score"]) < 0.01 for hit in before[1] if hit["id"] in scores)
