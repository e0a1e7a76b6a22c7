"""The ``rsretrieve`` command: index, query, label, classify, info, upgrade, models, eval, app, serve, demo.

Heavy libraries (torch, open_clip, lancedb, faiss) are imported inside the commands so that ``--help``
answers at once. Known problems end with one ``error:`` line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import ClassVar

from rsretrieve.errors import UserError, one_line

DEMO_ARCHIVE = Path(__file__).resolve().parent / "demo_archive"  # NAIP and Landsat scenes: see its README.md
EXIT_USAGE = 2
EXIT_ERROR = 1
RANDOM_WEIGHTS_WARNING = "warning: random weights: results are meaningless (for tests and speed runs only)"


class CliError(UserError):
    """A bad argument found after parsing; one line for the user."""


def _bbox(text: str) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not minx,miny,maxx,maxy") from None
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"'{text}' is not minx,miny,maxx,maxy (four numbers)")
    return values  # type: ignore[return-value]


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a date YYYY-MM-DD") from None


def _weights(text: str) -> dict[str, float]:
    try:
        pairs = [part.split("=", 1) for part in text.split(",")]
        return {name.strip(): float(value) for name, value in pairs}
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not KIND=WEIGHT,... (e.g. text=2,not_like=0.5)") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def _add_model_options(parser: argparse.ArgumentParser, default: str | None) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=default, help="registered name or open_clip architecture")
    group.add_argument("--checkpoint", type=Path, help="local weights file instead of the Hugging Face Hub")
    group.add_argument(
        "--random-weights", action="store_true", help="random weights (tests, speed runs; meaningless results)"
    )
    group.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    from rsretrieve import __version__

    parser = argparse.ArgumentParser(prog="rsretrieve", description="Search remote-sensing imagery by text or image.")
    parser.add_argument("--version", action="version", version=f"rsretrieve {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    index = commands.add_parser("index", help="index GeoTIFFs and images (resumable)")
    index.add_argument(
        "sources", nargs="*", help="files, folders, glob patterns, s3:// prefixes or patterns, object URLs"
    )
    index.add_argument("--db", required=True, type=Path, help="index folder (created if missing)")
    stac = index.add_argument_group("STAC (docs/remote.md)")
    stac.add_argument("--stac", metavar="CATALOG_OR_API", help="static catalogue (.json) or STAC API to index")
    stac.add_argument("--asset", help="asset key or role to read from each item (default: visual, then data)")
    stac.add_argument("--collection", action="append", help="STAC collection (repeatable)")
    stac.add_argument("--bbox", type=_bbox, help="minx,miny,maxx,maxy in WGS84 degrees (items intersecting)")
    stac.add_argument("--start", type=_date, help="earliest acquisition date YYYY-MM-DD")
    stac.add_argument("--end", type=_date, help="latest acquisition date YYYY-MM-DD")
    stac.add_argument("--max-items", type=_positive_int, help="at most this many items")
    _add_model_options(index, default=None)
    index.add_argument("--chip-size", type=_positive_int, default=224, help="chip size in pixels (224)")
    index.add_argument("--overlap", type=int, default=0, help="overlap between chips in pixels (0)")
    index.add_argument("--bands", help="1-based source bands for R,G,B, e.g. 4,3,2")
    index.add_argument("--batch-size", type=_positive_int, help="chips per batch (default: 256 on a GPU, 64 on CPU)")
    index.add_argument("--workers", type=int, help="DataLoader workers (default: by device and cores)")
    index.add_argument("--max-nodata", type=float, default=0.5, help="skip chips with more nodata than this")
    index.add_argument("--index-type", choices=["auto", "flat", "ivfpq"], default="auto")
    index.add_argument("--flat-threshold", type=_positive_int, help="auto: IVF-PQ from this many chips (50000)")
    index.add_argument("--nprobe", type=_positive_int, help="IVF lists visited per query")
    index.add_argument("--rebuild", action="store_true", help="start over: drop the index and re-embed")
    index.add_argument("--retrain", action="store_true", help="retrain the FAISS index from stored vectors")
    index.add_argument("--strict", action="store_true", help="stop at the first bad file")
    index.add_argument("--json", action="store_true", help="print the run summary as JSON on stdout")
    index.add_argument("--quiet", action="store_true", help="no progress bar")
    index.add_argument("--commit-chips", type=_positive_int, help=argparse.SUPPRESS)  # tests: commit more often
    ray = index.add_argument_group("Ray (pip install 'rsretrieve[distributed]'; docs/distributed.md)")
    ray.add_argument("--ray", action="store_true", help="plan, read and embed on a Ray cluster; commit here")
    ray.add_argument("--ray-address", help="cluster to join, e.g. auto (default: start a local one)")
    ray.add_argument("--num-gpus-per-worker", type=float, help="GPUs per embedding actor (default: 1 if any, else 0)")
    ray.add_argument("--concurrency", type=_positive_int, help="embedding actors (default: one per GPU)")

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
    query.add_argument("--weights", type=_weights, help="weights by kind, e.g. text=2,like=1,not_text=0.5 (all 1)")
    query.add_argument("--db", type=Path, help="index folder (or --server)")
    remote = query.add_argument_group("service (instead of --db)")
    remote.add_argument("--server", metavar="URL", help="query a running `rsretrieve serve` (or $RSRETRIEVE_SERVER)")
    remote.add_argument("--index", metavar="NAME", help="--server: which served index (default: the first)")
    remote.add_argument("--api-key-file", type=Path, help="--server: file holding the API key ($RSRETRIEVE_API_KEY)")
    query.add_argument("-k", type=int, default=10, help="number of results (10)")
    _add_filter_options(query)
    query.add_argument("--nprobe", type=_positive_int, help="IVF lists visited (IVF-PQ indexes)")
    query.add_argument("--rerank", type=_positive_int, metavar="R", help="IVF-PQ: re-rank k·R candidates exactly (100)")
    _add_model_options(query, default=None)
    output = query.add_mutually_exclusive_group()
    for name, text in (("json", "a JSON list"), ("geojson", "a GeoJSON FeatureCollection"), ("csv", "CSV")):
        output.add_argument(f"--{name}", dest="format", action="store_const", const=name, help=f"results as {text}")
    query.add_argument("--geoparquet", type=Path, metavar="FILE", help="also write the results as GeoParquet 1.1")

    _add_label_parser(commands)
    _add_classify_parser(commands)

    info = commands.add_parser("info", help="describe an index")
    info.add_argument("--db", required=True, type=Path)
    info.add_argument("--json", action="store_true")

    upgrade = commands.add_parser("upgrade", help="bring an index written by an older rsretrieve to this format")
    upgrade.add_argument("--db", required=True, type=Path)

    models = commands.add_parser("models", help="list the registered models")
    models.add_argument("--json", action="store_true")

    _add_eval_parser(commands)

    app = commands.add_parser("app", help="start the search page in the browser (Streamlit)")
    app.add_argument("--db", type=Path, help="index folder to open")
    app.add_argument("--port", type=_positive_int, default=8501)
    app.add_argument("--checkpoint", type=Path, help="local weights file")

    _add_serve_parser(commands)

    demo = commands.add_parser("demo", help="index a small real archive and run example queries")
    demo.add_argument("sources", nargs="*", help="default: the small real archive shipped with rsretrieve (5 scenes)")
    demo.add_argument("--db", type=Path, default=Path("demo.lance"))
    _add_model_options(demo, default="remoteclip-vit-b-32")
    return parser


def _add_serve_parser(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="HTTP API with a warm model (FastAPI + uvicorn; docs at /docs)")
    serve.add_argument(
        "--db", action="append", required=True, metavar="[NAME=]PATH", help="index to serve (repeat for several)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    serve.add_argument("--port", type=_positive_int, default=8000, help="port (8000)")
    serve.add_argument("--api-key-file", type=Path, help="require 'Authorization: Bearer KEY' (key in this file)")
    serve.add_argument("--insecure-no-auth", action="store_true", help="allow a non-loopback --host without an API key")
    serve.add_argument("--root-path", default="", help="path prefix under which a reverse proxy serves it")
    serve.add_argument("--cors-origin", action="append", default=[], help="allow browser calls from this origin")
    serve.add_argument("--nprobe", type=_positive_int, help="IVF lists visited (IVF-PQ indexes)")
    serve.add_argument("--rerank", type=_positive_int, metavar="R", help="IVF-PQ: re-rank k·R candidates exactly")
    serve.add_argument("--max-batch", type=_positive_int, default=64, help="encodings per micro-batch (64)")
    serve.add_argument("--batch-wait-ms", type=float, default=5.0, help="micro-batch collection window (5 ms)")
    serve.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    _add_model_options(serve, default=None)


def _add_filter_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bbox", type=_bbox, help="minx,miny,maxx,maxy in WGS84 degrees (intersects)")
    parser.add_argument(
        "--within", type=Path, metavar="AREA", help="GeoJSON/GeoParquet (Multi)Polygon in WGS84: footprints intersect"
    )
    parser.add_argument("--start", type=_date, help="earliest acquisition date YYYY-MM-DD")
    parser.add_argument("--end", type=_date, help="latest acquisition date YYYY-MM-DD")


def _add_label_parser(commands: argparse._SubParsersAction) -> None:
    label = commands.add_parser("label", help="label chips as positive/negative examples of a class")
    actions = label.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="label chips by id")
    add.add_argument("--db", required=True, type=Path)
    add.add_argument("--class", dest="class_name", metavar="CLASS", required=True, help="class name, e.g. solar-farm")
    add.add_argument("--positive", nargs="+", default=[], metavar="CHIP_ID", help="chips showing the class")
    add.add_argument("--negative", nargs="+", default=[], metavar="CHIP_ID", help="chips that do not")
    add.add_argument("--note", default="", help="free text kept with the labels")
    remove = actions.add_parser("remove", help="remove labels of chip ids, or a whole class")
    remove.add_argument("ids", nargs="*", metavar="CHIP_ID")
    remove.add_argument("--db", required=True, type=Path)
    remove.add_argument("--class", dest="class_name", metavar="CLASS", help="only this class (alone: the whole class)")
    listing = actions.add_parser("list", help="list labels (per-class counts on stderr)")
    listing.add_argument("--db", required=True, type=Path)
    listing.add_argument("--class", dest="class_name", metavar="CLASS")
    listing.add_argument("--json", action="store_true")
    export = actions.add_parser("export", help="write a class's labelled chips as GeoJSON or GeoParquet")
    export.add_argument("file", type=Path, help="FILE.geojson or FILE.parquet")
    export.add_argument("--db", required=True, type=Path)
    export.add_argument("--class", dest="class_name", metavar="CLASS", required=True)
    imported = actions.add_parser("import", help="label the chips under the polygons or points of a vector file")
    imported.add_argument("file", type=Path, help="GeoJSON or GeoParquet in WGS84 (QGIS: export as EPSG:4326)")
    imported.add_argument("--db", required=True, type=Path)
    imported.add_argument(
        "--class", dest="class_name", metavar="CLASS", help="class of every feature (default: their 'class')"
    )
    imported.add_argument(
        "--label", choices=["positive", "negative"], default="positive", help="for features without a 'label'"
    )
    imported.add_argument("--note", help="note of every label (default: the features' 'note' or the file name)")
    imported.add_argument("--json", action="store_true")


def _add_classify_parser(commands: argparse._SubParsersAction) -> None:
    classify = commands.add_parser("classify", help="find every chip of a labelled class (logistic regression)")
    classify.add_argument("--db", required=True, type=Path)
    classify.add_argument("--class", dest="class_name", metavar="CLASS", required=True)
    classify.add_argument("--threshold", type=float, default=0.8, help="probability above which a chip is found")
    _add_filter_options(classify)
    chips = classify.add_mutually_exclusive_group()
    chips.add_argument("--geojson", type=Path, metavar="FILE", help="write the found chips (id, score) as GeoJSON")
    chips.add_argument("--geoparquet", type=Path, metavar="FILE", help="write the found chips as GeoParquet")
    classify.add_argument(
        "--polygons", type=Path, metavar="FILE", help="write sites (touching chips dissolved) as .geojson/.parquet"
    )
    classify.add_argument("--negatives", type=float, default=5.0, help="negatives per positive, sampled (5)")
    classify.add_argument("--seed", type=int, default=0)
    classify.add_argument("--json", action="store_true", help="print the summary as JSON")


def _filters(args: argparse.Namespace):
    """The ``Filters`` of --bbox, --within, --start, --end."""
    from rsretrieve.query import Filters

    within = None
    if getattr(args, "within", None) is not None:
        from rsretrieve.geometry import polygonal, read_features

        features = read_features(args.within)
        if not features:
            raise CliError(f"--within {args.within} has no features")
        import shapely

        within = polygonal(shapely.union_all([feature.geometry for feature in features]), f"--within {args.within}")
    return Filters(args.bbox, args.start, args.end, within)


def _add_eval_parser(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser("eval", help="recall@k on RSITMD / RSICD / UCM / Sydney")
    evaluate.add_argument("--dataset", required=True, help="rsitmd, rsicd, ucm or sydney")
    evaluate.add_argument("--root", required=True, type=Path, help="folder with the images and annotations")
    evaluate.add_argument("--annotations", type=Path, help="annotation file (default: found under --root)")
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument(
        "--index", choices=["exact", "ann", "both"], default="both", help="brute force, the product index, or both"
    )
    evaluate.add_argument(
        "--ann-index",
        choices=["auto", "flat", "ivfpq"],
        default="ivfpq",
        help="FAISS index for --index ann/both (ivfpq; flat below 256 images)",
    )
    evaluate.add_argument("--nprobe", type=_positive_int, help="IVF lists visited per query (ivfpq)")
    evaluate.add_argument("--out", type=Path, help="write the result JSON here")
    evaluate.add_argument("--allow-missing", action="store_true", help="evaluate without missing images")
    evaluate.add_argument("--batch-size", type=_positive_int, help="chips per batch (default: 256 on a GPU, 64 on CPU)")
    evaluate.add_argument("--workers", type=int)
    _add_model_options(evaluate, default="remoteclip-vit-b-32")


def _load_model(args: argparse.Namespace, name: str):
    from rsretrieve.models import load_model

    if args.random_weights:
        print(RANDOM_WEIGHTS_WARNING, file=sys.stderr)
    return load_model(name, args.checkpoint, args.device, args.random_weights)


def _bands(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        bands = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise CliError(f"--bands '{text}' is not a list of band numbers like 4,3,2") from None
    if len(bands) not in (1, 3) or min(bands) < 1:
        raise CliError(f"--bands takes one or three 1-based band numbers (got '{text}')")
    return bands


REMOTE_DB_PREFIXES = ("s3:/", "gs:/", "az:/", "http:/", "https:/")  # what type=Path leaves of s3://...


def _index_sources(args: argparse.Namespace) -> list:
    """The sources of the index command: named files, folders, patterns and URIs, then STAC scenes."""
    from rsretrieve.raster import find_sources

    if str(args.db).startswith(REMOTE_DB_PREFIXES):
        raise CliError("--db on object storage is not supported yet: give a local folder (sources may be remote)")
    stac_only = [name for name in ("asset", "collection", "bbox", "start", "end", "max_items") if getattr(args, name)]
    if stac_only and not args.stac:
        raise CliError(f"--{stac_only[0].replace('_', '-')} applies to --stac sources only")
    if not args.sources and not args.stac:
        raise CliError("give sources to index (files, folders, URIs) or --stac CATALOG_OR_API")
    sources = list(find_sources(args.sources)) if args.sources else []
    if args.stac:
        from rsretrieve.raster.stac import stac_scenes

        sources += stac_scenes(args.stac, args.asset, args.collection, args.bbox, args.start, args.end, args.max_items)
    return sources


def cmd_index(args: argparse.Namespace) -> int:
    """Index sources into --db."""
    from rsretrieve.ann import AnnSettings
    from rsretrieve.store import Manifest, WriteLock, check_same_model

    if not 0 <= args.overlap < args.chip_size:
        raise CliError(f"--overlap must be between 0 and chip size - 1 (got {args.overlap})")
    if not 0 <= args.max_nodata <= 1:
        raise CliError("--max-nodata is a fraction between 0 and 1")
    paths = _index_sources(args)
    WriteLock(args.db).check_free()  # refuse a second indexer before loading a model
    name = args.model
    if (args.db / "manifest.json").is_file() and not args.rebuild:
        manifest = Manifest.read(args.db)
        name = name or manifest.model
        check_same_model(manifest, name, None, args.db)  # before loading a model that would be refused
        if manifest.built_with_random_weights and args.checkpoint is None:
            args.random_weights = True  # resume with the seeded model the index was built with, as queries do
    from indexer.build import ChipOptions, RunOptions, index_archive  # imports torch: after the cheap checks
    from rsretrieve.models import DEFAULT_MODEL

    device = args.device
    if args.ray:  # the driver's model only names the index: the Ray actors embed
        args.device = "cpu"
    model = _load_model(args, name or DEFAULT_MODEL)
    chips = ChipOptions(args.chip_size, args.overlap, _bands(args.bands), args.max_nodata)
    run = RunOptions(args.batch_size, args.workers, args.commit_chips, args.strict, args.rebuild, args.retrain)
    threshold = args.flat_threshold or AnnSettings.flat_threshold
    settings = AnnSettings(args.index_type, threshold, args.nprobe)
    if args.ray:
        from indexer.distributed import RayOptions, index_archive_on_ray

        options = RayOptions(args.ray_address, args.num_gpus_per_worker, args.concurrency, device)
        source = {"name": model.name, "checkpoint": args.checkpoint, "random_weights": args.random_weights}
        summary = index_archive_on_ray(paths, args.db, model, source, chips, run, settings, options, not args.quiet)
    else:
        summary = index_archive(paths, args.db, model, chips, run, settings, show_progress=not args.quiet)
    print(summary.line(), file=sys.stderr)
    if args.json:
        print(json.dumps(summary.as_dict(), indent=2))
    return 0


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


def _query(args: argparse.Namespace):
    """The ``Query`` of the query command's arguments (with --labels: the class's labelled chips as like / not)."""
    from rsretrieve.query import Query

    _check_query_args(args)
    like, not_like = list(args.like), list(args.not_like)
    if args.labels:
        from rsretrieve.labels import LabelStore

        positives, negatives = LabelStore(args.db).ids(args.labels)
        like += [chip_id for chip_id in positives if chip_id not in like]
        not_like += [chip_id for chip_id in negatives if chip_id not in not_like]
    return Query.build(
        text=args.text,
        images=[str(path) for path in args.image],
        like=like,
        not_text=args.not_text,
        not_images=[str(path) for path in args.not_image],
        not_like=not_like,
        weights=args.weights,
        filters=_filters(args),
        k=args.k,
        nprobe=args.nprobe,
        rerank=args.rerank,
    )


def cmd_query(args: argparse.Namespace) -> int:
    """Search --db (or the service at --server / $RSRETRIEVE_SERVER) and print the results."""
    server = args.server or (None if args.db else os.environ.get("RSRETRIEVE_SERVER"))
    if server:
        from rsretrieve.service.client import remote_query  # standard library only: no torch, FAISS, LanceDB

        _check_query_args(args)
        local_only = [name for name in ("labels", "within", "geoparquet") if getattr(args, name) is not None]
        if local_only:
            raise CliError(f"--{local_only[0]} works with --db, not with --server")
        text, summary = remote_query(args, server)
        sys.stdout.write(text)
        if summary:
            print(summary, file=sys.stderr)
        return 0
    if args.db is None:
        raise CliError("give the index: --db PATH (or --server URL of a running `rsretrieve serve`)")
    from rsretrieve.render import RENDERERS

    query = _query(args)
    results = _searcher(args).search(query)
    if args.geoparquet is not None:
        from rsretrieve.files import atomic_write
        from rsretrieve.render import BINARY_RENDERERS

        data = BINARY_RENDERERS["geoparquet"](results.hits)
        atomic_write(args.geoparquet, lambda tmp: tmp.write_bytes(data))
        print(f"wrote {len(results)} results to {args.geoparquet} (GeoParquet)", file=sys.stderr)
    sys.stdout.write(RENDERERS[args.format or "table"](results.hits))
    if not args.format:
        how = f"{results.path}, {results.candidates} candidates re-ranked" if results.candidates else results.path
        print(
            f"{len(results)} results in {results.search_seconds * 1000:.1f} ms of search "
            f"({how}; encoding the query {results.timings['encode'] * 1000:.0f} ms)",
            file=sys.stderr,
        )
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    """Add, remove, list, export or import labels."""
    from rsretrieve import labels as labelling
    from rsretrieve.store import ChipStore

    if not (args.db / "manifest.json").is_file():
        raise CliError(f"index not found: {args.db} (no manifest.json)")
    store = labelling.LabelStore(args.db)
    if args.action == "list":
        rows = store.labels(labelling.check_class(args.class_name) if args.class_name else None)
        if args.json:
            print(json.dumps([label.record() for label in rows], indent=2))
        else:
            for label in rows:
                when = label.time.isoformat() if label.time else "-"
                print(f"{label.id:16}  {label.class_name:20}  {label.label:8}  {when}  {label.note}")
        for name, counts in sorted(store.classes().items()):
            if args.class_name in (None, name):
                print(f"{name}: {counts['positive']} positive, {counts['negative']} negative", file=sys.stderr)
        return 0
    if args.action == "remove":
        name = labelling.check_class(args.class_name) if args.class_name else None
        removed = store.remove(name, args.ids)
        print(f"removed {removed} label{'s' * (removed != 1)}", file=sys.stderr)
        return 0
    chips = ChipStore(args.db)
    name = labelling.check_class(args.class_name) if args.class_name else None
    if args.action == "add":
        if not args.positive and not args.negative:
            raise CliError("give chip ids with --positive and/or --negative")
        both = set(args.positive) & set(args.negative)
        if both:
            raise CliError(f"chip {sorted(both)[0]} is given as both positive and negative")
        labelling.check_ids(chips, [*args.positive, *args.negative])
        written = store.add(
            [labelling.Label(chip_id, name, labelling.POSITIVE, args.note) for chip_id in args.positive]
            + [labelling.Label(chip_id, name, labelling.NEGATIVE, args.note) for chip_id in args.negative]
        )
        counts = store.classes()[name]
        print(
            f"labelled {written} chips as {name}; the class has {counts['positive']} positive, "
            f"{counts['negative']} negative",
            file=sys.stderr,
        )
        return 0
    if args.action == "export":
        count = labelling.export_labels(args.db, chips, name, args.file)
        print(f"wrote {count} labelled chips of {name} to {args.file}", file=sys.stderr)
        return 0
    result = labelling.import_features(args.db, chips, args.file, name, args.label, args.note)
    for class_name, counts in sorted(result.labels.items()):
        print(
            f"{class_name}: labelled {counts['positive']} chips positive, {counts['negative']} negative "
            f"from {result.features} features of {args.file}",
            file=sys.stderr,
        )
    if result.conflicts:
        print(f"note: {result.conflicts} chips under both kinds of feature were labelled positive", file=sys.stderr)
    if not result.labels:
        print(f"note: no chip of {args.db} lies under the features of {args.file}", file=sys.stderr)
    if args.json:
        print(json.dumps({"features": result.features, "labels": result.labels, "conflicts": result.conflicts}))
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    """Train a classifier on a class's labels, score the archive, write the chips and sites found."""
    from rsretrieve.classify import ClassifierOptions, classify, found_records, sites
    from rsretrieve.files import atomic_write
    from rsretrieve.labels import LabelStore, check_class, resolve
    from rsretrieve.store import ChipStore

    name = check_class(args.class_name)
    options = ClassifierOptions(args.threshold, args.negatives, args.seed)
    store = ChipStore(args.db)
    filters = _filters(args)
    labelled = resolve(args.db, store, name)
    result = classify(store, labelled.positives, labelled.negatives, filters, options, name)
    summary = result.summary
    summary["labels"]["missing"] = labelled.missing
    outputs: dict[str, str] = {}
    if args.geojson or args.geoparquet:
        from rsretrieve.geoparquet import records_geojson, records_geotable, write_geoparquet

        labels = {label.id: label.label for label in LabelStore(args.db).labels(name)}
        records, properties = found_records(result, store, name, labels)
        if args.geojson:
            text = records_geojson(records, properties)
            atomic_write(args.geojson, lambda tmp: tmp.write_text(text))
            outputs["chips"] = str(args.geojson)
        else:
            write_geoparquet(args.geoparquet, *records_geotable(records, properties))
            outputs["chips"] = str(args.geoparquet)
    if args.polygons:
        from rsretrieve.geoparquet import write_features

        rows, polygons = sites(store, result.fids, result.scores)
        for row in rows:
            row["class"] = name
        write_features(args.polygons, rows, polygons)
        outputs["sites"] = str(args.polygons)
        summary["sites"] = len(rows)
        summary["site_area_m2"] = round(sum(row["area_m2"] for row in rows), 1)
    summary["outputs"] = outputs
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    cv = summary["cv"]
    if cv.get("folds"):
        quality = (
            f"cross-validated by area ({cv['folds']} folds): precision {cv['precision']}, recall {cv['recall']}, "
            f"average precision {cv['average_precision']}"
        )
    else:
        quality = f"no cross-validation: {cv['skipped']}"
    counts = summary["labels"]
    print(
        f"{name}: trained on {counts['positive']} positives, {counts['negative']} labelled and "
        f"{counts['sampled_negative']} sampled negatives; {quality}",
    )
    sites_text = f", {summary['sites']} sites ({summary['site_area_m2']:.0f} m²)" if "sites" in summary else ""
    print(
        f"{summary['found']} of {summary['chips_filtered']} chips score ≥ {options.threshold}{sites_text} "
        f"in {summary['timings']['total_s']:.2f} s"
    )
    for kind, path in outputs.items():
        print(f"wrote {kind} to {path}", file=sys.stderr)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Describe --db."""
    from rsretrieve.store import ChipStore

    info = ChipStore(args.db).info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    index = info["index"]
    details = ", ".join(f"{key}={index[key]}" for key in ("nlist", "m", "nprobe") if index.get(key))
    lines = [
        ("index", info["db"]),
        ("model", f"{info['model']} ({info['architecture']}, checkpoint {info['checkpoint']}, dim {info['dim']})"),
        ("chips", f"{info['rows']} rows, {info['unique_ids']} unique ids, {info['index_vectors']} in FAISS"),
        ("files", info["files"]),
        (
            "faiss",
            " ".join(filter(None, [info["index_type"], details, f"({index.get('bytes_per_vector')} bytes/vector)"])),
        ),
        ("columns", ", ".join(f"{name} {rows} rows" for name, rows in info["column_rows"].items())),
        ("chip size", f"{info['chip_size']} px, overlap {info['overlap']} px"),
        ("created", info["created"]),
        ("updated", info["updated"]),
    ]
    for key, value in lines:
        print(f"{key:>10}: {value}")
    return 0


def cmd_upgrade(args: argparse.Namespace) -> int:
    """Bring an index to this version's format: query-side files rewritten; from formats 1-2 the float32 vectors
    become ``vectors.i8`` and leave the LanceDB table (compacted); LanceDB records and the FAISS index stay."""
    from rsretrieve.store import FORMAT_VERSION, Manifest, StoreWriter

    manifest = Manifest.read(args.db)
    if manifest.format_version == FORMAT_VERSION:
        print(f"{args.db} is already in format {FORMAT_VERSION}", file=sys.stderr)
        return 0
    StoreWriter.open(args.db, manifest.model_identity()).close()  # opening a writer brings the index up to date
    print(f"{args.db}: upgraded from format {manifest.format_version} to {FORMAT_VERSION}", file=sys.stderr)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """List registered models."""
    from rsretrieve.models import MODELS, cached_weights, embedding_dim

    rows = [
        {
            "name": spec.name,
            "architecture": spec.architecture,
            "dim": embedding_dim(spec),
            "weights": f"{spec.hf_repo}/{spec.hf_filename}" if spec.hf_repo else None,
            "cached": cached_weights(spec) is not None,
            "description": spec.description,
        }
        for spec in MODELS.values()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':26} {'architecture':24} {'dim':>5}  {'cached':6}  weights")
    for row in rows:
        cached = "yes" if row["cached"] else "no"
        print(f"{row['name']:26} {row['architecture']:24} {row['dim']:>5}  {cached:6}  {row['weights'] or '-'}")
    print("any other open_clip architecture works with --checkpoint PATH", file=sys.stderr)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Recall@k of a model on a retrieval benchmark: a markdown table, and the JSON record with ``--out``."""
    from rsretrieve.evaluation.datasets import load_split
    from rsretrieve.evaluation.run import EvalOptions, Phases, evaluate, markdown_table, usable_split, write_json

    phases = Phases()
    with phases("load_split"):
        loaded = load_split(args.dataset, args.root, args.annotations, args.split)
        split = usable_split(loaded, args.allow_missing)
    with phases("load_model"):
        model = _load_model(args, args.model)
    options = EvalOptions(args.index, args.ann_index, args.nprobe, args.batch_size, args.workers)
    result = evaluate(split, model, options, phases, loaded.missing)
    print(markdown_table([result]))
    if args.out is not None:
        write_json(result, args.out)
    return 0


def cmd_app(args: argparse.Namespace) -> int:
    """Start the Streamlit page bound to 127.0.0.1 (this process becomes the server)."""
    page = Path(__file__).resolve().parent.parent / "app" / "search_page.py"
    command = [
        sys.executable, "-m", "streamlit", "run", str(page),
        "--server.address", "127.0.0.1", "--server.port", str(args.port),
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
        "--",
    ]  # fmt: skip
    if args.db:
        command += ["--db", str(args.db)]
    if args.checkpoint:
        command += ["--checkpoint", str(args.checkpoint)]
    print(f"rsretrieve search page: http://127.0.0.1:{args.port}", file=sys.stderr, flush=True)
    os.execv(sys.executable, command)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve indexes over HTTP with a warm model (this process becomes the server)."""
    import ipaddress

    host = args.host
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and args.api_key_file is None and not args.insecure_no_auth:
        raise CliError(
            f"--host {host} is reachable from other machines: give --api-key-file KEY_FILE "
            "(or --insecure-no-auth behind your own authentication)"
        )
    key = None
    if args.api_key_file is not None:
        from rsretrieve.service.guard import read_key

        try:
            key = read_key(args.api_key_file.read_text())
        except (OSError, UnicodeDecodeError) as error:
            raise CliError(f"cannot read --api-key-file {args.api_key_file} ({error})") from None
        if len(key) < 8:
            raise CliError(f"the API key in {args.api_key_file} is too short (8 characters at least)")
    if args.batch_wait_ms < 0:
        raise CliError("--batch-wait-ms must not be negative")
    from rsretrieve.service.serve import load, run

    app, indexes = load(args, key)
    if any(encoders.model.random_weights for encoders in indexes.encoders):
        print(RANDOM_WEIGHTS_WARNING, file=sys.stderr)
    shown = f"[{host}]" if ":" in host else host
    names = ", ".join(f"{served.name} ({len(served.searcher.store)} chips)" for served in indexes)
    required = "; API key required" if key else ""
    print(f"rsretrieve service: http://{shown}:{args.port} (docs at /docs; serving {names}{required})", file=sys.stderr)
    sys.stderr.flush()
    run(app, indexes, args)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Index a small real archive and run example queries (random weights when the real ones are out of reach)."""
    from rsretrieve.models import ModelError, resolve_spec, weights_path

    sources = args.sources or [str(DEMO_ARCHIVE)]
    try:
        if not args.random_weights:
            weights_path(resolve_spec(args.model), args.checkpoint)  # downloads once; the steps load the model
    except ModelError as error:
        print(f"note: {error}", file=sys.stderr)
        print("note: running the demo with random weights instead (the results are meaningless)", file=sys.stderr)
        args.random_weights = True
    common = ["--db", str(args.db), "--device", args.device]
    if args.random_weights:
        common.append("--random-weights")
    elif args.checkpoint:
        common += ["--checkpoint", str(args.checkpoint)]
    steps = [
        ["index", *sources, "--model", args.model, *common],
        ["info", "--db", str(args.db)],
        ["query", "a river crossing farmland", "-k", "5", *common],
        ["query", "farmland", "-k", "3", "--start", "2015-01-01", "--end", "2020-12-31", *common],
    ]
    for step in steps:
        print(f"\n$ rsretrieve {' '.join(step)}", file=sys.stderr)
        code = main(step)
        if code:
            return code
    return 0


class _LineHandler(logging.Handler):
    """Library log records as ``warning: ...`` / ``note: ...`` lines on stderr, written around progress bars."""

    PREFIX: ClassVar[dict[int, str]] = {logging.INFO: "note", logging.WARNING: "warning"}

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        prefix = self.PREFIX.get(record.levelno, record.levelname.lower())
        tqdm.write(f"{prefix}: {record.getMessage()}", file=sys.stderr)


def show_logs() -> None:
    """Route the library's log records (``rsretrieve.*``, ``indexer.*``) to stderr, once per process."""
    for name in ("rsretrieve", "indexer"):
        logger = logging.getLogger(name)
        if not any(isinstance(handler, _LineHandler) for handler in logger.handlers):
            logger.addHandler(_LineHandler())
            logger.setLevel(logging.INFO)
            logger.propagate = False


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "index": cmd_index,
    "query": cmd_query,
    "label": cmd_label,
    "classify": cmd_classify,
    "info": cmd_info,
    "upgrade": cmd_upgrade,
    "models": cmd_models,
    "eval": cmd_eval,
    "app": cmd_app,
    "serve": cmd_serve,
    "demo": cmd_demo,
}


def join_negative_values(argv: Sequence[str]) -> list[str]:
    """``--bbox -97.2,47,-96.9,47.2`` → ``--bbox=-97.2,...`` so argparse does not take it for an option."""
    joined: list[str] = []
    for arg in argv:
        if joined and joined[-1] == "--bbox" and arg.startswith("-"):
            joined[-1] = f"--bbox={arg}"
        else:
            joined.append(arg)
    return joined


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rsretrieve`` console script."""
    args = build_parser().parse_args(join_negative_values(sys.argv[1:] if argv is None else argv))
    os.environ.setdefault("RUST_LOG", "error")
    show_logs()
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted: committed work is kept; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as error:
        if os.environ.get("RSRETRIEVE_DEBUG"):
            raise
        hint = "" if isinstance(error, UserError) else " (set RSRETRIEVE_DEBUG=1 for a traceback)"
        print(f"error: {one_line(error)}{hint}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
