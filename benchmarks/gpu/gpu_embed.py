"""Embedding side of the GPU proof kit: a synthetic GeoTIFF archive read and embedded with the project's code.

Stages, each timed on the same archive: writing the archive (seeded, tiled, DEFLATE), planning it
(``plan_scene``), raw window reads (``ChipReader``) and the input pipeline (``ChipPixels``: read + fit to the
model + CHW) in ``--processes`` forked processes, the image tower alone (``encode_pixels`` on one batch from
pinned host memory and already on the device, fp16 autocast on CUDA), and read→embed end to end through
``embed_chips`` (DataLoader workers, pinned memory) with the GPU's utilisation sampled by nvidia-smi.
"""

from __future__ import annotations

import argparse
import itertools
import math
import multiprocessing
import time
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import rasterio
import torch
from gpu_proof import Deadline, GpuUtilSampler, ResultFile, host_info, rate
from rasterio.transform import from_origin
from rasterio.windows import Window

from indexer.embed import ChipPixels, embed_chips
from rsretrieve.chips import Chip
from rsretrieve.models import EmbeddingModel, load_model
from rsretrieve.raster import ChipReader, ScenePlan, plan_scene

BLOCK = 512  # GeoTIFF tile side
FIELD = 16  # pixels per cell of the blocky field under the noise
NOISE = 64  # noise amplitude: 1/64 of the range (DEFLATE then packs the scenes to about two thirds)
DTYPES = ("uint8", "uint16")  # alternate scenes: 3-band RGB bytes (aerial) and 4-band 16-bit (satellite, stretched)
READ_S = 25.0  # cap of each read stage
TOWER_S = 40.0  # cap of all image-tower measurements together
TOWER_WARMUP = 3
TOWER_MAX_CHIPS = 20_480  # per batch size and input placement
E2E_RESERVE_S = 10.0  # left for writing the result after the end-to-end run
TARGET_CHIPS_PER_S = 3_000  # docs/architecture.md §7: ViT-B-32 end to end on one H200
TARGET_GPU_BUSY = 80

_ITEMS: list[tuple[ScenePlan, Chip]] = []  # chips shared with forked reader processes (set before forking)


def write_scene(path: Path, cols: int, rows: int, chip_size: int, dtype: str, seed: int) -> None:
    """One seeded scene of cols × rows chips: a blocky smooth field plus noise, tiled 512², DEFLATE, predictor 2."""
    bands, high = (3, 255) if dtype == "uint8" else (4, 10_000)
    width, height = cols * chip_size, rows * chip_size
    profile = {
        "driver": "GTiff", "width": width, "height": height, "count": bands, "dtype": dtype,
        "crs": "EPSG:32633", "transform": from_origin(300_000 + 200_000 * (seed % 3), 5_600_000, 10.0, 10.0),
        "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK, "compress": "deflate", "predictor": 2, "zlevel": 1,
    }  # fmt: skip
    rng = np.random.default_rng(seed)
    with rasterio.open(path, "w", **profile) as dst:
        for top in range(0, height, BLOCK):
            strip = min(BLOCK, height - top)
            cells = rng.integers(1, high, (bands, math.ceil(strip / FIELD), math.ceil(width / FIELD)), np.int16)
            field = np.repeat(np.repeat(cells, FIELD, 1), FIELD, 2)[:, :strip, :width]
            field += rng.integers(-high // NOISE, high // NOISE + 1, field.shape, np.int16)
            dst.write(np.clip(field, 1, high).astype(dtype), window=Window(0, top, width, strip))


def _write_scene(task: tuple[Path, int, int, int, str, int]) -> None:
    write_scene(*task)


def _plan(task: tuple[Path, int]) -> ScenePlan:
    return plan_scene(*task)


def prepare_archive(folder: Path, args: argparse.Namespace, pool: Any) -> dict[str, Any]:
    """Write the seeded archive (``args.scenes`` scenes of ``args.scene_grid`` chips, dtypes alternating), plan
    every scene with ``plan_scene`` and put all chips, scene by scene, in _ITEMS."""
    folder.mkdir(parents=True, exist_ok=True)
    cols, rows = args.scene_grid
    tasks = [
        (folder / f"scene_{i:02d}_2020{i % 12 + 1:02d}15.tif", cols, rows, args.chip_size, DTYPES[i % 2], args.seed + i)
        for i in range(args.scenes)
    ]
    began = time.perf_counter()
    pool.map(_write_scene, tasks, chunksize=1)
    written = time.perf_counter()
    plans = pool.map(_plan, [(task[0], args.chip_size) for task in tasks], chunksize=1)
    _ITEMS[:] = [(plan, chip) for plan in plans for chip in plan.chips]
    return {
        "folder": str(folder),
        "scenes": len(plans),
        "chips": len(_ITEMS),
        "bytes": sum(task[0].stat().st_size for task in tasks),
        "raw_bytes": sum(plan.width * plan.height * plan.band_count * np.dtype(plan.dtype).itemsize for plan in plans),
        "write_s": round(written - began, 2),
        "plan_s": round(time.perf_counter() - written, 2),
    }


def _read_share(task: tuple[int, int, float, int]) -> dict[str, Any]:
    """Read _ITEMS[start:stop] in order until done or the wall clock passes stop_at; size 0 = raw reads."""
    start, stop, stop_at, size = task
    dataset = ChipPixels(_ITEMS, size, 0.5)  # what a DataLoader worker runs: read, fit to the model, CHW
    reader = ChipReader()
    chips: dict[str, int] = {}
    seconds: dict[str, float] = {}
    failed = 0
    for index in range(start, stop):
        plan, chip = _ITEMS[index]
        began = time.perf_counter()
        failed += (dataset[index][1] if size else reader.read(plan, chip)) is None
        seconds[plan.dtype] = seconds.get(plan.dtype, 0.0) + time.perf_counter() - began
        chips[plan.dtype] = chips.get(plan.dtype, 0) + 1
        if time.time() >= stop_at:
            break
    dataset.close()
    reader.close()
    return {"chips": chips, "seconds": seconds, "failed": failed}


def pool_rate(pool: Any, processes: int, size: int, seconds: float) -> dict[str, Any]:
    """Chips/s of ``processes`` processes each reading a contiguous share of _ITEMS (size 0: raw reads)."""
    bounds = np.linspace(0, len(_ITEMS), processes + 1).astype(int)
    stop_at = time.time() + seconds
    began = time.perf_counter()
    tasks = [(int(start), int(stop), stop_at, size) for start, stop in itertools.pairwise(bounds)]
    shares = pool.map(_read_share, tasks, chunksize=1)
    wall = time.perf_counter() - began
    chips = {dtype: sum(share["chips"].get(dtype, 0) for share in shares) for dtype in DTYPES}
    busy = {dtype: sum(share["seconds"].get(dtype, 0.0) for share in shares) for dtype in DTYPES}
    total = sum(chips.values())
    return {
        "processes": processes,
        "chips": total,
        "failed": sum(share["failed"] for share in shares),
        "complete": total == len(_ITEMS),
        "seconds": round(wall, 2),
        "chips_per_s": rate(total, wall),
        "chips_per_s_per_process": rate(total, sum(busy.values())),
        "by_dtype": {dtype: {"chips": chips[dtype], "chips_per_s_per_process": rate(chips[dtype], busy[dtype])}
                     for dtype in DTYPES},
    }  # fmt: skip


def tower_rates(model: EmbeddingModel, batch_sizes: list[int], seconds: float) -> list[dict[str, Any]]:
    """Chips/s of ``encode_pixels`` alone on one repeated uint8 batch: from (pinned) host memory and on the device.

    Each of the 2 × len(batch_sizes) measurements runs TOWER_MAX_CHIPS chips or its share of ``seconds``.
    """
    cuda = model.device.startswith("cuda")
    seconds /= 2 * len(batch_sizes)
    records = []
    for batch_size in batch_sizes:
        generator = torch.Generator().manual_seed(batch_size)
        shape = (batch_size, 3, model.image_size, model.image_size)
        host = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
        host = host.pin_memory() if cuda else host
        for placement, pixels in (("pinned_host" if cuda else "host", host), ("device", host.to(model.device))):
            for _ in range(TOWER_WARMUP):
                model.encode_pixels(pixels)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            chips, began = 0, time.perf_counter()
            while chips < TOWER_MAX_CHIPS and time.perf_counter() - began < seconds:
                model.encode_pixels(pixels)  # returns numpy: each batch is finished before the next
                chips += batch_size
            elapsed = time.perf_counter() - began
            records.append({
                "batch_size": batch_size, "input": placement, "chips": chips, "seconds": round(elapsed, 3),
                "chips_per_s": rate(chips, elapsed),
                "peak_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None,
            })  # fmt: skip
    return records


def end_to_end(model: EmbeddingModel, batch_size: int, workers: int, seconds: float) -> dict[str, Any]:
    """Read → embed through ``embed_chips`` over _ITEMS, stopped by the time guard; GPU utilisation sampled."""
    done = failed = 0
    first: tuple[float, int] | None = None
    unit_norm = True
    with GpuUtilSampler() as sampler:
        began = time.perf_counter()
        batches = embed_chips(model, _ITEMS, batch_size=batch_size, workers=workers)
        try:
            for batch in batches:
                done += len(batch.indices)
                failed += len(batch.statuses)
                unit_norm &= bool(np.allclose(np.linalg.norm(batch.vectors, axis=1), 1.0, atol=1e-3))
                if first is None:
                    first = (time.perf_counter(), done + failed)
                if time.perf_counter() - began > seconds:
                    break
        finally:
            batches.close()
        ended = time.perf_counter()
    steady = (ended - first[0], done + failed - first[1]) if first else (0.0, 0)
    return {
        "chips": done,
        "failed": failed,
        "planned_chips": len(_ITEMS),
        "complete": done + failed == len(_ITEMS),
        "seconds": round(ended - began, 2),
        "chips_per_s": rate(done, ended - began),
        "first_batch_s": round(first[0] - began, 2) if first else None,
        "steady_chips_per_s": rate(steady[1], steady[0]),
        "batch_size": batch_size,
        "workers": workers,
        "pin_memory": model.device.startswith("cuda"),
        "vectors_unit_norm": unit_norm,
        "gpu_util": sampler.summary(first[0] if first else None, ended),
    }


def versions(device: str) -> dict[str, Any]:
    """Library versions that the embedding figures depend on."""
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.startswith("cuda") else None,
        "torch_device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
        "open_clip": open_clip.__version__,
        "rasterio": rasterio.__version__,
        "gdal": rasterio.__gdal_version__,
    }


def run(args: argparse.Namespace) -> None:
    """All stages in order, the JSON rewritten after each; the time guard shortens the later ones."""
    deadline = Deadline(args.budget_s)
    name = "indexer-speed-dry-run.json" if args.dry_run else f"indexer-speed-{args.device.split(':')[0]}.json"
    result: dict[str, Any] = {
        "kind": "indexer-speed",
        "dry_run": args.dry_run,
        "host": host_info(),
        "versions": versions(args.device),
        "settings": {
            "model": args.model, "random_weights": True, "device": args.device,
            "autocast": "float16" if args.device.startswith("cuda") else None, "chip_size": args.chip_size,
            "scenes": args.scenes, "scene_grid": args.scene_grid, "dtypes": list(DTYPES), "tile": BLOCK,
            "compress": "deflate, predictor 2, level 1", "processes": args.processes, "workers": args.workers,
            "batch_sizes": args.batch_sizes, "e2e_batch_size": args.e2e_batch_size, "seed": args.seed,
            "budget_s": args.budget_s,
        },
    }  # fmt: skip
    file = ResultFile(args.out, name, result, deadline)
    context = multiprocessing.get_context("fork")
    with context.Pool(args.processes) as pool:
        result["archive"] = archive = prepare_archive(args.workdir / "archive", args, pool)
    file.save(f"archive: {archive['chips']} chips in {archive['scenes']} scenes, {archive['bytes'] / 2**30:.1f} GiB")
    began = time.perf_counter()
    model = load_model(args.model, device=args.device, random_weights=True)
    result["model_load_s"] = round(time.perf_counter() - began, 2)
    with context.Pool(args.processes) as pool:  # forked after _ITEMS is set: the processes read their shares from it
        for stage, size in (("read", 0), ("input_pipeline", model.image_size)):
            result[stage] = pool_rate(pool, args.processes, size, deadline.cap(READ_S, reserve=0.6 * deadline.left()))
            file.save(f"{stage}: {result[stage]['chips_per_s']} chips/s over {args.processes} processes")
    result["tower"] = tower_rates(model, args.batch_sizes, deadline.cap(TOWER_S, reserve=0.5 * deadline.left()))
    file.save("tower: " + ", ".join(f"{r['batch_size']}/{r['input']} {r['chips_per_s']}" for r in result["tower"]))
    seconds = deadline.cap(math.inf, reserve=E2E_RESERVE_S)
    result["end_to_end"] = e2e = end_to_end(model, args.e2e_batch_size, args.workers, seconds)
    busy = (e2e["gpu_util"] or {}).get("steady_mean")
    result["targets"] = {
        "end_to_end_chips_per_s": TARGET_CHIPS_PER_S,
        "gpu_busy_percent": TARGET_GPU_BUSY,
        "chips_per_s_met": (e2e["chips_per_s"] or 0) >= TARGET_CHIPS_PER_S,
        "gpu_busy_met": None if busy is None else busy >= TARGET_GPU_BUSY,
    }
    result["scaled_down"] = [
        f"{stage}: {result[stage]['chips']} of {len(_ITEMS)} chips within the time guard"
        for stage in ("read", "input_pipeline", "end_to_end")
        if not result[stage]["complete"]
    ]
    file.save(f"end to end: {e2e['chips_per_s']} chips/s, GPU busy {busy} % (steady mean); wrote {file.path}", True)
