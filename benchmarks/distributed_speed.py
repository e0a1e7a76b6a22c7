"""Indexing throughput on Ray (``rsretrieve index --ray``) against the single-process indexer (issue 16).

One run on one machine, on the same sources: the single-process indexer (``index_archive``), then Ray Data with
1 and 2 CPU embedding actors on a local cluster, then the single committing writer alone (``StoreWriter.append``
of random vectors, no model): how many chips/s one driver can commit, i.e. how many GPUs it can follow.

    python benchmarks/distributed_speed.py [SOURCES ...] [--model remoteclip-vit-b-32] [--num-cpus 2]
        [--out benchmarks/results/distributed-cpu.json]

Weights are random (speed does not depend on them). Ray's overhead = Ray's wall time − the chips over the
single-process rate; the time to the first embedded file is reported separately (worker and actor start-up).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from indexer_speed import cpu_name  # benchmarks/ is the script's folder

from indexer.build import ChipOptions, RunOptions, default_commit_chips, index_archive
from indexer.distributed import RayGroups, RayOptions
from rsretrieve.models import load_model
from rsretrieve.raster import find_sources, plan_scene
from rsretrieve.store import StoreWriter

DEFAULT_SOURCES = [str(Path(__file__).resolve().parents[2] / "shared" / "data" / "geotiff")]


class TimedGroups(RayGroups):
    """RayGroups that notes when the first embedded file reaches the driver."""

    first_file_at: float | None = None

    def files(self, *args, **kwargs):
        for file in super().files(*args, **kwargs):
            if self.first_file_at is None:
                self.first_file_at = time.perf_counter()
            yield file


def ray_run(paths, db, model, chips, run, options: RayOptions) -> dict:
    """One Ray indexing run in this driver (already connected to the cluster), as ``index --ray`` runs it."""
    source = {"name": model.name, "checkpoint": None, "random_weights": True}
    groups = TimedGroups(model, source, chips, options)
    run = dataclasses.replace(run, commit_chips=run.commit_chips or default_commit_chips("cpu"))
    started = time.perf_counter()
    summary = index_archive(paths, db, model, chips, run, None, False, groups=groups)
    return {
        "actors": options.concurrency,
        "plan": dataclasses.asdict(groups.plan),
        "chips": summary.new_chips,
        "seconds": round(summary.seconds, 2),
        "chips_per_s": round(summary.chips_per_second, 2),
        "first_file_s": round(groups.first_file_at - started, 2) if groups.first_file_at else None,
    }


def writer_rate(paths: list[Path], dim: int, batches: int, batch: int) -> dict:
    """Chips/s of ``StoreWriter.append`` alone (flat FAISS, LanceDB, query columns, manifest), random vectors."""
    template = [chip for path in paths[:4] for chip in plan_scene(path, 224).chips]

    identity = SimpleNamespace(name="bench", architecture="bench", checkpoint="random-seed0", dim=dim)
    rng = np.random.default_rng(0)
    seconds = []
    with tempfile.TemporaryDirectory() as folder:
        writer = StoreWriter.open(Path(folder) / "db", identity, chip_size=224, overlap=0)
        try:
            for b in range(batches):
                chips = [dataclasses.replace(template[i % len(template)], id=f"{b:08x}{i:08x}") for i in range(batch)]
                vectors = rng.standard_normal((batch, dim)).astype(np.float32)
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                started = time.perf_counter()
                writer.append(chips, vectors, 1)
                seconds.append(time.perf_counter() - started)
        finally:
            writer.close()
    return {
        "dim": dim,
        "commits": batches,
        "chips_per_commit": batch,
        "commit_seconds": [round(s, 3) for s in seconds],
        "chips_per_s": round(batches * batch / sum(seconds), 1),
        "chips_per_s_last_commit": round(batch / seconds[-1], 1),
    }


def main() -> None:
    """Run every measurement and write the JSON."""
    import ray
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="*", default=DEFAULT_SOURCES)
    parser.add_argument("--model", default="remoteclip-vit-b-32")
    parser.add_argument("--chip-size", type=int, default=224)
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--writer-commits", type=int, default=8)
    parser.add_argument("--writer-chips", type=int, default=8192)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/distributed-cpu.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    paths = find_sources(args.sources)
    model = load_model(args.model, None, "cpu", True)
    chips = ChipOptions(chip_size=args.chip_size)
    run = RunOptions(batch_size=64, workers=None)
    result: dict[str, object] = {
        "model": args.model,
        "weights": "random (seeded)",
        "device": f"cpu: {cpu_name()}",
        "cores": os.cpu_count(),
        "ray_version": ray.__version__,
        "ray_num_cpus": args.num_cpus,
        "load_average_at_start": round(os.getloadavg()[0], 2),
        "sources": args.sources,
        "files": len(paths),
        "chip_size": args.chip_size,
    }

    def save() -> None:  # after each phase: a failure later keeps what was measured
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")

    result["writer_append"] = writer_rate(paths, model.dim, args.writer_commits, args.writer_chips)
    save()
    with tempfile.TemporaryDirectory() as folder:
        summary = index_archive(paths, Path(folder) / "local", model, chips, run, show_progress=False)
        local = {
            "chips": summary.new_chips,
            "seconds": round(summary.seconds, 2),
            "chips_per_s": round(summary.chips_per_second, 2),
            "torch_threads": torch.get_num_threads(),
        }
        result["single_process"] = local
        save()
        started = time.perf_counter()
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
        result["ray_init_s"] = round(time.perf_counter() - started, 2)
        try:
            runs = []
            for actors in (1, 2):
                options = RayOptions(concurrency=actors)
                runs.append(ray_run(paths, Path(folder) / f"ray{actors}", model, chips, run, options))
                figures = runs[-1]
                figures["overhead_s"] = round(figures["seconds"] - figures["chips"] / local["chips_per_s"], 2)
                figures["speed_vs_single_process"] = round(figures["chips_per_s"] / local["chips_per_s"], 2)
                result["ray"] = runs
                save()
        finally:
            ray.shutdown()
    result["load_average_at_end"] = round(os.getloadavg()[0], 2)
    save()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
