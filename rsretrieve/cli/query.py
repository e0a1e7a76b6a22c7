"""``query``: search an index (or a running service) by text, images, chips and labels."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from rsretrieve.cli.arg_types import kind_weights, positive_int
from rsretrieve.cli.arguments import (
    RANDOM_WEIGHTS_WARNING,
    CliError,
    FormatOrFile,
    StdoutFormat,
    add_db_option,
    add_filter_options,
    add_model_options,
    query_filters,
)


def add_query_parser(commands: argparse._SubParsersAction) -> None:
    """``query``: what to search for, where (--db or --server), filters and output."""
    query = commands.add_parser("query", help="search an index by text, images or chip ids (mixed, weighted)")
    query.add_argument("text", nargs="?", help="text description, e.g. 'a river crossing farmland'")
    query.add_argument(
        "--image", action="append", default=[], help="query image (JPEG, PNG, GeoTIFF; a path, s3:// or https:// URI)"
    )
    query.add_argument("--like", metavar="CHIP_ID", action="append", default=[], help="more like this indexed chip")
    query.add_argument("--not-text", metavar="TEXT", action="append", default=[], help="less like this description")
    query.add_argument(
        "--not-image", metavar="PATH", action="append", default=[], help="less like this image (path or URI)"
    )
    query.add_argument(
        "--not", dest="not_like", metavar="CHIP_ID", action="append", default=[], help="less like this chip"
    )
    query.add_argument(
        "--labels", metavar="CLASS", help="refine with a labelled class: its positives as --like, negatives as --not"
    )
    query.add_argument("--weights", type=kind_weights, help="weights by kind, e.g. text=2,like=1,not_text=0.5 (all 1)")
    add_db_option(query, help="index folder or s3:// URI (or --server)")
    remote = query.add_argument_group("service (instead of --db)")
    remote.add_argument("--server", metavar="URL", help="query a running `rsretrieve serve` (or $RSRETRIEVE_SERVER)")
    remote.add_argument("--index", metavar="NAME", help="--server: which served index (default: the first)")
    remote.add_argument("--api-key-file", type=Path, help="--server: file holding the API key ($RSRETRIEVE_API_KEY)")
    query.add_argument("-k", type=int, default=10, help="number of results (10)")
    add_filter_options(query)
    query.add_argument("--nprobe", type=positive_int, help="IVF lists visited (IVF-PQ indexes)")
    query.add_argument("--rerank", type=positive_int, metavar="R", help="IVF-PQ: re-rank k·R candidates exactly (100)")
    add_model_options(query, default=None)
    query.add_argument("--min-score", type=float, metavar="S", help="only results scoring at least S")
    output = query.add_argument_group("output (stdout: a table unless one of these; FILE: streamed, any k)")
    output.add_argument("--json", dest="format", action=StdoutFormat, nargs=0, help="results as a JSON list")
    for name, text in (("geojson", "a GeoJSON FeatureCollection"), ("csv", "CSV")):
        output.add_argument(
            f"--{name}", dest="format", action=FormatOrFile, nargs="?", metavar="FILE", help=f"results as {text}"
        )
    output.add_argument("--geoparquet", dest="format", action=FormatOrFile, metavar="FILE", help="GeoParquet 1.1")


def _searcher(args: argparse.Namespace):
    from rsretrieve.search import DEFAULT_RERANK_FACTOR, Searcher

    searcher = Searcher(
        args.db,
        model_name=args.model,
        checkpoint=args.checkpoint,
        device=args.device,
        random_weights=args.random_weights,
        nprobe=args.nprobe,
        rerank_factor=args.rerank or DEFAULT_RERANK_FACTOR,
    )
    if searcher.model.random_weights:  # asked for, or chosen for an index built with random weights
        print(RANDOM_WEIGHTS_WARNING, file=sys.stderr)
    return searcher


def _check_query_args(args: argparse.Namespace) -> None:
    """The query command's argument checks (local and --server)."""
    if args.k < 1:
        raise CliError(f"-k must be at least 1 (got {args.k})")
    from rsretrieve.uris import is_remote

    for path in [*args.image, *args.not_image]:
        if not is_remote(path) and not Path(path).is_file():
            raise CliError(f"query image not found: {path}")
    if args.text is None and not args.image and not args.like and not args.labels:
        raise CliError("give something to search for: TEXT, --image PATH, --like CHIP_ID or --labels CLASS")


def _query(args: argparse.Namespace, store: Any) -> Any:
    """The ``Query`` of the query command's arguments (with --labels: the class's labelled chips in ``store`` as
    like / not)."""
    from rsretrieve.query import Query

    like, not_like = list(args.like), list(args.not_like)
    if args.labels:
        from rsretrieve.labels import refine

        like, not_like = refine(args.db, store, args.labels, like, not_like)
    return Query.build(
        text=args.text,
        images=[str(path) for path in args.image],
        like=like,
        not_text=args.not_text,
        not_images=[str(path) for path in args.not_image],
        not_like=not_like,
        weights=args.weights,
        filters=query_filters(args),
        k=args.k,
        nprobe=args.nprobe,
        rerank=args.rerank,
        min_score=args.min_score,
    )


def cmd_query(args: argparse.Namespace) -> int:
    """Search --db (or the service at --server / $RSRETRIEVE_SERVER) and print the results."""
    server = args.server or (None if args.db else os.environ.get("RSRETRIEVE_SERVER"))
    if server:
        from rsretrieve.service.client import remote_query  # standard library only: no torch, FAISS, LanceDB

        _check_query_args(args)
        if getattr(args, "outputs", None):
            raise CliError("writing results to files works with --db, not with --server (use --json, --geojson, --csv)")
        text, summary = remote_query(args, server)
        sys.stdout.write(text)
        if summary:
            print(summary, file=sys.stderr)
        return 0
    if args.db is None:
        raise CliError("give the index: --db PATH (or --server URL of a running `rsretrieve serve`)")
    _check_query_args(args)
    searcher = _searcher(args)
    query = _query(args, searcher.current())
    outputs = getattr(args, "outputs", None)
    if outputs:
        return _stream_results(searcher, query, outputs)
    from rsretrieve.render import RENDERERS

    results = searcher.search(query)
    sys.stdout.write(RENDERERS[args.format or "table"](results.hits))
    if not args.format:
        how = f"{results.path}, {results.candidates} candidates re-ranked" if results.candidates else results.path
        print(
            f"{len(results)} results in {results.search_seconds * 1000:.1f} ms of search "
            f"({how}; encoding the query {results.timings['encode'] * 1000:.0f} ms)",
            file=sys.stderr,
        )
    return 0


def _stream_results(searcher: Any, query: Any, outputs: list[tuple[str, Path]]) -> int:
    """Write the results to files, records read and written a block at a time (``result_files``)."""
    import time

    from rsretrieve.result_files import write_results

    started = time.perf_counter()
    ranked = searcher.rank(query)
    written = write_results(ranked, outputs)
    scores = f", scores {ranked.scores[0]:.4f} to {ranked.scores[-1]:.4f}" if len(ranked) else ""
    names = ", ".join(f"{path} ({form})" for form, path in outputs)
    print(
        f"wrote {written['results']} results{scores} to {names} in {time.perf_counter() - started:.2f} s "
        f"({ranked.path})",
        file=sys.stderr,
    )
    return 0
