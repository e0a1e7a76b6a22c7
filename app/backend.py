"""Where the page's answers come from: an index opened in this process, or ``rsretrieve serve`` over HTTP.

``LocalBackend`` runs the ``Searcher``, ``rsretrieve.labels`` and ``rsretrieve.classify`` in process;
``ServiceBackend`` asks the service (``/v1/search``, ``/v1/chips/{id}/image``, ``/v1/indexes``, ``/v1/labels``,
``/v1/classify``; docs/service.md) and imports neither torch, FAISS nor LanceDB, so that ``rsretrieve app --server
URL`` starts light. Both give the page the same things: ``Hit`` objects (a score and a ``Chip``), index facts,
label listings in the service's JSON shape, and classifier runs.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rsretrieve.chips import Chip, Window
from rsretrieve.errors import UserError
from rsretrieve.hits import Hit
from rsretrieve.imported import is_vector_only
from rsretrieve.query import Filters, Part, Query
from rsretrieve.service.client import RemoteError, api_key, call

TIMEOUT_S = 120.0
SEARCH_STAGES = ("combine", "filter", "ann", "rerank", "records")


class BackendError(UserError):
    """The index or the service cannot answer; one line for the page."""


@dataclass(frozen=True)
class Found:
    """The hits of one search and how long it took."""

    hits: list[Hit]
    path: str = ""
    search_ms: float = 0.0
    encode_ms: float = 0.0
    version: int = 0


@dataclass(frozen=True)
class IndexFacts:
    """What the sidebar says about the open index."""

    name: str
    model: str
    dim: int
    chips: int
    files: int
    index_type: str
    version: int
    bands: tuple[int, ...] | None = None
    random_weights: bool = False
    vector_only: bool = False  # imported embeddings without a loadable model: chip ids and labels only


@dataclass(frozen=True)
class Classified:
    """A classifier run: the summary (counts, threshold, cross-validated precision/recall), how many chips scored
    at or above the threshold, and the best ``limit`` of them."""

    summary: dict[str, Any]
    total: int
    hits: list[Hit] = field(default_factory=list)


class Backend(Protocol):
    """What the page asks of an index, wherever it is."""

    def facts(self) -> IndexFacts: ...

    def extent(self) -> Any: ...

    def search(self, query: Query | None, k: int, filters: Filters, labels: str | None = None) -> Found: ...

    def chip_png(self, chip: Chip, size: int | None = None) -> bytes | None: ...

    def labels(self, class_name: str | None = None) -> dict[str, Any]: ...

    def add_labels(
        self, class_name: str, positive: list[str], negative: list[str], note: str = ""
    ) -> dict[str, Any]: ...

    def remove_labels(self, class_name: str, ids: list[str] | None = None) -> dict[str, Any]: ...

    def classify(self, class_name: str, threshold: float, filters: Filters, limit: int) -> Classified: ...


def chip_of(record: dict[str, Any]) -> Chip:
    """A ``Chip`` from a service record (``/v1/search`` result, ``/v1/chips/{id}``)."""
    bbox = record.get("bbox")
    day, window = record.get("date"), record.get("window")
    return Chip(
        record["id"],
        record["path"],
        Window(**window) if window else None,  # None: an imported embedding, no pixels
        record.get("crs"),
        tuple(bbox) if bbox else None,
        record.get("footprint"),
        dt.date.fromisoformat(day) if day else None,
        record.get("item_id"),
        record.get("collection"),
    )


def hits_of(records: list[dict[str, Any]]) -> list[Hit]:
    """``Hit`` objects of service records."""
    return [Hit(float(record["score"]), chip_of(record)) for record in records]


# --- in process -----------------------------------------------------------------------------------


class LocalBackend:
    """An index folder opened in this process (the model loads once, in ``__init__``)."""

    def __init__(self, db: str | Path, checkpoint: str | None = None):
        from rsretrieve.search import Searcher

        self.db = Path(db)
        self.searcher = Searcher(db, checkpoint=checkpoint)

    def facts(self) -> IndexFacts:
        """Model, size and version of the index as committed now."""
        manifest = self.searcher.current().manifest
        return IndexFacts(
            str(self.db),
            manifest.model,
            manifest.dim,
            manifest.count,
            manifest.files,
            (manifest.index or {}).get("index_type", "?"),
            manifest.lance_version,
            tuple(manifest.bands) if manifest.bands else None,
            self.searcher.model.random_weights,
            is_vector_only(manifest.checkpoint),
        )

    def extent(self) -> Any:
        """The index's ``rsretrieve.search.Extent`` (bbox, dates, undated and unplaced chips)."""
        return self.searcher.extent()

    def search(self, query: Query | None, k: int, filters: Filters, labels: str | None = None) -> Found:
        """Search with ``query``'s parts plus, with ``labels``, the class's positives (like) and negatives (not)."""
        positives = list(query.positives) if query else []
        negatives = list(query.negatives) if query else []
        if labels:
            from rsretrieve.labels import refine

            liked, disliked = refine(self.db, self.searcher.current(), labels, [], [])
            positives += [Part("like", chip_id, label=f"✓ {labels}") for chip_id in liked]
            negatives += [Part("like", chip_id, label=f"✗ {labels}") for chip_id in disliked]
        results = self.searcher.search(Query(tuple(positives), tuple(negatives), filters, k))
        encode_ms = results.timings.get("encode", 0.0) * 1000
        return Found(list(results.hits), results.path, results.search_seconds * 1000, encode_ms, results.version)

    def chip_png(self, chip: Chip, size: int | None = None) -> bytes | None:
        """The chip as PNG, read with the index's bands (None when its source cannot be read)."""
        from rsretrieve.thumbnails import chip_png

        return chip_png(chip, self.facts().bands, size)

    def labels(self, class_name: str | None = None) -> dict[str, Any]:
        """Per-class counts and the labels (of one class), as ``GET /v1/labels``."""
        from rsretrieve.labels import LabelStore

        store = LabelStore(self.db)
        listed = [label.record() for label in store.labels(class_name)]
        return {"index": str(self.db), "classes": store.classes(), "labels": listed}

    def add_labels(self, class_name: str, positive: list[str], negative: list[str], note: str = "") -> dict[str, Any]:
        """Label chips of a class (again: replaces); as ``POST /v1/labels``."""
        from rsretrieve.labels import LabelStore, label_chips

        added = label_chips(self.db, self.searcher.current(), class_name, positive, negative, note)
        return {"added": added, "classes": LabelStore(self.db).classes()}

    def remove_labels(self, class_name: str, ids: list[str] | None = None) -> dict[str, Any]:
        """Remove labels of chip ids (None: the whole class); as ``POST /v1/labels/remove``."""
        from rsretrieve.labels import LabelStore, check_class

        store = LabelStore(self.db)
        return {"removed": store.remove(check_class(class_name), ids or ()), "classes": store.classes()}

    def classify(self, class_name: str, threshold: float, filters: Filters, limit: int) -> Classified:
        """Train on the class's labels, score the archive, the best ``limit`` chips at or above ``threshold``."""
        from rsretrieve.classify import ClassifierOptions, classify_class

        store = self.searcher.current()
        result = classify_class(self.db, store, class_name, filters, ClassifierOptions(threshold))
        chips = store.chips(result.fids[:limit])
        hits = [Hit(float(score), chip) for score, chip in zip(result.scores[:limit], chips, strict=True)]
        return Classified(result.summary, len(result.fids), hits)


# --- over HTTP ------------------------------------------------------------------------------------


class ServiceBackend:
    """One index of ``rsretrieve serve`` at ``server`` (``index``: its name; None: the service's default)."""

    def __init__(self, server: str, key: str | None = None, index: str | None = None, timeout: float = TIMEOUT_S):
        if not server.startswith(("http://", "https://")):
            raise BackendError(f"--server must be an http:// or https:// URL (got '{server}')")
        self.server = server.rstrip("/")
        self.key = key
        self.timeout = timeout
        self.index = index or self._call("GET", "/v1/indexes")["default"]

    @classmethod
    def connect(cls, server: str, key_file: Path | None = None, index: str | None = None) -> ServiceBackend:
        """A backend with the key of ``key_file``, else of $RSRETRIEVE_API_KEY."""
        return cls(server, api_key(key_file), index)

    def _call(self, method: str, route: str, body: dict | None = None, params: dict | None = None) -> Any:
        """JSON (or, for images, bytes) of one request; BackendError with the service's one-line error."""
        try:
            payload, headers = call(self.server, method, route, body, self.key, params, self.timeout)
        except RemoteError as error:
            raise BackendError(str(error)) from None
        kind = headers.get("Content-Type", "")
        return json.loads(payload) if kind.startswith("application/json") else payload

    def facts(self) -> IndexFacts:
        """The index's entry of ``GET /v1/indexes``."""
        listed = {entry["name"]: entry for entry in self._call("GET", "/v1/indexes")["indexes"]}
        if self.index not in listed:
            raise BackendError(f"the service at {self.server} serves no index named '{self.index}'")
        entry = listed[self.index]
        return IndexFacts(
            f"{self.index} @ {self.server}",
            entry["model"],
            entry["dim"],
            entry["chips"],
            entry["files"],
            entry.get("index_type") or "?",
            entry["version"],
            vector_only=entry.get("vector_only", False),
        )

    def extent(self) -> None:
        """Not served: the page offers unbounded date and bbox inputs."""
        return None

    def search(self, query: Query | None, k: int, filters: Filters, labels: str | None = None) -> Found:
        """``POST /v1/search`` of the query's parts, the filters and, with ``labels``, a labelled class."""
        body: dict[str, Any] = {"k": k, "index": self.index, **filter_fields(filters)}
        if query is not None:
            body.update(part_fields(query))
        if labels:
            body["labels"] = labels
        payload = self._call("POST", "/v1/search", body)
        timings = payload.get("timings_ms", {})
        search_ms = sum(ms for stage, ms in timings.items() if stage in SEARCH_STAGES)
        return Found(
            hits_of(payload["results"]), payload.get("path", ""), search_ms, timings.get("encode", 0.0),
            payload.get("version", 0),
        )  # fmt: skip

    def chip_png(self, chip: Chip, size: int | None = None) -> bytes | None:
        """``GET /v1/chips/{id}/image`` (None when the service cannot read the chip's source, and without asking for
        a chip without pixels: an imported embedding)."""
        if chip.window is None:
            return None
        route = f"/v1/chips/{urllib.parse.quote(chip.id, safe='')}/image"
        try:
            return self._call("GET", route, params={"size": size or 256, "index": self.index})
        except BackendError as error:
            if " answered 404" in str(error):
                return None
            raise

    def labels(self, class_name: str | None = None) -> dict[str, Any]:
        """``GET /v1/labels``."""
        return self._call("GET", "/v1/labels", params={"index": self.index, "class": class_name})

    def add_labels(self, class_name: str, positive: list[str], negative: list[str], note: str = "") -> dict[str, Any]:
        """``POST /v1/labels``."""
        body = {"index": self.index, "class": class_name, "positive": positive, "negative": negative}
        return self._call("POST", "/v1/labels", {**body, "note": note} if note else body)

    def remove_labels(self, class_name: str, ids: list[str] | None = None) -> dict[str, Any]:
        """``POST /v1/labels/remove`` (no ids: the whole class)."""
        body: dict[str, Any] = {"index": self.index, "class": class_name}
        return self._call("POST", "/v1/labels/remove", {**body, "ids": ids} if ids else body)

    def classify(self, class_name: str, threshold: float, filters: Filters, limit: int) -> Classified:
        """``POST /v1/classify``: the best ``limit`` chips at or above ``threshold``."""
        body = {"index": self.index, "class": class_name, "threshold": threshold, "limit": limit}
        payload = self._call("POST", "/v1/classify", {**body, **filter_fields(filters, bbox=False)})
        return Classified(payload["summary"], payload["total"], hits_of(payload["results"]))


def part_fields(query: Query) -> dict[str, Any]:
    """The ``/v1/search`` fields of a query's parts: texts, base64 images, chip ids, vectors, and kind weights."""
    body: dict[str, list] = {}
    weights: dict[str, float] = {}
    for prefix, parts in (("", query.positives), ("not_", query.negatives)):
        for part in parts:
            value = part.value
            if part.kind == "image":
                value = base64.b64encode(value if isinstance(value, bytes) else Path(value).read_bytes()).decode()
            elif part.kind == "vector":
                value = [float(number) for number in value]
            body.setdefault(prefix + part.kind, []).append(value)
            if part.weight != 1.0:
                weights[prefix + part.kind] = part.weight
    return {**body, "weights": weights} if weights else dict(body)


def filter_fields(filters: Filters, bbox: bool = True) -> dict[str, Any]:
    """The ``/v1/search`` fields of the filters that are set (``bbox=False``: ``/v1/classify``'s, which has no
    bbox: a bbox alone goes as a ``within`` rectangle)."""
    fields: dict[str, Any] = {}
    if filters.bbox is not None and bbox:
        fields["bbox"] = list(filters.bbox)
    elif filters.bbox is not None and filters.within is None:
        minx, miny, maxx, maxy = filters.bbox
        ring = [[minx, miny], [maxx, miny], [maxx, maxy], [minx, maxy], [minx, miny]]
        fields["within"] = {"type": "Polygon", "coordinates": [ring]}
    if filters.start is not None:
        fields["start"] = filters.start.isoformat()
    if filters.end is not None:
        fields["end"] = filters.end.isoformat()
    if filters.within is not None:
        import shapely.geometry

        fields["within"] = shapely.geometry.mapping(filters.within)
    return fields
