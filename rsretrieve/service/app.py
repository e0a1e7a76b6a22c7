"""The FastAPI app of ``rsretrieve serve``: ``create_app(indexes, ...)`` and the ``/v1`` routes.

Handlers only parse and shape responses: a search is ``Query.build`` → text and image parts encoded by the
micro-batchers (``Part("vector", v)`` keeps each part's weight) → ``Searcher.search``. Errors are JSON
``{"error": "..."}``: bad input 4xx, never a traceback. See docs/service.md.

``Searcher.search`` runs in the thread pool while other requests are in flight (FAISS and numpy release the GIL, so
the loop keeps parsing and answering meanwhile), and on the event loop itself when its request is the only one: a
hand-off to a worker thread and back costs two wake-ups, 0.2-0.4 ms on an idle machine and several ms on a busy
one, which a lone client would pay for nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi import Query as Param
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from rsretrieve import __version__
from rsretrieve.errors import UserError, one_line
from rsretrieve.query import Filters, Part, Query
from rsretrieve.render import MEDIA_TYPES, RENDERERS
from rsretrieve.search import Results, query_pixels
from rsretrieve.service.analyst_routes import analyst_routes, labelling, with_labels
from rsretrieve.service.clip_compat import clip_routes
from rsretrieve.service.encoding import pre_encode
from rsretrieve.service.guard import MAX_BODY_BYTES, ApiError, Guard
from rsretrieve.service.images import checked_image, decode_base64
from rsretrieve.service.indexes import Indexes, ServedIndex
from rsretrieve.service.metrics import CONTENT_TYPE, Metrics
from rsretrieve.service.schemas import (
    MAX_PARTS,
    EmbedRequest,
    SearchRequest,
    body_schema,
    listed,
    parse,
    vector_list,
)
from rsretrieve.store import StoreError

log = logging.getLogger(__name__)

GEOJSON = "application/geo+json"
TEXT_MEDIA = {**MEDIA_TYPES, "table": "text/plain; charset=utf-8"}
LIST_FIELDS = ("text", "like", "not_text", "not_like")


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(
    indexes: Indexes,
    metrics: Metrics,
    key: str | None = None,
    cors_origins: Sequence[str] = (),
    max_body: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The app serving ``indexes`` (already loaded); ``key``: the API key (None: no auth)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        indexes.close()

    app = FastAPI(
        title="rsretrieve",
        version=__version__,
        description='Text and image search over your remote-sensing archive. Errors are `{"error": "..."}`.',
        lifespan=lifespan,
    )
    app.state.indexes = indexes
    app.state.metrics = metrics
    _error_handlers(app)
    app.add_middleware(Guard, metrics=metrics, key=key, max_body=max_body)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    _routes(app, indexes, metrics)
    app.include_router(clip_routes(indexes))
    app.include_router(analyst_routes(indexes))
    return app


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return error_response(error.status, str(error))

    @app.exception_handler(StoreError)
    async def store_error(request: Request, error: StoreError) -> JSONResponse:
        return error_response(503, one_line(error))

    @app.exception_handler(UserError)
    async def user_error(request: Request, error: UserError) -> JSONResponse:
        return error_response(400, one_line(error))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return error_response(400, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        message = error.detail if isinstance(error.detail, str) else json.dumps(error.detail)
        if error.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path} (see /docs)"
        return JSONResponse({"error": message}, status_code=error.status_code, headers=error.headers)


# -- search ------------------------------------------------------------------------------------------------------
async def read_search(request: Request) -> tuple[SearchRequest, list[bytes], list[bytes]]:
    """The search request of a JSON body, or of a multipart form (files ``image`` / ``not_image``, other fields
    as form values; ``bbox`` as ``minx,miny,maxx,maxy``, ``weights`` and ``within`` as JSON)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        return parse(SearchRequest, await request.body()), [], []
    try:
        form = await request.form(max_files=2 * MAX_PARTS, max_fields=1000)
    except ApiError:
        raise
    except Exception as error:
        raise ApiError(400, f"cannot read the multipart form ({one_line(error)})") from None
    files: dict[str, list[bytes]] = {"image": [], "not_image": []}
    fields: dict[str, Any] = {}
    for name, value in form.multi_items():
        if hasattr(value, "read"):
            if name not in files:
                raise ApiError(400, f"unexpected file field '{name}' (image or not_image)")
            files[name].append(await value.read())
        elif name in LIST_FIELDS:
            fields.setdefault(name, []).append(value)
        elif name == "bbox":
            try:
                fields[name] = [float(part) for part in value.split(",")]
            except ValueError:
                raise ApiError(400, "bbox: give minx,miny,maxx,maxy") from None
        elif name == "weights":
            try:
                fields[name] = json.loads(value)
            except ValueError:
                raise ApiError(400, 'weights: give a JSON object, e.g. {"text": 2}') from None
        elif name == "within":
            try:
                fields[name] = json.loads(value)
            except ValueError:
                raise ApiError(400, "within: give a GeoJSON Polygon or MultiPolygon") from None
        else:
            fields[name] = value
    return parse(SearchRequest, fields), files["image"], files["not_image"]


def build_query(body: SearchRequest, images: list[bytes], not_images: list[bytes]) -> Query:
    """``Query.build`` of a request (images decoded from base64 and size-checked, not yet decoded to pixels)."""
    images = [checked_image(decode_base64(text, "image")) for text in listed(body.image)] + [
        checked_image(data) for data in images
    ]
    not_images = [checked_image(decode_base64(text, "not_image")) for text in listed(body.not_image)] + [
        checked_image(data) for data in not_images
    ]
    return Query.build(
        text=listed(body.text),
        images=images,
        like=listed(body.like),
        vectors=vector_list(body.vector),
        not_text=listed(body.not_text),
        not_images=not_images,
        not_like=listed(body.not_like),
        not_vectors=vector_list(body.not_vector),
        weights=body.weights,
        filters=Filters(tuple(body.bbox) if body.bbox else None, body.start, body.end, body.within),
        k=body.k,
        nprobe=body.nprobe,
        rerank=body.rerank,
        min_score=body.min_score,
    )


def search_payload(served: ServedIndex, results: Results, timings: dict[str, float]) -> dict[str, Any]:
    """The JSON response of a search: records with footprints, version, path and timings in ms."""
    return {
        "index": served.name,
        "version": results.version,
        "path": results.path,
        "candidates": results.candidates,
        "results": [{**hit.record(), "footprint": hit.chip.footprint} for hit in results.hits],
        "offset": results.offset,
        "next_offset": results.next_offset,
        "timings_ms": {stage: round(seconds * 1000, 3) for stage, seconds in timings.items()},
    }


def _routes(app: FastAPI, indexes: Indexes, metrics: Metrics) -> None:
    @app.post("/v1/search", tags=["search"], openapi_extra=body_schema(SearchRequest))
    async def search(request: Request) -> Response:
        """Search by texts, base64 images, chip ids and raw vectors (positives and negatives, weighted) with filters.

        JSON body (see the schema) or multipart/form-data (files `image`, `not_image`). `Accept:
        application/geo+json` or `"format": "geojson"` → a GeoJSON FeatureCollection; `csv`, `table` → text.
        """
        started = time.perf_counter()
        body, images, not_images = await read_search(request)
        served = indexes.get(body.index)
        if body.labels:  # the class's labelled chips join the query as like / not_like
            body = await run_in_threadpool(labelling, served, with_labels, served, body)
        timings: dict[str, float] = {"parse": time.perf_counter() - started}
        if images or not_images or body.image or body.not_image:  # base64 decoding and header checks: off the loop
            query = await run_in_threadpool(build_query, body, images, not_images)
        else:
            query = build_query(body, images, not_images)
        query = await pre_encode(served, query, timings)
        searching = time.perf_counter()
        if metrics.in_flight == 1:  # alone: search on the loop, without two thread hand-offs (module docstring)
            results = served.searcher.search(query, body.offset)
        else:
            results = await run_in_threadpool(served.searcher.search, query, body.offset)
        timings["search"] = time.perf_counter() - searching
        for stage, seconds in results.timings.items():
            timings["combine" if stage == "encode" else stage] = seconds
        timings["total"] = time.perf_counter() - started
        for stage, seconds in timings.items():
            metrics.stage(stage, seconds)
        form = body.format or ("geojson" if GEOJSON in request.headers.get("accept", "") else "json")
        headers = {
            "X-Rsretrieve-Index": served.name,
            "X-Rsretrieve-Version": str(results.version),
            "X-Rsretrieve-Path": results.path,
            "X-Rsretrieve-Candidates": str(results.candidates),
            "Server-Timing": ", ".join(f"{stage};dur={seconds * 1000:.3f}" for stage, seconds in timings.items()),
        }
        if form == "json":
            return JSONResponse(search_payload(served, results, timings), headers=headers)
        return Response(RENDERERS[form](results.hits), media_type=TEXT_MEDIA[form], headers=headers)

    @app.post("/v1/embed", tags=["search"], openapi_extra=body_schema(EmbedRequest))
    async def embed(request: Request) -> JSONResponse:
        """Texts or base64 images → L2-normalised embeddings of the index's model."""
        body = parse(EmbedRequest, await request.body())
        if (body.text is None) == (body.image is None):
            raise ApiError(400, "give either text (a list of strings) or image (a list of base64 images)")
        served = indexes.get(body.index)
        if body.text is not None:
            texts = listed(body.text)
            if any(not text.strip() for text in texts):
                raise ApiError(400, "text: a text is empty")
            vectors = await served.encoders.text.run(texts)
        else:
            data = [checked_image(decode_base64(text, "image")) for text in listed(body.image)]
            pixels = await run_in_threadpool(lambda: [query_pixels(Part("image", item)) for item in data])
            vectors = await served.encoders.images.run(pixels)
        model = served.model
        return JSONResponse(
            {"index": served.name, "model": model.name, "dim": model.dim, "vectors": np.stack(vectors).tolist()}
        )

    # -- chips -----------------------------------------------------------------------------------------------------
    def find_chip(served: ServedIndex, chip_id: str) -> tuple[int, Any, Any]:
        store = served.searcher.current()
        fid = store.fid_of(chip_id)
        if fid is None:
            raise ApiError(404, f"no chip with id '{chip_id}' in index '{served.name}'")
        return fid, store.chips([fid])[0], store

    @app.get("/v1/chips/{chip_id}", tags=["chips"])
    async def chip(chip_id: str, index: str | None = None) -> JSONResponse:
        """A chip's record (source, window, bbox, date, CRS), its footprint and its fid."""
        served = indexes.get(index)
        fid, found, _ = await run_in_threadpool(find_chip, served, chip_id)
        return JSONResponse({**found.record(), "footprint": found.footprint, "fid": fid, "index": served.name})

    @app.get("/v1/chips/{chip_id}/image", tags=["chips"], response_class=Response)
    async def chip_image(chip_id: str, size: int = Param(256, ge=16, le=2048), index: str | None = None) -> Response:
        """The chip as PNG (long side `size` px), cut from its source with the index's bands."""
        from rsretrieve.thumbnails import chip_png

        served = indexes.get(index)
        _, found, store = await run_in_threadpool(find_chip, served, chip_id)
        if found.window is None:
            raise ApiError(404, f"chip '{chip_id}' has no image: it holds an embedding imported from {found.path}")
        bands = tuple(store.manifest.bands) if store.manifest.bands else None
        png = await run_in_threadpool(chip_png, found, bands, size)
        if png is None:
            raise ApiError(404, f"the source file of chip '{chip_id}' cannot be read")
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    # -- indexes and operations ------------------------------------------------------------------------------------
    @app.get("/v1/indexes", tags=["indexes"])
    async def list_indexes() -> dict[str, Any]:
        """The served indexes (the first is the default)."""
        summaries = await run_in_threadpool(lambda: [served.summary() for served in indexes])
        return {"default": indexes.default, "indexes": summaries}

    @app.get("/v1/indexes/{name}", tags=["indexes"])
    async def index_info(name: str) -> dict[str, Any]:
        """`rsretrieve info` of one index."""
        served = indexes.get(name)
        info = await run_in_threadpool(lambda: served.searcher.current().info())
        return {"name": served.name, **info}

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    async def readyz() -> JSONResponse:
        """Models loaded and every index readable (503 otherwise)."""

        def versions() -> dict[str, int]:
            return {served.name: served.searcher.current().manifest.lance_version for served in indexes}

        try:
            found = await run_in_threadpool(versions)
        except Exception as error:
            return JSONResponse({"status": "unavailable", "error": one_line(error)}, status_code=503)
        return JSONResponse({"status": "ready", "indexes": found, "models": len(indexes.encoders)})

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def prometheus() -> Response:
        """Prometheus metrics: requests, errors, latency per endpoint and per search stage, batch sizes."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)
