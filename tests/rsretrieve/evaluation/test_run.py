"""``rsretrieve eval`` end to end: the Sydney test split with synthetic images and the tiny random model."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rsretrieve.cli import main
from rsretrieve.evaluation.datasets import load_split
from rsretrieve.evaluation.references import KEYS, compare_with_published
from rsretrieve.evaluation.run import markdown_table, write_synthetic_images

SYDNEY = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "benchmarks" / "sydney" / "sydney.json"
MODEL = ["--model", "tiny-test", "--random-weights", "--device", "cpu"]
RESULT_KEYS = {
    "dataset", "split", "annotation_file", "annotation_format", "images", "captions", "missing_images",
    "standard_counts", "model", "architecture", "checkpoint", "device", "seconds", "exact", "ann", "ann_index",
    "ann_loss", "ann_note", "published", "note",
}  # fmt: skip

needs_sydney = pytest.mark.usefixtures("shared_data")  # skips without ../shared (fails in CI)


def sydney_folder(folder: Path, skip: int = 0) -> Path:
    """Sydney's annotations with 64 px synthetic images, all but the first ``skip`` of the test split."""
    split = load_split("sydney", SYDNEY.parent)
    write_synthetic_images(split.image_files[skip:], folder / "images", size=64)
    shutil.copy(SYDNEY, folder / "sydney.json")
    return folder


def run_eval(*args: str) -> subprocess.CompletedProcess:
    """``rsretrieve eval ARGS`` in a fresh interpreter."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "rsretrieve.cli", "eval", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)


def check_numbers(numbers: dict) -> None:
    """The seven recalls, each a percentage."""
    assert set(numbers) == set(KEYS)
    assert all(0 <= value <= 100 for value in numbers.values())


@needs_sydney
def test_eval_sydney_end_to_end(tmp_path):
    root = sydney_folder(tmp_path / "sydney")
    out = tmp_path / "result.json"
    done = run_eval("--dataset", "sydney", "--root", str(root), "--index", "both", "--out", str(out), *MODEL)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "embedding images" in done.stderr
    result = json.loads(out.read_text())
    assert set(result) >= RESULT_KEYS
    assert (result["images"], result["captions"]) == (58, 290)
    assert result["standard_counts"] == {"images": 58, "captions": 290}
    assert result["missing_images"] == {"count": 0, "first": []}
    assert (result["annotation_format"], result["model"]) == ("karpathy", "tiny-test")
    assert (result["checkpoint"], result["device"]) == ("random-seed0", "cpu")
    check_numbers(result["exact"])
    check_numbers(result["ann"])
    assert all(result["ann"][key] == result["exact"][key] for key in KEYS if key.startswith("i2t"))
    assert result["ann_index"]["index_type"] == "flat"  # 58 images are too few for IVF-PQ
    assert result["ann_loss"] == pytest.approx(dict.fromkeys(["t2i_R@1", "t2i_R@5", "t2i_R@10"], 0.0))
    assert result["published"] is None and "random weights" in result["note"]
    assert {"images", "captions", "exact", "ann_build", "ann_search", "total"} <= set(result["seconds"])
    table = done.stdout.strip().splitlines()
    assert table[0].startswith("| dataset | model | numbers | i2t_R@1")
    assert [row.split("|")[3].strip() for row in table[2:]] == ["exact", "ann (flat)"]


@needs_sydney
def test_missing_images_refused_then_allowed(tmp_path, capsys):
    root = sydney_folder(tmp_path / "sydney", skip=3)
    refused = run_eval("--dataset", "sydney", "--root", str(root), *MODEL)
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines() == [
        f"error: 3 of 58 images named in {root / 'sydney.json'} were not found (first: 219.tif, 220.tif, 221.tif); "
        "pass --allow-missing to evaluate without them and their captions"
    ]
    out = tmp_path / "result.json"
    args = ["eval", "--dataset", "sydney", "--root", str(root), "--allow-missing", "--index", "exact"]
    assert main([*args, "--out", str(out), *MODEL]) == 0
    result = json.loads(out.read_text())
    assert (result["images"], result["captions"]) == (55, 275)
    assert result["missing_images"] == {"count": 3, "first": ["219.tif", "220.tif", "221.tif"]}
    assert result["ann"] is None and result["ann_loss"] is None
    check_numbers(result["exact"])
    assert "not comparable" in result["note"]
    assert "warning: 3 of 58 images" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("dataset", "annotation", "message"),
    [
        ("nope", None, "error: unknown dataset 'nope'"),
        ("rsicd", "captions.txt", "error: cannot tell the format of"),
        ("sydney", "sydney.json", "error: no images in the 'test' split"),
    ],
)
def test_bad_input_is_one_error_line(tmp_path, dataset, annotation, message):
    (tmp_path / "captions.txt").write_text("just some text\n")
    only_train = {"images": [{"filename": "1.tif", "split": "train", "sentences": [{"raw": "a caption"}]}]}
    (tmp_path / "sydney.json").write_text(json.dumps(only_train))
    extra = ["--annotations", str(tmp_path / annotation)] if annotation else []
    done = run_eval("--dataset", dataset, "--root", str(tmp_path), *extra, *MODEL)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), done.stderr


def test_markdown_table_shows_published_numbers_and_difference():
    measured = dict.fromkeys(KEYS, 20.0)
    result = {
        "dataset": "rsicd",
        "model": "remoteclip-vit-b-32",
        "exact": measured,
        "ann": None,
        "published": compare_with_published("remoteclip-vit-b-32", "rsicd", measured),
    }
    rows = markdown_table([result]).splitlines()[2:]
    assert [row.split("|")[3].strip() for row in rows] == ["exact", "published", "exact − published"]
    assert "| 17.02 |" in rows[1] and "| 2.98 |" in rows[2]


@needs_sydney
def test_eval_through_an_ivfpq_index(tmp_path, shared_data):
    """RSITMD's 452 test images are enough to train IVF-PQ: the ann numbers go through the product's IVF-PQ path."""
    captions = shared_data / "benchmarks" / "rsitmd" / "rsitmd_test.csv"
    split = load_split("rsitmd", tmp_path, captions)
    write_synthetic_images(split.image_files, tmp_path / "images", size=32)
    out = tmp_path / "result.json"
    args = ["--dataset", "rsitmd", "--root", str(tmp_path), "--annotations", str(captions), "--index", "both"]
    done = run_eval(*args, "--ann-index", "ivfpq", "--nprobe", "2", "--out", str(out), *MODEL)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert (result["images"], result["captions"]) == (452, 2260)
    assert result["ann_index"]["index_type"] == "ivfpq" and result["ann_index"]["nprobe"] == 2
    check_numbers(result["ann"])
    assert all(result["ann"][key] == result["exact"][key] for key in KEYS if key.startswith("i2t"))
    assert [row.split("|")[3].strip() for row in done.stdout.strip().splitlines()[2:]] == ["exact", "ann (ivfpq)"]
