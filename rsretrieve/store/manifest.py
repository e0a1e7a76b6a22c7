"""``manifest.json``: what an index was built with and which versions of its stores belong together.

It is written last in every commit (tmp + rename), so it always names a consistent set: the LanceDB version,
the FAISS file and the code files appended to it, and how many rows of the query-side columns are committed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rsretrieve.files import atomic_write
from rsretrieve.models import is_random_checkpoint
from rsretrieve.store.errors import StoreError

FORMAT_VERSION = 4
# 2: result records in Arrow IPC files (``records/``) instead of records.jsonl + records.end
# 3: the vectors stored once, in 8-bit form (``vectors.i8``), no longer in LanceDB and ``vectors.f32``
# 4: record files uncompressed and compact (``store.record_layout``) instead of LZ4 batches: read from the map;
#    IVF-PQ commits append code files to the FAISS file (``index_appended``) instead of rewriting it
MANIFEST = "manifest.json"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ModelIdentity:
    """Which model an index's vectors come from (what a writer checks and records)."""

    name: str
    architecture: str
    checkpoint: str
    dim: int


@dataclass
class Manifest:
    """What an index was built with and which versions of its two stores belong together."""

    model: str
    architecture: str
    checkpoint: str
    dim: int
    count: int = 0
    files: int = 0
    lance_version: int = 0
    index_file: str | None = None
    index_appended: list[dict[str, Any]] = field(default_factory=list)  # code files after index_file (index_files)
    index: dict[str, Any] = field(default_factory=dict)
    chip_size: int | None = None
    overlap: int | None = None
    bands: list[int] | None = None
    pending_finish: bool = False  # appended since the last finish() (scalar indexes, IVF growth check)
    imported_from: str | None = None  # embeddings made elsewhere: the layout they came in ("Major TOM", "Clay")
    format_version: int = FORMAT_VERSION
    created: str = field(default_factory=_now)
    updated: str = field(default_factory=_now)

    def model_identity(self) -> ModelIdentity:
        """The model this index was built with."""
        return ModelIdentity(self.model, self.architecture, self.checkpoint, self.dim)

    @property
    def built_with_random_weights(self) -> bool:
        """Whether the index was built with ``--random-weights`` (queries must use the same seeded model)."""
        return is_random_checkpoint(self.checkpoint)

    @classmethod
    def read(cls, db: Path) -> Manifest:
        """Load and validate ``db/manifest.json``."""
        if not db.exists():
            raise StoreError(f"index not found: {db} (build one with `rsretrieve index SOURCES --db {db}`)")
        path = db / MANIFEST
        if not path.is_file():
            raise StoreError(f"{db} is not an rsretrieve index (no {MANIFEST})")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise StoreError(f"{path}: unreadable manifest ({error})") from error
        version = data.get("format_version") if isinstance(data, dict) else None
        if not isinstance(version, int):
            raise StoreError(f"{db} is not an rsretrieve index ({MANIFEST} has no format_version)")
        if version > FORMAT_VERSION:
            raise StoreError(
                f"{db} was written by a newer rsretrieve (format {version}, this one reads ≤ {FORMAT_VERSION})"
            )
        known = {name for name in cls.__dataclass_fields__}
        try:
            return cls(**{key: value for key, value in data.items() if key in known})
        except TypeError as error:
            raise StoreError(f"{path}: incomplete manifest ({error})") from error

    def write(self, db: Path) -> None:
        """Atomically replace ``db/manifest.json``."""
        self.updated = _now()
        text = json.dumps(asdict(self), indent=2)
        atomic_write(db / MANIFEST, lambda tmp: tmp.write_text(text))


def manifest_stamp(db: Path) -> tuple[int, int, int] | None:
    """Identity of the current manifest file (inode, mtime, size): it changes with every commit."""
    try:
        stat = (db / MANIFEST).stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def check_same_model(manifest: Manifest, model: str, checkpoint: str | None, db: Path) -> None:
    """Refuse to mix embeddings of two models in one index or to query an index with another model."""
    if manifest.model != model:
        raise StoreError(
            f"{db} was built with model '{manifest.model}', not '{model}'; "
            f"use --model {manifest.model} (or --rebuild to start over)"
        )
    if checkpoint is not None and manifest.checkpoint != checkpoint:
        raise StoreError(
            f"{db} was built with other weights of '{model}' (checkpoint {manifest.checkpoint}, "
            f"these are {checkpoint}); use the same --checkpoint or --rebuild"
        )
