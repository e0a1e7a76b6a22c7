"""The ``rsretrieve`` command: index, import-embeddings, query, label, classify, info, upgrade, models, eval, app,
serve, demo.

Heavy libraries (torch, open_clip, lancedb, faiss) are imported inside the commands so that ``--help``
answers at once. Known problems end with one ``error:`` line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any, ClassVar

from rsretrieve.errors import UserError, one_line

DEMO_ARCHIVE = Path(__file__).resolve().parents[1] / "demo_archive"  # NAIP and Landsat scenes: see its README.md
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


class _StdoutFormat(argparse.Action):
    """``--json``: results on stdout in that format (one stdout format per command)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        chosen = getattr(namespace, self.dest, None)
        if chosen is not None and chosen != option_string.lstrip("-"):
            parser.error(f"{option_string}: the results already go to stdout as --{chosen}")
        setattr(namespace, self.dest, option_string.lstrip("-"))


class _FormatOrFile(_StdoutFormat):
    """``--geojson [FILE]``, ``--csv [FILE]``, ``--geoparquet FILE``: stdout in that format, or streamed to FILE
    (``outputs``: (format, path) pairs; several files may be written in one pass)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if values is None:
            return super().__call__(parser, namespace, values, option_string)
        outputs = list(getattr(namespace, "outputs", None) or [])
        namespace.outputs = [*outputs, (option_string.lstrip("-"), Path(values))]


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
    _add_db_option(index, required=True, help="index folder or s3:// URI (created if missing)")
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

    _add_import_parser(commands)

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
    _add_db_option(query, help="index folder or s3:// URI (or --server)")
    remote = query.add_argument_group("service (instead of --db)")
    remote.add_argument("--server", metavar="URL", help="query a running `rsretrieve serve` (or $RSRETRIEVE_SERVER)")
    remote.add_argument("--index", metavar="NAME", help="--server: which served index (default: the first)")
    remote.add_argument("--api-key-file", type=Path, help="--server: file holding the API key ($RSRETRIEVE_API_KEY)")
    query.add_argument("-k", type=int, default=10, help="number of results (10)")
    _add_filter_options(query)
    query.add_argument("--nprobe", type=_positive_int, help="IVF lists visited (IVF-PQ indexes)")
    query.add_argument("--rerank", type=_positive_int, metavar="R", help="IVF-PQ: re-rank k·R candidates exactly (100)")
    _add_model_options(query, default=None)
    query.add_argument("--min-score", type=float, metavar="S", help="only results scoring at least S")
    output = query.add_argument_group("output (stdout: a table unless one of these; FILE: streamed, any k)")
    output.add_argument("--json", dest="format", action=_StdoutFormat, nargs=0, help="results as a JSON list")
    for name, text in (("geojson", "a GeoJSON FeatureCollection"), ("csv", "CSV")):
        output.add_argument(
            f"--{name}", dest="format", action=_FormatOrFile, nargs="?", metavar="FILE", help=f"results as {text}"
        )
    output.add_argument("--geoparquet", dest="format", action=_FormatOrFile, metavar="FILE", help="GeoParquet 1.1")

    _add_label_parser(commands)
    _add_classify_parser(commands)

    info = commands.add_parser("info", help="describe an index")
    _add_db_option(info, required=True)
    info.add_argument("--json", action="store_true")

    upgrade = commands.add_parser("upgrade", help="bring an index written by an older rsretrieve to this format")
    _add_db_option(upgrade, required=True)

    models = commands.add_parser("models", help="list the registered models")
    models.add_argument("--json", action="store_true")

    _add_eval_parser(commands)

    app = commands.add_parser("app", help="start the search page in the browser (Streamlit)")
    _add_db_option(app, help="index folder or s3:// URI to open")
    app.add_argument("--port", type=_positive_int, default=8501)
    app.add_argument("--checkpoint", type=Path, help="local weights file")

    _add_serve_parser(commands)

    demo = commands.add_parser("demo", help="index a small real archive and run example queries")
    demo.add_argument("sources", nargs="*", help="default: the small real archive shipped with rsretrieve (5 scenes)")
    demo.add_argument("--db", type=Path, default=Path("demo.lance"))
    _add_model_options(demo, default="remoteclip-vit-b-32")
    return parser


def _add_import_parser(commands: argparse._SubParsersAction) -> None:
    imported = commands.add_parser(
        "import-embeddings", help="import embeddings made elsewhere (Major TOM, Clay GeoParquet) into an index"
    )
    imported.add_argument("sources", nargs="+", help="embeddings GeoParquet files, or folders of them")
    _add_db_option(imported, required=True, help="index folder or s3:// URI (created if missing; appended to)")
    model = imported.add_argument_group("model")
    model.add_argument(
        "--model",
        help="the model that made the embeddings: a name from `rsretrieve models` (text search works), any other "
        "name or none (search by --like, labels, vectors); default: the index's",
    )
    model.add_argument("--checkpoint", type=Path, help="local weights file of --model")
    model.add_argument("--random-weights", action="store_true", help="--model with random weights (tests)")
    columns = imported.add_argument_group("columns (Major TOM's and Clay's are recognised)")
    columns.add_argument("--id-column", help="unique chip ids (unique_id, chips_id, id; none: <file>-<row>)")
    columns.add_argument("--embedding-column", help="the vectors (embedding, embeddings)")
    columns.add_argument("--geometry-column", help="footprints, WKB or WKT (the GeoParquet primary column, geometry)")
    columns.add_argument("--time-column", help="acquisition dates (timestamp, datetime, date)")
    columns.add_argument("--source-column", help="the chips' source, kept as their path (source_url, product_id)")
    imported.add_argument("--index-type", choices=["auto", "flat", "ivfpq"], default="auto")
    imported.add_argument("--flat-threshold", type=_positive_int, help="auto: IVF-PQ from this many chips (50000)")
    imported.add_argument("--nprobe", type=_positive_int, help="IVF lists visited per query")
    imported.add_argument("--json", action="store_true", help="print the run summary as JSON on stdout")
    imported.add_argument("--quiet", action="store_true", help="no progress bar")


def _db(text: str) -> str | Path:
    """A --db value: an object-storage URI kept as text (Path would fold its "//"), else a folder."""
    return text if "://" in text else Path(text)


def _add_db_option(parser: argparse.ArgumentParser, **kwargs: object) -> None:
    """--db (a folder or an s3:// URI) and --cache-dir (where the local copy of an s3:// index lives)."""
    kwargs.setdefault("help", "index folder or s3:// URI")
    parser.add_argument("--db", type=_db, **kwargs)  # type: ignore[arg-type]
    parser.add_argument(
        "--cache-dir", type=Path, help="--db s3://...: local copy's folder (~/.cache/rsretrieve; docs/remote.md)"
    )


def _add_serve_parser(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="HTTP API with a warm model (FastAPI + uvicorn; docs at /docs)")
    serve.add_argument(
        "--db",
        action="append",
        required=True,
        metavar="[NAME=]PATH",
        help="index folder or s3:// URI to serve (repeat for several)",
    )
    serve.add_argument("--cache-dir", type=Path, help="local copies of s3:// indexes (~/.cache/rsretrieve)")
    serve.add_argument(
        "--refresh-seconds", type=float, default=10.0, help="s3:// indexes: look for a new version this often (10)"
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
    _add_db_option(add, required=True)
    add.add_argument("--class", dest="class_name", metavar="CLASS", required=True, help="class name, e.g. solar-farm")
    add.add_argument("--positive", nargs="+", default=[], metavar="CHIP_ID", help="chips showing the class")
    add.add_argument("--negative", nargs="+", default=[], metavar="CHIP_ID", help="chips that do not")
    add.add_argument("--note", default="", help="free text kept with the labels")
    remove = actions.add_parser("remove", help="remove labels of chip ids, or a whole class")
    remove.add_argument("ids", nargs="*", metavar="CHIP_ID")
    _add_db_option(remove, required=True)
    remove.add_argument("--class", dest="class_name", metavar="CLASS", help="only this class (alone: the whole class)")
    listing = actions.add_parser("list", help="list labels (per-class counts on stderr)")
    _add_db_option(listing, required=True)
    listing.add_argument("--class", dest="class_name", metavar="CLASS")
    listing.add_argument("--json", action="store_true")
    export = actions.add_parser("export", help="write a class's labelled chips as GeoJSON or GeoParquet")
    export.add_argument("file", type=Path, help="FILE.geojson or FILE.parquet")
    _add_db_option(export, required=True)
    export.add_argument("--class", dest="class_name", metavar="CLASS", required=True)
    imported = actions.add_parser("import", help="label the chips under the polygons or points of a vector file")
    imported.add_argument("file", type=Path, help="GeoJSON or GeoParquet in WGS84 (QGIS: export as EPSG:4326)")
    _add_db_option(imported, required=True)
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
    _add_db_option(classify, required=True)
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


def _index_sources(args: argparse.Namespace) -> list:
    """The sources of the index command: named files, folders, patterns and URIs, then STAC scenes."""
    from rsretrieve.raster import find_sources

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
    from rsretrieve.imported import is_vector_only
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
        if is_vector_only(manifest.checkpoint):
            raise CliError(
                f"{args.db} holds embeddings imported from {manifest.imported_from} with no model rsretrieve can load: "
                f"add more with `rsretrieve import-embeddings FILES --db {args.db}`, or index into another --db"
            )
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
    summary.db = getattr(args, "db_uri", summary.db)  # an s3:// index, not its working copy
    print(summary.line(), file=sys.stderr)
    if args.json:
        print(json.dumps(summary.as_dict(), indent=2))
    return 0


def cmd_import_embeddings(args: argparse.Namespace) -> int:
    """Import embeddings GeoParquet files into --db."""
    from rsretrieve.ann import AnnSettings
    from rsretrieve.store import WriteLock

    WriteLock(args.db).check_free()
    from indexer.embedding_files import ColumnChoice
    from indexer.import_embeddings import import_embeddings

    columns = ColumnChoice(
        args.id_column, args.embedding_column, args.geometry_column, args.time_column, args.source_column
    )
    settings = AnnSettings(args.index_type, args.flat_threshold or AnnSettings.flat_threshold, args.nprobe)
    summary = import_embeddings(
        args.sources, args.db, args.model, columns, args.checkpoint, args.random_weights, settings, not args.quiet
    )
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
        filters=_filters(args),
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
        written = labelling.label_chips(args.db, chips, name, args.positive, args.negative, args.note)
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
    from rsretrieve.classify import ClassifierOptions, class_sites, classify_class, found_records, labelled_as
    from rsretrieve.files import atomic_write
    from rsretrieve.store import ChipStore

    options = ClassifierOptions(args.threshold, args.negatives, args.seed)
    store = ChipStore(args.db)
    result = classify_class(args.db, store, args.class_name, _filters(args), options)
    name = result.summary["class"]
    summary = result.summary
    outputs: dict[str, str] = {}
    if args.geojson or args.geoparquet:
        from rsretrieve.geoparquet import records_geojson, records_geotable, write_geoparquet

        records, properties = found_records(result, store, name, labelled_as(args.db, name))
        if args.geojson:
            text = records_geojson(records, properties)
            atomic_write(args.geojson, lambda tmp: tmp.write_text(text))
            outputs["chips"] = str(args.geojson)
        else:
            write_geoparquet(args.geoparquet, *records_geotable(records, properties))
            outputs["chips"] = str(args.geoparquet)
    if args.polygons:
        from rsretrieve.geoparquet import write_features

        write_features(args.polygons, *class_sites(store, result, name))
        outputs["sites"] = str(args.polygons)
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
    info["db"] = getattr(args, "db_uri", info["db"])  # an s3:// index, not its local copy
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    index = info["index"]
    details = ", ".join(f"{key}={index[key]}" for key in ("nlist", "m", "nprobe") if index.get(key))
    lines = [
        ("index", info["db"]),
        ("model", f"{info['model']} ({info['architecture']}, checkpoint {info['checkpoint']}, dim {info['dim']})")
        if info["architecture"]
        else ("model", f"{info['model']} (imported embeddings rsretrieve cannot make, dim {info['dim']})"),
        ("chips", f"{info['rows']} rows, {info['unique_ids']} unique ids, {info['index_vectors']} in FAISS"),
        ("files", info["files"]),
        (
            "faiss",
            " ".join(filter(None, [info["index_type"], details, f"({index.get('bytes_per_vector')} bytes/vector)"])),
        ),
        ("columns", ", ".join(f"{name} {rows} rows" for name, rows in info["column_rows"].items())),
        ("chip size", f"{info['chip_size']} px, overlap {info['overlap']} px")
        if info["chip_size"] is not None or not info["imported_from"]
        else ("imported", f"embeddings from {info['imported_from']} (no pixels)"),
        ("created", info["created"]),
        ("updated", info["updated"]),
    ]
    for key, value in lines:
        print(f"{key:>10}: {value}")
    return 0


def cmd_upgrade(args: argparse.Namespace) -> int:
    """Rewrite an index's query-side files in this version's format (LanceDB rows and FAISS stay as they are)."""
    from rsretrieve.store import FORMAT_VERSION, Manifest, StoreWriter

    manifest = Manifest.read(args.db)
    shown = getattr(args, "db_uri", args.db)  # an s3:// index, not its working copy
    if manifest.format_version == FORMAT_VERSION:
        print(f"{shown} is already in format {FORMAT_VERSION}", file=sys.stderr)
        return 0
    StoreWriter.open(args.db, manifest.model_identity()).close()  # opening a writer brings the index up to date
    print(f"{shown}: upgraded from format {manifest.format_version} to {FORMAT_VERSION}", file=sys.stderr)
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
    page = Path(__file__).resolve().parents[2] / "app" / "search_page.py"
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

    followers = _follow_remote_dbs(args)
    try:
        app, indexes = load(args, key)
        if any(encoders.model.random_weights for encoders in indexes.encoders):
            print(RANDOM_WEIGHTS_WARNING, file=sys.stderr)
        shown = f"[{host}]" if ":" in host else host
        names = ", ".join(f"{served.name} ({len(served.searcher.store)} chips)" for served in indexes)
        required = "; API key required" if key else ""
        print(
            f"rsretrieve service: http://{shown}:{args.port} (docs at /docs; serving {names}{required})",
            file=sys.stderr,
        )
        sys.stderr.flush()
        run(app, indexes, args)
    finally:
        for follower in followers:
            follower.stop()
    return 0


def _follow_remote_dbs(args: argparse.Namespace) -> list:
    """Serve s3:// indexes from local copies kept at the newest version (``Follower``s, one per index)."""
    if not any("://" in value for value in args.db):
        return []
    from rsretrieve.service.indexes import parse_db
    from rsretrieve.store.remote_db import Follower, RemoteDb, is_remote_db

    if args.refresh_seconds <= 0:
        raise CliError("--refresh-seconds must be positive")
    followers = []
    for number, value in enumerate(args.db):
        name, sep, uri = value.partition("=")
        if not sep or "://" in name:
            name, uri = "", value
        if is_remote_db(uri):
            remote = RemoteDb(uri, args.cache_dir)
            remote.sync()
            args.db[number] = f"{name or parse_db(uri)[0]}={remote.path}"
            followers.append(Follower(remote, args.refresh_seconds).start())
    return followers


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
    "import-embeddings": cmd_import_embeddings,
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


WRITING_COMMANDS = ("index", "upgrade", "import-embeddings")
WRITING_LABEL_ACTIONS = ("add", "remove", "import")


@contextlib.contextmanager
def _local_db(args: argparse.Namespace) -> Iterator[None]:
    """Run a command on the local copy of an s3:// --db (synced first; published after each commit of a writer)."""
    if not isinstance(getattr(args, "db", None), str):  # a folder, none, or serve's list
        yield
        return
    from rsretrieve.store.remote_db import local_db

    write = args.command in WRITING_COMMANDS or getattr(args, "action", None) in WRITING_LABEL_ACTIONS
    with local_db(args.db, args.cache_dir, write=write) as path:
        args.db, args.db_uri = path, args.db
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rsretrieve`` console script."""
    args = build_parser().parse_args(join_negative_values(sys.argv[1:] if argv is None else argv))
    os.environ.setdefault("RUST_LOG", "error")
    show_logs()
    try:
        with _local_db(args):
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
