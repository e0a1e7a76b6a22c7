"""``demo``: index a small real archive and run example queries through the other commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rsretrieve.cli.arguments import add_model_options

DEMO_ARCHIVE = Path(__file__).resolve().parents[1] / "demo_archive"  # NAIP and Landsat scenes: see its README.md


def add_demo_parser(commands: argparse._SubParsersAction) -> None:
    """``demo``: sources, --db and the model."""
    demo = commands.add_parser("demo", help="index a small real archive and run example queries")
    demo.add_argument("sources", nargs="*", help="default: the small real archive shipped with rsretrieve (5 scenes)")
    demo.add_argument("--db", type=Path, default=Path("demo.lance"))
    add_model_options(demo, default="remoteclip-vit-b-32")


def cmd_demo(args: argparse.Namespace, run: Callable[[Sequence[str]], int]) -> int:
    """Index a small real archive and run example queries with ``run`` (the command's ``main``); random weights
    when the real ones are out of reach."""
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
        code = run(step)
        if code:
            return code
    return 0
