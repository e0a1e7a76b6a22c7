"""``index`` (sources → chips → embeddings → index) and ``import-embeddings`` (vectors made elsewhere)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rsretrieve.cli.arg_types import bbox, iso_date, positive_int
from rsretrieve.cli.arguments import CliError, add_db_option, add_model_options, load_model


def add_index_parser(commands: argparse._SubParsersAction) -> None:
    """``index``: sources, STAC search, model, chipping, FAISS and Ray options."""
    index = commands.add_parser("index", help="index GeoTIFFs and images (resumable)")
    index.add_argument(
        "sources", nargs="*", help="files, folders, glob patterns, s3:// prefixes or patterns, object URLs"
    )
    add_db_option(index, required=True, help="index folder or s3:// URI (created if missing)")
    stac = index.add_argument_group("STAC (docs/remote.md)")
    stac.add_argument("--stac", metavar="CATALOG_OR_API", help="static catalogue (.json) or STAC API to index")
    stac.add_argument("--asset", help="asset key or role to read from each item (default: visual, then data)")
    stac.add_argument("--collection", action="append", help="STAC collection (repeatable)")
    stac.add_argument("--bbox", type=bbox, help="minx,miny,maxx,maxy in WGS84 degrees (items intersecting)")
    stac.add_argument("--start", type=iso_date, help="earliest acquisition date YYYY-MM-DD")
    stac.add_argument("--end", type=iso_date, help="latest acquisition date YYYY-MM-DD")
    stac.add_argument("--max-items", type=positive_int, help="at most this many items")
    add_model_options(index, default=None)
    index.add_argument("--chip-size", type=positive_int, default=224, help="chip size in pixels (224)")
    index.add_argument("--overlap", type=int, default=0, help="overlap between chips in pixels (0)")
    index.add_argument("--bands", help="1-based source bands for R,G,B, e.g. 4,3,2")
    index.add_argument("--batch-size", type=positive_int, help="chips per batch (default: 256 on a GPU, 64 on CPU)")
    index.add_argument("--workers", type=int, help="DataLoader workers (default: by device and cores)")
    index.add_argument("--max-nodata", type=float, default=0.5, help="skip chips with more nodata than this")
    index.add_argument("--index-type", choices=["auto", "flat", "ivfpq"], default="auto")
    index.add_argument("--flat-threshold", type=positive_int, help="auto: IVF-PQ from this many chips (50000)")
    index.add_argument("--nprobe", type=positive_int, help="IVF lists visited per query")
    index.add_argument("--rebuild", action="store_true", help="start over: drop the index and re-embed")
    index.add_argument("--retrain", action="store_true", help="retrain the FAISS index from stored vectors")
    index.add_argument("--strict", action="store_true", help="stop at the first bad file")
    index.add_argument("--json", action="store_true", help="print the run summary as JSON on stdout")
    index.add_argument("--quiet", action="store_true", help="no progress bar")
    index.add_argument("--commit-chips", type=positive_int, help=argparse.SUPPRESS)  # tests: commit more often
    ray = index.add_argument_group("Ray (pip install 'rsretrieve[distributed]'; docs/distributed.md)")
    ray.add_argument("--ray", action="store_true", help="plan, read and embed on a Ray cluster; commit here")
    ray.add_argument("--ray-address", help="cluster to join, e.g. auto (default: start a local one)")
    ray.add_argument("--num-gpus-per-worker", type=float, help="GPUs per embedding actor (default: 1 if any, else 0)")
    ray.add_argument("--concurrency", type=positive_int, help="embedding actors (default: one per GPU)")


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
    model = load_model(args, name or DEFAULT_MODEL)
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


def add_import_parser(commands: argparse._SubParsersAction) -> None:
    """``import-embeddings``: the files, the model that made them and their columns."""
    imported = commands.add_parser(
        "import-embeddings", help="import embeddings made elsewhere (Major TOM, Clay GeoParquet) into an index"
    )
    imported.add_argument("sources", nargs="+", help="embeddings GeoParquet files, or folders of them")
    add_db_option(imported, required=True, help="index folder or s3:// URI (created if missing; appended to)")
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
    imported.add_argument("--flat-threshold", type=positive_int, help="auto: IVF-PQ from this many chips (50000)")
    imported.add_argument("--nprobe", type=positive_int, help="IVF lists visited per query")
    imported.add_argument("--json", action="store_true", help="print the run summary as JSON on stdout")
    imported.add_argument("--quiet", action="store_true", help="no progress bar")


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
