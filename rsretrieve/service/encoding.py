"""Encoding a query's texts and images in the service: off the event loop, micro-batched across requests."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import numpy as np
from starlette.concurrency import run_in_threadpool

from rsretrieve.imported import refuse_encoding
from rsretrieve.query import Part, Query
from rsretrieve.search import query_pixels
from rsretrieve.service.indexes import ServedIndex


async def pre_encode(served: ServedIndex, query: Query, timings: dict[str, float]) -> Query:
    """The query with its text and image parts replaced by their embeddings (micro-batched; weights kept)."""
    parts = [*query.positives, *query.negatives]
    texts = [part for part in parts if part.kind == "text"]
    images = [part for part in parts if part.kind == "image"]
    if not texts and not images:
        return query
    refuse_encoding(served.model, parts)  # an index of imported embeddings: before decoding any image
    started = time.perf_counter()
    pixels: list[np.ndarray] = []
    if images:
        pixels = await run_in_threadpool(lambda: [query_pixels(part) for part in images])
        timings["decode"] = time.perf_counter() - started
    encoding = time.perf_counter()
    text_vectors, image_vectors = await asyncio.gather(
        served.encoders.text.run([part.value for part in texts]), served.encoders.images.run(pixels)
    )
    timings["encode"] = time.perf_counter() - encoding
    vectors = {
        id(part): vector for part, vector in zip([*texts, *images], [*text_vectors, *image_vectors], strict=True)
    }

    def swap(group: tuple[Part, ...]) -> tuple[Part, ...]:
        return tuple(
            Part("vector", vectors[id(part)], part.weight, part.describe()) if id(part) in vectors else part
            for part in group
        )

    return dataclasses.replace(query, positives=swap(query.positives), negatives=swap(query.negatives))
