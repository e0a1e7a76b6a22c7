"""``Searcher.search(Query) -> Results``: the one query path of the CLI, the page, the service and evaluation.

Stages (each timed in ``Results.timings``): encode the query's parts and combine them (``query.combine``);
filter (bbox, date) in numpy over the index's filter columns (~2 ms at 1M chips, where LanceDB's SQL takes
50–190 ms); search — the matching fids restrict FAISS or, when few, are scored exactly from the stored vectors;
IVF-PQ candidates (k × rerank) are re-ranked exactly, so every score shown is a true cosine similarity; records
come from the ``records/`` Arrow files. ``Results.path`` says which way the search went.

A ``Searcher`` keeps no per-query state: one instance serves many threads.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from rsretrieve import ann
from rsretrieve.chips import Chip, day_date
from rsretrieve.hits import Hit
from rsretrieve.imported import VectorOnlyModel, is_vector_only, refuse_encoding
from rsretrieve.query import Part, Query, QueryError, combine
from rsretrieve.store import ChipStore, StoreError, check_same_model

# k·100 IVF-PQ candidates re-ranked exactly: at 1M, recall@10 0.95 → 0.99 over k·50 for +0.5 ms (speed-cpu.json)
DEFAULT_RERANK_FACTOR = 100
EXACT_FILTER_LIMIT = 4096  # matching chips scored exactly instead of through FAISS: at least this many,
# or up to 1/64 of the index (15.6k at 1M): there, exact scoring of 11k chips (6.7 ms) costs about what FAISS does
# (5.6-6.7 ms at 2-22 % kept, benchmarks/results/speed-filters-cpu.json) and its recall is 1 by construction
EXACT_FILTER_SHARE = 64
PATHS = ("flat", "exact-filtered", "faiss-filtered", "ivfpq", "exact-scan")  # how a search went (Results.path)
REOPEN_ATTEMPTS = 5
MAX_RANKS = 100_000  # the deepest rank a query reaches (k, or offset + k of a page)
RECORD_BLOCK = 10_000  # records read at a time when results stream to a file
SCAN_BLOCK = 65_536  # vectors scored at a time by a whole-archive exact scan
CHIPS_PER_CANDIDATE = 1000  # at least one IVF-PQ candidate per this many chips (candidate_count)
MAX_POOL_CANDIDATES = 10_000  # ... up to this many
FINE_MARGIN = 128  # ranked at 8 bits, the best k + this many are scored again with the finer bits (refined_top)


@dataclass(frozen=True)
class Results:
    """The hits of a query, best first, with how they were found.

    ``path``: ``flat`` (exact FAISS), ``exact-filtered`` (few chips pass the filters: all scored exactly),
    ``faiss-filtered`` (FAISS restricted to the passing chips), ``ivfpq`` (unfiltered IVF-PQ), ``exact-scan`` (every
    stored vector scored in blocks: a k too large for IVF-PQ's candidates). ``candidates``: how
    many IVF-PQ candidates were re-ranked exactly (0 when none). ``timings``: seconds per stage.
    """

    hits: list[Hit]
    query: Query
    path: str
    candidates: int
    timings: dict[str, float]
    version: int = 0  # the LanceDB version of the index that answered
    offset: int = 0  # the rank (0-based) of the first hit
    next_offset: int | None = None  # the offset of the next page, None when no result follows

    def __len__(self) -> int:
        return len(self.hits)

    def __iter__(self) -> Iterator[Hit]:
        return iter(self.hits)

    @property
    def search_seconds(self) -> float:
        """Time spent after the query was encoded."""
        return sum(seconds for stage, seconds in self.timings.items() if stage != "encode")

    @property
    def chips(self) -> list[Chip]:
        """The chips of the hits, in order."""
        return [hit.chip for hit in self.hits]


@dataclass(frozen=True)
class Ranked:
    """The ranked fids and exact scores of a query (best first), without records: what large result sets stream
    from (``records`` reads them block by block). ``more``: whether a result ranks after the last one."""

    fids: np.ndarray
    scores: np.ndarray
    path: str
    candidates: int
    timings: dict[str, float]
    store: ChipStore
    more: bool = False

    def __len__(self) -> int:
        return len(self.fids)

    @property
    def version(self) -> int:
        """The LanceDB version of the index that answered."""
        return self.store.manifest.lance_version

    def hits(self, start: int = 0, stop: int | None = None) -> list[Hit]:
        """``Hit`` objects of ranks start..stop-1 (0-based)."""
        fids, scores = self.fids[start:stop], self.scores[start:stop]
        chips = self.store.chips(fids)
        return [Hit(round(float(score), 6), chip) for score, chip in zip(scores, chips, strict=True)]

    def blocks(self, size: int = RECORD_BLOCK) -> Iterator[tuple[int, np.ndarray, Any]]:
        """(first rank, scores, records table) of every ``size`` ranks: bounded memory at any k."""
        for start in range(0, len(self), size):
            fids = self.fids[start : start + size]
            scores = np.array([round(float(score), 6) for score in self.scores[start : start + size]], np.float64)
            yield start, scores, self.store.records(fids)  # scores rounded as ``Hit`` rounds them


@dataclass(frozen=True)
class Extent:
    """WGS84 bbox and date range covered by an index, and how many chips lack a footprint or a date."""

    bbox: tuple[float, float, float, float] | None
    start: date | None
    end: date | None
    chips: int = 0
    undated: int = 0
    unplaced: int = 0


@dataclass
class _Clock:
    """Seconds per stage of one search."""

    timings: dict[str, float] = field(default_factory=dict)
    last: float = field(default_factory=time.perf_counter)

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self.last
        self.last = now


class Searcher:
    """Loads the index's model once and answers queries; reopens the index when a writer commits."""

    def __init__(
        self,
        db: str | Path,
        model: Any = None,
        *,
        model_name: str | None = None,
        checkpoint: str | Path | None = None,
        device: str = "auto",
        random_weights: bool = False,
        rerank_factor: int = DEFAULT_RERANK_FACTOR,
        nprobe: int | None = None,
    ):
        self.db = Path(db)
        self.store = ChipStore(self.db)
        manifest = self.store.manifest
        if model is None and is_vector_only(manifest.checkpoint):  # imported embeddings of a model we cannot load
            check_same_model(manifest, model_name or manifest.model, None, self.db)
            model = VectorOnlyModel.of(manifest)
        elif model is None:
            from rsretrieve.models import load_model

            check_same_model(manifest, model_name or manifest.model, None, self.db)
            random_weights = random_weights or (checkpoint is None and manifest.built_with_random_weights)
            model = load_model(manifest.model, checkpoint, device, random_weights)
        check_same_model(manifest, model.name, model.checkpoint, self.db)
        self.model = model
        self.rerank_factor = rerank_factor
        self.nprobe = nprobe
        self._reopening = threading.Lock()

    def current(self) -> ChipStore:
        """The newest committed version of the index (reopened if a writer has committed since)."""
        store = self.store
        if not store.changed_on_disk():
            return store
        with self._reopening:
            if self.store is not store:  # another thread reopened it meanwhile
                return self.store
            for attempt in range(REOPEN_ATTEMPTS):
                try:
                    fresh = ChipStore(self.db)
                    break
                except StoreError:
                    if attempt == REOPEN_ATTEMPTS - 1:
                        raise
                    time.sleep(0.05)
            check_same_model(fresh.manifest, self.model.name, self.model.checkpoint, self.db)
            self.store = fresh
            return fresh

    # -- encoding -----------------------------------------------------------------------------------
    def encode(self, query: Query, store: ChipStore | None = None) -> np.ndarray:
        """The query's vector: its parts embedded (texts and images in one batch each) and combined."""
        store = store or self.current()
        parts = [*query.positives, *query.negatives]
        refuse_encoding(self.model, parts)
        vectors: dict[int, np.ndarray] = {}
        for kind, encode in (("text", self._texts), ("image", self._images), ("like", self._likes)):
            chosen = [i for i, part in enumerate(parts) if part.kind == kind]
            if chosen:
                encoded = encode([parts[i] for i in chosen], store)
                vectors.update(zip(chosen, encoded, strict=True))
        for i, part in enumerate(parts):
            if part.kind == "vector":
                vectors[i] = self._raw_vector(part.value)
        pairs = [(vectors[i], part.weight) for i, part in enumerate(parts)]
        return combine(pairs[: len(query.positives)], pairs[len(query.positives) :])

    def _texts(self, parts: list[Part], store: ChipStore) -> np.ndarray:
        return self.model.encode_text([part.value for part in parts])

    def _images(self, parts: list[Part], store: ChipStore) -> np.ndarray:
        return self.model.encode_images([query_pixels(part) for part in parts])

    def _likes(self, parts: list[Part], store: ChipStore) -> np.ndarray:
        found = store.fids_of([part.value for part in parts])  # one lookup for many ids (--labels)
        fids = []
        for part in parts:
            fid = found.get(part.value)
            if fid is None:
                raise QueryError(f"no chip with id '{part.value}' in index {self.db.name}")
            fids.append(fid)
        return store.vectors(fids)

    def _raw_vector(self, value: Any) -> np.ndarray:
        try:
            vector = np.asarray(value, np.float32).ravel()
        except (TypeError, ValueError) as error:
            raise QueryError(f"a query vector must be a list of numbers ({error})") from None
        if len(vector) != self.model.dim:
            raise QueryError(f"a query vector has {len(vector)} numbers; this index's model gives {self.model.dim}")
        return vector

    # -- search -------------------------------------------------------------------------------------
    def search(self, query: Query, offset: int = 0) -> Results:
        """The query's k best chips (ranks ``offset`` … ``offset + k - 1``) among those passing its filters and
        scoring at least its ``min_score``, with per-stage timings; ``next_offset`` when more follow."""
        ranked = self.rank(query, offset)
        clock = _Clock()
        hits = ranked.hits(offset, offset + query.k)
        clock.lap("records")
        following = offset + query.k if ranked.more else None
        timings = {**ranked.timings, **clock.timings}
        return Results(hits, query, ranked.path, ranked.candidates, timings, ranked.version, offset, following)

    def rank(self, query: Query, offset: int = 0) -> Ranked:
        """fids and exact scores of the first ``offset + k`` ranks (fewer when fewer chips pass the filters and the
        minimum score), and whether more follow. A page of a large result is the ranks of one search with
        k = offset + k (identical pages for flat indexes and exact scans)."""
        depth = offset + query.k
        if offset < 0:
            raise QueryError(f"the offset must not be negative (got {offset})")
        if depth > MAX_RANKS:
            asked = f"offset + k = {depth:,}" if offset else f"k = {depth:,}"
            raise QueryError(f"results reach rank {MAX_RANKS:,} at most ({asked})")
        clock = _Clock()
        store = self.current()
        vector = self.encode(query, store).reshape(1, -1)
        clock.lap("encode")
        scores, fids, path, candidates = self._ranked(store, vector, query, depth, clock)
        if query.min_score is not None:
            # scores are sorted: a prefix; compared as shown (6 decimals), so a score seen in a result is kept
            kept = int(np.count_nonzero(np.round(scores.astype(np.float64), 6) >= query.min_score))
            scores, fids = scores[:kept], fids[:kept]
        more = len(fids) > depth
        return Ranked(fids[:depth], scores[:depth], path, candidates, clock.timings, store, more)

    def _ranked(
        self, store: ChipStore, vector: np.ndarray, query: Query, depth: int, clock: _Clock
    ) -> tuple[np.ndarray, np.ndarray, str, int]:
        """Scores and fids of the ``depth`` + 1 best (best first: one more tells whether more follow), the path
        taken, and how many candidates were re-ranked."""
        wanted = depth + 1
        approximate = ann.describe(store.index)["index_type"] != "flat"
        if len(store) == 0:
            return np.empty(0, np.float32), np.empty(0, np.int64), "flat", 0
        allowed = None
        if query.filters.active:
            allowed = query.filters.matching(store.filter_columns(), store)
            clock.lap("filter")
            if len(allowed) <= exact_filter_limit(len(store)):
                scores, fids = rerank_top(vector, store, allowed, wanted)
                clock.lap("rerank")
                return scores, fids, "exact-filtered", 0
        pool = len(allowed) if allowed is not None else len(store)
        factor = query.rerank or self.rerank_factor
        fetch = min(candidate_count(depth, factor, pool), len(store)) if approximate else wanted
        if approximate and fetch > SCAN_BLOCK and fetch >= pool // 2:  # a re-rank that reads most vectors: read all
            return self._scan(store, vector, wanted, allowed, clock)
        path = "faiss-filtered" if allowed is not None else ("ivfpq" if approximate else "flat")
        scores, fids = ann.search(store.index, vector, fetch, nprobe=query.nprobe or self.nprobe, allowed_ids=allowed)
        fids = fids[0][fids[0] >= 0]
        clock.lap("ann")
        if not approximate:
            return scores[0][: len(fids)], fids, path, 0
        if len(fids) < min(wanted, pool):  # the probed IVF lists hold fewer chips than asked for (a large k)
            return self._scan(store, vector, wanted, allowed, clock)
        scores, top = rerank_top(vector, store, fids, wanted)  # exact re-rank from the stored vectors
        clock.lap("rerank")
        return scores, top, path, len(fids)

    @staticmethod
    def _scan(
        store: ChipStore, vector: np.ndarray, k: int, allowed: np.ndarray | None, clock: _Clock
    ) -> tuple[np.ndarray, np.ndarray, str, int]:
        scores, fids = scan_top(vector, store, k, allowed)
        clock.lap("scan")
        return scores, fids, "exact-scan", 0

    def extent(self) -> Extent:
        """The union bbox and first and last dates of the index's chips, and how many lack either."""
        columns = self.current().filter_columns()
        placed = ~np.isnan(columns.minx)
        dated = ~np.isnan(columns.day)
        bbox = None
        if placed.any():
            bbox = (
                float(columns.minx[placed].min()),
                float(columns.miny[placed].min()),
                float(columns.maxx[placed].max()),
                float(columns.maxy[placed].max()),
            )
        days = columns.day[dated]
        start, end = (day_date(days.min()), day_date(days.max())) if len(days) else (None, None)
        count = len(columns)
        return Extent(bbox, start, end, count, count - int(dated.sum()), count - int(placed.sum()))


def candidate_count(depth: int, factor: int, pool: int) -> int:
    """IVF-PQ candidates to re-rank for the ``depth`` best of ``pool`` chips (all, or those passing the filters):
    depth × factor, and at least one per CHIPS_PER_CANDIDATE chips up to MAX_POOL_CANDIDATES.

    The PQ scores are off by more than the gaps between near neighbours, so the true top 10 ranks among the PQ
    candidates up to a depth that grows with the archive's density: at 2M chips 1,000 candidates held 95 % of it and
    4,000 held 99.6 % (benchmarks/results/recall-stages-cpu.json); at 10M recall@10 was 0.960 with 4,000 and 0.992
    with 10,000, the FAISS stage costing the same (speed-10m-cpu.json). Up to 1M the floor stays below k·100.
    """
    return max(depth * factor, min(pool // CHIPS_PER_CANDIDATE, MAX_POOL_CANDIDATES), depth + 1)


def exact_filter_limit(count: int) -> int:
    """Up to how many chips passing a filter are scored exactly (else FAISS searches with their ids), of ``count``."""
    return max(EXACT_FILTER_LIMIT, count // EXACT_FILTER_SHARE)


def exact_top(query: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k among ``vectors`` (labelled by ``ids``): scores and ids, best first."""
    if len(ids) == 0:
        return np.empty(0, np.float32), np.empty(0, np.int64)
    scores, found = ann.exact_search(vectors, np.asarray(ids, np.int64), query, k)
    keep = found[0] >= 0
    return scores[0][keep], found[0][keep]


def scan_top(
    query: np.ndarray, store: ChipStore, k: int, allowed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k over every stored vector (only ``allowed`` fids when given), a block at a time: what a large k on
    IVF-PQ needs (its probed lists may hold fewer chips than k), in bounded memory."""
    mask = None
    if allowed is not None:
        mask = np.zeros(len(store), bool)
        mask[allowed] = True

    def blocks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for first, vectors in store.vector_blocks(SCAN_BLOCK, fine=False):
            fids = np.arange(first, first + len(vectors), dtype=np.int64)
            if mask is None:
                yield vectors, fids
            else:
                rows = np.flatnonzero(mask[first : first + len(vectors)])
                yield vectors[rows], fids[rows]

    return refined_top(query, store, blockwise_top(query, blocks(), k + FINE_MARGIN)[1], k)


def rerank_top(query: np.ndarray, store: ChipStore, fids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of candidate ``fids`` from their stored vectors, read a block at a time (bounded memory): all at
    8 bits, then the best k + FINE_MARGIN with their finer bits (``refined_top``). Read in fid order: nearby rows
    share pages of the memory map (the order of the result is by score, then fid, either way)."""
    fids = np.sort(fids)
    blocks = (
        (store.vectors(fids[i : i + SCAN_BLOCK], fine=False), fids[i : i + SCAN_BLOCK])
        for i in range(0, len(fids), SCAN_BLOCK)
    )
    return refined_top(query, store, blockwise_top(query, blocks, k + FINE_MARGIN)[1], k)


def refined_top(query: np.ndarray, store: ChipStore, shortlist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of the ``shortlist`` ranked at 8 bits, scored again with the stored vectors' finer bits.

    Unpacking the finer bits costs ~0.5 µs a row (2 ms for 4,000 candidates), four times the 8-bit decoding; the
    8-bit scores are within ~1e-3 of the finer ones, so the true top k lies well inside the best k + FINE_MARGIN.
    """
    return exact_top(query, store.vectors(shortlist), shortlist, k)


def blockwise_top(
    query: np.ndarray, blocks: Iterable[tuple[np.ndarray, np.ndarray]], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k over (vectors, fids) blocks, merged as they come: ties by fid, as ``exact_top`` orders them."""
    best_scores, best_fids = np.empty(0, np.float32), np.empty(0, np.int64)
    for vectors, fids in blocks:
        scores, found = exact_top(query, vectors, fids, k)
        if not len(best_fids):
            best_scores, best_fids = scores, found
            continue
        best_scores, best_fids = np.concatenate([best_scores, scores]), np.concatenate([best_fids, found])
        order = np.lexsort((best_fids, -best_scores))[:k]
        best_scores, best_fids = best_scores[order], best_fids[order]
    return best_scores, best_fids


def query_pixels(part: Part) -> np.ndarray:
    """(H, W, 3) uint8 pixels of an image part: a file or encoded bytes, read decimated (``raster.read_preview``)
    exactly as the indexer reads chips, or pixels as they are."""
    from rsretrieve.uris import is_remote

    value = part.value
    if isinstance(value, np.ndarray):
        if value.ndim != 3 or value.shape[2] != 3 or value.dtype != np.uint8:
            raise QueryError("query pixels must be an (H, W, 3) uint8 array")
        return value
    name = part.label or (str(value) if isinstance(value, str | Path) else "the query image")
    if isinstance(value, str | Path):
        if not is_remote(value) and not Path(value).is_file():  # a URI is read (or refused) remotely
            raise QueryError(f"query image not found: {value}")
        return _preview(value, name)
    with tempfile.NamedTemporaryFile(suffix=".img") as handle:  # GDAL reads encoded bytes from a file
        handle.write(bytes(value))
        handle.flush()
        return _preview(handle.name, name)


def _preview(path: str | Path, name: str) -> np.ndarray:
    """``read_preview(path)``, its errors told as about ``name`` (an upload's name, not its temporary file)."""
    from rsretrieve.raster import SourceError, read_preview  # GDAL: only when a query has an image

    try:
        return read_preview(path)
    except SourceError as error:
        detail = str(error).split(": ", 1)[-1].replace(str(path), name)
        raise QueryError(f"cannot read query image {name}: {detail}") from error
