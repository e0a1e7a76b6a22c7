"""Query side: ``Searcher`` answers text, image and "more like this" queries over one index.

Filters (bbox intersects, date range) are evaluated in numpy over the index's ``bounds.f64`` copy of the
LanceDB columns (~5 ms at 1M chips, where LanceDB's SQL takes 50–190 ms); the matching fids then restrict
FAISS, or, when they are few, are scored exactly from the stored vectors. IVF-PQ candidates
(k × ``rerank_factor``) are re-ranked exactly, so every score shown is a true cosine similarity. Results
come from the ``records.jsonl`` copy: one read of a few lines instead of a 14-column LanceDB take (~11 ms).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from rsretrieve import ann
from rsretrieve.errors import UserError
from rsretrieve.query_copies import day_number
from rsretrieve.store import ChipStore, StoreError, check_same_model

# k·100 IVF-PQ candidates re-ranked exactly: at 1M, recall@10 0.95 → 0.99 over k·50 for +0.5 ms (speed-cpu.json)
DEFAULT_RERANK_FACTOR = 100
EXACT_FILTER_LIMIT = 4096  # matching chips scored exactly instead of through FAISS: at least this many,
# or up to 1/64 of the index (15.6k at 1M): there, exact scoring of 11k chips (6.9 ms) costs about what FAISS does
# (~6 ms, benchmarks/results/speed-filters-cpu.json) and its recall is 1 by construction
EXACT_FILTER_SHARE = 64


class QueryError(UserError):
    """A query that cannot be run; the message is one line for the user."""


@dataclass(frozen=True)
class Filters:
    """Bounding box in WGS84 (intersects) and an inclusive acquisition-date range."""

    bbox: tuple[float, float, float, float] | None = None
    start: date | None = None
    end: date | None = None

    def __post_init__(self) -> None:
        if self.bbox is not None:
            check_bbox(self.bbox)
            object.__setattr__(self, "bbox", tuple(float(value) for value in self.bbox))
        if self.start and self.end and self.start > self.end:
            raise QueryError(f"start date {self.start} is after end date {self.end}")

    @property
    def active(self) -> bool:
        """Whether anything is filtered."""
        return self.bbox is not None or self.start is not None or self.end is not None

    def matching(self, bounds: np.ndarray) -> np.ndarray:
        """fids (row numbers of ``bounds``, as ``ChipStore.bounds``) of the chips passing every filter.

        A chip without a footprint never passes a bbox filter, one without a date never passes a date filter.
        """
        keep = np.ones(len(bounds), bool)
        if self.bbox is not None:
            minx, miny, maxx, maxy = self.bbox
            keep &= (bounds[:, 2] >= minx) & (bounds[:, 0] <= maxx) & (bounds[:, 3] >= miny) & (bounds[:, 1] <= maxy)
        if self.start is not None:
            keep &= bounds[:, 4] >= day_number(self.start)
        if self.end is not None:
            keep &= bounds[:, 4] <= day_number(self.end)
        return np.flatnonzero(keep)


def exact_filter_limit(count: int) -> int:
    """Up to how many chips passing a filter are scored exactly (else FAISS searches with their ids), of ``count``."""
    return max(EXACT_FILTER_LIMIT, count // EXACT_FILTER_SHARE)


def check_bbox(bbox: tuple[float, ...]) -> None:
    """Raise QueryError unless bbox is (minx, miny, maxx, maxy) in WGS84 degrees with min ≤ max."""
    if len(bbox) != 4 or not all(math.isfinite(value) for value in bbox):
        raise QueryError("bbox must be four finite numbers: minx,miny,maxx,maxy")
    minx, miny, maxx, maxy = bbox
    if minx > maxx or miny > maxy:
        raise QueryError(f"bbox min must not exceed max: got {minx},{miny},{maxx},{maxy}")
    if not (-180 <= minx <= 180 and -180 <= maxx <= 180 and -90 <= miny <= 90 and -90 <= maxy <= 90):
        raise QueryError("bbox is out of range: longitudes within ±180, latitudes within ±90 (WGS84)")


@dataclass(frozen=True)
class SearchResult:
    """One matching chip. ``record()`` gives the fields of ``--json`` and of GeoJSON properties."""

    score: float
    id: str
    path: str
    window: dict[str, int]
    bbox: list[float] | None
    date: str | None
    crs: str | None
    footprint: dict | None

    def record(self) -> dict[str, Any]:
        """Machine-readable fields (the footprint goes to the GeoJSON geometry instead)."""
        return {name: value for name, value in asdict(self).items() if name != "footprint"}


def to_geojson(results: list[SearchResult]) -> dict[str, Any]:
    """A FeatureCollection of result footprints (null geometry for chips without georeference)."""
    features = [
        {"type": "Feature", "id": result.id, "geometry": result.footprint, "properties": result.record()}
        for result in results
    ]
    return {"type": "FeatureCollection", "features": features}


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
        if model is None:
            from rsretrieve.models import load_model

            check_same_model(manifest, model_name or manifest.model, None, self.db)
            random_weights = random_weights or (checkpoint is None and manifest.built_with_random_weights)
            model = load_model(manifest.model, checkpoint, device, random_weights)
        check_same_model(manifest, model.name, model.checkpoint, self.db)
        self.model = model
        self.rerank_factor = rerank_factor
        self.nprobe = nprobe
        self.last_seconds = 0.0

    def refresh(self) -> None:
        """Switch to the newest committed version if a writer has committed since."""
        if self.store.changed_on_disk():
            for attempt in range(5):
                try:
                    store = ChipStore(self.db)
                    break
                except StoreError:
                    if attempt == 4:
                        raise
                    time.sleep(0.05)
            check_same_model(store.manifest, self.model.name, self.model.checkpoint, self.db)
            self.store = store

    # -- query vectors --------------------------------------------------------------------------
    def text_vector(self, text: str) -> np.ndarray:
        """Embedding of a text query."""
        if not text.strip():
            raise QueryError("the text query is empty")
        return self.model.encode_text([text])[0]

    def image_vector(self, image: str | Path | np.ndarray) -> np.ndarray:
        """Embedding of an image file (JPEG/PNG/GeoTIFF...) or an (H, W, 3) uint8 array."""
        pixels = image if isinstance(image, np.ndarray) else read_query_image(Path(image))
        return self.model.encode_images([pixels])[0]

    def chip_vector(self, chip_id: str) -> np.ndarray:
        """Stored embedding of an indexed chip ("more like this")."""
        self.refresh()
        fid = self.store.fid_of(chip_id)
        if fid is None:
            raise QueryError(f"no chip with id '{chip_id}' in {self.db}")
        return self.store.vectors([fid])[0]

    # -- search ---------------------------------------------------------------------------------
    def text(self, text: str, k: int = 10, filters: Filters | None = None) -> list[SearchResult]:
        """Chips matching a text description."""
        return self.search(self.text_vector(text), k, filters)

    def image(self, image: str | Path | np.ndarray, k: int = 10, filters: Filters | None = None) -> list[SearchResult]:
        """Chips that look like an image."""
        return self.search(self.image_vector(image), k, filters)

    def like(self, chip_id: str, k: int = 10, filters: Filters | None = None) -> list[SearchResult]:
        """Chips that look like an indexed chip (the chip itself comes first)."""
        return self.search(self.chip_vector(chip_id), k, filters)

    def search(self, vector: np.ndarray, k: int = 10, filters: Filters | None = None) -> list[SearchResult]:
        """The k best chips for a query vector, among those passing ``filters``."""
        if k < 1:
            raise QueryError(f"k must be at least 1 (got {k})")
        started = time.perf_counter()
        self.refresh()
        query = np.asarray(vector, np.float32).reshape(1, -1)
        scores, fids = self._ranked(query, k, filters or Filters())
        records = self.store.records(fids)
        results = [SearchResult(round(float(score), 6), **found) for score, found in zip(scores, records, strict=True)]
        self.last_seconds = time.perf_counter() - started
        return results

    def _ranked(self, query: np.ndarray, k: int, filters: Filters) -> tuple[np.ndarray, np.ndarray]:
        """Scores and fids of the k best, best first."""
        store = self.store
        if len(store) == 0:
            return np.empty(0, np.float32), np.empty(0, np.int64)
        allowed = None
        if filters.active:
            allowed = filters.matching(store.bounds())
            if len(allowed) <= exact_filter_limit(len(store)):
                return self._exact(query, store.vectors(allowed), allowed, k)
        approximate = ann.describe(store.index)["index_type"] != "flat"
        fetch = k * self.rerank_factor if approximate else k
        scores, fids = ann.search(store.index, query, fetch, nprobe=self.nprobe, allowed_ids=allowed)
        fids = fids[0][fids[0] >= 0]
        if approximate:  # exact re-rank from the memory-mapped stored vectors
            return self._exact(query, store.vectors(fids), fids, k)
        return scores[0][: len(fids)], fids

    @staticmethod
    def _exact(query: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k among ``vectors`` (labelled by ``ids``): scores and ids, best first."""
        if len(ids) == 0:
            return np.empty(0, np.float32), np.empty(0, np.int64)
        scores, found = ann.exact_search(vectors, np.asarray(ids, np.int64), query, k)
        keep = found[0] >= 0
        return scores[0][keep], found[0][keep]


def read_query_image(path: Path) -> np.ndarray:
    """Pixels of a query image, read exactly as the indexer reads a chip (one chip for the whole image)."""
    from indexer.read import SourceError, plan_whole, read_window

    if not path.is_file():
        raise QueryError(f"query image not found: {path}")
    try:
        return read_window(plan_whole(path))
    except SourceError as error:
        raise QueryError(f"cannot read query image: {error}") from error
