"""``StoreWriter``: the single writer of an index folder; commits batch by batch (protocol in ``rsretrieve.store``).

The writer has a reader (``ChipStore``) over the rows it has written: it appends to the reader's table, columns
and FAISS index, then commits the manifest that makes them visible to other readers.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import rsretrieve.store.index_files as index_files
from rsretrieve import ann, ann_shards
from rsretrieve.chips import INDEXED_COLUMNS, Chip, chips_table, missing_columns, vector_column
from rsretrieve.files import TEMPORARY_PATTERN
from rsretrieve.store.errors import StoreError, reason, writing
from rsretrieve.store.lock import LOCK, WriteLock
from rsretrieve.store.manifest import FORMAT_VERSION, MANIFEST, Manifest, check_same_model, manifest_stamp
from rsretrieve.store.query_columns import RECORDS, QueryColumns
from rsretrieve.store.reader import ChipStore
from rsretrieve.store.table import TABLE, connect

log = logging.getLogger(__name__)
ADD_BLOCK = 65536  # vectors added to a new FAISS index at a time
BUILD_TIMES = ("train_s", "add_s")  # how long the current FAISS index took to build, kept in the manifest
STALE_INDEX_SECONDS = 60  # FAISS files older than the previous commit are removed after this long
COMMIT_HOOKS: dict[Path, Callable[[], None]] = {}  # resolved folder → called after each commit (store.remote_db)


class StoreWriter:
    """The single writer of an index: appends committed batch by batch (see ``rsretrieve.store``)."""

    def __init__(self, db: Path, settings: ann.AnnSettings, lock: WriteLock):
        self.db = db
        self.settings = settings
        self.lock = lock
        self.store = ChipStore(db, warn_old_format=False)  # brought to this format below
        self._warned_too_small = False
        self.shard_map: ann_shards.ShardMap | None = None  # how a new IVF index is filled (default: threads)
        self._build_seconds = {key: value for key, value in self.manifest.index.items() if key in BUILD_TIMES}
        self._roll_back_uncommitted()
        if self.manifest.format_version < FORMAT_VERSION:
            self.upgrade()  # its columns were synced to this format just now: say so, or readers keep warning

    # -- the reader's state, which the writer extends ------------------------------------------------
    @property
    def manifest(self) -> Manifest:
        """The manifest being extended (committed by ``_commit``)."""
        return self.store.manifest

    @property
    def table(self) -> Any:
        """The LanceDB table (None before the first batch)."""
        return self.store.table

    @property
    def index(self) -> Any:
        """The FAISS index being extended."""
        return self.store.index

    @property
    def columns(self) -> QueryColumns:
        """The query-side columns being appended to."""
        return self.store.columns

    def __len__(self) -> int:
        return len(self.store)

    def column(self, name: str) -> Any:
        """One column of the whole table (as the reader's)."""
        return self.store.column(name)

    # -- opening -------------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        db: str | Path,
        model: Any,
        settings: ann.AnnSettings | None = None,
        rebuild: bool = False,
        chip_size: int | None = None,
        overlap: int | None = None,
        bands: list[int] | None = None,
    ) -> StoreWriter:
        """Open (or create) ``db`` for writing with ``model``; takes the write lock."""
        db = Path(db)
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
            _prepare_manifest(db, model, rebuild, chip_size, overlap, bands)
            return cls(db, settings or ann.AnnSettings(), lock)
        except BaseException:
            lock.release()
            raise

    def _roll_back_uncommitted(self) -> None:
        """Undo what a crashed writer left uncommitted: LanceDB versions newer than the manifest's, temp files."""
        for path in [*self.db.glob(TEMPORARY_PATTERN), *(self.db / RECORDS).glob(TEMPORARY_PATTERN)]:
            path.unlink(missing_ok=True)
        connection = connect(self.db)
        if self.manifest.lance_version == 0:
            with writing(self.db):
                connection.drop_table(TABLE, ignore_missing=True)
                self.columns.remove()
            self.store.table = None
            return
        try:
            table = connection.open_table(TABLE)
        except Exception as error:
            raise StoreError(
                f"{self.db}: the chips table is missing or damaged ({reason(error)}); start over with --rebuild"
            ) from error
        if table.version != self.manifest.lance_version:
            log.warning(
                "rolling back an interrupted batch in %s (table version %s → %s)",
                self.db,
                table.version,
                self.manifest.lance_version,
            )
            with writing(self.db):
                table.restore(self.manifest.lance_version)
        self.store.table = table
        with writing(self.db):
            self.columns.sync(self.manifest.count, self._stored_rows, self._announce_rebuild)

    def _stored_rows(self, fids: np.ndarray, columns: list[str]) -> pa.Table:
        """Table rows for rebuilding query-side columns; vectors from wherever the folder's format keeps them."""
        if columns != ["vector"]:
            return self.store.rows(fids, columns)
        return pa.table({"vector": vector_column(self.store.vectors(fids))})

    def _announce_rebuild(self, name: str) -> None:
        """Tell the user why opening an older (or damaged) index for writing takes a while."""
        log.info("writing %s for the %d indexed chips (once; it speeds up queries)", name, self.manifest.count)

    # -- writing -------------------------------------------------------------------------------------
    def append(self, chips: Sequence[Chip], vectors: np.ndarray, new_files: int) -> None:
        """Commit one batch of chips (all of some files) atomically."""
        if not chips:
            return
        start = self.manifest.count
        fids = np.arange(start, start + len(chips), dtype=np.int64)
        batch = chips_table(chips, fids, vectors)
        rows = batch.drop_columns(["vector"])  # the vectors' one copy is the query side's ``vectors.i8``
        with writing(self.db):
            if self.table is None:
                self.store.table = connect(self.db).create_table(TABLE, rows, mode="overwrite")
            else:
                if missing := missing_columns(self.table.schema):  # an index written before these columns
                    self.table.add_columns(missing)  # null for the old rows; committed with this batch
                self.table.add(rows)
            self.columns.append(batch, start)
        self.manifest.count += len(chips)
        self.manifest.files += new_files
        self.manifest.pending_finish = True
        if self._needs_new_index(growth=1):
            self._build_index()
            self._commit()
        else:
            self._commit(added=self._add(vectors, fids))

    def _add(self, vectors: np.ndarray, fids: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Add a batch to the FAISS index; for IVF-PQ, return its (ids, codes) for the commit to append."""
        if ann.describe(self.index)["index_type"] != "ivfpq":
            ann.add(self.index, vectors, fids)
            return None
        codes = ann.encode(self.index, vectors)
        ann.add_codes(self.index, codes, fids)
        return fids, codes

    def _wanted_params(self) -> ann.IndexParams:
        """The index kind for the current count; an archive too small to train IVF-PQ stays flat until it grows."""
        count = self.manifest.count
        kind = self.settings.kind
        if kind == "ivfpq" and count < ann.MIN_IVFPQ_VECTORS:
            if not self._warned_too_small:
                log.warning("%d chips are too few to train IVF-PQ (256 needed); using flat", count)
                self._warned_too_small = True
            kind = "flat"
        wanted = self.settings
        return ann.choose_params(count, self.manifest.dim, kind, wanted.flat_threshold, wanted.nprobe, wanted.nlist)

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
        rebuild = self._needs_new_index(growth=4)
        if rebuild:
            self._build_index()
        from lancedb.index import BTree

        with writing(self.db):
            for column in INDEXED_COLUMNS:
                self.table.create_index(column, config=BTree(), replace=True)
        self.manifest.pending_finish = False
        self._commit(index_changed=rebuild)

    def _build_index(self) -> None:
        """Train a new index of the wanted kind on a sample of the stored vectors and fill it with all of them, shard
        by shard (``ann_shards``; timed)."""
        started = time.perf_counter()
        params = self._wanted_params()
        index = ann.new_index(self.manifest.dim, params)
        wanted = ann.max_training_samples(params)
        if params.kind == "ivfpq" and self.settings.training_samples:
            wanted = max(min(wanted, self.settings.training_samples), params.nlist, 2**params.nbits)
        sample_size = min(self.manifest.count, wanted)
        sample = np.sort(np.random.default_rng(0).choice(self.manifest.count, sample_size, replace=False))
        ann.train(index, self.store.vectors(sample, fine=False))  # PQ's error dwarfs the finer bits
        trained = time.perf_counter()
        ann_shards.fill(index, self.store.vector_blocks(ADD_BLOCK, fine=False), self.shard_map)
        self.store.index = index
        self._build_seconds = {"train_s": trained - started, "add_s": time.perf_counter() - trained}

    def retrain(self) -> None:
        """Retrain the FAISS index from the stored vectors and commit it."""
        if self.table is not None:
            self._build_index()
            self._commit()

    def upgrade(self) -> None:
        """Commit the current version in this rsretrieve's format (its columns were synced when opened).

        From formats 1-2, the float32 vectors leave the LanceDB table (``vectors.i8`` holds them now): the column is
        dropped and the table compacted, and versions older than this one are removed, since they hold the vectors.
        From formats 1-3, record files are rewritten in format 4's compact uncompressed layout (``record_layout``).
        """
        with writing(self.db):
            self.columns.records.file.rewrite_older()
        self.manifest.format_version = FORMAT_VERSION
        if self.table is not None and "vector" in self.table.schema.names:
            with writing(self.db), warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # that older versions go is the point here
                self.table.drop_columns(["vector"])
                self.table.optimize(cleanup_older_than=timedelta(0), delete_unverified=True)
        if self.table is not None:
            self._commit()
        else:
            with writing(self.db):
                self.manifest.write(self.db)

    def _commit(self, added: tuple[np.ndarray, np.ndarray] | None = None, index_changed: bool = True) -> None:
        """Write the FAISS side for the current table version if it changed (``index_files``: the batch's codes
        ``added`` to an IVF-PQ, or the whole index), then the manifest, then tidy old files."""
        version = self.table.version
        previous = index_files.files(self.manifest)
        with writing(self.db):
            index_files.commit(self.index, self.db, self.manifest, version, added, changed=index_changed)
            self.manifest.lance_version = version
            self.manifest.index = {**ann.describe(self.index), **self._build_seconds}
            self.manifest.format_version = FORMAT_VERSION
            self.manifest.write(self.db)
        self.store.manifest_stamp = manifest_stamp(self.db)
        self._remove_stale_index_files(keep=previous | index_files.files(self.manifest))
        if hook := COMMIT_HOOKS.get(self.db.resolve()):
            hook()  # publish the committed version (an index on object storage)

    def _remove_stale_index_files(self, keep: set[str]) -> None:
        """Delete FAISS-side files older than the previous commit's (readers may still be loading those)."""
        cutoff = time.time() - STALE_INDEX_SECONDS
        for path in self.db.glob(index_files.PATTERN):
            if path.name not in keep and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)

    def close(self) -> None:
        """Release the write lock."""
        self.lock.release()


def _prepare_manifest(
    db: Path, model: Any, rebuild: bool, chip_size: int | None, overlap: int | None, bands: list[int] | None
) -> None:
    """Check that an existing index matches this run's model and chipping, or commit a new empty one."""
    if (db / MANIFEST).exists() and not rebuild:
        existing = Manifest.read(db)
        check_same_model(existing, model.name, model.checkpoint, db)
        if chip_size is not None and existing.chip_size not in (None, chip_size):
            raise StoreError(f"{db} was built with --chip-size {existing.chip_size}; use it again or --rebuild")
        if overlap is not None and existing.overlap not in (None, overlap):
            raise StoreError(f"{db} was built with --overlap {existing.overlap}; use it again or --rebuild")
        if chip_size is not None and existing.bands != bands:
            shown = ",".join(map(str, existing.bands)) if existing.bands else "the default bands"
            raise StoreError(f"{db} was built with --bands {shown}; use them again or --rebuild")
        return
    fresh = Manifest(model.name, model.architecture, model.checkpoint, model.dim)
    fresh.chip_size, fresh.overlap, fresh.bands = chip_size, overlap, bands
    if rebuild and (db / MANIFEST).exists():
        fresh.created = Manifest.read(db).created
    with writing(db):
        fresh.write(db)  # commits an empty index; the old table is dropped as uncommitted
