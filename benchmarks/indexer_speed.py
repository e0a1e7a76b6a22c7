"""Indexer and query throughput on a real archive (issue 3 / docs/architecture.md §7).

Measures, in one run so the ratios are comparable:
- raw rasterio window reads (chips/s, one core) and the input pipeline (read + fit to the model + CHW),
- embedding alone (pre-read chips through the model, batched),
- the whole indexer (read + tile + embed + write) through ``index_archive``,
- one ``rsretrieve query`` from the shell (model load included), one query in a warm ``Searcher``,
  and ``rsretrieve --help``.

    python benchmarks/indexer_speed.py [SOURCES ...] [--model remoteclip-vit-b-32] [--device cpu]
        [--out benchmarks/results/indexer-speed-cpu.json]

Weights are random (``--random-weights`` semantics): speed does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from indexer.build import ChipOptions, RunOptions, index_archive
from rsretrieve.embedding import default_batch_size
from rsretrieve.images import fit_to_model, to_chw
from rsretrieve.models import load_model
from rsretrieve.query import Query
from rsretrieve.raster import ChipReader, find_sources, plan_scene
from rsretrieve.search import Searcher

DEFAULT_SOURCES = [str(Path(__file__).resolve().parents[2] / "shared" / "data" / "geotiff")]


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (or the platform's name for it)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown")


def timed(function, *args, **kwargs) -> tuple[object, float]:
    """(result, seconds) of one call."""
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def read_rates(paths: list[Path], chip_size: int, image_size: int) -> dict[str, float]:
    """Chips/s on one core: rasterio reads alone, then reads + fit to the model's input + CHW."""
    plans = [plan_scene(path, chip_size) for path in paths]
    reader = ChipReader()
    chips = [(plan, chip) for plan in plans for chip in plan.chips]
    _, read_seconds = timed(lambda: [reader.read(plan, chip) for plan, chip in chips])

    def pipeline() -> None:
        for plan, chip in chips:
            pixels = reader.read(plan, chip)
            if pixels is not None:
                to_chw(fit_to_model(pixels, image_size))

    _, pipeline_seconds = timed(pipeline)
    reader.close()
    return {
        "chips": len(chips),
        "rasterio_read_chips_per_s_per_core": round(len(chips) / read_seconds, 1),
        "input_pipeline_chips_per_s_per_core": round(len(chips) / pipeline_seconds, 1),
    }


def embed_rate(model, count: int, batch_size: int) -> float:
    """Chips/s through the image tower alone (uint8 batches already at the input size)."""
    pixels = torch.from_numpy(
        np.random.default_rng(0).integers(0, 256, (batch_size, 3, model.image_size, model.image_size), np.uint8)
    )
    model.encode_pixels(pixels[:2])  # warm-up
    batches = max(1, count // batch_size)
    _, seconds = timed(lambda: [model.encode_pixels(pixels) for _ in range(batches)])
    return round(batches * batch_size / seconds, 2)


def shell_seconds(args: list[str], env: dict[str, str]) -> float:
    """Wall time of one CLI call."""
    command = [sys.executable, "-m", "rsretrieve.cli", *args]
    _, seconds = timed(subprocess.run, command, capture_output=True, env=env, check=True)
    return round(seconds, 3)


def main() -> None:
    """Run every measurement and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="*", default=DEFAULT_SOURCES)
    parser.add_argument("--model", default="remoteclip-vit-b-32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, help="chips per batch (default: 256 on a GPU, 64 on CPU)")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--chip-size", type=int, default=224)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/indexer-speed-cpu.json"))
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RUST_LOG": "error"}
    paths = find_sources(args.sources)
    model, load_seconds = timed(load_model, args.model, None, args.device, True)
    args.batch_size = args.batch_size or default_batch_size(model.device)
    result: dict[str, object] = {
        "model": args.model,
        "device": torch.cuda.get_device_name(0) if model.device.startswith("cuda") else f"cpu: {cpu_name()}",
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg()[0],
        "sources": args.sources,
        "files": len(paths),
        "model_load_s": round(load_seconds, 2),
        **read_rates(paths, args.chip_size, model.image_size),
        "batch_size": args.batch_size,
        "embed_only_chips_per_s": embed_rate(model, 256 if args.device == "cpu" else 8192, args.batch_size),
    }
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "bench.lance"
        chips = ChipOptions(chip_size=args.chip_size)
        run = RunOptions(batch_size=args.batch_size, workers=args.workers)
        summary = index_archive(paths, db, model, chips, run, show_progress=False)
        result.update(
            indexed_chips=summary.new_chips,
            index_seconds=round(summary.seconds, 2),
            end_to_end_chips_per_s=round(summary.chips_per_second, 2),
        )
        searcher = Searcher(db, model=model)
        searcher.search(Query.build(text="warm up"))
        query = Query.build(text="a river crossing farmland")
        answers, warm = timed(lambda: [searcher.search(query) for _ in range(20)])
        result["warm_searcher_text_query_ms"] = round(warm / 20 * 1000, 1)
        result["warm_searcher_search_ms"] = round(float(np.median([a.search_seconds for a in answers])) * 1000, 2)
        result["warm_searcher_path"] = answers[-1].path
        result["shell_query_s"] = shell_seconds(
            ["query", "a river crossing farmland", "--db", str(db), "--device", args.device], env
        )
    result["help_s"] = shell_seconds(["--help"], env)
    result["end_to_end_chips_per_s_per_core"] = round(result["end_to_end_chips_per_s"] / (os.cpu_count() or 1), 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
