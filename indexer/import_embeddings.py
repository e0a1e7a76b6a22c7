"""Import embeddings made elsewhere (Major TOM, Clay GeoParquet) into an index: check every file, then commit.

Two passes over the files, each record batch by record batch (memory stays bounded at any file size):

1. **Check**: columns, one dimension for every file (and the index's), finite non-zero vectors, a geometry for
   every row, readable dates, unique ids. A bad file is one error line, and nothing has been written: the index
   is as it was, or not created.
2. **Commit**: each batch's new chips go through ``StoreWriter.append`` (vectors L2-normalised, as the store's
   inner-product search expects; FAISS flat below the threshold, IVF-PQ above, as for indexed archives).

Ids already in the index are skipped, so an interrupted import resumes and more files can be appended later.
The index records the model the user named: one rsretrieve can load makes text search work
(``embedding_model``); any other name, or ``none``, makes a vector-only index (``rsretrieve.imported``).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from indexer.embedding_files import ColumnChoice, EmbeddingFile, find_embedding_files
from rsretrieve.ann import AnnSettings
from rsretrieve.errors import UserError
from rsretrieve.imported import IMPORTED_CHECKPOINT, NO_MODEL
from rsretrieve.models import (
    RANDOM_CHECKPOINT,
    ModelError,
    embedding_dim,
    file_fingerprint,
    resolve_spec,
    weights_path,
)
from rsretrieve.store import MANIFEST, Manifest, StoreWriter
from rsretrieve.store.manifest import ModelIdentity

log = logging.getLogger(__name__)
BATCH_ROWS = 65536  # rows read, checked and committed at a time at most (see ``embedding_files.BATCH_BYTES``)


class EmbeddingImportError(UserError):
    """An import that cannot go ahead (model, dimension, duplicate ids); one line."""


@dataclass
class ImportSummary:
    """What one ``rsretrieve import-embeddings`` run did."""

    db: str
    layout: str = ""
    model: str = ""
    dim: int = 0
    files: int = 0
    rows: int = 0
    new_chips: int = 0
    already_indexed: int = 0
    total_chips: int = 0
    seconds: float = 0.0
    check_seconds: float = 0.0  # the first pass (reading and checking every file)
    text_search: bool = False
    file_names: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """JSON form for ``--json``."""
        return asdict(self)

    def line(self) -> str:
        """One line for people."""
        search = "text search works" if self.text_search else "no text search (--like, labels and vectors work)"
        return (
            f"{self.new_chips} new chips from {self.files} {self.layout} files, {self.already_indexed} already "
            f"indexed ({self.total_chips} chips of {self.dim}-d '{self.model}' embeddings in {self.db}; {search}; "
            f"{self.seconds:.1f} s)"
        )


def embedding_model(
    name: str | None, dim: int, checkpoint: str | Path | None = None, random_weights: bool = False
) -> ModelIdentity:
    """What the index records as its model: a model rsretrieve can load (its dimension must be the files', and its
    weights at hand, so that queries are embedded as the files were), else the name with ``IMPORTED_CHECKPOINT``."""
    if name is None:
        raise EmbeddingImportError(
            "give --model: the model that made the embeddings (`rsretrieve models`; text search then works) or none"
        )
    if name == NO_MODEL:
        return ModelIdentity(NO_MODEL, "", IMPORTED_CHECKPOINT, dim)
    try:
        spec = resolve_spec(name)
    except ModelError:
        log.info("rsretrieve cannot load a model named '%s': text and image queries on this index are refused", name)
        return ModelIdentity(name, "", IMPORTED_CHECKPOINT, dim)
    made = embedding_dim(spec)
    if made != dim:
        raise EmbeddingImportError(
            f"the files hold {dim}-d embeddings but '{spec.name}' makes {made}-d ones: name the model that made them, "
            "or --model none"
        )
    try:
        weights = RANDOM_CHECKPOINT if random_weights else file_fingerprint(weights_path(spec, checkpoint))
    except ModelError as error:
        raise EmbeddingImportError(f"{error} (or import with --model none: no text search)") from None
    return ModelIdentity(spec.name, spec.architecture, weights, dim)


def files_dim(files: Sequence[EmbeddingFile]) -> int:
    """The embeddings' dimension, one for every file (each file's from its first row; every row is checked later)."""
    known = [file for file in files if file.dim is not None]
    if not known:
        raise EmbeddingImportError("the files hold no rows: nothing to import")
    for file in known[1:]:
        if file.dim != known[0].dim:
            raise EmbeddingImportError(
                f"mixed embedding dimensions: {known[0].path} holds {known[0].dim}-d embeddings, "
                f"{file.path} {file.dim}-d"
            )
    return int(known[0].dim)  # type: ignore[arg-type]


def check_files(files: Sequence[EmbeddingFile], rows: int, progress: tqdm) -> None:
    """Read every row of every file once and raise on the first problem (see the module)."""
    first: dict[str, tuple[Path, int]] = {}  # where each id was seen first
    for file in files:
        offset = 0
        for batch in file.batches(rows):
            _check_unique(batch.ids, file.path, offset, first)
            offset += len(batch.ids)
            progress.update(len(batch.ids))


def _check_unique(ids: list[str], path: Path, offset: int, first: dict[str, tuple[Path, int]]) -> None:
    """Record where each id is seen; a second sighting is an error naming both places."""
    for row, chip_id in enumerate(ids, offset):
        place = (path, row)
        seen = first.setdefault(chip_id, place)
        if seen is not place:
            raise EmbeddingImportError(
                f"chip id '{chip_id}' appears twice ({seen[0]} row {seen[1]}, {path} row {row}): ids must be unique; "
                "name a unique column with --id-column, or --id-column none to name chips <file>-<row>"
            )


def import_embeddings(
    sources: Sequence[str | Path],
    db: str | Path,
    model: str | None = None,
    columns: ColumnChoice | None = None,
    checkpoint: str | Path | None = None,
    random_weights: bool = False,
    ann_settings: AnnSettings | None = None,
    show_progress: bool = True,
    batch_rows: int = BATCH_ROWS,
) -> ImportSummary:
    """Import embeddings GeoParquet files (and folders of them) into ``db``; see the module for the two passes.

    ``model``: the model that made the embeddings (None: the index's when appending), ``none`` when unknown.
    """
    started = time.perf_counter()
    db = Path(db)
    existing = Manifest.read(db) if (db / MANIFEST).is_file() else None
    files = [EmbeddingFile.open(path, columns or ColumnChoice()) for path in find_embedding_files(list(sources))]
    dim = files_dim(files)
    if existing is not None and existing.dim != dim:
        raise EmbeddingImportError(f"the files hold {dim}-d embeddings; {db} holds {existing.dim}-d ones")
    if existing is not None:
        model = model or existing.model
        random_weights = random_weights or (checkpoint is None and existing.built_with_random_weights)
    identity = embedding_model(model, dim, checkpoint, random_weights)
    total = sum(file.rows for file in files)
    with _bar(total, "checking", show_progress) as progress:
        check_files(files, batch_rows, progress)
    checked = time.perf_counter() - started
    summary = ImportSummary(str(db), _layouts(files), identity.name, dim, len(files), total)
    summary.file_names = [str(file.path) for file in files]
    summary.check_seconds = checked
    summary.text_search = identity.checkpoint != IMPORTED_CHECKPOINT
    writer = StoreWriter.open(db, identity, ann_settings)
    try:
        writer.manifest.imported_from = _imported_from(writer.manifest.imported_from, summary.layout)
        indexed = set(writer.column("id").to_pylist()) if len(writer) else set()
        with _bar(total, "importing", show_progress) as progress:
            for file in files:
                _commit_file(writer, file, indexed, batch_rows, summary)
                progress.update(file.rows)
        if writer.manifest.pending_finish:
            writer.finish()
        summary.total_chips = len(writer)
    finally:
        writer.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _commit_file(
    writer: StoreWriter, file: EmbeddingFile, indexed: set[str], rows: int, summary: ImportSummary
) -> None:
    """Commit the chips of one file that are not in the index yet, batch by batch."""
    counted = False
    for batch in file.batches(rows):
        keep = np.array([i for i, chip_id in enumerate(batch.ids) if chip_id not in indexed], np.int64)
        summary.already_indexed += len(batch.ids) - len(keep)
        if len(keep) == 0:
            continue
        writer.append(batch.chips(keep), batch.vectors[keep], new_files=0 if counted else 1)
        counted = True
        summary.new_chips += len(keep)


def _layouts(files: Sequence[EmbeddingFile]) -> str:
    """The layouts of the files, e.g. "Major TOM" or "Clay and GeoParquet"."""
    return " and ".join(dict.fromkeys(file.layout for file in files))


def _imported_from(recorded: str | None, layout: str) -> str:
    """What the manifest records after this import (the layouts of every import so far)."""
    if not recorded or layout in recorded:
        return recorded or layout
    return f"{recorded} and {layout}"


def _bar(total: int, what: str, show: bool) -> tqdm:
    return tqdm(total=total, unit="row", desc=what, disable=not show, file=sys.stderr)
