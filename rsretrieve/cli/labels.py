"""``label`` (add, remove, list, export, import labels) and ``classify`` (find every chip of a labelled class)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rsretrieve.cli.arguments import CliError, add_db_option, add_filter_options, query_filters


def add_label_parser(commands: argparse._SubParsersAction) -> None:
    """``label`` and its actions: add, remove, list, export, import."""
    label = commands.add_parser("label", help="label chips as positive/negative examples of a class")
    actions = label.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="label chips by id")
    add_db_option(add, required=True)
    add.add_argument("--class", dest="class_name", metavar="CLASS", required=True, help="class name, e.g. solar-farm")
    add.add_argument("--positive", nargs="+", default=[], metavar="CHIP_ID", help="chips showing the class")
    add.add_argument("--negative", nargs="+", default=[], metavar="CHIP_ID", help="chips that do not")
    add.add_argument("--note", default="", help="free text kept with the labels")
    remove = actions.add_parser("remove", help="remove labels of chip ids, or a whole class")
    remove.add_argument("ids", nargs="*", metavar="CHIP_ID")
    add_db_option(remove, required=True)
    remove.add_argument("--class", dest="class_name", metavar="CLASS", help="only this class (alone: the whole class)")
    listing = actions.add_parser("list", help="list labels (per-class counts on stderr)")
    add_db_option(listing, required=True)
    listing.add_argument("--class", dest="class_name", metavar="CLASS")
    listing.add_argument("--json", action="store_true")
    export = actions.add_parser("export", help="write a class's labelled chips as GeoJSON or GeoParquet")
    export.add_argument("file", type=Path, help="FILE.geojson or FILE.parquet")
    add_db_option(export, required=True)
    export.add_argument("--class", dest="class_name", metavar="CLASS", required=True)
    imported = actions.add_parser("import", help="label the chips under the polygons or points of a vector file")
    imported.add_argument("file", type=Path, help="GeoJSON or GeoParquet in WGS84 (QGIS: export as EPSG:4326)")
    add_db_option(imported, required=True)
    imported.add_argument(
        "--class", dest="class_name", metavar="CLASS", help="class of every feature (default: their 'class')"
    )
    imported.add_argument(
        "--label", choices=["positive", "negative"], default="positive", help="for features without a 'label'"
    )
    imported.add_argument("--note", help="note of every label (default: the features' 'note' or the file name)")
    imported.add_argument("--json", action="store_true")


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


def add_classify_parser(commands: argparse._SubParsersAction) -> None:
    """``classify``: the class, threshold, filters, output files and sampling."""
    classify = commands.add_parser("classify", help="find every chip of a labelled class (logistic regression)")
    add_db_option(classify, required=True)
    classify.add_argument("--class", dest="class_name", metavar="CLASS", required=True)
    classify.add_argument("--threshold", type=float, default=0.8, help="probability above which a chip is found")
    add_filter_options(classify)
    chips = classify.add_mutually_exclusive_group()
    chips.add_argument("--geojson", type=Path, metavar="FILE", help="write the found chips (id, score) as GeoJSON")
    chips.add_argument("--geoparquet", type=Path, metavar="FILE", help="write the found chips as GeoParquet")
    classify.add_argument(
        "--polygons", type=Path, metavar="FILE", help="write sites (touching chips dissolved) as .geojson/.parquet"
    )
    classify.add_argument("--negatives", type=float, default=5.0, help="negatives per positive, sampled (5)")
    classify.add_argument("--seed", type=int, default=0)
    classify.add_argument("--json", action="store_true", help="print the summary as JSON")


def cmd_classify(args: argparse.Namespace) -> int:
    """Train a classifier on a class's labels, score the archive, write the chips and sites found."""
    from rsretrieve.classify import ClassifierOptions, class_sites, classify_class, found_records, labelled_as
    from rsretrieve.files import atomic_write
    from rsretrieve.store import ChipStore

    options = ClassifierOptions(args.threshold, args.negatives, args.seed)
    store = ChipStore(args.db)
    result = classify_class(args.db, store, args.class_name, query_filters(args), options)
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
