"""GPU proof kit (issue 17): indexer and FAISS speed on one GPU machine, written as JSON to --out.

    python benchmarks/gpu/gpu_proof.py embed --out DIR [--dry-run] [--budget-s 300] [options]
    python benchmarks/gpu/gpu_proof.py faiss --out DIR [--dry-run] [--budget-s 270] [options]

``embed`` writes a seeded synthetic GeoTIFF archive and measures raw window reads, the input pipeline, the
image tower and read→embed end to end (``gpu_embed.py``); ``faiss`` trains, fills and searches IVF-PQ at 1M
vectors on the GPU and on the CPU (``gpu_faiss.py``). The two modes import disjoint libraries (torch and
open_clip, or FAISS) so that each runs with only its own wheels. ``--dry-run`` runs the same code on the CPU at
toy sizes with the tiny test model. ``benchmarks/gpu/run.sh`` is the entry on the device; see README.md there.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

UTIL_QUERY = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "200"]
BUSY_PERCENT = 80  # docs/architecture.md §7: the GPU at least 80 % busy end to end

# Settings per mode: the real run and the dry run (--dry-run); options given on the command line win.
DEFAULTS: dict[str, dict[bool, dict[str, Any]]] = {
    "embed": {
        False: {
            "model": "remoteclip-vit-b-32", "device": "cuda", "scenes": 16, "scene_grid": [80, 40],
            "processes": 16, "workers": 16, "batch_sizes": [256, 512], "e2e_batch_size": 256, "budget_s": 300.0,
        },
        True: {
            "model": "tiny-test", "device": "cpu", "scenes": 4, "scene_grid": [8, 8],
            "processes": 2, "workers": 2, "batch_sizes": [64, 128], "e2e_batch_size": 64, "budget_s": 60.0,
        },
    },
    "faiss": {
        False: {"n": 1_000_000, "dim": 512, "single_queries": 500, "recall_queries": 100, "budget_s": 270.0},
        True: {"n": 5_000, "dim": 64, "single_queries": 50, "recall_queries": 20, "budget_s": 60.0},
    },
}  # fmt: skip


class Deadline:
    """A run's time budget: what is left of it, and stage caps that leave a reserve for what follows."""

    def __init__(self, seconds: float) -> None:
        self.budget = seconds
        self.started = time.monotonic()

    def left(self) -> float:
        """Seconds left of the budget (never negative)."""
        return max(0.0, self.budget - (time.monotonic() - self.started))

    def cap(self, seconds: float, reserve: float = 0.0) -> float:
        """At most ``seconds``, and no more than what is left after ``reserve``."""
        return max(0.0, min(seconds, self.left() - reserve))

    def spent(self) -> float:
        """Seconds since the run started."""
        return round(time.monotonic() - self.started, 2)


def rate(count: int, seconds: float) -> float | None:
    """count / seconds rounded, or None when nothing was timed."""
    return round(count / seconds, 1) if count and seconds > 0 else None


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (or the platform's name for it)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown")


def gpu_info() -> dict[str, Any] | None:
    """Name, driver and memory of GPU 0 as nvidia-smi reports them; None without nvidia-smi or a GPU."""
    query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader,nounits"]
    try:
        line = subprocess.run(query, capture_output=True, text=True, timeout=30, check=True).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return None
    name, driver, memory = (part.strip() for part in line.split(","))
    return {"name": name, "driver": driver, "memory_mib": int(memory)}


def host_info() -> dict[str, Any]:
    """The machine: GPU (nvidia-smi), CPU, cores, load, Python and numpy."""
    return {
        "gpu": gpu_info(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "load_average_at_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


class GpuUtilSampler:
    """Samples ``nvidia-smi``'s utilization.gpu every 200 ms in the background, each sample time-stamped.

    Without nvidia-smi (CPU runs) it records nothing and ``summary`` returns None.
    """

    def __init__(self) -> None:
        self.samples: list[tuple[float, int]] = []
        self._process: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuUtilSampler:
        try:
            self._process = subprocess.Popen(UTIL_QUERY, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:
            return self
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            if line.strip().isdigit():
                self.samples.append((time.perf_counter(), int(line)))

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def summary(self, steady_from: float | None = None, steady_to: float | None = None) -> dict[str, Any] | None:
        """Mean, median and share of samples ≥ 80 %, over all samples and over the steady window given."""
        if not self.samples:
            return None
        values = np.array([value for _, value in self.samples], float)
        steady = np.array([v for t, v in self.samples if (steady_from or -np.inf) <= t <= (steady_to or np.inf)], float)
        return {
            "samples": len(values),
            "interval_ms": 200,
            "mean": round(float(values.mean()), 1),
            "p50": float(np.median(values)),
            "share_at_least_80": round(float((values >= BUSY_PERCENT).mean()), 3),
            "steady_samples": len(steady),
            "steady_mean": round(float(steady.mean()), 1) if len(steady) else None,
            "steady_share_at_least_80": round(float((steady >= BUSY_PERCENT).mean()), 3) if len(steady) else None,
        }


class ResultFile:
    """The run's JSON, written again after every stage (a run cut short still leaves what it measured)."""

    def __init__(self, out: Path, name: str, result: dict[str, Any], deadline: Deadline) -> None:
        self.path = out / name
        self.result = result
        self.deadline = deadline
        result["finished"] = False

    def save(self, message: str, finished: bool = False) -> None:
        """Write the JSON and print one progress line."""
        self.result["finished"] = finished
        self.result["seconds_total"] = self.deadline.spent()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.result, indent=2) + "\n")
        print(f"[{self.deadline.spent():6.1f} s] {message}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line, with the mode's defaults (real or dry run) filled in where an option was not given."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    embed = modes.add_parser("embed", help="synthetic archive: reads, input pipeline, image tower, end to end")
    faiss = modes.add_parser("faiss", help="IVF-PQ train, add and search at 1M vectors, GPU against CPU")
    for sub in (embed, faiss):
        sub.add_argument("--out", type=Path, required=True, help="folder for the JSON results")
        sub.add_argument("--dry-run", action="store_true", help="CPU, toy sizes, tiny model: checks the kit")
        sub.add_argument("--budget-s", type=float, help="time guard: later stages shrink to end within it")
        sub.add_argument("--seed", type=int, default=0)
        sub.add_argument("--workdir", type=Path, help="scratch folder, kept (default: a temporary one, removed)")
    embed.add_argument("--model", help="registered model name (random weights)")
    embed.add_argument("--device", help="cuda or cpu")
    embed.add_argument("--scenes", type=int, help="synthetic scenes, alternately uint8 RGB and uint16 4-band")
    embed.add_argument("--scene-grid", type=int, nargs=2, metavar=("COLS", "ROWS"), help="chips per scene")
    embed.add_argument("--chip-size", type=int, default=224)
    embed.add_argument("--processes", type=int, help="processes for the read and input-pipeline rates")
    embed.add_argument("--workers", type=int, help="DataLoader workers end to end")
    embed.add_argument("--batch-sizes", type=int, nargs="+", help="image tower batch sizes")
    embed.add_argument("--e2e-batch-size", type=int, help="batch size end to end")
    faiss.add_argument("--n", type=int, help="vectors in the index")
    faiss.add_argument("--dim", type=int)
    faiss.add_argument("--k", type=int, default=10, help="results per query; FAISS is asked for k × --rerank")
    faiss.add_argument("--rerank", type=int, default=100, help="the product's default re-rank factor")
    faiss.add_argument("--batch", type=int, default=1024, help="queries per batched search")
    faiss.add_argument("--single-queries", type=int, help="queries timed one at a time")
    faiss.add_argument("--recall-queries", type=int, help="queries whose recall@k is checked")
    args = parser.parse_args(argv)
    for key, value in DEFAULTS[args.mode][args.dry_run].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> None:
    """Run one mode in ``--workdir`` (else a temporary folder, removed after); the mode's module is imported only
    then (each mode needs its own libraries)."""
    args = parse_args(argv)
    with contextlib.ExitStack() as stack:
        if args.workdir is None:
            args.workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rsretrieve-gpu-proof-")))
        args.workdir.mkdir(parents=True, exist_ok=True)
        if args.mode == "embed":
            import gpu_embed

            gpu_embed.run(args)
        else:
            import gpu_faiss

            gpu_faiss.run(args)


if __name__ == "__main__":
    main()
