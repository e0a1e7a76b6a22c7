"""Tests for rsretrieve.evaluation.datasets: the real benchmark caption files and small synthetic ones."""

import json
from pathlib import Path

import numpy as np
import pytest

from rsretrieve.evaluation.datasets import DATASETS, BenchmarkError, detect_format, load_split

BENCHMARKS = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "benchmarks"

needs_benchmarks = pytest.mark.usefixtures("shared_data")  # skips without ../shared (fails in CI)


def check_counts(split, dataset: str) -> None:
    """The split has the published test-set size and consistent arrays."""
    info = DATASETS[dataset]
    assert len(split.image_files) == len(split.image_paths) == info.test_images
    assert len(split.captions) == len(split.text_to_image) == info.test_captions
    assert split.text_to_image.dtype == np.int64
    assert np.array_equal(np.unique(split.text_to_image), np.arange(info.test_images))
    assert all(caption and caption == caption.strip().capitalize() for caption in split.captions)


def captions_by_image(split) -> dict[str, list[str]]:
    """Each image file name with its captions, lowercased, in file order."""
    grouped: dict[str, list[str]] = {name: [] for name in split.image_files}
    for caption, row in zip(split.captions, split.text_to_image, strict=True):
        grouped[split.image_files[row]].append(caption.lower())
    return grouped


@needs_benchmarks
@pytest.mark.parametrize("dataset", ["rsitmd", "rsicd"])
def test_precomp_and_csv_agree(dataset):
    folder = BENCHMARKS / dataset
    precomp = load_split(dataset, folder, folder / "test_caps.txt")
    table = load_split(dataset, folder, folder / f"{dataset}_test.csv")
    assert (precomp.annotation_format, table.annotation_format) == ("precomp", "csv")
    check_counts(precomp, dataset)
    check_counts(table, dataset)
    assert captions_by_image(precomp) == captions_by_image(table)
    # RSICD lists the images in the same order in both files; RSITMD's CSV orders them differently.
    assert (precomp.image_files == table.image_files) == (dataset == "rsicd")


@needs_benchmarks
def test_precomp_pair_can_be_named_by_its_filename_file():
    folder = BENCHMARKS / "rsitmd"
    split = load_split("rsitmd", folder, folder / "test_filename.txt")
    assert split.annotation_format == "precomp"
    assert split.image_files[0] == "boat_0.tif"
    assert split.captions[0] == "Two large ships loaded with cargo were moored on both sides of the gray port."


@needs_benchmarks
def test_ucm_coco_and_csv_agree():
    folder = BENCHMARKS / "ucm"
    coco = load_split("ucm", folder, folder / "ucm_rsc_test.json")
    table = load_split("ucm", folder, folder / "ucm_test.csv")
    assert (coco.annotation_format, table.annotation_format) == ("coco", "csv")
    check_counts(coco, "ucm")
    assert coco.image_files == table.image_files
    assert coco.captions == table.captions
    assert coco.captions[0] == "There is a piece of farmland ."


@needs_benchmarks
def test_sydney_karpathy_test_split():
    split = load_split("sydney", BENCHMARKS / "sydney")
    assert split.annotation_format == "karpathy"
    assert split.annotation_file.name == "sydney.json"
    check_counts(split, "sydney")
    assert split.image_files[0] == "219.tif"
    assert len(load_split("sydney", BENCHMARKS / "sydney", split="train").image_files) == 497


@needs_benchmarks
@pytest.mark.parametrize(("dataset", "expected"), [("rsitmd", "rsitmd_test.csv"), ("ucm", "ucm_test.csv")])
def test_annotation_file_found_in_root_or_one_below(dataset, expected):
    assert load_split(dataset, BENCHMARKS / dataset).annotation_file.name == expected
    assert load_split(dataset, BENCHMARKS, split="test").annotation_file == BENCHMARKS / dataset / expected


def test_ambiguous_annotations_one_level_below_are_refused(tmp_path):
    for folder in ("rsitmd_precomp", "rsicd_precomp"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "test_caps.txt").write_text("a caption\n")
        (tmp_path / folder / "test_filename.txt").write_text("a.tif\n")
    with pytest.raises(BenchmarkError, match=r"several RSITMD annotation files match test_caps\.txt"):
        load_split("rsitmd", tmp_path)
    assert load_split("rsitmd", tmp_path / "rsitmd_precomp").captions == ("A caption",)


@needs_benchmarks
@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("rsitmd/test_caps.txt", "precomp"),
        ("rsicd/test_filename.txt", "precomp"),
        ("rsicd/rsicd_test.csv", "csv"),
        ("ucm/ucm_rsc_test.json", "coco"),
        ("sydney/sydney.json", "karpathy"),
    ],
)
def test_detect_format_of_real_files(path, expected):
    assert detect_format(BENCHMARKS / path) == expected


def karpathy(images: list[tuple[str, str, list[str]]]) -> dict:
    """A Karpathy-format document from (file name, split, captions)."""
    return {
        "images": [
            {"filename": name, "split": split, "sentences": [{"raw": raw} for raw in raws]}
            for name, split, raws in images
        ]
    }


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A benchmark root with a Karpathy file and some of its images in nested folders."""
    document = karpathy(
        [
            ("b.jpg", "test", ["  two planes . ", "A RUNWAY"]),
            ("a.jpg", "train", ["ignored"]),
            ("c.jpg", "test", ["a river"]),
            ("d.jpg", "test", ["a bridge"]),
        ]
    )
    (tmp_path / "dataset_rsicd.json").write_text(json.dumps(document))
    (tmp_path / "RSICD_images" / "deeper").mkdir(parents=True)
    (tmp_path / "RSICD_images" / "b.jpg").touch()
    (tmp_path / "RSICD_images" / "deeper" / "b.jpg").touch()
    (tmp_path / "RSICD_images" / "deeper" / "d.jpg").touch()
    return tmp_path


def test_images_resolved_anywhere_below_root(root):
    split = load_split("RSICD", root)
    assert split.dataset == "rsicd"
    assert split.image_files == ("b.jpg", "c.jpg", "d.jpg")
    assert split.image_paths == (
        root / "RSICD_images" / "b.jpg",
        None,
        root / "RSICD_images" / "deeper" / "d.jpg",
    )
    assert split.missing == ["c.jpg"]
    assert split.captions == ("Two planes .", "A runway", "A river", "A bridge")
    assert split.text_to_image.tolist() == [0, 0, 1, 2]


def test_interleaved_captions_keep_file_order(tmp_path):
    (tmp_path / "x_test.csv").write_text('filename\ttitle\nb.tif\tone\na.tif\t"two, quoted"\nb.tif\tthree\n')
    split = load_split("ucm", tmp_path)
    assert split.annotation_format == "csv"
    assert split.image_files == ("b.tif", "a.tif")
    assert split.captions == ("One", "Two, quoted", "Three")
    assert split.text_to_image.tolist() == [0, 1, 0]
    assert split.missing == ["b.tif", "a.tif"]


def test_format_detected_by_content_not_extension(tmp_path):
    (tmp_path / "notes.txt").write_text("filename,title\na.jpg,a caption\n")
    (tmp_path / "captions.dat").write_text(json.dumps({"images": [], "annotations": []}))
    (tmp_path / "karpathy.csv").write_text(json.dumps(karpathy([("a.jpg", "test", ["x"])])))
    assert detect_format(tmp_path / "notes.txt") == "csv"
    assert detect_format(tmp_path / "captions.dat") == "coco"
    assert detect_format(tmp_path / "karpathy.csv") == "karpathy"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("plain.txt", "just some text\n", "cannot tell the format"),
        ("other.json", json.dumps({"data": []}), "neither Karpathy"),
        ("broken.json", "{not json", "not valid JSON"),
        ("missing.json", None, "does not exist"),
    ],
)
def test_unknown_or_unreadable_formats_raise(tmp_path, name, content, message):
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(BenchmarkError, match=message):
        detect_format(tmp_path / name)


def test_unknown_dataset_lists_known_ones(tmp_path):
    with pytest.raises(BenchmarkError, match="unknown dataset 'coco'; known: rsicd, rsitmd, sydney, ucm"):
        load_split("coco", tmp_path)


def test_missing_annotations_name_what_was_looked_for(tmp_path):
    with pytest.raises(BenchmarkError, match=r"looked for dataset_RSITMD\.json, .*rsitmd_test\.csv.*test_caps\.txt"):
        load_split("rsitmd", tmp_path)


def test_missing_root_raises(tmp_path):
    with pytest.raises(BenchmarkError, match="not a folder"):
        load_split("rsitmd", tmp_path / "absent")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("dataset_rsicd.json", json.dumps(karpathy([("a.jpg", "train", ["x"])]))),
        ("rsicd_test.csv", "filename,title\n"),
        ("coco_test.json", json.dumps({"images": [], "annotations": []})),
    ],
)
def test_empty_split_raises(tmp_path, name, content):
    (tmp_path / name).write_text(content)
    with pytest.raises(BenchmarkError, match="no images in the 'test' split"):
        load_split("rsicd", tmp_path)


def test_precomp_line_count_mismatch_raises(tmp_path):
    (tmp_path / "test_caps.txt").write_text("a\nb\nc\n")
    (tmp_path / "test_filename.txt").write_text("1.tif\n2.tif\n")
    with pytest.raises(BenchmarkError, match=r"3 lines but .* has 2"):
        load_split("rsitmd", tmp_path)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "dataset_rsicd.json",
            json.dumps({"images": [{"split": "test", "sentences": [{"raw": "x"}]}]}),
            "filename",
        ),
        ("c_test.json", json.dumps({"images": [{"id": 1}], "annotations": [{"image_id": 1}]}), "COCO"),
        ("rsicd_test.csv", "filename,title\na.jpg\n", "line 2"),
    ],
)
def test_malformed_entries_raise(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(BenchmarkError, match=message):
        load_split("rsicd", tmp_path)


def test_split_is_frozen(root):
    split = load_split("rsicd", root)
    with pytest.raises(AttributeError):
        split.captions = ()
    with pytest.raises(ValueError):
        split.text_to_image[0] = 5
