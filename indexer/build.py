"""Build or extend an index: find sources → plan chips → embed → commit file groups to the store.

Files are committed whole, in groups of about ``commit_chips`` chips, so a crash or Ctrl-C loses at most
the group in flight, and a re-run skips every file already in the index without re-embedding it. A group is
a few minutes of work on either device (``default_commit_chips``): on a GPU, groups big enough that starting
the DataLoader's workers and rewriting the FAISS file stay small beside embedding.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from tqdm import tqdm

from indexer.embed import embed_chips, limit_gdal_cache
from rsretrieve.ann import AnnSettings
from rsretrieve.chips import Chip
from rsretrieve.errors import UserError
from rsretrieve.models import EmbeddingModel
from rsretrieve.raster import Scene, ScenePlan, Source, SourceError, count_chips, is_remote, plan_scene
from rsretrieve.store import StoreWriter

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class ChipOptions:
    """How sources are cut into chips: window size and overlap in pixels, bands for R,G,B, nodata tolerance."""

    chip_size: int = 224
    overlap: int = 0
    bands: tuple[int, ...] | None = None
    max_nodata_fraction: float = 0.5


@dataclass
class RunOptions:
    """How one indexing run goes: batch size and workers (by device when None), commit size, what to redo."""

    batch_size: int | None = None  # by device: rsretrieve.embedding.default_batch_size
    workers: int | None = None
    commit_chips: int | None = None  # by device: default_commit_chips
    strict: bool = False
    rebuild: bool = False
    retrain: bool = False


@dataclass
class EmbeddedFile:
    """One planned file after embedding: its chips, their vectors (rows of chips with a status are unused) and
    the status of each chip that was not embedded (index → SKIPPED or an error line)."""

    path: str
    chips: list[Chip]
    vectors: np.ndarray
    statuses: dict[int, str]


@dataclass
class IndexSummary:
    """What one ``rsretrieve index`` run did."""

    db: str
    new_chips: int = 0
    already_indexed: int = 0
    files_indexed: int = 0
    files_skipped: int = 0
    files_failed: int = 0
    nodata_chips: int = 0
    total_chips: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def chips_per_second(self) -> float:
        """Throughput of this run (new chips over wall time)."""
        return self.new_chips / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        """JSON form for ``--json``."""
        return {**asdict(self), "chips_per_second": round(self.chips_per_second, 2)}

    def line(self) -> str:
        """One line for people."""
        return (
            f"{self.new_chips} new chips from {self.files_indexed} files, {self.already_indexed} already "
            f"indexed, {self.files_skipped} files skipped, {self.files_failed} bad files "
            f"({self.total_chips} chips in {self.db}; {self.seconds:.1f} s, {self.chips_per_second:.1f} chips/s)"
        )


class BadSourceError(UserError):
    """A bad file under ``--strict``."""


class NothingIndexedError(UserError):
    """Every given file was bad and the index holds nothing."""


def source_key(source: Source | Scene) -> str:
    """What the index stores as a chip's ``path`` for a source: the local path or the URI as given."""
    return str(source.path if isinstance(source, Scene) else source)


def estimate_chips(paths: Sequence[Source | Scene], chip_size: int, overlap: int) -> int:
    """Chip count from the raster headers of local sources, for the progress bar's total and ETA (a remote one is
    counted when it is planned: reading every header first would cost a round trip each)."""
    total = 0
    for path in paths:
        if is_remote(source_key(path)):
            continue
        try:
            total += count_chips(path, chip_size, overlap)
        except SourceError:  # bad files are reported when they are planned
            total += 1
    return total


def default_commit_chips(device: str) -> int:
    """Chips per commit: ~30 s of embedding on a GPU at 2,000 chips/s, ~3 min on 2 CPU cores at ~10 chips/s."""
    return 65536 if device.startswith("cuda") else 2048


def group_by_chips(items: Iterable[T], commit_chips: int, chips_of: Callable[[T], int]) -> Iterator[list[T]]:
    """Consecutive items (files) grouped into lists of about ``commit_chips`` chips (the last may be smaller)."""
    group: list[T] = []
    size = 0
    for item in items:
        group.append(item)
        size += chips_of(item)
        if size >= commit_chips:
            yield group
            group, size = [], 0
    if group:
        yield group


PLAN_THREADS = 8  # remote scenes planned ahead at once: their headers cost round trips, not CPU


def _plan_or_error(path: Source | Scene, options: ChipOptions) -> ScenePlan | SourceError:
    try:
        return plan_scene(path, options.chip_size, options.overlap, options.bands)
    except SourceError as error:
        return error


def _plans(paths: Sequence[Source | Scene], options: ChipOptions) -> Iterator[tuple[Source | Scene, object]]:
    """(source, ScenePlan or SourceError) in order; with remote sources, a few threads plan a batch at a time.

    A batch is finished before its plans are handed on: no planning thread is inside GDAL when the DataLoader
    forks its workers for the group those plans make.
    """
    if not any(is_remote(source_key(path)) for path in paths):
        for path in paths:
            yield path, _plan_or_error(path, options)
        return
    with ThreadPoolExecutor(PLAN_THREADS, thread_name_prefix="plan") as pool:
        for start in range(0, len(paths), 2 * PLAN_THREADS):
            batch = paths[start : start + 2 * PLAN_THREADS]
            results = list(pool.map(lambda path: _plan_or_error(path, options), batch))
            yield from zip(batch, results, strict=True)


def plan_each(
    paths: Sequence[Source | Scene],
    options: ChipOptions,
    on_bad: Callable[[str, str], None],
    on_plan: Callable[[Source | Scene, ScenePlan], None] = lambda path, plan: None,
) -> Iterator[ScenePlan]:
    """Plans of the sources in order (remote ones planned ahead by a few threads); a source that cannot be planned
    is reported to ``on_bad``, each plan to ``on_plan``."""
    for path, plan in _plans(paths, options):
        if isinstance(plan, SourceError):
            on_bad(source_key(path), str(plan))
            continue
        on_plan(path, plan)
        yield plan


def plan_groups(
    paths: Sequence[Source | Scene],
    options: ChipOptions,
    commit_chips: int,
    on_bad: Callable[[str, str], None],
    on_plan: Callable[[Source | Scene, ScenePlan], None] = lambda path, plan: None,
) -> Iterator[list[ScenePlan]]:
    """Plans of the sources, grouped into whole files of about ``commit_chips`` chips."""
    return group_by_chips(plan_each(paths, options, on_bad, on_plan), commit_chips, lambda plan: len(plan.chips))


def counting_remote(progress: tqdm) -> Callable[[Source | Scene, ScenePlan], None]:
    """Grow the progress bar's total by a remote scene's chips when it is planned (its header was not read ahead)."""

    def count(path: Source | Scene, plan: ScenePlan) -> None:
        if is_remote(source_key(path)):
            progress.total = (progress.total or 0) + len(plan.chips)
            progress.refresh()

    return count


class ArchiveIndexer:
    """One indexing run over some sources into one ``--db``."""

    def __init__(self, model: EmbeddingModel, chips: ChipOptions, run: RunOptions, summary: IndexSummary):
        self.model = model
        self.chips = chips
        self.run = run
        self.summary = summary

    def bad_file(self, path: Path | str, reason: str) -> None:
        """Count and report a file that cannot be indexed (fatal under --strict)."""
        if self.run.strict:
            raise BadSourceError(reason)
        self.summary.files_failed += 1
        self.summary.failures.append(reason)
        log.warning("skipped %s", reason)

    def embed_group(self, plans: list[ScenePlan], progress: tqdm) -> tuple[list[Chip], np.ndarray, int]:
        """Embed a group; chips and vectors of its good files, and how many files they are."""
        items = [(plan, chip) for plan in plans for chip in plan.chips]
        vectors = np.zeros((len(items), self.model.dim), np.float32)
        statuses: dict[int, str] = {}
        run = self.run
        for batch in embed_chips(
            self.model, items, run.batch_size, run.workers, self.chips.max_nodata_fraction, progress
        ):
            vectors[batch.indices] = batch.vectors
            statuses.update(batch.statuses)
        files: list[EmbeddedFile] = []
        start = 0
        for plan in plans:
            span = range(start, start + len(plan.chips))
            start = span.stop
            file_statuses = {i - span.start: statuses[i] for i in span if i in statuses}
            files.append(EmbeddedFile(plan.path, list(plan.chips), vectors[span.start : span.stop], file_statuses))
        return self.keep_good(files)

    def keep_good(self, files: list[EmbeddedFile]) -> tuple[list[Chip], np.ndarray, int]:
        """The chips and vectors to commit from embedded files, and how many files they are; bad files reported."""
        rows: list[Chip] = []
        vectors: list[np.ndarray] = [np.empty((0, self.model.dim), np.float32)]
        count = 0
        for file in files:
            errors = [status for status in file.statuses.values() if status]
            if errors:
                self.bad_file(file.path, errors[0])
                continue
            good = [i for i in range(len(file.chips)) if i not in file.statuses]
            self.summary.nodata_chips += len(file.statuses)  # every status left is SKIPPED
            if not good:
                self.bad_file(file.path, f"{file.path}: every chip is nodata or transparent; nothing to index")
                continue
            count += 1
            rows.extend(file.chips[i] for i in good)
            vectors.append(file.vectors[good])
        return rows, np.concatenate(vectors), count


# A source of committed groups: (indexer, files to index, chips per commit, progress bar) → (chips, vectors, files)
GroupSource = Callable[[ArchiveIndexer, list[Source | Scene], int, tqdm], Iterator[tuple[list[Chip], np.ndarray, int]]]


def local_groups(
    indexer: ArchiveIndexer, todo: list[Source | Scene], commit_chips: int, progress: tqdm
) -> Iterator[tuple[list[Chip], np.ndarray, int]]:
    """Plan and embed in this process (DataLoader workers read the chips), group by group."""
    for plans in plan_groups(todo, indexer.chips, commit_chips, indexer.bad_file, counting_remote(progress)):
        yield indexer.embed_group(plans, progress)


def index_archive(
    paths: Sequence[Source | Scene],
    db: str | Path,
    model: EmbeddingModel,
    chips: ChipOptions | None = None,
    run: RunOptions | None = None,
    ann_settings: AnnSettings | None = None,
    show_progress: bool = True,
    groups: GroupSource = local_groups,
) -> IndexSummary:
    """Index sources into ``db``; resumable, committed file group by file group.

    ``paths`` are local paths and URIs (see ``find_sources``) or ``Scene``s from a STAC catalogue (``stac_scenes``);
    a source whose path or URI has chips in the index already is skipped. ``groups`` plans and embeds the sources
    not yet indexed (in this process, or on Ray: ``indexer.distributed``); this function, in the calling process,
    owns the single writer and commits each group it yields.
    """
    chips = chips or ChipOptions()
    run = run or RunOptions()
    started = time.perf_counter()
    limit_gdal_cache()  # before planning: the stretch statistics of a 16-bit scene decode all its tiles
    bands = list(chips.bands) if chips.bands else None
    writer = StoreWriter.open(db, model, ann_settings, run.rebuild, chips.chip_size, chips.overlap, bands)
    writer.shard_map = getattr(groups, "shard_map", None)  # who fills a new FAISS index (Ray tasks on Ray)
    summary = IndexSummary(db=str(db))
    try:
        counts = Counter(writer.column("path").to_pylist()) if len(writer) else Counter()
        todo = [path for path in paths if source_key(path) not in counts]
        summary.files_skipped = len(paths) - len(todo)
        summary.already_indexed = sum(counts[source_key(path)] for path in paths if source_key(path) in counts)
        if run.retrain:
            writer.retrain()
        indexer = ArchiveIndexer(model, chips, run, summary)
        # a header read per file in this process: skipped without a bar, and by sources that plan elsewhere (Ray)
        estimate = show_progress and todo and getattr(groups, "estimates_total", True)
        total = estimate_chips(todo, chips.chip_size, chips.overlap) if estimate else None
        with tqdm(
            total=total, unit="chip", desc="indexing", disable=not show_progress or not todo, file=sys.stderr
        ) as progress:
            commit_chips = run.commit_chips or default_commit_chips(model.device)
            for rows, vectors, files in groups(indexer, todo, commit_chips, progress):
                writer.append(rows, vectors, files)
                summary.new_chips += len(rows)
                summary.files_indexed += files
        if len(writer) == 0 and summary.files_failed:
            raise NothingIndexedError(f"nothing indexed: none of the {summary.files_failed} given files could be read")
        if writer.manifest.pending_finish:  # also when a killed run committed its last group but did not finish
            writer.finish()
        summary.total_chips = len(writer)
    finally:
        writer.close()
    summary.seconds = time.perf_counter() - started
    return summary
