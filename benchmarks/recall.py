"""Recall@k of models on the remote-sensing retrieval benchmarks, beside the published numbers (architecture §6).

    python benchmarks/recall.py --datasets rsitmd rsicd --root-dir /data \\
        --models remoteclip-vit-b-32 georsclip-vit-b-32-ret2
    python benchmarks/recall.py --synthetic rsicd --models remoteclip-vit-b-32 --random-weights

Each dataset's folder is the one below ``--root-dir`` named like the dataset (``RSITMD``, ``rsicd``,
``UCM-captions``...). ``--synthetic`` is a speed run: the real test-split annotations (from
``--annotations-dir``) with seeded random 224 px images written under their file names into a temporary
folder. One JSON per run goes to ``--out-dir``: ``recall-<dataset>-<model>.json``, or
``recall-<dataset>-synthetic-<device>.json`` for a speed run; a markdown table of all runs is printed.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("RUST_LOG", "error")

from rsretrieve.cli import RANDOM_WEIGHTS_WARNING
from rsretrieve.errors import UserError
from rsretrieve.evaluation.datasets import DATASETS, BenchmarkError, RetrievalSplit, load_split
from rsretrieve.evaluation.run import (
    EvalOptions,
    Phases,
    evaluate,
    markdown_table,
    usable_split,
    write_json,
    write_synthetic_images,
)
from rsretrieve.models import load_model

HERE = Path(__file__).resolve().parent
SHARED_BENCHMARKS = HERE.parents[1] / "shared" / "data" / "benchmarks"

Prepared = tuple[RetrievalSplit, list[str]]
"""A split ready to evaluate and the names of the images left out of it."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), help="benchmarks under --root-dir")
    source.add_argument("--synthetic", nargs="+", choices=sorted(DATASETS), help="speed run on generated images")
    parser.add_argument("--root-dir", type=Path, help="folder holding one folder per benchmark")
    parser.add_argument("--annotations-dir", type=Path, default=SHARED_BENCHMARKS, help="--synthetic: caption files")
    parser.add_argument("--models", nargs="+", required=True, help="registered names or open_clip architectures")
    parser.add_argument("--random-weights", action="store_true", help="random weights (speed runs)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--index", choices=["exact", "ann", "both"], default="both")
    parser.add_argument("--ann-index", choices=["auto", "flat", "ivfpq"], default="ivfpq")
    parser.add_argument("--nprobe", type=int, help="IVF lists visited per query (ivfpq)")
    parser.add_argument("--batch-size", type=int, help="chips per batch (default: 256 on a GPU, 64 on CPU)")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--allow-missing", action="store_true", help="evaluate without missing images")
    parser.add_argument("--out-dir", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    if args.datasets and args.root_dir is None:
        parser.error("--datasets needs --root-dir")
    if args.synthetic and len(args.models) > 1:
        parser.error("--synthetic is a speed run of one model: give one --models entry")
    return args


def dataset_root(root_dir: Path, dataset: str) -> Path:
    """The folder below ``root_dir`` named like the dataset (its key or title, any case)."""
    names = {dataset, DATASETS[dataset].title.lower()}
    folders = sorted(path for path in root_dir.iterdir() if path.is_dir() and path.name.lower() in names)
    if not folders:
        raise BenchmarkError(f"no folder for {dataset} in {root_dir}: expected one named {' or '.join(sorted(names))}")
    return folders[0]


def prepare(args: argparse.Namespace, dataset: str, scratch: Path) -> Prepared:
    """Load a dataset's test split (writing synthetic images into ``scratch`` for a speed run)."""
    if args.synthetic:
        reference = load_split(dataset, args.annotations_dir / dataset)
        write_synthetic_images(reference.image_files, scratch / dataset)
        split = load_split(dataset, scratch / dataset, reference.annotation_file)
    else:
        split = load_split(dataset, dataset_root(args.root_dir, dataset))
    return usable_split(split, args.allow_missing), split.missing


def result_path(args: argparse.Namespace, result: dict[str, Any]) -> Path:
    """Where a run's JSON goes."""
    if args.synthetic:
        return args.out_dir / f"recall-{result['dataset']}-synthetic-{result['device']}.json"
    return args.out_dir / f"recall-{result['dataset']}-{result['model']}.json"


def host() -> dict[str, Any]:
    """What a run's times depend on: CPUs, torch threads, the load average and this process's CPU time so far."""
    import torch

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(load, 2) for load in os.getloadavg()],
        "process_cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
    }


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Evaluate every model on every dataset; write one JSON per run."""
    options = EvalOptions(args.index, args.ann_index, args.nprobe, args.batch_size, args.workers)
    results = []
    with tempfile.TemporaryDirectory(prefix="rsretrieve-recall-") as scratch:
        splits = {dataset: prepare(args, dataset, Path(scratch)) for dataset in args.datasets or args.synthetic}
        if args.random_weights:
            print(RANDOM_WEIGHTS_WARNING, file=sys.stderr)
        for name in args.models:
            phases = Phases()
            with phases("load_model"):
                model = load_model(name, None, args.device, args.random_weights)
            for split, missing in splits.values():
                result = evaluate(split, model, options, phases, missing)
                result["synthetic_images"] = bool(args.synthetic)
                result["host"] = host()
                write_json(result, result_path(args, result))
                print(f"wrote {result_path(args, result)}", file=sys.stderr)
                results.append(result)
                phases = Phases()
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; one ``error:`` line and exit 1 on a known problem."""
    args = parse_args(argv)
    try:
        results = run_all(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(markdown_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
