"""``eval``: recall@k of a model on a retrieval benchmark."""

from __future__ import annotations

import argparse
from pathlib import Path

from rsretrieve.cli.arg_types import positive_int
from rsretrieve.cli.arguments import add_model_options, load_model


def add_eval_parser(commands: argparse._SubParsersAction) -> None:
    """``eval``: the benchmark, the indexes to compare and the model."""
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
    evaluate.add_argument("--nprobe", type=positive_int, help="IVF lists visited per query (ivfpq)")
    evaluate.add_argument("--out", type=Path, help="write the result JSON here")
    evaluate.add_argument("--allow-missing", action="store_true", help="evaluate without missing images")
    evaluate.add_argument("--batch-size", type=positive_int, help="chips per batch (default: 256 on a GPU, 64 on CPU)")
    evaluate.add_argument("--workers", type=int)
    add_model_options(evaluate, default="remoteclip-vit-b-32")


def cmd_eval(args: argparse.Namespace) -> int:
    """Recall@k of a model on a retrieval benchmark: a markdown table, and the JSON record with ``--out``."""
    from rsretrieve.evaluation.datasets import load_split
    from rsretrieve.evaluation.run import EvalOptions, Phases, evaluate, markdown_table, usable_split, write_json

    phases = Phases()
    with phases("load_split"):
        loaded = load_split(args.dataset, args.root, args.annotations, args.split)
        split = usable_split(loaded, args.allow_missing)
    with phases("load_model"):
        model = load_model(args, args.model)
    options = EvalOptions(args.index, args.ann_index, args.nprobe, args.batch_size, args.workers)
    result = evaluate(split, model, options, phases, loaded.missing)
    print(markdown_table([result]))
    if args.out is not None:
        write_json(result, args.out)
    return 0
