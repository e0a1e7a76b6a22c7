"""The analyst loop over HTTP: labels (list, add, remove, export, import) and the classifier, on a served index.

Handlers parse and shape; the work is the library's (``rsretrieve.labels``, ``rsretrieve.classify``), as for the
CLI. Label writes go through ``LabelStore`` (whole-file replace under a file lock: concurrent requests and a
concurrent ``rsretrieve label`` serialise, readers see the old file or the new one) and the labels are read again
by every request, so a search with ``labels`` sees them at once. A classification is cached (a few, by index
version, class, labels file, threshold and filters), so that paging through its results does not train again.
"""

from __future__ import annotations

import re
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi import Query as Param
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from rsretrieve.errors import one_line
from rsretrieve.service.analyst_schemas import ClassifyRequest, LabelRequest, RemoveLabelsRequest
from rsretrieve.service.guard import ApiError
from rsretrieve.service.indexes import Indexes, ServedIndex
from rsretrieve.service.schemas import SearchRequest, body_schema, listed, parse

GEOJSON = "application/geo+json"
EXPORT_MEDIA = {"geojson": GEOJSON, "geoparquet": "application/vnd.apache.parquet"}
EXPORT_SUFFIX = {"geojson": ".geojson", "geoparquet": ".parquet"}
IMPORT_SUFFIXES = (".geojson", ".json", ".parquet", ".geoparquet")
CACHED_CLASSIFICATIONS = 4


def with_labels(served: ServedIndex, body: SearchRequest) -> SearchRequest:
    """The search request with its ``labels`` class's labelled chips added to ``like`` / ``not_like``
    (``labels.refine``, as ``rsretrieve query --labels``)."""
    from rsretrieve.labels import refine

    like, not_like = refine(
        served.searcher.db, served.searcher.current(), body.labels, listed(body.like), listed(body.not_like)
    )
    return body.model_copy(update={"like": like, "not_like": not_like})


def labelling(served: ServedIndex, work: Any, *args: Any) -> Any:
    """Run a labels or classify function on ``served``: its errors name the index, not its folder; chip ids not in
    the index → 404."""
    from rsretrieve.labels import LabelError, UnknownChipsError

    try:
        return work(*args)
    except LabelError as error:
        message = one_line(error).replace(str(served.searcher.db), f"index '{served.name}'")
        raise ApiError(404 if isinstance(error, UnknownChipsError) else 400, message) from None


def _class_counts(served: ServedIndex) -> dict[str, dict[str, int]]:
    from rsretrieve.labels import LabelStore

    return LabelStore(served.searcher.db).classes()


def _file_name(class_name: str, suffix: str) -> str:
    return re.sub(r"[^\w.-]+", "_", class_name) + "-labels" + suffix


class ClassificationCache:
    """The last few classifications by what decides them (index version, labels file, class, threshold, filters)."""

    def __init__(self, size: int = CACHED_CLASSIFICATIONS):
        self.size = size
        self.entries: OrderedDict[tuple, Any] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple, compute: Any) -> Any:
        with self.lock:
            if key in self.entries:
                self.entries.move_to_end(key)
                return self.entries[key]
        value = compute()
        with self.lock:
            self.entries[key] = value
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
        return value


def classification_key(served: ServedIndex, store: Any, body: ClassifyRequest) -> tuple:
    from rsretrieve.labels import LabelStore

    labels = LabelStore(served.searcher.db).path
    stamp = (labels.stat().st_mtime_ns, labels.stat().st_size) if labels.is_file() else None
    within = repr(sorted(body.within.items())) if body.within else None
    bbox = tuple(body.bbox) if body.bbox else None
    return (served.name, store.manifest.lance_version, stamp, body.class_name, body.threshold, within, bbox,
            body.start, body.end)  # fmt: skip


def classify_page(served: ServedIndex, body: ClassifyRequest, cache: ClassificationCache) -> dict[str, Any]:
    """Train, score and page (``classify.classify_class``), as ``rsretrieve classify`` does."""
    from rsretrieve.classify import ClassifierOptions, class_sites, classify_class, labelled_as
    from rsretrieve.geoparquet import feature_collection
    from rsretrieve.query import Filters

    store = served.searcher.current()
    filters = Filters(tuple(body.bbox) if body.bbox else None, body.start, body.end, body.within)
    options = ClassifierOptions(threshold=body.threshold)

    def run() -> dict[str, Any]:
        result = classify_class(served.searcher.db, store, body.class_name, filters, options)
        return {"result": result, "sites": None}

    entry = cache.get(classification_key(served, store, body), run)
    result = entry["result"]
    name = result.summary["class"]
    if body.polygons and entry["sites"] is None:
        entry["sites"] = feature_collection(*class_sites(store, result, name))
    labelled = labelled_as(served.searcher.db, name)
    stop = body.offset + body.limit
    chips = store.chips(result.fids[body.offset : stop])
    scores = result.scores[body.offset : stop]
    records = [
        {"score": round(float(score), 6), **chip.record(), "footprint": chip.footprint, "class": name,
         "label": labelled.get(chip.id)}
        for score, chip in zip(scores, chips, strict=True)
    ]  # fmt: skip
    payload: dict[str, Any] = {
        "index": served.name,
        "version": store.manifest.lance_version,
        "summary": result.summary,
        "total": len(result.fids),
        "offset": body.offset,
        "next_offset": stop if stop < len(result.fids) else None,
        "results": records,
    }
    if body.polygons:
        payload["sites"] = entry["sites"]
    return payload


def as_feature_collection(payload: dict[str, Any]) -> dict[str, Any]:
    """A classify response as a GeoJSON FeatureCollection of its results (the rest as foreign members)."""
    features = []
    for record in payload["results"]:
        properties = {name: value for name, value in record.items() if name != "footprint"}
        features.append({"type": "Feature", "id": record["id"], "geometry": record["footprint"],
                         "properties": properties})  # fmt: skip
    others = {name: value for name, value in payload.items() if name != "results"}
    return {"type": "FeatureCollection", "features": features, **others}


def uploaded_features(data: bytes, form_file: tuple[str, bytes] | None) -> tuple[list[Any], str]:
    """The features of an import request: a GeoJSON body, or an uploaded GeoJSON / GeoParquet file."""
    import json

    from rsretrieve.geometry import geojson_features, read_features

    if form_file is None:
        try:
            parsed = json.loads(data)
        except ValueError as error:
            raise ApiError(400, f"the request body is not GeoJSON ({one_line(error)})") from None
        return geojson_features(parsed, "the request body"), "import"
    name, content = form_file
    suffix = Path(name).suffix.lower()
    if suffix not in IMPORT_SUFFIXES:
        raise ApiError(400, f"upload a .geojson, .json or .parquet file (got '{name}')")
    with tempfile.TemporaryDirectory() as folder:  # GeoParquet is read from a file; nothing else is kept
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(content)
        features = read_features(path)
    return features, Path(name).name


async def read_upload(request: Request) -> tuple[bytes, tuple[str, bytes] | None]:
    """The raw body, or the one file of a multipart form (name, bytes)."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return await request.body(), None
    try:
        form = await request.form(max_files=1, max_fields=10)
    except ApiError:
        raise
    except Exception as error:
        raise ApiError(400, f"cannot read the multipart form ({one_line(error)})") from None
    files = [value for _, value in form.multi_items() if hasattr(value, "read")]
    if not files:
        raise ApiError(400, "the multipart form holds no file: send the GeoJSON or GeoParquet as a file field")
    return b"", (files[0].filename or "upload", await files[0].read())


def analyst_routes(indexes: Indexes) -> APIRouter:
    """``/v1/labels``, ``/v1/labels/remove``, ``/v1/labels/export``, ``/v1/labels/import`` and ``/v1/classify``."""
    router = APIRouter()
    cache = ClassificationCache()

    @router.get("/v1/labels", tags=["labels"])
    async def list_labels(index: str | None = None, class_name: str | None = Param(None, alias="class")) -> Any:
        """Per-class counts and the labels (of one class with `class`)."""
        from rsretrieve.labels import LabelStore, check_class

        served = indexes.get(index)
        name = check_class(class_name) if class_name is not None else None
        store = LabelStore(served.searcher.db)
        labels = await run_in_threadpool(store.labels, name)
        classes = await run_in_threadpool(store.classes)
        return {"index": served.name, "classes": classes, "labels": [label.record() for label in labels]}

    @router.post("/v1/labels", tags=["labels"], openapi_extra=body_schema(LabelRequest))
    async def add_labels(request: Request) -> Any:
        """Label chips positive / negative for a class (again: replaces the chip's label in that class)."""
        from rsretrieve.labels import label_chips

        body = parse(LabelRequest, await request.body())
        served = indexes.get(body.index)
        args = (served.searcher.db, served.searcher.current(), body.class_name, body.positive, body.negative, body.note)
        added = await run_in_threadpool(labelling, served, label_chips, *args)
        return {"added": added, "classes": await run_in_threadpool(_class_counts, served)}

    @router.post("/v1/labels/remove", tags=["labels"], openapi_extra=body_schema(RemoveLabelsRequest))
    async def remove_labels(request: Request) -> Any:
        """Remove the labels of chip ids in a class, or (no `ids`) the whole class."""
        from rsretrieve.labels import LabelStore, check_class

        body = parse(RemoveLabelsRequest, await request.body())
        served = indexes.get(body.index)
        name = check_class(body.class_name)
        removed = await run_in_threadpool(LabelStore(served.searcher.db).remove, name, body.ids or ())
        return {"removed": removed, "classes": await run_in_threadpool(_class_counts, served)}

    @router.get("/v1/labels/export", tags=["labels"], response_class=Response)
    async def export_labels(
        class_name: str = Param(alias="class"), format: str = "geojson", index: str | None = None
    ) -> Response:
        """A class's labelled chips (footprints; class, label, note, time, record) as GeoJSON or GeoParquet."""
        from rsretrieve.labels import check_class, export_bytes

        if format not in EXPORT_MEDIA:
            raise ApiError(400, f"format: geojson or geoparquet (got '{format}')")
        served = indexes.get(index)
        name = check_class(class_name)
        store = served.searcher.current()
        data, _ = await run_in_threadpool(labelling, served, export_bytes, served.searcher.db, store, name, format)
        disposition = f'attachment; filename="{_file_name(name, EXPORT_SUFFIX[format])}"'
        return Response(data, media_type=EXPORT_MEDIA[format], headers={"Content-Disposition": disposition})

    @router.post("/v1/labels/import", tags=["labels"])
    async def import_labels(
        request: Request,
        class_name: str | None = Param(None, alias="class"),
        label: str = "positive",
        note: str | None = None,
        index: str | None = None,
    ) -> Any:
        """Label every chip whose footprint intersects a feature of a GeoJSON body, or of an uploaded GeoJSON or
        GeoParquet file (multipart). Class: `class`, else each feature's `class`; label: each feature's `label`,
        else `label`."""
        from rsretrieve.labels import check_class, label_features, parse_label

        served = indexes.get(index)
        name = check_class(class_name) if class_name is not None else None
        default = parse_label(label)
        data, upload = await read_upload(request)
        features, source = await run_in_threadpool(uploaded_features, data, upload)
        store = served.searcher.current()
        result = await run_in_threadpool(
            label_features, served.searcher.db, store, features, source, name, default, note
        )
        added = sum(sum(counts.values()) for counts in result.labels.values())
        return {"added": added, "features": result.features, "conflicts": result.conflicts,
                "classes": await run_in_threadpool(_class_counts, served)}  # fmt: skip

    @router.post("/v1/classify", tags=["classify"], openapi_extra=body_schema(ClassifyRequest))
    async def classify(request: Request) -> Response:
        """Train a classifier on a class's labels, score every chip, page through the chips above the threshold
        (best first); `polygons`: the sites too; `format: geojson`: a FeatureCollection."""
        body = parse(ClassifyRequest, await request.body())
        served = indexes.get(body.index)
        payload = await run_in_threadpool(labelling, served, classify_page, served, body, cache)
        if body.format == "geojson":
            return JSONResponse(as_feature_collection(payload), media_type=GEOJSON)
        return JSONResponse(payload)

    return router
