"""clip-retrieval compatibility: ``POST /knn-service``, ``POST /metadata``, ``GET /indices-list``.

Requests as clip-retrieval's ``ClipClient`` and clip-front send them (the body is read as JSON whatever its
Content-Type: ``ClipClient`` sends none). ``indice_name`` picks the index; ``num_images`` (else
``num_result_ids``, else 40) is k; ``text``, ``image`` (base64) and ``embedding_input`` are the query (given
together, they are combined as positives). Accepted and ignored: ``modality`` (an index holds image chips only),
``deduplicate``, ``use_safety_model``, ``use_violence_detector``, ``use_mclip``, ``aesthetic_score``,
``aesthetic_weight``, ``verbose``. ``image_url`` is refused with 400: the service fetches nothing.

Results are ``[{"id": fid, "similarity": score, "chip_id", "path", "window", "bbox", "date", "crs", "footprint",
"url", "caption"}]``: ``id`` is the integer fid (clip-retrieval's ids are integers; ``/metadata`` takes them),
``url`` the chip's PNG at ``/v1/chips/{chip_id}/image`` and ``caption`` the source file name and date.
"""

from __future__ import annotations

import time
from pathlib import PurePath
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from rsretrieve.chips import Chip, is_chip_id
from rsretrieve.query import Query
from rsretrieve.service.encoding import pre_encode
from rsretrieve.service.guard import ApiError
from rsretrieve.service.images import checked_image, decode_base64
from rsretrieve.service.indexes import Indexes
from rsretrieve.service.schemas import KnnRequest, MetadataRequest, body_schema, parse

DEFAULT_NUM_IMAGES = 40  # ClipClient's default


def clip_metadata(chip: Chip, base_url: str) -> dict[str, Any]:
    """A chip's record in clip-retrieval's result shape (``chip_id`` for the string id, ``url`` — None for an
    imported embedding, which has no image —, ``caption``)."""
    record = chip.record()
    record["chip_id"] = record.pop("id")
    caption = PurePath(chip.path).name + (f" {chip.date.isoformat()}" if chip.date else "")
    return {
        **record,
        "footprint": chip.footprint,
        "url": f"{base_url.rstrip('/')}/v1/chips/{chip.id}/image" if chip.window is not None else None,
        "caption": caption,
    }


def clip_routes(indexes: Indexes) -> APIRouter:
    """The clip-retrieval routes over ``indexes``."""
    router = APIRouter(tags=["clip-retrieval"])

    @router.get("/indices-list")
    async def indices_list() -> list[str]:
        """Names of the served indexes."""
        return list(indexes.by_name)

    @router.post("/knn-service", openapi_extra=body_schema(KnnRequest))
    async def knn_service(request: Request) -> list[dict[str, Any]]:
        """k nearest chips of a text, a base64 image or an embedding (clip-retrieval's request and result shape)."""
        body = parse(KnnRequest, await request.body())
        if body.image_url:
            raise ApiError(400, "image_url is not supported: the service fetches nothing; send the image as base64")
        served = indexes.get(body.indice_name)
        images = [] if not body.image else [checked_image(decode_base64(body.image, "image"))]
        query = Query.build(
            text=[body.text] if body.text else [],
            images=images,
            vectors=[np.asarray(body.embedding_input, np.float32)] if body.embedding_input else [],
            k=body.num_images or body.num_result_ids or DEFAULT_NUM_IMAGES,
        )
        started = time.perf_counter()
        timings: dict[str, float] = {}
        query = await pre_encode(served, query, timings)
        results = await run_in_threadpool(served.searcher.search, query)
        indexes.metrics.stage("total", time.perf_counter() - started)
        fids = await run_in_threadpool(lambda: _fids(served, [hit.chip.id for hit in results.hits]))
        base = str(request.base_url)
        return [
            {"id": fid, "similarity": hit.score, **clip_metadata(hit.chip, base)}
            for fid, hit in zip(fids, results.hits, strict=True)
        ]

    @router.post("/metadata", openapi_extra=body_schema(MetadataRequest))
    async def metadata(request: Request) -> dict[str, Any]:
        """Records of integer ids (fids) as clip-retrieval's ``{"metadata": [{"id", "metadata"}]}``."""
        body = parse(MetadataRequest, await request.body())
        served = indexes.get(body.indice_name)

        def look_up() -> list[Chip]:
            store = served.searcher.current()
            if (bad := next((fid for fid in body.ids if not 0 <= fid < len(store)), None)) is not None:
                raise ApiError(404, f"no chip with id {bad} in index '{served.name}' (ids are 0..{len(store) - 1})")
            return store.chips(body.ids)

        chips = await run_in_threadpool(look_up)
        base = str(request.base_url)
        return {
            "metadata": [
                {"id": fid, "metadata": clip_metadata(chip, base)} for fid, chip in zip(body.ids, chips, strict=True)
            ]
        }

    return router


def _fids(served: Any, chip_ids: list[str]) -> list[int]:
    """The integer fids of chip ids (one SQL lookup)."""
    if not chip_ids:
        return []
    store = served.searcher.current()
    quoted = ", ".join(f"'{chip_id}'" for chip_id in chip_ids if is_chip_id(chip_id))
    table = store.table.search().where(f"id IN ({quoted})").select(["fid", "id"]).limit(None).to_arrow()
    by_id = dict(zip(table.column("id").to_pylist(), table.column("fid").to_pylist(), strict=True))
    return [int(by_id[chip_id]) for chip_id in chip_ids]
