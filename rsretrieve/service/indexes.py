"""The served indexes: one ``Searcher`` each, one model per distinct model identity, one pair of micro-batchers
(text, images) per model.

Everything is loaded once, before the server accepts connections. Indexes built with the same model and weights
share one ``EmbeddingModel`` object (and so its batchers). ``Searcher.current()`` picks up what an indexer commits
while the service runs.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rsretrieve.errors import UserError
from rsretrieve.imported import is_vector_only
from rsretrieve.search import DEFAULT_RERANK_FACTOR, Searcher
from rsretrieve.service.batching import DEFAULT_MAX_BATCH, DEFAULT_MAX_WAIT, MicroBatcher
from rsretrieve.service.guard import ApiError
from rsretrieve.service.metrics import Metrics
from rsretrieve.store import Manifest

log = logging.getLogger(__name__)

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ServeError(UserError):
    """A served index that cannot be loaded or a bad ``--db`` value; one line."""


def parse_db(value: str) -> tuple[str, Path]:
    """``NAME=PATH`` or ``PATH`` (the name is then the folder name without ``.lance``)."""
    name, sep, path = value.partition("=")
    if sep and NAME.match(name):
        return name, Path(path)
    path = Path(value)
    name = path.name.removesuffix(".lance") or "index"
    if not NAME.match(name):
        raise ServeError(f"cannot name the index of --db {value}: give it a name, --db NAME={value}")
    return name, path


@dataclass
class Encoders:
    """The micro-batchers of one model."""

    model: Any
    text: MicroBatcher
    images: MicroBatcher

    def close(self) -> None:
        self.text.close()
        self.images.close()


@dataclass
class ServedIndex:
    """One index by name: its searcher and its model's batchers."""

    name: str
    searcher: Searcher
    encoders: Encoders

    @property
    def model(self) -> Any:
        return self.searcher.model

    def summary(self) -> dict[str, Any]:
        """Name, model, size and version for ``GET /v1/indexes``."""
        store = self.searcher.current()
        manifest = store.manifest
        return {
            "name": self.name,
            "model": manifest.model,
            "dim": manifest.dim,
            "chips": len(store),
            "files": manifest.files,
            "version": manifest.lance_version,
            "index_type": manifest.index.get("index_type") if manifest.index else None,
            "updated": manifest.updated,
            "vector_only": is_vector_only(manifest.checkpoint),  # texts and images refused: chip ids, labels, vectors
        }


@dataclass(frozen=True)
class ServeOptions:
    """Model and batching settings of ``rsretrieve serve``."""

    checkpoint: str | Path | None = None
    device: str = "auto"
    random_weights: bool = False
    nprobe: int | None = None
    rerank_factor: int = DEFAULT_RERANK_FACTOR
    max_batch: int = DEFAULT_MAX_BATCH
    max_wait: float = DEFAULT_MAX_WAIT


class Indexes:
    """The served indexes by name (the first is the default), loaded once."""

    def __init__(self, dbs: list[tuple[str, Path]], options: ServeOptions, metrics: Metrics):
        if not dbs:
            raise ServeError("give at least one --db")
        names = [name for name, _ in dbs]
        if duplicate := next((name for name in names if names.count(name) > 1), None):
            raise ServeError(f"two indexes are named '{duplicate}': use --db NAME=PATH")
        self.metrics = metrics
        self.by_name: dict[str, ServedIndex] = {}
        models: dict[tuple[str, ...], Encoders] = {}
        for name, db in dbs:
            if not (db / "manifest.json").is_file():
                raise ServeError(f"no index at {db} (index some files first: rsretrieve index ... --db {db})")
            manifest = Manifest.read(db)
            key = (manifest.model, str(options.checkpoint) if options.checkpoint else manifest.checkpoint)
            if is_vector_only(manifest.checkpoint):  # no model to share: each index has its own stand-in (its dim)
                key = (*key, str(db))
            shared = models.get(key)
            searcher = Searcher(
                db,
                shared.model if shared else None,
                checkpoint=options.checkpoint,
                device=options.device,
                random_weights=options.random_weights,
                nprobe=options.nprobe,
                rerank_factor=options.rerank_factor,
            )
            if shared is None:
                shared = models[key] = self._encoders(searcher.model, options, len(models))
            self.by_name[name] = ServedIndex(name, searcher, shared)
            log.info("serving %s (%s, %d chips) as '%s'", db, manifest.model, manifest.count, name)
        self.encoders = list(models.values())
        self.default = names[0]
        metrics.gauges.append(self._gauges)

    def _encoders(self, model: Any, options: ServeOptions, number: int) -> Encoders:
        def observer(kind: str):
            return lambda size, _seconds: self.metrics.batch(kind, size)

        def images(batch: list[np.ndarray]) -> np.ndarray:
            return model.encode_images(batch)

        return Encoders(
            model,
            MicroBatcher(model.encode_text, options.max_batch, options.max_wait, f"text-{number}", observer("text")),
            MicroBatcher(images, options.max_batch, options.max_wait, f"images-{number}", observer("image")),
        )

    def get(self, name: str | None) -> ServedIndex:
        """The index of that name (None: the default) → 404 when not served."""
        served = self.by_name.get(name or self.default)
        if served is None:
            raise ApiError(404, f"no index named '{name}' (served: {', '.join(self.by_name)})")
        return served

    def __iter__(self):
        return iter(self.by_name.values())

    def _gauges(self):
        for served in self:
            store = served.searcher.store  # the last opened version: no reopen from a metrics scrape
            labels = (("index", served.name),)
            yield "rsretrieve_index_chips", "Chips in the served version of each index", labels, len(store)
            version = store.manifest.lance_version
            yield "rsretrieve_index_version", "LanceDB version of each served index", labels, version

    def close(self) -> None:
        for encoders in self.encoders:
            encoders.close()
