"""``rsretrieve serve``: load the indexes and their models once, then run uvicorn in this process."""

from __future__ import annotations

import argparse
import sys

from rsretrieve.search import DEFAULT_RERANK_FACTOR
from rsretrieve.service.app import create_app
from rsretrieve.service.indexes import Indexes, ServeOptions, parse_db
from rsretrieve.service.metrics import Metrics

RANDOM_WEIGHTS_WARNING = "warning: random weights: results are meaningless (for tests and speed runs only)"


def serve(args: argparse.Namespace, key: str | None) -> int:
    """Load, then serve until interrupted (SIGINT/SIGTERM stop uvicorn gracefully)."""
    import uvicorn

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
    if any(encoders.model.random_weights for encoders in indexes.encoders):
        print(RANDOM_WEIGHTS_WARNING, file=sys.stderr)
    app = create_app(indexes, metrics, key=key, cors_origins=args.cors_origin)
    host = f"[{args.host}]" if ":" in args.host else args.host
    names = ", ".join(f"{served.name} ({len(served.searcher.store)} chips)" for served in indexes)
    print(
        f"rsretrieve service: http://{host}:{args.port} (docs at /docs; serving {names}"
        f"{'; API key required' if key else ''})",
        file=sys.stderr,
        flush=True,
    )
    try:
        uvicorn.run(
            app, host=args.host, port=args.port, log_level=args.log_level, access_log=False, root_path=args.root_path
        )
    finally:
        indexes.close()
    return 0
