"""``rsretrieve eval``: recall@k of a model on a retrieval benchmark, exact and through the product's index.

Images go through the batched DataLoader pipeline (``rsretrieve.embedding``), captions through ``encode_text`` in
batches; recall follows the evaluation protocol of docs/architecture.md (``retrieval_metrics``). ``ann`` numbers
send every caption's embedding through ``Searcher.search`` over a temporary index of the benchmark images, the
code path of ``rsretrieve query``; only text→image goes through the index, so ``ann``'s i2t numbers are the exact ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rsretrieve import ann
from rsretrieve.chips import Chip, Window
from rsretrieve.evaluation.datasets import DATASETS, BenchmarkError, RetrievalSplit
from rsretrieve.evaluation.metrics import recall_from_ranked_ids, retrieval_metrics
from rsretrieve.evaluation.references import KEYS, SOURCES, compare_with_published
from rsretrieve.models import EmbeddingModel
from rsretrieve.query import Query

if TYPE_CHECKING:
    from rsretrieve.search import Searcher

KS = (1, 5, 10)
T2I_KEYS = tuple(f"t2i_R@{k}" for k in KS)
TEXT_BATCH = 256
MISSING_SHOWN = 5
INDEX_MODES = ("exact", "ann", "both")
log = logging.getLogger(__name__)
ANN_NOTE = "only text→image goes through the index: ann's i2t numbers are the exact ones, its mR mixes both"


@dataclass(frozen=True)
class EvalOptions:
    """How to run one evaluation: which numbers, which ANN index, how to embed."""

    index: str = "both"
    ann_index: str = "ivfpq"
    nprobe: int | None = None
    batch_size: int | None = None  # by device: rsretrieve.embedding.default_batch_size
    workers: int | None = None
    progress: bool = True


class Phases:
    """Wall time of named phases and of the whole run, in seconds."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        """Time the enclosed block as ``name``."""
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 3)

    def summary(self) -> dict[str, float]:
        """Each phase and ``total`` since creation."""
        return {**self.seconds, "total": round(time.perf_counter() - self.started, 3)}


def usable_split(split: RetrievalSplit, allow_missing: bool) -> RetrievalSplit:
    """The split, or with ``allow_missing`` its images present on disk; missing images are refused otherwise."""
    missing = split.missing
    if not missing:
        return split
    total = len(split.image_files)
    summary = (
        f"{len(missing)} of {total} images named in {split.annotation_file} were not found "
        f"(first: {', '.join(missing[:MISSING_SHOWN])})"
    )
    if len(missing) == total:
        raise BenchmarkError(f"{summary}: is --root the folder holding the benchmark's images?")
    if not allow_missing:
        raise BenchmarkError(f"{summary}; pass --allow-missing to evaluate without them and their captions")
    log.warning("%s; evaluating without them and their captions", summary)
    return present_only(split)


def present_only(split: RetrievalSplit) -> RetrievalSplit:
    """The split restricted to the images found on disk and their captions."""
    found = np.array([path is not None for path in split.image_paths])
    kept = found[split.text_to_image]
    new_row = np.cumsum(found) - 1
    return dataclasses.replace(
        split,
        image_files=tuple(itertools.compress(split.image_files, found)),
        image_paths=tuple(itertools.compress(split.image_paths, found)),
        captions=tuple(itertools.compress(split.captions, kept)),
        text_to_image=new_row[split.text_to_image[kept]],
    )


def evaluate(
    split: RetrievalSplit,
    model: EmbeddingModel,
    options: EvalOptions,
    phases: Phases | None = None,
    missing: Sequence[str] = (),
) -> dict[str, Any]:
    """Embed a split (see ``usable_split``), compute the asked recalls and return the result record.

    ``missing`` names the images left out of the split because they were not found.
    """
    if options.index not in INDEX_MODES:
        raise BenchmarkError(f"unknown index mode {options.index!r}; use {', '.join(INDEX_MODES)}")
    phases = phases or Phases()
    with phases("images"):
        image_emb = embed_images(model, split.image_paths, options)
    with phases("captions"):
        text_emb = embed_captions(model, split.captions, options.progress)
    with phases("exact"):
        exact = retrieval_metrics(image_emb, text_emb, split.text_to_image, KS)
    ann_result = None
    if options.index != "exact":
        ann_result = ann_metrics(split, model, image_emb, text_emb, exact, options, phases)
    return result_record(split, model, exact if options.index != "ann" else None, ann_result, phases, missing)


def embed_images(model: EmbeddingModel, paths: Sequence[Path | None], options: EvalOptions) -> np.ndarray:
    """(n_images, dim) embeddings through the indexer's batched DataLoader pipeline; undecodable files are fatal."""
    from rsretrieve.embedding import ImageFilePixels, embed_dataset

    vectors = np.empty((len(paths), model.dim), np.float32)
    failed: dict[int, str] = {}
    dataset = ImageFilePixels(paths, model.image_size)
    with _bar(len(paths), "embedding images", "img", options.progress) as bar:
        for batch in embed_dataset(model, dataset, options.batch_size, options.workers, bar):
            vectors[batch.indices] = batch.vectors
            failed.update(batch.statuses)
    if failed:
        first = failed[min(failed)]
        raise BenchmarkError(f"{len(failed)} benchmark images cannot be decoded (first: {first})")
    return vectors


def embed_captions(model: EmbeddingModel, captions: Sequence[str], progress: bool = True) -> np.ndarray:
    """(n_captions, dim) embeddings, ``TEXT_BATCH`` captions at a time.

    Each distinct caption is embedded once (RSICD repeats 39 % of its captions), so repeated captions get
    identical vectors, as ``retrieval_metrics``'s tie rule assumes.
    """
    distinct = list(dict.fromkeys(captions))
    parts = [np.empty((0, model.dim), np.float32)]
    with _bar(len(distinct), "embedding captions", "caption", progress) as bar:
        for start in range(0, len(distinct), TEXT_BATCH):
            chunk = distinct[start : start + TEXT_BATCH]
            parts.append(model.encode_text(chunk))
            bar.update(len(chunk))
    row = {caption: position for position, caption in enumerate(distinct)}
    return np.concatenate(parts)[[row[caption] for caption in captions]]


def _bar(total: int, desc: str, unit: str, enabled: bool) -> Any:
    """A tqdm progress bar on stderr."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not enabled)


def ann_metrics(
    split: RetrievalSplit,
    model: EmbeddingModel,
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    exact: dict[str, float],
    options: EvalOptions,
    phases: Phases,
) -> dict[str, Any]:
    """Recall with t2i through a temporary product index of the benchmark images; i2t copied from ``exact``."""
    from rsretrieve.search import Searcher

    with tempfile.TemporaryDirectory(prefix="rsretrieve-eval-") as folder:
        db = Path(folder) / "index"
        with phases("ann_build"):
            build_index(db, split, model, image_emb, options)
        searcher = Searcher(db, model=model)
        with phases("ann_search"):
            ranked = ranked_images(searcher, split, text_emb, options.progress)
        described = ann.describe(searcher.store.index)
    t2i = recall_from_ranked_ids(ranked, split.text_to_image, KS)
    numbers = {key: exact[key] for key in KEYS if key.startswith("i2t")}
    numbers |= {f"t2i_R@{k}": value for k, value in t2i.items()}
    numbers["mR"] = float(np.mean([numbers[key] for key in KEYS if key != "mR"]))
    return {"numbers": numbers, "index": described}


def build_index(
    db: Path, split: RetrievalSplit, model: EmbeddingModel, image_emb: np.ndarray, options: EvalOptions
) -> None:
    """Write the benchmark images into a fresh product index at ``db`` in one committed batch.

    One batch trains the FAISS index on all vectors; ``StoreWriter.finish`` is not needed (it only
    retrains an outgrown index and builds the scalar indexes used by filters).
    """
    from rsretrieve.store import StoreWriter

    settings = ann.AnnSettings(kind=options.ann_index, nprobe=options.nprobe)  # tiny splits stay flat
    writer = StoreWriter.open(db, model, settings, rebuild=True)
    try:
        chips = [image_chip(name, path) for name, path in zip(split.image_files, split.image_paths, strict=True)]
        writer.append(chips, image_emb, new_files=len(chips))
    finally:
        writer.close()


def image_id(name: str) -> str:
    """Stable 16-hex id of a benchmark image."""
    return hashlib.sha256(name.encode()).hexdigest()[:16]


def image_chip(name: str, path: Path | None) -> Chip:
    """The chip record of a benchmark image: the whole file, no georeference (the window is not used)."""
    return Chip(image_id(name), str(path), Window(0, 0, 0, 0))


def ranked_images(searcher: Searcher, split: RetrievalSplit, text_emb: np.ndarray, progress: bool) -> np.ndarray:
    """(n_captions, max k) image rows returned by ``Searcher.search`` for each caption, -1 padded."""
    row_of = {image_id(name): row for row, name in enumerate(split.image_files)}
    ranked = np.full((len(text_emb), max(KS)), -1, dtype=np.int64)
    with _bar(len(text_emb), "searching the index", "query", progress) as bar:
        for query, vector in enumerate(text_emb):
            results = searcher.search(Query.build(vectors=[vector], k=max(KS)))
            rows = [row_of[hit.chip.id] for hit in results]
            ranked[query, : len(rows)] = rows
            bar.update()
    return ranked


def result_record(
    split: RetrievalSplit,
    model: EmbeddingModel,
    exact: dict[str, float] | None,
    ann_result: dict[str, Any] | None,
    phases: Phases,
    missing: Sequence[str],
) -> dict[str, Any]:
    """The JSON-ready result of one evaluation."""
    measured = exact or ann_result["numbers"]
    random_weights = model.random_weights
    return {
        "dataset": split.dataset,
        "split": split.split,
        "annotation_file": str(split.annotation_file),
        "annotation_format": split.annotation_format,
        "images": len(split.image_files),
        "captions": len(split.captions),
        "missing_images": {"count": len(missing), "first": list(missing[:MISSING_SHOWN])},
        "standard_counts": _standard_counts(split.dataset),
        "model": model.name,
        "architecture": model.architecture,
        "checkpoint": model.checkpoint,
        "device": model.device,
        "seconds": phases.summary(),
        "exact": exact,
        "ann": ann_result["numbers"] if ann_result else None,
        "ann_index": ann_result["index"] if ann_result else None,
        "ann_loss": _ann_loss(exact, ann_result),
        "ann_note": ANN_NOTE if ann_result else None,
        "published": None if random_weights else compare_with_published(model.name, split.dataset, measured),
        "note": _note(model.name, random_weights, len(missing)),
    }


def _standard_counts(dataset: str) -> dict[str, int]:
    """Size of the benchmark's standard test split, as evaluated in the papers."""
    info = DATASETS[dataset]
    return {"images": info.test_images, "captions": info.test_captions}


def _ann_loss(exact: dict[str, float] | None, ann_result: dict[str, Any] | None) -> dict[str, float] | None:
    """Recall lost to the ANN index: exact − ann for each t2i number."""
    if exact is None or ann_result is None:
        return None
    return {key: exact[key] - ann_result["numbers"][key] for key in T2I_KEYS}


def _note(model: str, random_weights: bool, missing: int) -> str | None:
    """What a reader must know before comparing these numbers with published ones."""
    notes = []
    if random_weights:
        notes.append("random weights: the numbers are meaningless (speed runs and tests only)")
    elif model in SOURCES:
        notes.append(SOURCES[model].note)
    if missing:
        notes.append(f"{missing} images were missing: not comparable with published numbers")
    return "; ".join(notes) or None


TABLE_COLUMNS = ("dataset", "model", "numbers", *KEYS)


def markdown_table(results: Sequence[dict[str, Any]]) -> str:
    """A markdown table of results: exact, ann, published and exact − published rows."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * 3 + "---:|" * len(KEYS)]
    for result in results:
        for label, numbers in _table_rows(result):
            cells = [result["dataset"], result["model"], label, *(f"{numbers[key]:.2f}" for key in KEYS)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _table_rows(result: dict[str, Any]) -> list[tuple[str, dict[str, float]]]:
    """(label, numbers) rows of one result."""
    rows = [("exact", result["exact"])] if result["exact"] else []
    if result["ann"]:
        rows.append((f"ann ({result['ann_index']['index_type']})", result["ann"]))
    published = result["published"]
    if published:
        measured = "exact" if result["exact"] else "ann"
        rows += [("published", published["published"]), (f"{measured} − published", published["difference"])]
    return rows


def write_json(result: dict[str, Any] | list[dict[str, Any]], path: Path) -> None:
    """Write results as indented JSON, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


def write_synthetic_images(names: Sequence[str], folder: Path, size: int = 224, seed: int = 0) -> None:
    """Write seeded random ``size`` px RGB images under the given file names (format from the suffix).

    For speed runs and tests of the benchmark: the real annotation files with stand-in images.
    """
    from PIL import Image

    folder = Path(folder)
    rng = np.random.default_rng(seed)
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
