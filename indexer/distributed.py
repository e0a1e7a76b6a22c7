"""Indexing on a Ray cluster (``rsretrieve index --ray``): plan, read and embed on Ray Data; commit in the driver.

The pipeline is one streaming Ray Data dataset over the files not yet indexed, in their order::

    files ─flat_map(plan_scene: one row per chip)─▶ map_batches(read + fit the windows)
          ─▶ map_batches(Embedder: an actor pool, the model loaded once per actor; 1 GPU each where the cluster
             has GPUs) ─▶ iter_batches in the driver

Where the commit happens: in the driver, which owns the single ``StoreWriter`` (``indexer.build.index_archive``
with ``RayGroups`` as its group source). The driver reassembles the streamed rows into whole files, groups them
into commits of about ``--commit-chips`` chips and hands each group to ``writer.append`` — the same code as the
single-process indexer (bad files, nodata, ``--strict``, skipping files already indexed). So the store keeps
its guarantees: one writer (the lock), readers see only committed versions, and after a crash or a kill the next
run skips the committed files and embeds the rest: every chip exactly once. Rows are carried as plain data
(pickled ``ScenePlan`` without its chip list + one ``Chip``), and ``preserve_order`` keeps the files in order,
so the index is the one the single-process indexer builds (same ids, windows, footprints and fids).

The FAISS index of a large archive is trained in the driver on a sample and filled shard by shard by Ray tasks
(``ray_shard_map``: each task adds one block of stored vectors to an empty copy of the trained index, the driver
merges the shards in order, ``rsretrieve.ann_shards``), instead of the driver encoding every vector itself.

Why not commit in the workers: LanceDB appends from many processes would race for versions, the FAISS file and
the manifest must be rewritten by one process per commit, and a crash between workers' commits would leave a
partial file group. One committing process is cheap beside embedding (``docs/distributed.md``: the writer
follows tens of GPUs). Ray is imported only here, and this module only under ``--ray``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indexer.build import (
    ArchiveIndexer,
    ChipOptions,
    EmbeddedFile,
    IndexSummary,
    RunOptions,
    default_commit_chips,
    group_by_chips,
    index_archive,
)
from rsretrieve.ann import AnnSettings
from rsretrieve.ann_shards import Blocks, ShardFill, in_order
from rsretrieve.chips import Chip
from rsretrieve.embedding import SKIPPED, default_batch_size
from rsretrieve.errors import UserError
from rsretrieve.models import EmbeddingModel, ModelError
from rsretrieve.uris import CLOUD_ENV

log = logging.getLogger(__name__)

# Environment passed to Ray's workers (they do not all inherit the driver's: a cluster started elsewhere)
PASSED_ENV = ("PYTHONPATH", "HF_HUB_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "GDAL_CACHEMAX", "RUST_LOG", *CLOUD_ENV)
READY, NODATA, FAILED = 0, 1, 2  # state of a chip row: embedded (or to embed), skipped as nodata, unreadable
READ_CPUS_BESIDE_CPU_ACTORS = 0.25  # CPU share of a planning/reading task when the model also runs on CPUs


class RayMissingError(UserError):
    """``--ray`` without Ray installed."""


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide to run: cluster address (None: start a local one), GPUs per embedding actor
    (None: 1 where the cluster has GPUs, else CPU actors), embedding actors (None: one per GPU, or half the
    CPUs), model device of the actors, and the CPUs of a local cluster started here (None: all)."""

    address: str | None = None
    num_gpus_per_worker: float | None = None
    concurrency: int | None = None
    device: str = "auto"
    num_cpus: int | None = None


@dataclass(frozen=True)
class Plan:
    """Resources of the pipeline on the cluster."""

    actors: int
    gpus_per_actor: float
    cpus_per_actor: float
    cpus_per_task: float
    device: str
    batch_size: int


def start_ray(options: RayOptions) -> bool:
    """Connect to (or start) the cluster unless this process already did; whether it was started here."""
    try:
        import ray
    except ImportError as error:
        raise RayMissingError("--ray needs Ray: pip install 'rsretrieve[distributed]'") from error

    if ray.is_initialized():
        return False
    env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if env:
        kwargs["runtime_env"] = {"env_vars": env}
    if options.address is None:  # a local cluster of this machine, for this run
        kwargs.update(num_cpus=options.num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1")
    ray.init(address=options.address, **kwargs)
    return True


def resource_plan(options: RayOptions, run: RunOptions) -> Plan:
    """How many embedding actors, with which resources, from the cluster's resources and the options."""
    import ray

    resources = ray.cluster_resources()
    cpus, gpus = float(resources.get("CPU", 1)), float(resources.get("GPU", 0))
    per_actor = options.num_gpus_per_worker if options.num_gpus_per_worker is not None else (1.0 if gpus else 0.0)
    if per_actor > 0:
        actors = options.concurrency or max(1, int(gpus // per_actor))
        device = "cuda" if options.device == "auto" else options.device
        return Plan(actors, per_actor, 1.0, 1.0, device, run.batch_size or default_batch_size(device))
    actors = options.concurrency or max(1, int(cpus // 2))
    reading = READ_CPUS_BESIDE_CPU_ACTORS
    cpus_per_actor = max(reading, (cpus - 2 * reading) / actors)  # leave room for two reading tasks
    device = "cpu" if options.device == "auto" else options.device
    return Plan(actors, 0.0, cpus_per_actor, reading, device, run.batch_size or default_batch_size(device))


# -- the stages (run in Ray workers: plain data in, plain data out) ------------------------------------


def plan_file(row: dict[str, Any], chips: ChipOptions) -> list[dict[str, Any]]:
    """One row per planned chip of a file (or one row naming why the file cannot be planned)."""
    from indexer.embed import limit_gdal_cache
    from rsretrieve.raster import SourceError, plan_scene

    limit_gdal_cache()
    try:
        plan = plan_scene(row["path"], chips.chip_size, chips.overlap, chips.bands)
    except SourceError as error:
        return [{"file": row["file"], "chip": -1, "count": 0, "item": b"", "state": FAILED, "error": str(error)}]
    light = dataclasses.replace(plan, chips=())
    count = len(plan.chips)
    return [
        {
            "file": row["file"],
            "chip": i,
            "count": count,
            "item": pickle.dumps((light, chip)),
            "state": READY,
            "error": "",
        }
        for i, chip in enumerate(plan.chips)
    ]


def read_chips(batch: dict[str, np.ndarray], size: int, max_nodata_fraction: float) -> dict[str, np.ndarray]:
    """Add the uint8 CHW pixels of each chip at the model's input size (``indexer.embed.ChipPixels``)."""
    from indexer.embed import ChipPixels

    count = len(batch["file"])
    items = [pickle.loads(item) if chip >= 0 else None for item, chip in zip(batch["item"], batch["chip"], strict=True)]
    pixels = np.zeros((count, 3, size, size), np.uint8)
    states = np.asarray(batch["state"], np.int8).copy()
    errors = [str(error) for error in batch["error"]]
    dataset = ChipPixels(items, size, max_nodata_fraction)
    try:
        for i in np.flatnonzero(states == READY):
            _, chip_pixels, status = dataset[int(i)]
            if chip_pixels is not None:
                pixels[i] = chip_pixels
            else:
                states[i] = NODATA if status == SKIPPED else FAILED
                errors[i] = status
    finally:
        dataset.close()
    return {**batch, "state": states, "error": np.asarray(errors, dtype=object), "pixels": pixels}


class Embedder:
    """The model of one actor (loaded once); replaces the pixels of a batch by their vectors."""

    def __init__(self, model: dict[str, Any], device: str, threads: int, checkpoint: str):
        if device == "cpu":
            import torch

            torch.set_num_threads(threads)
        from rsretrieve.models import load_model

        self.model = load_model(model["name"], model["checkpoint"], device, model["random_weights"])
        if self.model.checkpoint != checkpoint:
            raise ModelError(f"a Ray worker loaded other weights ({self.model.checkpoint}) than the driver's")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        pixels = batch.pop("pixels")
        ready = np.flatnonzero(batch["state"] == READY)
        vectors = np.zeros((len(pixels), self.model.dim), np.float32)
        if len(ready):
            vectors[ready] = self.model.encode_pixels(torch.from_numpy(np.ascontiguousarray(pixels[ready])))
        return {**batch, "vector": vectors}


# -- the driver ---------------------------------------------------------------------------------------


def ray_shard_map(function: ShardFill, trained: np.ndarray, blocks: Blocks) -> Iterator[np.ndarray]:
    """``ann_shards.ShardMap`` on Ray: one task per block, the trained index shipped once, as many tasks in flight
    as the cluster has CPUs."""
    import ray

    remote = ray.remote(num_cpus=1)(function)
    shared = ray.put(trained)
    window = max(1, int(ray.cluster_resources().get("CPU", 1)))
    started = (remote.remote(shared, first, vectors) for first, vectors in blocks)
    yield from in_order(started, window, ray.get)


class RayGroups:
    """Group source of ``index_archive``: the files embedded on Ray, reassembled and grouped in the driver; the
    writer fills new FAISS indexes with Ray tasks (``shard_map``)."""

    estimates_total = False  # no header pass over the archive in the driver: planning runs on Ray
    shard_map = staticmethod(ray_shard_map)

    def __init__(self, model: EmbeddingModel, source: dict[str, Any], chips: ChipOptions, options: RayOptions):
        self.model = model
        self.source = source  # how the actors load the model: name, checkpoint (path or None), random_weights
        self.chips = chips
        self.options = options
        self.plan: Plan | None = None

    def dataset(self, todo: list[Path], run: RunOptions) -> Any:
        """The lazy Ray Data pipeline over ``todo``."""
        import ray

        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # files reach the driver in order: the same fids
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        plan = self.plan = resource_plan(self.options, run)
        log.info("Ray: %s", plan)
        files = ray.data.from_items(
            [{"file": i, "path": str(path)} for i, path in enumerate(todo)],
            override_num_blocks=max(1, min(len(todo), 512)),
        )
        rows = files.flat_map(plan_file, fn_kwargs={"chips": self.chips}, num_cpus=plan.cpus_per_task)
        pixels = rows.map_batches(
            read_chips,
            batch_size=plan.batch_size,
            batch_format="numpy",
            fn_kwargs={"size": self.model.image_size, "max_nodata_fraction": self.chips.max_nodata_fraction},
            num_cpus=plan.cpus_per_task,
        )
        return pixels.map_batches(
            Embedder,
            batch_size=plan.batch_size,
            batch_format="numpy",
            fn_constructor_args=(self.source, plan.device, max(1, int(plan.cpus_per_actor)), self.model.checkpoint),
            compute=ray.data.ActorPoolStrategy(size=plan.actors),
            num_gpus=plan.gpus_per_actor or None,
            num_cpus=plan.cpus_per_actor,
        )

    def files(
        self, todo: list[Path], run: RunOptions, indexer: ArchiveIndexer, progress: Any
    ) -> Iterator[EmbeddedFile]:
        """Whole embedded files in the order of ``todo``; files that cannot be planned go to ``bad_file``."""
        pending: dict[int, dict[str, Any]] = {}
        done: dict[int, EmbeddedFile | None] = {}
        batches = self.dataset(todo, run).iter_batches(batch_size=None, batch_format="numpy")
        try:
            yield from self._reassemble(batches, todo, indexer, progress, pending, done)
        finally:  # stops the pipeline (tasks, actors) at once when the driver stops early: --strict, errors
            close = getattr(batches, "close", None)
            if close is not None:
                close()
        if pending or done:
            raise RuntimeError(f"Ray returned incomplete files: {sorted(pending) + sorted(done)}")

    def _reassemble(
        self,
        batches: Iterator[dict[str, np.ndarray]],
        todo: list[Path],
        indexer: ArchiveIndexer,
        progress: Any,
        pending: dict[int, dict[str, Any]],
        done: dict[int, EmbeddedFile | None],
    ) -> Iterator[EmbeddedFile]:
        """Rows back into whole files (``pending`` until complete, then ``done``), yielded in file order."""
        following = 0
        for batch in batches:
            for i, file in enumerate(batch["file"].tolist()):
                chip, count, state = int(batch["chip"][i]), int(batch["count"][i]), int(batch["state"][i])
                if chip < 0:  # the file could not be planned
                    indexer.bad_file(todo[file], str(batch["error"][i]))
                    done[file] = None
                    continue
                entry = pending.setdefault(file, {"chips": [None] * count, "vectors": {}, "statuses": {}})
                entry["chips"][chip] = pickle.loads(batch["item"][i])[1]
                if state == READY:
                    entry["vectors"][chip] = batch["vector"][i]
                else:
                    entry["statuses"][chip] = SKIPPED if state == NODATA else str(batch["error"][i])
                if len(entry["vectors"]) + len(entry["statuses"]) == count:
                    done[file] = _embedded(str(todo[file]), pending.pop(file), self.model.dim)
            progress.update(len(batch["file"]))
            while following in done:
                file = done.pop(following)
                following += 1
                if file is not None:
                    yield file

    def __call__(
        self, indexer: ArchiveIndexer, todo: list[Path], commit_chips: int, progress: Any
    ) -> Iterator[tuple[list[Chip], np.ndarray, int]]:
        if not todo:
            return
        for group in group_by_chips(self.files(todo, indexer.run, indexer, progress), commit_chips, _chip_count):
            yield indexer.keep_good(group)


def _chip_count(file: EmbeddedFile) -> int:
    return len(file.chips)


def _embedded(path: str, entry: dict[str, Any], dim: int) -> EmbeddedFile:
    vectors = np.zeros((len(entry["chips"]), dim), np.float32)
    for chip, vector in entry["vectors"].items():
        vectors[chip] = vector
    return EmbeddedFile(path, entry["chips"], vectors, entry["statuses"])


def index_archive_on_ray(
    paths: list[Path],
    db: str | Path,
    model: EmbeddingModel,
    source: dict[str, Any],
    chips: ChipOptions | None = None,
    run: RunOptions | None = None,
    ann_settings: AnnSettings | None = None,
    options: RayOptions | None = None,
    show_progress: bool = True,
) -> IndexSummary:
    """``index_archive`` with planning, reading and embedding on Ray; ``model`` (any device) names the index's
    model and ``source`` tells the actors how to load it (``{"name", "checkpoint", "random_weights"}``)."""
    chips = chips or ChipOptions()
    run = run or RunOptions()
    options = options or RayOptions()
    started = start_ray(options)
    import ray

    try:
        groups = RayGroups(model, source, chips, options)
        if run.commit_chips is None:
            device = resource_plan(options, run).device
            run = dataclasses.replace(run, commit_chips=default_commit_chips(device))
        return index_archive(paths, db, model, chips, run, ann_settings, show_progress, groups=groups)
    finally:
        if started:
            ray.shutdown()
