"""``info`` (describe an index), ``upgrade`` (bring it to this format) and ``models`` (the registry)."""

from __future__ import annotations

import argparse
import json
import sys

from rsretrieve.cli.arguments import add_db_option


def add_info_parser(commands: argparse._SubParsersAction) -> None:
    """``info``: --db and --json."""
    info = commands.add_parser("info", help="describe an index")
    add_db_option(info, required=True)
    info.add_argument("--json", action="store_true")


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


def add_upgrade_parser(commands: argparse._SubParsersAction) -> None:
    """``upgrade``: --db."""
    upgrade = commands.add_parser("upgrade", help="bring an index written by an older rsretrieve to this format")
    add_db_option(upgrade, required=True)


def cmd_upgrade(args: argparse.Namespace) -> int:
    """Bring an index to this version's format: query-side files rewritten; from formats 1-2 the float32 vectors
    become ``vectors.i8`` and leave the LanceDB table (compacted); LanceDB records and the FAISS index stay."""
    from rsretrieve.store import FORMAT_VERSION, Manifest, StoreWriter

    manifest = Manifest.read(args.db)
    shown = getattr(args, "db_uri", args.db)  # an s3:// index, not its working copy
    if manifest.format_version == FORMAT_VERSION:
        print(f"{shown} is already in format {FORMAT_VERSION}", file=sys.stderr)
        return 0
    StoreWriter.open(args.db, manifest.model_identity()).close()  # opening a writer brings the index up to date
    print(f"{shown}: upgraded from format {manifest.format_version} to {FORMAT_VERSION}", file=sys.stderr)
    return 0


def add_models_parser(commands: argparse._SubParsersAction) -> None:
    """``models``: --json."""
    models = commands.add_parser("models", help="list the registered models")
    models.add_argument("--json", action="store_true")


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
