"""``rsretrieve serve``: load the indexes and their models once (``load``), then run uvicorn in this process."""

from __future__ import annotations

import argparse
from typing import Any

from rsretrieve.search import DEFAULT_RERANK_FACTOR
from rsretrieve.service.app import create_app
from rsretrieve.service.indexes import Indexes, ServeOptions, parse_db
from rsretrieve.service.metrics import Metrics


def load(args: argparse.Namespace, key: str | None) -> tuple[Any, Indexes]:
    """The app and its loaded indexes for the serve command's arguments (models loaded here, once)."""
    options = ServeOptions(
        checkpoint=args.checkpoint,
        device=args.device,
        random_weights=args.random_weights,
        nprobe=args.nprobe,
        rerank_factor=args.rerank or DEFAULT_RERANK_FACTOR,
        max_batch=args.max_batch,
        max_wait=args.batch_wait_ms / 1000,
    )
    metrics = Metrics()
    indexes = Indexes([parse_db(value) for value in args.db], options, metrics)
    return create_app(indexes, metrics, key=key, cors_origins=args.cors_origin), indexes


def run(app: Any, indexes: Indexes, args: argparse.Namespace) -> None:
    """Serve until interrupted (SIGINT/SIGTERM stop uvicorn gracefully), then stop the batchers."""
    import uvicorn

    try:
        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            access_log=False,
            root_path=args.root_path,
        )
    finally:
        indexes.close()
