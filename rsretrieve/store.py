"""The index on disk: a LanceDB table ``chips`` (metadata + vectors), a FAISS file and ``manifest.json``.

Layout of a ``--db`` folder::

    manifest.json          model, dim, count, committed LanceDB version, current FAISS file
    chips.lance/           LanceDB table: one row per chip, ``fid`` = row offset = FAISS id
    index-<version>.faiss  FAISS index matching LanceDB version <version>
    vectors.f32, bounds.f64, records.jsonl, records.end
                           the query path's copies of table columns (``rsretrieve.query_copies``)
    write.lock             pid of the indexer writing now, flock-ed while it runs (absent otherwise)

Commit protocol (one batch): append rows to LanceDB (new version V) → append to the copies (fsync) → write
``index-V.faiss`` (tmp + rename) → replace ``manifest.json`` (tmp + rename). The manifest is written last:
readers open the LanceDB version, the FAISS file it names and the first ``count`` rows of the copies, so they
always see a whole batch or none of it, and a crash before the manifest leaves rows that the next writer
rolls back (LanceDB ``restore``, copies truncated) before appending. ``--rebuild`` first
commits an empty manifest, so a crash while starting over leaves an empty index, never a manifest
naming a dropped table. A failed write (disk full, read-only) is a StoreError; what was committed stays.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from rsretrieve import ann
from rsretrieve.errors import UserError
from rsretrieve.files import TEMPORARY_PATTERN, atomic_write
from rsretrieve.models import is_random_checkpoint
from rsretrieve.query_copies import RECORD_COLUMNS, Copy, QueryCopies, bounds_of, records_of, vectors_of

FORMAT_VERSION = 1
TABLE = "chips"
MANIFEST = "manifest.json"
LOCK = "write.lock"
METADATA_COLUMNS = [
    "fid", "id", "path", "col_off", "row_off", "width", "height", "crs",
    "minx", "miny", "maxx", "maxy", "footprint", "date",
]  # fmt: skip
INDEXED_COLUMNS = ("fid", "id", "minx", "miny", "maxx", "maxy", "date")  # id: "more like this" lookups
_OS_ERROR = re.compile(r"\(os error (\d+)\)")  # how Rust (LanceDB) writes an errno
_STRERRORS = {os.strerror(code) for code in errno.errorcode}  # FAISS ends its I/O errors with "(strerror)"


class StoreError(UserError):
    """A problem with an index folder; the message is one line for the user."""


def chip_schema(dim: int) -> pa.Schema:
    """Arrow schema of the ``chips`` table."""
    return pa.schema(
        [
            ("fid", pa.int64()),
            ("id", pa.string()),
            ("path", pa.string()),
            ("col_off", pa.int32()),
            ("row_off", pa.int32()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("crs", pa.string()),
            ("minx", pa.float64()),
            ("miny", pa.float64()),
            ("maxx", pa.float64()),
            ("maxy", pa.float64()),
            ("footprint", pa.string()),
            ("date", pa.date32()),
            ("vector", pa.list_(pa.float32(), dim)),
        ]
    )


def connect(db: Path) -> Any:
    """A LanceDB connection (imported here: it takes seconds, and error paths should not wait for it)."""
    os.environ.setdefault("RUST_LOG", "error")
    os.environ.setdefault("LANCEDB_LOG", "error")
    import lancedb

    return lancedb.connect(db)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


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
    index: dict[str, Any] = field(default_factory=dict)
    chip_size: int | None = None
    overlap: int | None = None
    bands: list[int] | None = None
    pending_finish: bool = False  # appended since the last finish() (scalar indexes, IVF growth check)
    format_version: int = FORMAT_VERSION
    created: str = field(default_factory=_now)
    updated: str = field(default_factory=_now)

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


@contextlib.contextmanager
def writing(db: Path) -> Iterator[None]:
    """Turn a failed write (disk full, read-only file system, I/O error) into a one-line StoreError."""
    try:
        yield
    except (OSError, RuntimeError) as error:  # FAISS reports I/O failures as RuntimeError
        raise StoreError(f"cannot write to {db}: {reason(error)}") from error


def reason(error: BaseException) -> str:
    """Why an operation failed, in a few words: the OS error, also when inside LanceDB's or FAISS's messages."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    if found := _OS_ERROR.search(str(error)):
        return os.strerror(int(found[1]))
    if (found := re.search(r"\(([^()]+)\)\s*$", str(error))) and found[1] in _STRERRORS:
        return found[1]
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


class ChipStore:
    """Read-only view of an index at its committed version."""

    def __init__(self, db: str | Path):
        self.db = Path(db)
        self._manifest_stamp = manifest_stamp(self.db)  # before reading: a newer one only means a reopen
        self.manifest = Manifest.read(self.db)
        self.table = self._open_table()
        self._index: Any = None
        self.copies = QueryCopies(self.db, self.manifest.dim)
        self._views: dict[Path, tuple[int, np.ndarray | None]] = {}
        self._bounds: tuple[int, np.ndarray] = (-1, np.empty((0, 5)))

    def _open_table(self) -> Any:
        if self.manifest.count == 0 and self.manifest.lance_version == 0:
            return None
        try:
            table = connect(self.db).open_table(TABLE)
            table.checkout(self.manifest.lance_version)
        except Exception as error:
            raise StoreError(f"{self.db}: cannot open the chips table ({error})") from error
        return table

    @property
    def index(self) -> Any:
        """The FAISS index of the committed version, loaded on first use."""
        if self._index is None:
            if self.manifest.index_file is None:
                self._index = ann.new_index(self.manifest.dim, ann.choose_params(0, self.manifest.dim))
            else:
                try:
                    self._index = ann.read_index(self.db / self.manifest.index_file)
                except ann.AnnIndexError as error:
                    raise StoreError(str(error)) from error
        return self._index

    def changed_on_disk(self) -> bool:
        """Whether a writer has committed a newer version since this view was opened."""
        stamp = manifest_stamp(self.db)
        return stamp is not None and stamp != self._manifest_stamp

    def __len__(self) -> int:
        return self.manifest.count

    def rows(self, fids: np.ndarray | list[int], columns: list[str] | None = None) -> pa.Table:
        """Rows for ``fids`` in the given order (columns default to the metadata)."""
        columns = columns or METADATA_COLUMNS
        fids = [int(fid) for fid in fids]
        if not fids or self.table is None:
            return pa.table({name: [] for name in columns})
        wanted = columns if "fid" in columns else ["fid", *columns]
        found = self.table.take_offsets(sorted(set(fids))).select(wanted).to_arrow()
        position = {fid: row for row, fid in enumerate(found.column("fid").to_pylist())}
        return found.take([position[fid] for fid in fids]).select(columns)

    def _view(self, copy: Copy) -> np.ndarray | None:
        """Memory map of the committed rows of a matrix copy, or None when the file is short (an older index)."""
        count = self.manifest.count
        cached = self._views.get(copy.file.path)
        if cached is None or cached[0] != count:
            cached = self._views[copy.file.path] = (count, copy.file.view(count))
        return cached[1]

    def vectors(self, fids: np.ndarray | list[int]) -> np.ndarray:
        """Stored float32 vectors for ``fids``, in order (from ``vectors.f32``, else from LanceDB)."""
        mapped = self._view(self.copies.vectors)
        if mapped is not None:
            return np.asarray(mapped[np.asarray(fids, np.int64)], np.float32).reshape(-1, self.manifest.dim)
        return vectors_of(self.rows(fids, ["vector"]), self.manifest.dim)

    def bounds(self) -> np.ndarray:
        """(count, 5) float64 of every chip: minx, miny, maxx, maxy, acquisition day (see ``query_copies``).

        Held in memory column by column (Fortran order), once per committed version: a filter reads four columns,
        ~1.7 ms at 1M chips this way against ~5 ms through the row-major file.
        """
        count = self.manifest.count
        if self._bounds[0] != count:
            mapped = self._view(self.copies.bounds)
            if mapped is None and self.table is not None:  # an index written before the copy existed
                mapped = bounds_of(self.table.search().select(list(self.copies.bounds.columns)).limit(None).to_arrow())
            self._bounds = (count, np.asfortranarray(mapped if mapped is not None else np.empty((0, 5))))
        return self._bounds[1]

    def records(self, fids: np.ndarray | list[int]) -> list[dict[str, Any]]:
        """What search results show of ``fids``, in order (from ``records.jsonl``, else from LanceDB)."""
        found = self.copies.records.file.read(fids, self.manifest.count)
        return found if found is not None else records_of(self.rows(fids, list(RECORD_COLUMNS)))

    def where_fids(self, where: str) -> np.ndarray:
        """fids of the rows matching an SQL filter."""
        if self.table is None:
            return np.empty(0, np.int64)
        result = self.table.search().where(where).select(["fid"]).limit(None).to_arrow()
        return np.sort(result.column("fid").to_numpy())

    def fid_of(self, chip_id: str) -> int | None:
        """fid of a chip id, or None."""
        if self.table is None or not chip_id.isalnum():
            return None
        found = self.where_fids(f"id = '{chip_id}'")
        return int(found[0]) if len(found) else None

    def column(self, name: str) -> pa.ChunkedArray:
        """One column of the whole table."""
        if self.table is None:
            return pa.chunked_array([], pa.string())
        return self.table.search().select([name]).limit(None).to_arrow().column(name)

    def indexed_paths(self) -> set[str]:
        """Source files that have chips in the index."""
        return set(self.column("path").unique().to_pylist())

    def info(self) -> dict[str, Any]:
        """Counts and settings for ``rsretrieve info``.

        Healthy: rows == unique_ids == index_vectors == manifest_count, and every copy holds at least that many
        rows (more only after an interrupted batch, until the next writer cuts them).
        """
        rows = self.table.count_rows() if self.table is not None else 0
        described = ann.describe(self.index)
        return {
            "db": str(self.db),
            "model": self.manifest.model,
            "architecture": self.manifest.architecture,
            "checkpoint": self.manifest.checkpoint,
            "dim": self.manifest.dim,
            "rows": rows,
            "unique_ids": len(self.column("id").unique()) if rows else 0,
            "index_vectors": described["ntotal"],
            "manifest_count": self.manifest.count,
            "copy_rows": {copy.file.path.name: copy.file.rows_on_disk() for copy in self.copies.all},
            "files": self.manifest.files,
            "index_type": described["index_type"],
            "index": described,
            "chip_size": self.manifest.chip_size,
            "overlap": self.manifest.overlap,
            "bands": self.manifest.bands,
            "lance_version": self.manifest.lance_version,
            "format_version": self.manifest.format_version,
            "created": self.manifest.created,
            "updated": self.manifest.updated,
        }


class WriteLock:
    """An exclusive ``flock`` on ``write.lock``, which holds the writer's pid.

    The kernel drops the lock when its process dies (even by SIGKILL), so a lock file left behind is
    recognised as stale for certain, even when its pid has been reused since.
    """

    def __init__(self, db: Path):
        self.path = db / LOCK
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise StoreError naming the process that holds it (OSError if not writable)."""
        fd = self._locked_fd()
        try:
            previous = os.read(fd, 64).decode(errors="replace").strip()
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        if previous:
            print(f"warning: taking over a stale lock left by process {previous}", file=sys.stderr)
        self._fd = fd

    def check_free(self) -> None:
        """Raise StoreError now if a live writer holds the lock (a cheap early check; ``acquire`` decides)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._busy() from None
        finally:
            os.close(fd)

    def _locked_fd(self) -> int:
        """An open, flock-ed descriptor of the lock file that is still the one at ``self.path``."""
        while True:
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._busy() from None
            if self._is_current(fd):
                return fd
            os.close(fd)  # the holder removed the file between our open and flock: try again

    def _busy(self) -> StoreError:
        try:
            owner = self.path.read_text().strip() or "unknown"
        except OSError:
            owner = "unknown"
        return StoreError(f"{self.path.parent} is being written by another indexer (pid {owner}); let it finish")

    def _is_current(self, fd: int) -> bool:
        try:
            return os.fstat(fd).st_ino == self.path.stat().st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Remove the lock file and drop the lock if this object holds it."""
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


@dataclass
class IndexSettings:
    """How the FAISS index is chosen when the writer builds or rebuilds it."""

    kind: str = "auto"
    flat_threshold: int = ann.DEFAULT_FLAT_THRESHOLD
    nprobe: int | None = None


class StoreWriter(ChipStore):
    """The single writer of an index: appends committed batch by batch (see the module docstring)."""

    def __init__(self, db: Path, settings: IndexSettings):
        super().__init__(db)
        self.settings = settings
        self._warned_too_small = False
        self._roll_back_uncommitted()

    @classmethod
    def open(
        cls,
        db: str | Path,
        model: Any,
        settings: IndexSettings | None = None,
        rebuild: bool = False,
        chip_size: int | None = None,
        overlap: int | None = None,
        bands: list[int] | None = None,
    ) -> StoreWriter:
        """Open (or create) ``db`` for writing with ``model``; takes the write lock."""
        db = Path(db)
        settings = settings or IndexSettings()
        try:
            db.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"cannot create index folder {db}: {error.strerror}") from error
        if any(db.iterdir()) and not (db / MANIFEST).exists() and not (db / LOCK).exists():
            raise StoreError(f"{db} exists and is not an rsretrieve index; choose another --db")
        lock = WriteLock(db)
        try:
            lock.acquire()
        except OSError as error:  # read-only file system, no permission, disk full
            raise StoreError(f"{db} is not writable ({reason(error)})") from error
        try:
            writer = cls._open_locked(db, model, settings, rebuild, chip_size, overlap, bands)
        except BaseException:
            lock.release()
            raise
        writer.lock = lock
        return writer

    @classmethod
    def _open_locked(
        cls,
        db: Path,
        model: Any,
        settings: IndexSettings,
        rebuild: bool,
        chip_size: int | None,
        overlap: int | None,
        bands: list[int] | None,
    ) -> StoreWriter:
        fresh = Manifest(model.name, model.architecture, model.checkpoint, model.dim)
        fresh.chip_size, fresh.overlap, fresh.bands = chip_size, overlap, bands
        if (db / MANIFEST).exists() and not rebuild:
            existing = Manifest.read(db)
            check_same_model(existing, model.name, model.checkpoint, db)
            if chip_size is not None and existing.chip_size not in (None, chip_size):
                raise StoreError(f"{db} was built with --chip-size {existing.chip_size}; use it again or --rebuild")
            if chip_size is not None and existing.bands != bands:
                shown = ",".join(map(str, existing.bands)) if existing.bands else "the default bands"
                raise StoreError(f"{db} was built with --bands {shown}; use them again or --rebuild")
        else:
            if rebuild and (db / MANIFEST).exists():
                fresh.created = Manifest.read(db).created
            with writing(db):
                fresh.write(db)  # commits an empty index; the old table is dropped as uncommitted
        return cls(db, settings)

    def _roll_back_uncommitted(self) -> None:
        """Undo what a crashed writer left uncommitted: LanceDB versions newer than the manifest's, temp files."""
        self._remove_temporary_files()
        connection = connect(self.db)
        if self.manifest.lance_version == 0:
            with writing(self.db):
                connection.drop_table(TABLE, ignore_missing=True)
                self.copies.remove()
            self.table = None
            return
        try:
            table = connection.open_table(TABLE)
        except Exception as error:
            raise StoreError(
                f"{self.db}: the chips table is missing or damaged ({reason(error)}); start over with --rebuild"
            ) from error
        if table.version != self.manifest.lance_version:
            print(
                f"warning: rolling back an interrupted batch in {self.db} "
                f"(table version {table.version} → {self.manifest.lance_version})",
                file=sys.stderr,
            )
            with writing(self.db):
                table.restore(self.manifest.lance_version)
        self.table = table
        with writing(self.db):
            self.copies.sync(self.manifest.count, self.rows, self._announce_rebuild)

    def _announce_rebuild(self, name: str) -> None:
        """Tell the user why opening an older (or damaged) index for writing takes a while."""
        print(
            f"note: writing {name} for the {self.manifest.count} indexed chips (once; it speeds up queries)",
            file=sys.stderr,
        )

    def _remove_temporary_files(self) -> None:
        """Delete temporary files of a writer killed mid-write (this writer holds the lock)."""
        for path in self.db.glob(TEMPORARY_PATTERN):
            path.unlink(missing_ok=True)

    def append(self, rows: list[dict[str, Any]], vectors: np.ndarray, new_files: int) -> None:
        """Commit one batch of chips (all of some files) atomically."""
        if not rows:
            return
        start = self.manifest.count
        fids = np.arange(start, start + len(rows), dtype=np.int64)
        columns = {name: [row.get(name) for row in rows] for name in METADATA_COLUMNS}
        columns["fid"] = fids
        flat = pa.array(np.ascontiguousarray(vectors, np.float32).ravel())
        columns["vector"] = pa.FixedSizeListArray.from_arrays(flat, self.manifest.dim)
        batch = pa.Table.from_pydict(columns, schema=chip_schema(self.manifest.dim))
        self._write_table(batch)
        with writing(self.db):
            self.copies.append(batch)
        self.manifest.count += len(rows)
        self.manifest.files += new_files
        self.manifest.pending_finish = True
        if self._needs_new_index(growth=1):
            self._build_index()
        else:
            ann.add(self.index, vectors, fids)
        self._commit()

    def _write_table(self, batch: pa.Table) -> None:
        with writing(self.db):
            if self.table is None:
                self.table = connect(self.db).create_table(TABLE, batch, mode="overwrite")
            else:
                self.table.add(batch)

    def _wanted_params(self) -> ann.IndexParams:
        """The index kind for the current count; an archive too small to train IVF-PQ stays flat until it grows."""
        settings = self.settings
        count = self.manifest.count
        kind = settings.kind
        if kind == "ivfpq" and count < ann.MIN_IVFPQ_VECTORS:
            if not self._warned_too_small:
                print(f"warning: {count} chips are too few to train IVF-PQ (256 needed); using flat", file=sys.stderr)
                self._warned_too_small = True
            kind = "flat"
        return ann.choose_params(count, self.manifest.dim, kind, settings.flat_threshold, settings.nprobe)

    def _needs_new_index(self, growth: int) -> bool:
        """Whether the index kind should change, or IVF lists are ``growth``× too few for the archive."""
        wanted, current = self._wanted_params(), ann.describe(self.index)
        if wanted.kind != current["index_type"] or not self.index.is_trained:
            return True
        return wanted.kind == "ivfpq" and wanted.nlist >= growth * current["nlist"] > current["nlist"]

    def finish(self) -> None:
        """End of a run: retrain IVF-PQ if the archive outgrew it (4× the lists), refresh scalar indexes."""
        if self.table is None:
            return
        if self._needs_new_index(growth=4):
            self._build_index()
        from lancedb.index import BTree

        with writing(self.db):
            for column in INDEXED_COLUMNS:
                self.table.create_index(column, config=BTree(), replace=True)
        self.manifest.pending_finish = False
        self._commit()

    def _build_index(self) -> None:
        """Train a new index of the wanted kind on a sample of the stored vectors and add them all."""
        params = self._wanted_params()
        index = ann.new_index(self.manifest.dim, params)
        sample_size = min(self.manifest.count, ann.max_training_samples(params))
        sample = np.sort(np.random.default_rng(0).choice(self.manifest.count, sample_size, replace=False))
        ann.train(index, self.vectors(sample))
        for start in range(0, self.manifest.count, 65536):
            fids = np.arange(start, min(start + 65536, self.manifest.count), dtype=np.int64)
            ann.add(index, self.vectors(fids), fids)
        self._index = index

    def retrain(self) -> None:
        """Retrain the FAISS index from the stored vectors and commit it."""
        if self.table is not None:
            self._build_index()
            self._commit()

    def _commit(self) -> None:
        """Write the FAISS file for the current table version, then the manifest, then tidy old files."""
        version = self.table.version
        name = f"index-{version}.faiss"
        previous = self.manifest.index_file
        with writing(self.db):
            ann.write_index(self.index, self.db / name)
            self.manifest.lance_version = version
            self.manifest.index_file = name
            self.manifest.index = ann.describe(self.index)
            self.manifest.write(self.db)
        self._manifest_stamp = manifest_stamp(self.db)
        self._remove_stale_index_files(keep={name, previous})

    def _remove_stale_index_files(self, keep: set[str | None]) -> None:
        """Delete FAISS files older than the previous commit (readers may still be loading that one)."""
        cutoff = time.time() - 60
        for path in self.db.glob("index-*.faiss"):
            if path.name not in keep and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)

    def close(self) -> None:
        """Release the write lock."""
        lock = getattr(self, "lock", None)
        if lock is not None:
            lock.release()


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
