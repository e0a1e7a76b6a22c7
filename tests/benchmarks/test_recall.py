"""benchmarks/recall.py: a synthetic Sydney run with the tiny random model, and its dataset folders."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rsretrieve.evaluation.datasets import BenchmarkError
from rsretrieve.evaluation.references import KEYS

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "recall.py"
BENCHMARKS = SCRIPT.parents[2] / "shared" / "data" / "benchmarks"


@pytest.fixture(scope="module")
def recall():
    """The benchmark script as a module."""
    spec = importlib.util.spec_from_file_location("recall_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_synthetic_sydney_run_writes_json_and_table(tmp_path, shared_data):
    command = [
        sys.executable, str(SCRIPT), "--synthetic", "sydney", "--models", "tiny-test", "--random-weights",
        "--device", "cpu", "--out-dir", str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "recall-sydney-synthetic-cpu.json").read_text())
    assert (result["dataset"], result["images"], result["captions"]) == ("sydney", 58, 290)
    assert result["synthetic_images"] is True
    assert result["host"]["cpus"] >= 1
    assert set(result["exact"]) == set(result["ann"]) == set(KEYS)
    assert {"load_model", "images", "captions", "ann_search", "total"} <= set(result["seconds"])
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "| dataset | model | numbers | " + " | ".join(KEYS) + " |"
    assert [line.split("|")[1:4] for line in lines[2:]] == [
        [" sydney ", " tiny-test ", " exact "],
        [" sydney ", " tiny-test ", " ann (flat) "],
    ]


def test_dataset_folder_is_found_by_name_or_title(recall, tmp_path):
    for name in ("RSITMD", "ucm-captions", "other"):
        (tmp_path / name).mkdir()
    assert recall.dataset_root(tmp_path, "rsitmd") == tmp_path / "RSITMD"
    assert recall.dataset_root(tmp_path, "ucm") == tmp_path / "ucm-captions"
    with pytest.raises(BenchmarkError, match="no folder for rsicd"):
        recall.dataset_root(tmp_path, "rsicd")


@pytest.mark.parametrize(
    "argv",
    [
        ["--datasets", "rsicd", "--models", "tiny-test"],
        ["--synthetic", "rsicd", "--models", "tiny-test", "remoteclip-vit-b-32"],
        ["--datasets", "nope", "--root-dir", ".", "--models", "tiny-test"],
    ],
)
def test_bad_arguments_are_refused(recall, argv):
    with pytest.raises(SystemExit) as exit_info:
        recall.parse_args(argv)
    assert exit_info.value.code == 2
