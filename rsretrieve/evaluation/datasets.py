"""Readers for the test splits of the remote-sensing image-text retrieval benchmarks (docs/architecture.md §6).

Four annotation formats are read, recognised by content:

- ``karpathy``: JSON ``{"images": [{"filename", "split", "sentences": [{"raw"}]}]}``
  (``dataset_rsicd.json``, ``dataset_RSITMD.json``, ``sydney.json``); the requested split is selected.
- ``coco``: COCO-captions JSON ``{"images": [{"id", "file_name"}],
  "annotations": [{"image_id", "caption"}]}``.
- ``csv``: a header ``filename,title`` (comma- or tab-separated), one caption per row (GeoRSCLIP's format).
- ``precomp``: ``{split}_caps.txt`` and ``{split}_filename.txt``, one caption and its image per line (AMFMN).

For the last three the whole file is the split. Captions are stripped and ``str.capitalize()``d as
RemoteCLIP's evaluation does; images keep their order of first appearance, captions their file order.
"""

import csv
import io
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rsretrieve.errors import UserError

FORMATS = ("karpathy", "csv", "precomp", "coco")
_CAPS, _NAMES = "_caps.txt", "_filename.txt"

Pairs = list[tuple[str, str]]
"""(image file name, caption) in file order."""


class BenchmarkError(UserError):
    """One-line, user-facing problem with a benchmark's files."""


@dataclass(frozen=True)
class DatasetInfo:
    """A benchmark: its annotation file names (``{split}`` filled in, globs allowed) and test-split size."""

    name: str
    title: str
    annotation_names: tuple[str, ...]
    test_images: int
    test_captions: int


_GENERIC_NAMES = ("dataset.json", "{split}_caps.txt", "*_{split}.csv", "*_{split}.json")
"""Tried after a dataset's own names: Karpathy, precomp pair, any CSV, any COCO JSON of the split."""

DATASETS: dict[str, DatasetInfo] = {
    "rsitmd": DatasetInfo(
        "rsitmd",
        "RSITMD",
        (
            "dataset_RSITMD.json",
            "dataset_rsitmd.json",
            "rsitmd_{split}.csv",
            *_GENERIC_NAMES,
        ),
        test_images=452,
        test_captions=2260,
    ),
    "rsicd": DatasetInfo(
        "rsicd",
        "RSICD",
        (
            "dataset_rsicd.json",
            "dataset_RSICD.json",
            "rsicd_{split}.csv",
            *_GENERIC_NAMES,
        ),
        test_images=1093,
        test_captions=5465,
    ),
    "ucm": DatasetInfo(
        "ucm",
        "UCM-captions",
        (
            "dataset_ucm.json",
            "ucm_{split}.csv",
            "ucm_rsc_{split}.json",
            *_GENERIC_NAMES,
        ),
        test_images=210,
        test_captions=1050,
    ),
    "sydney": DatasetInfo(
        "sydney",
        "Sydney-captions",
        ("sydney.json", "dataset_sydney.json", "sydney_{split}.csv", *_GENERIC_NAMES),
        test_images=58,
        test_captions=290,
    ),
}


@dataclass(frozen=True, eq=False)
class RetrievalSplit:
    """One split of a benchmark: its images, captions and the image of each caption."""

    dataset: str
    split: str
    annotation_file: Path
    annotation_format: str
    image_files: tuple[str, ...]
    image_paths: tuple[Path | None, ...]
    captions: tuple[str, ...]
    text_to_image: np.ndarray

    @property
    def missing(self) -> list[str]:
        """Image file names not found below the root."""
        return [name for name, path in zip(self.image_files, self.image_paths, strict=True) if path is None]


def load_split(dataset: str, root: Path, annotations: Path | None = None, split: str = "test") -> RetrievalSplit:
    """Read a benchmark split; images are looked up by file name anywhere below ``root``.

    Without ``annotations``, the dataset's known annotation files are looked for in ``root`` and one
    folder below it.
    """
    info = DATASETS.get(dataset.lower())
    if info is None:
        raise BenchmarkError(f"unknown dataset {dataset!r}; known: {', '.join(sorted(DATASETS))}")
    root = Path(root)
    if not root.is_dir():
        raise BenchmarkError(f"benchmark root {root} is not a folder")
    path = Path(annotations) if annotations is not None else find_annotations(info, root, split)
    fmt, content = _sniff(path)
    pairs = _PARSERS[fmt](path, content, split)
    return _build(info.name, split, path, fmt, pairs, root)


def find_annotations(info: DatasetInfo, root: Path, split: str = "test") -> Path:
    """Return the first of the dataset's annotation names found in ``root`` or one folder below."""
    patterns = [name.format(split=split) for name in info.annotation_names]
    for pattern in patterns:
        matches = sorted(root.glob(pattern)) or sorted(root.glob(f"*/{pattern}"))
        if len(matches) > 1:
            found = ", ".join(str(m) for m in matches)
            raise BenchmarkError(f"several {info.title} annotation files match {pattern}: {found}; pass one explicitly")
        if matches:
            return matches[0]
    raise BenchmarkError(
        f"no {info.title} annotation file in {root} or its subfolders; looked for {', '.join(patterns)}"
    )


def detect_format(path: Path) -> str:
    """Return the annotation format of a file (one of ``FORMATS``), judged by its content."""
    return _sniff(Path(path))[0]


def _sniff(path: Path) -> tuple[str, Any]:
    """Return the format and the parsed JSON, the text, or the (captions, file names) paths."""
    text = _read_text(path)
    if text.lstrip()[:1] in ("{", "["):
        data = _parse_json(path, text)
        return _json_format(path, data), data
    if _csv_delimiter(text) is not None:
        return "csv", text
    pair = _precomp_pair(path)
    if pair is not None:
        return "precomp", pair
    raise BenchmarkError(
        f"cannot tell the format of {path}: expected Karpathy or COCO-captions JSON, CSV with a "
        "filename,title header, or a {split}_caps.txt / {split}_filename.txt pair"
    )


def _read_text(path: Path) -> str:
    """Read a UTF-8 text file (BOM tolerated), as a BenchmarkError when that fails."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise BenchmarkError(f"annotation file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise BenchmarkError(f"cannot read annotation file {path}: {error}") from None


def _parse_json(path: Path, text: str) -> Any:
    """Parse JSON text, as a BenchmarkError when invalid."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise BenchmarkError(f"{path} is not valid JSON: {error}") from None


def _json_format(path: Path, data: Any) -> str:
    """Tell Karpathy from COCO-captions JSON."""
    images = data.get("images") if isinstance(data, dict) else None
    if isinstance(images, list) and isinstance(data.get("annotations"), list):
        return "coco"
    if isinstance(images, list) and all(isinstance(image, dict) and "sentences" in image for image in images):
        return "karpathy"
    raise BenchmarkError(
        f"{path} is JSON but neither Karpathy (images[].sentences) nor COCO captions (images + annotations)"
    )


def _csv_delimiter(text: str) -> str | None:
    """The delimiter (tab or comma) of a ``filename,title`` header line, or None without one."""
    header = text.partition("\n")[0]
    for delimiter in ("\t", ","):
        columns = {column.strip().lower() for column in header.split(delimiter)}
        if {"filename", "title"} <= columns:
            return delimiter
    return None


def _precomp_pair(path: Path) -> tuple[Path, Path] | None:
    """The (captions, file names) pair that ``path`` belongs to, or None if it is not named as one."""
    if path.name.endswith(_CAPS):
        return path, path.with_name(path.name.removesuffix(_CAPS) + _NAMES)
    if path.name.endswith(_NAMES):
        return path.with_name(path.name.removesuffix(_NAMES) + _CAPS), path
    return None


def _karpathy_pairs(path: Path, data: dict, split: str) -> Pairs:
    """Pairs of the images whose ``split`` matches."""
    selected = [image for image in data["images"] if image.get("split") == split]
    if not selected:
        present = sorted({str(image.get("split")) for image in data["images"]})
        raise BenchmarkError(
            f"no images in the {split!r} split of {path} (splits present: {', '.join(present) or 'none'})"
        )
    try:
        return [(image["filename"], sentence["raw"]) for image in selected for sentence in image["sentences"]]
    except (KeyError, TypeError) as error:
        raise BenchmarkError(f"{path}: a Karpathy image lacks filename or sentences[].raw ({error!r})") from None


def _coco_pairs(path: Path, data: dict, split: str) -> Pairs:
    """Pairs in annotation order."""
    try:
        names = {image["id"]: image["file_name"] for image in data["images"]}
        return [(names[note["image_id"]], note["caption"]) for note in data["annotations"]]
    except (KeyError, TypeError) as error:
        raise BenchmarkError(f"{path}: COCO image id, file_name, image_id or caption missing ({error!r})") from None


def _csv_pairs(path: Path, text: str, split: str) -> Pairs:
    """Pairs from the ``filename`` and ``title`` columns."""
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=_csv_delimiter(text))
    reader.fieldnames = [name.strip().lower() for name in reader.fieldnames or ()]
    pairs = []
    for row in reader:
        if row["filename"] is None or row["title"] is None:
            raise BenchmarkError(f"{path} line {reader.line_num}: expected a filename and a title")
        pairs.append((row["filename"], row["title"]))
    return pairs


def _precomp_pairs(path: Path, pair: tuple[Path, Path], split: str) -> Pairs:
    """Pairs from the same line of the captions file and the file-names file."""
    captions, names = (_read_text(part).rstrip().splitlines() for part in pair)
    if len(captions) != len(names):
        raise BenchmarkError(f"{pair[0]} has {len(captions)} lines but {pair[1]} has {len(names)}; they must match")
    return list(zip(names, captions, strict=True))


_PARSERS = {
    "karpathy": _karpathy_pairs,
    "coco": _coco_pairs,
    "csv": _csv_pairs,
    "precomp": _precomp_pairs,
}


def _build(dataset: str, split: str, path: Path, fmt: str, pairs: Pairs, root: Path) -> RetrievalSplit:
    """Group pairs by image (first-appearance order) and resolve the image files."""
    if not pairs:
        raise BenchmarkError(f"no images in the {split!r} split of {path}")
    rows: dict[str, int] = {}
    captions, text_to_image = [], []
    for name, caption in pairs:
        if not isinstance(name, str) or not isinstance(caption, str) or not name.strip():
            raise BenchmarkError(f"{path}: bad entry (image {name!r}, caption {caption!r})")
        text_to_image.append(rows.setdefault(name.strip(), len(rows)))
        captions.append(caption.strip().capitalize())
    files = tuple(rows)
    found = _find_images(root, {Path(name).name for name in files})
    ids = np.array(text_to_image, dtype=np.int64)
    ids.setflags(write=False)
    return RetrievalSplit(
        dataset,
        split,
        path,
        fmt,
        files,
        tuple(found.get(Path(name).name) for name in files),
        tuple(captions),
        ids,
    )


def _find_images(root: Path, names: Iterable[str]) -> dict[str, Path]:
    """Map each wanted base name to a file below ``root`` (one walk; the shallowest copy wins)."""
    wanted = set(names)
    found: dict[str, Path] = {}
    for folder, subfolders, files in os.walk(root):
        subfolders.sort()
        depth = len(Path(folder).parts)
        for name in wanted.intersection(files):
            if name not in found or depth < len(found[name].parent.parts):
                found[name] = Path(folder) / name
    return found
