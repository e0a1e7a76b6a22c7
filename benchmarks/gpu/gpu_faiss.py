"""FAISS side of the GPU proof kit: IVF-PQ training, adding and search at 1M clustered vectors, GPU against CPU.

The index is the product's (``ann.choose_params`` / ``ann.new_index``: IVF4096,PQ64 at 1M × 512). Measured:
- CPU: ``ann.train`` and ``ann.add`` with FAISS's GPUs hidden (their CPU branches), search through ``ann.search``;
- GPU, in a child process (a failing GPU library cannot take the CPU figures with it): the product's path
  (``ann.train``: coarse k-means on the GPU, PQ on the CPU; ``ann.add`` on the CPU), a whole-GPU build
  (the same index cloned to the GPU untrained, trained and filled there), and ``ann.search``, which serves
  unfiltered queries from a GPU clone of the index.
Search asks FAISS for k × rerank candidates (the product's default fetch) at batch 1 and batch ``--batch``;
recall@k re-ranks those candidates exactly, as ``Searcher`` does.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import multiprocessing
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from gpu_proof import Deadline, ResultFile, host_info, rate

from rsretrieve import ann

CLUSTERS = 2048
CHUNK = 65_536
TARGET_TRAIN_SPEEDUP = 10  # docs/architecture.md §7: GPU IVF-PQ training at 1M at least 10× the CPU
BATCH_REPEATS = 3
SINGLE_QUERIES_S = 15.0
GPU_SHARE = 0.5  # of the time left after the data, what the GPU child may take (the CPU stages follow it)


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, float32."""
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def mixture(n: int, dim: int, seed: int, stream: int) -> np.ndarray:
    """n seeded unit vectors from a Gaussian mixture shaped like image embeddings (as benchmarks/speed.py's)."""
    rng = np.random.default_rng([seed, 0])
    mean = unit(rng.normal(size=dim))
    centres = unit(0.5 * mean + unit(rng.normal(size=(CLUSTERS, dim))))
    spread = rng.uniform(0.3, 1.0, CLUSTERS).astype(np.float32)
    weights = rng.lognormal(0.0, 1.0, CLUSTERS)
    weights /= weights.sum()
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, CHUNK):
        chunk = np.random.default_rng([seed, stream, start // CHUNK])
        size = min(CHUNK, n - start)
        group = chunk.choice(CLUSTERS, size, p=weights)
        noise = chunk.standard_normal((size, dim), dtype=np.float32) * (spread[group] / np.sqrt(dim))[:, None]
        out[start : start + size] = unit(centres[group] + noise)
    return out


@contextlib.contextmanager
def cpu_only() -> Iterator[None]:
    """FAISS's GPUs hidden from ``rsretrieve.ann`` (it asks ``faiss.get_num_gpus``): its CPU branches run."""
    real = faiss.get_num_gpus
    faiss.get_num_gpus = lambda: 0
    try:
        yield
    finally:
        faiss.get_num_gpus = real


def timed(function: Any, *args: Any) -> tuple[Any, float]:
    """(result, seconds) of one call."""
    began = time.perf_counter()
    result = function(*args)
    return result, round(time.perf_counter() - began, 3)


def recall(index: faiss.Index, base: np.ndarray, queries: np.ndarray, truth: np.ndarray, k: int, fetch: int) -> float:
    """Mean recall@k of ``fetch`` ANN candidates re-ranked exactly against the exact top k (``truth``)."""
    _, candidates = ann.search(index, queries, fetch)
    found = []
    for query, row, want in zip(queries, candidates, truth, strict=True):
        row = row[row >= 0]
        _, top = ann.exact_search(base[row], row, query, k)
        found.append(len(np.intersect1d(top, want)) / k)
    return round(float(np.mean(found)), 4)


def search_figures(index: faiss.Index, data: dict[str, np.ndarray], settings: dict[str, Any]) -> dict[str, Any]:
    """Batch-1 latency (p50, p95, QPS; at most SINGLE_QUERIES_S of queries), batched QPS and recall@k of
    ``ann.search`` on ``index``."""
    queries, fetch = data["queries"], settings["fetch"]
    _, first_s = timed(ann.search, index, queries[:1], fetch)  # on a GPU: copies the index there once
    milliseconds: list[float] = []
    for query in queries[: settings["single_queries"]]:
        began = time.perf_counter()
        ann.search(index, query, fetch)
        milliseconds.append((time.perf_counter() - began) * 1000)
        if sum(milliseconds) > SINGLE_QUERIES_S * 1000:
            break
    batch = queries[: settings["batch"]]
    ann.search(index, batch, fetch)  # warm-up
    began = time.perf_counter()
    for _ in range(BATCH_REPEATS):
        ann.search(index, batch, fetch)
    batched_s = time.perf_counter() - began
    count = settings["recall_queries"]
    return {
        "first_search_s": first_s,
        "batch1_queries": len(milliseconds),
        "batch1_p50_ms": round(float(np.percentile(milliseconds, 50)), 3),
        "batch1_p95_ms": round(float(np.percentile(milliseconds, 95)), 3),
        "batch1_qps": rate(len(milliseconds), sum(milliseconds) / 1000),
        "batch_size": len(batch),
        "batched_qps": rate(BATCH_REPEATS * len(batch), batched_s),
        f"recall_at_{settings['k']}": recall(index, data["base"], queries[:count], data["truth"], settings["k"], fetch),
    }


def build(index: faiss.Index, data: dict[str, np.ndarray]) -> dict[str, Any]:
    """Train ``index`` on the sample and add every vector through ``ann``; seconds of each."""
    _, train_s = timed(ann.train, index, data["sample"])
    _, add_s = timed(ann.add, index, data["base"], np.arange(len(data["base"])))
    return {"train_s": train_s, "add_s": add_s, "coarse_niter": int(faiss.extract_index_ivf(index).cp.niter)}


def gpu_build(params: ann.IndexParams, data: dict[str, np.ndarray]) -> dict[str, Any]:
    """The product's untrained index cloned to GPU 0, trained and filled there, and brought back."""
    resources = faiss.StandardGpuResources()
    options = faiss.GpuClonerOptions()
    options.useFloat16 = params.m > ann.GPU_FLOAT32_MAX_M  # as ann's GPU clones (FAISS's float32 tables stop at 48)
    gpu, clone_s = timed(faiss.index_cpu_to_gpu, resources, 0, ann.new_index(data["base"].shape[1], params), options)
    _, train_s = timed(gpu.train, data["sample"])
    _, add_s = timed(gpu.add_with_ids, data["base"], np.arange(len(data["base"]), dtype=np.int64))
    _, back_s = timed(faiss.index_gpu_to_cpu, gpu)
    return {
        "clone_s": clone_s, "train_s": train_s, "add_s": add_s, "to_cpu_s": back_s, "coarse_niter": int(gpu.cp.niter)
    }  # fmt: skip


def load(workdir: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and settings the parent saved for the GPU child."""
    data = {name: np.load(workdir / f"{name}.npy") for name in ("base", "sample", "queries", "truth")}
    return data, json.loads((workdir / "settings.json").read_text())


def gpu_stage(workdir: Path) -> None:
    """Child process: the GPU figures, stage by stage, each written to workdir/gpu.json as soon as it is known."""
    data, settings = load(workdir)
    params = ann.IndexParams(**settings["params"])
    index = ann.new_index(data["base"].shape[1], params)
    result: dict[str, Any] = {"gpus": faiss.get_num_gpus()}
    stages = {
        "product_path": lambda: build(index, data),
        "search": lambda: search_figures(index, data, settings),
        "whole_gpu": lambda: gpu_build(params, data),
    }
    for name, stage in stages.items():
        result[name] = stage()
        (workdir / "gpu.json").write_text(json.dumps(result))


def run_gpu_child(workdir: Path, seconds: float) -> tuple[dict[str, Any] | None, str | None]:
    """Run ``gpu_stage`` in a spawned process: (the figures it wrote, if any; why it stopped early, if it did)."""
    process = multiprocessing.get_context("spawn").Process(target=gpu_stage, args=(workdir,))
    process.start()
    process.join(seconds)
    error = None
    if process.is_alive():
        process.terminate()
        process.join()
        error = f"GPU stage stopped by the time guard after {seconds:.0f} s"
    elif process.exitcode != 0:
        error = f"GPU stage failed (exit code {process.exitcode}; its error is in the log above)"
    written = workdir / "gpu.json"
    return (json.loads(written.read_text()) if written.exists() else None), error


def cuda_runtime() -> int | None:
    """cudaRuntimeGetVersion of the CUDA runtime FAISS loaded (e.g. 12090), if any."""
    try:
        library = ctypes.CDLL("libcudart.so.12")
    except OSError:
        return None
    version = ctypes.c_int()
    return version.value if library.cudaRuntimeGetVersion(ctypes.byref(version)) == 0 else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator rounded; None when either is missing."""
    return round(numerator / denominator, 1) if numerator and denominator else None


def run(args: argparse.Namespace) -> None:
    """Data, the GPU child, the CPU stages, the JSON rewritten after each; written even when the GPU stage fails."""
    deadline = Deadline(args.budget_s)
    workdir = args.workdir
    params = ann.choose_params(args.n, args.dim, kind="ivfpq")
    settings = {
        "n": args.n, "dim": args.dim, "clusters": CLUSTERS, "params": params.as_dict(), "k": args.k,
        "rerank": args.rerank, "fetch": args.k * args.rerank, "batch": args.batch,
        "single_queries": args.single_queries, "recall_queries": args.recall_queries,
        "train_samples": min(args.n, ann.max_training_samples(params)), "seed": args.seed, "budget_s": args.budget_s,
    }  # fmt: skip
    result: dict[str, Any] = {
        "kind": "faiss-speed",
        "dry_run": args.dry_run,
        "host": host_info(),
        "versions": {"faiss": faiss.__version__, "faiss_gpus": faiss.get_num_gpus(), "cuda_runtime": cuda_runtime()},
        "settings": settings,
    }
    file = ResultFile(
        args.out, "faiss-speed-dry-run.json" if args.dry_run else "faiss-speed-cuda.json", result, deadline
    )
    began = time.perf_counter()
    base = mixture(args.n, args.dim, args.seed, stream=1)
    queries = mixture(max(args.single_queries, args.batch, args.recall_queries), args.dim, args.seed, stream=2)
    rows = np.random.default_rng([args.seed, 4]).choice(args.n, settings["train_samples"], replace=False)
    _, truth = ann.exact_search(base, np.arange(args.n), queries[: args.recall_queries], args.k)
    data = {"base": base, "sample": base[np.sort(rows)], "queries": queries, "truth": truth}
    for name, array in data.items():
        np.save(workdir / f"{name}.npy", array)
    (workdir / "settings.json").write_text(json.dumps(settings))
    result["data_s"] = round(time.perf_counter() - began, 2)
    file.save(f"data: {args.n} × {args.dim} vectors, {params.as_dict()}")
    gpu, result["gpu_error"] = (
        run_gpu_child(workdir, GPU_SHARE * deadline.left())
        if faiss.get_num_gpus()
        else (None, "no GPU visible to FAISS")
    )
    result["gpu"] = gpu = gpu or {}
    file.save(f"GPU: {json.dumps(gpu)} {result['gpu_error'] or ''}")
    with cpu_only():
        index = ann.new_index(args.dim, params)
        result["cpu"] = cpu = build(index, data)
        file.save(f"CPU build: {cpu}")
        cpu["search"] = search_figures(index, data, settings)
    result["speedups"] = {  # CPU seconds over GPU seconds; for search, GPU QPS over CPU QPS
        "train_whole_gpu": ratio(cpu["train_s"], gpu.get("whole_gpu", {}).get("train_s")),
        "train_product_path": ratio(cpu["train_s"], gpu.get("product_path", {}).get("train_s")),
        "add_whole_gpu": ratio(cpu["add_s"], gpu.get("whole_gpu", {}).get("add_s")),
        "add_product_path": ratio(cpu["add_s"], gpu.get("product_path", {}).get("add_s")),
        "batch1_search": ratio(gpu.get("search", {}).get("batch1_qps"), cpu["search"]["batch1_qps"]),
        "batched_search": ratio(gpu.get("search", {}).get("batched_qps"), cpu["search"]["batched_qps"]),
    }
    result["targets"] = {"train_speedup": TARGET_TRAIN_SPEEDUP} | {
        f"{path}_met": None if speedup is None else speedup >= TARGET_TRAIN_SPEEDUP
        for path, speedup in (
            ("whole_gpu", result["speedups"]["train_whole_gpu"]),
            ("product_path", result["speedups"]["train_product_path"]),
        )
    }
    file.save(f"CPU search: {cpu['search']}; speedups {result['speedups']}; wrote {file.path}", finished=True)
