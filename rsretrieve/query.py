"""``Query``: what every client asks — texts, images, chip ids (positives and negatives, weighted), filters, k.

The CLI, the search page, the HTTP service and evaluation all build a ``Query`` and hand it to
``Searcher.search``. How the parts become one query vector is defined once, in ``combine``:

    q = normalise( Σᵢ wᵢ·p̂ᵢ  −  (Σⱼ wⱼ·n̂ⱼ) / (Σⱼ wⱼ) )

where p̂ᵢ are the L2-normalised positive embeddings (texts, images, stored chip vectors, raw vectors) and n̂ⱼ
the negatives; every weight defaults to 1. With one positive and no negative this is the plain query.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import numpy as np

from rsretrieve.chips import FilterColumns, day_number
from rsretrieve.errors import UserError

PartKind = Literal["text", "image", "like", "vector"]
KINDS: tuple[PartKind, ...] = ("text", "image", "like", "vector")
WEIGHT_KEYS = (*KINDS, *(f"not_{kind}" for kind in KINDS))
DEFAULT_K = 10


class QueryError(UserError):
    """A query that cannot be run; the message is one line for the user."""


@dataclass(frozen=True)
class Filters:
    """Bounding box in WGS84 (intersects), an inclusive acquisition-date range, and an area: a WGS84 Polygon or
    MultiPolygon (shapely geometry or GeoJSON dict; holes respected) that a chip's footprint must intersect."""

    bbox: tuple[float, float, float, float] | None = None
    start: date | None = None
    end: date | None = None
    within: Any = None

    def __post_init__(self) -> None:
        if self.within is not None:
            from rsretrieve.geometry import GeometryError, polygonal

            try:
                object.__setattr__(self, "within", polygonal(self.within, "the --within area"))
            except GeometryError as error:
                raise QueryError(str(error)) from None
        if self.bbox is not None:
            check_bbox(self.bbox)
            object.__setattr__(self, "bbox", tuple(float(value) for value in self.bbox))
        if self.start and self.end and self.start > self.end:
            raise QueryError(f"start date {self.start} is after end date {self.end}")

    @property
    def active(self) -> bool:
        """Whether anything is filtered."""
        return self.bbox is not None or self.start is not None or self.end is not None or self.within is not None

    def matching(self, columns: FilterColumns, store: Any = None) -> np.ndarray:
        """fids of the chips passing every filter (a chip without a footprint or date never passes that filter).

        ``within``: bbox prefilter in numpy, then an exact intersects test (``geometry.intersecting``) on the
        footprints read from ``store`` (a ``ChipStore``; without one, on the chips' bboxes).
        """
        keep = np.ones(len(columns), bool)
        boxes = [self.bbox] if self.bbox is not None else []
        if self.within is not None:
            boxes.append(tuple(self.within.bounds))
        for minx, miny, maxx, maxy in boxes:
            keep &= (columns.maxx >= minx) & (columns.minx <= maxx) & (columns.maxy >= miny) & (columns.miny <= maxy)
        if self.start is not None:
            keep &= columns.day >= day_number(self.start)
        if self.end is not None:
            keep &= columns.day <= day_number(self.end)
        fids = np.flatnonzero(keep)
        if self.within is not None and len(fids):
            from rsretrieve.geometry import intersecting

            bounds = np.column_stack([columns.minx[fids], columns.miny[fids], columns.maxx[fids], columns.maxy[fids]])
            read = (lambda rows: store.footprints(fids[rows])) if store is not None else None
            fids = fids[intersecting(self.within, bounds, read)]
        return fids


def check_bbox(bbox: Sequence[float]) -> None:
    """Raise QueryError unless bbox is (minx, miny, maxx, maxy) in WGS84 degrees with min ≤ max."""
    if len(bbox) != 4 or not all(isinstance(v, int | float) and math.isfinite(v) for v in bbox):
        raise QueryError("bbox must be four finite numbers: minx,miny,maxx,maxy")
    minx, miny, maxx, maxy = bbox
    if minx > maxx or miny > maxy:
        raise QueryError(f"bbox min must not exceed max: got {minx},{miny},{maxx},{maxy}")
    if not (-180 <= minx <= 180 and -180 <= maxx <= 180 and -90 <= miny <= 90 and -90 <= maxy <= 90):
        raise QueryError("bbox is out of range: longitudes within ±180, latitudes within ±90 (WGS84)")


@dataclass(frozen=True)
class Part:
    """One part of a query: a text, an image (path, encoded bytes or (H, W, 3) uint8 pixels), the id of an indexed
    chip, or a raw embedding; with its weight. Parts compare by content (``token``), so queries can be cache keys."""

    kind: PartKind
    value: Any = field(compare=False)
    weight: float = 1.0
    label: str = field(default="", compare=False)  # how people see it (an upload's file name, a result's rank)
    token: str = field(init=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise QueryError(f"unknown query part {self.kind!r} (one of {', '.join(KINDS)})")
        if not (isinstance(self.weight, int | float) and math.isfinite(self.weight) and self.weight > 0):
            raise QueryError(f"weights must be positive numbers (got {self.weight!r} for a {self.kind})")
        if self.kind in ("text", "like") and (not isinstance(self.value, str) or not self.value.strip()):
            raise QueryError("the text query is empty" if self.kind == "text" else "a chip id is empty")
        object.__setattr__(self, "token", _token(self.value))

    def describe(self) -> str:
        """The part in words."""
        if self.kind == "text":
            return f"“{self.value}”"
        if self.kind == "like":
            return f"chips like {self.label or self.value}"
        if self.kind == "image":
            name = "an image"
            if isinstance(self.value, str | Path):
                text = str(self.value)
                name = Path(urlsplit(text).path if "://" in text else text).name  # a URI's name, without its query
            return f"images like {self.label or name}"
        return self.label or "a vector"


def _token(value: Any) -> str:
    """Content identity of a part's value (text and paths as they are, pixels and bytes by digest)."""
    if isinstance(value, str | Path):
        return str(value)
    data = value.tobytes() if isinstance(value, np.ndarray) else bytes(value)
    return hashlib.sha1(data).hexdigest()


@dataclass(frozen=True)
class Query:
    """Positives and negatives (``Part``), filters, k, and per-query search settings (None: the searcher's)."""

    positives: tuple[Part, ...]
    negatives: tuple[Part, ...] = ()
    filters: Filters = Filters()
    k: int = DEFAULT_K
    nprobe: int | None = None
    rerank: int | None = None
    min_score: float | None = None  # only results scoring at least this

    def __post_init__(self) -> None:
        if not self.positives:
            raise QueryError("give something to search for: a text, an image or a chip id (negatives alone are not)")
        if not isinstance(self.k, int) or self.k < 1:
            raise QueryError(f"k must be at least 1 (got {self.k})")
        for name in ("nprobe", "rerank"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise QueryError(f"{name} must be at least 1 (got {value})")
        if self.min_score is not None and not (
            isinstance(self.min_score, int | float) and math.isfinite(self.min_score)
        ):
            raise QueryError(f"the minimum score must be a number (got {self.min_score!r})")

    @classmethod
    def build(
        cls,
        text: str | Iterable[str] | None = None,
        images: Iterable[Any] = (),
        like: Iterable[str] = (),
        vectors: Iterable[Any] = (),
        not_text: str | Iterable[str] | None = None,
        not_images: Iterable[Any] = (),
        not_like: Iterable[str] = (),
        not_vectors: Iterable[Any] = (),
        weights: Mapping[str, float] | None = None,
        **settings: Any,
    ) -> Query:
        """A query from lists of each kind; ``weights`` maps a kind (``text``, ``not_like``...) to its parts' weight.

        ``settings`` are the other fields: filters, k, nprobe, rerank, min_score.
        """
        weights = dict(weights or {})
        if unknown := sorted(set(weights) - set(WEIGHT_KEYS)):
            raise QueryError(f"unknown weight {unknown[0]!r} (one of {', '.join(WEIGHT_KEYS)})")

        def parts(prefix: str, groups: dict[PartKind, Any]) -> tuple[Part, ...]:
            return tuple(
                Part(kind, value, weights.get(f"{prefix}{kind}", 1.0))
                for kind, values in groups.items()
                for value in ([values] if isinstance(values, str) else values or ())
            )

        positives = parts("", {"text": text, "image": images, "like": like, "vector": vectors})
        negatives = parts("not_", {"text": not_text, "image": not_images, "like": not_like, "vector": not_vectors})
        return cls(positives, negatives, **settings)

    def describe(self) -> str:
        """The query in words, e.g. “solar farm” + chip 1a2b − “cloud”."""
        text = " + ".join(part.describe() for part in self.positives)
        if self.negatives:
            text += " − " + " − ".join(part.describe() for part in self.negatives)
        return text


def combine(positives: Sequence[tuple[np.ndarray, float]], negatives: Sequence[tuple[np.ndarray, float]]) -> np.ndarray:
    """The query vector: normalise(Σ w·p̂ − Σ w·n̂ / Σ w) over (vector, weight) pairs (see the module docstring)."""
    dim = len(positives[0][0])
    query = np.zeros(dim, np.float64)
    for vector, weight in positives:
        query += weight * _unit(vector)
    if negatives:
        total = sum(weight for _, weight in negatives)
        query -= sum(weight * _unit(vector) for vector, weight in negatives) / total
    norm = np.linalg.norm(query)
    if not norm > 1e-6:
        raise QueryError("the positive and negative parts of the query cancel out")
    return (query / norm).astype(np.float32)


def _unit(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, np.float64).ravel()
    norm = np.linalg.norm(vector)
    if not (np.isfinite(norm) and norm > 0):
        raise QueryError("a query vector is zero or not finite")
    return vector / norm
