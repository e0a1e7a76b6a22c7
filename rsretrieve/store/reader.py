"""``ChipStore``: a read-only view of an index folder at its committed version (see ``rsretrieve.store``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from rsretrieve import ann
from rsretrieve.chips import (
    FILTER_FIELDS,
    RECORD_COLUMNS,
    Chip,
    FilterColumns,
    chips_from_table,
    chips_from_values,
    filter_matrix,
    is_chip_id,
    vectors_of,
)
from rsretrieve.store.errors import StoreError
from rsretrieve.store.index_files import load as load_index
from rsretrieve.store.manifest import FORMAT_VERSION, Manifest, manifest_stamp
from rsretrieve.store.query_columns import MatrixFile, QueryColumn, QueryColumns
from rsretrieve.store.table import TABLE, connect
from rsretrieve.store.vector_codes import decode

log = logging.getLogger(__name__)
OLD_FORMAT_COSTS = {  # what an index of an older format costs, by format_version
    1: "float32 vectors stored twice, ~4 KB a chip",
    2: "float32 vectors stored twice, ~4 KB a chip",
    3: "result records in compressed batches, ~1 ms a result to read",
}


class ChipStore:
    """Read-only view of an index at its committed version."""

    def __init__(self, db: str | Path, warn_old_format: bool = True):
        self.db = Path(db)
        self.manifest_stamp = manifest_stamp(self.db)  # before reading: a newer one only means a reopen
        self.manifest = Manifest.read(self.db)
        self.table = self._open_table()
        self._index: Any = None
        self.columns = QueryColumns(self.db, self.manifest.dim)
        self._views: dict[Path, tuple[int, np.ndarray | None]] = {}
        self._filters: tuple[int, FilterColumns | None] = (-1, None)
        version = self.manifest.format_version
        if warn_old_format and version < FORMAT_VERSION and self.manifest.count:
            log.warning(
                "%s was written by an older rsretrieve (format %d: %s); run `rsretrieve upgrade --db %s` once",
                self.db,
                version,
                OLD_FORMAT_COSTS.get(version, OLD_FORMAT_COSTS[1]),
                self.db,
            )

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
                self._index = load_index(self.db, self.manifest)
        return self._index

    @index.setter
    def index(self, index: Any) -> None:
        self._index = index

    def changed_on_disk(self) -> bool:
        """Whether a writer has committed a newer version since this view was opened."""
        stamp = manifest_stamp(self.db)
        return stamp is not None and stamp != self.manifest_stamp

    def __len__(self) -> int:
        return self.manifest.count

    def rows(self, fids: np.ndarray | list[int], columns: list[str] | None = None) -> pa.Table:
        """Table rows for ``fids`` in the given order (columns default to the chip record)."""
        columns = columns or list(RECORD_COLUMNS)
        fids = [int(fid) for fid in fids]
        if not fids or self.table is None:
            return pa.table({name: [] for name in columns})
        wanted = columns if "fid" in columns else ["fid", *columns]
        present = set(self.table.schema.names)  # an older table lacks later record columns: null below
        found = self.table.take_offsets(sorted(set(fids))).select([c for c in wanted if c in present]).to_arrow()
        for name in wanted:
            if name not in present:
                kind = RECORD_COLUMNS[name]
                found = found.append_column(pa.field(name, kind), pa.nulls(found.num_rows, kind))
        position = {fid: row for row, fid in enumerate(found.column("fid").to_pylist())}
        return found.take([position[fid] for fid in fids]).select(columns)

    def _view(self, column: QueryColumn | MatrixFile) -> np.ndarray | None:
        """Memory map of the committed rows of a matrix column, or None when the file is short (an older index)."""
        file = column.file if isinstance(column, QueryColumn) else column
        count = self.manifest.count
        cached = self._views.get(file.path)
        if cached is None or cached[0] != count or cached[1] is None:
            cached = self._views[file.path] = (count, file.view(count))
        return cached[1]

    def vectors(self, fids: np.ndarray | list[int], fine: bool = True) -> np.ndarray:
        """Stored vectors for ``fids`` as float32, in order (decoded from ``vectors.i8`` refined by ``vectors.lo4``
        unless ``fine`` is False, or without it in an index written before it existed; not yet upgraded to format 3:
        from ``vectors.f32``, else from LanceDB)."""
        fids = np.asarray(fids, np.int64)
        codes = self._view(self.columns.vectors)
        if codes is not None:
            finer = self._view(self.columns.fine_vectors) if fine else None
            return decode(codes[fids], None if finer is None else finer[fids]).reshape(-1, self.manifest.dim)
        old = self._view(self.columns.old_vectors)
        if old is not None:
            return np.asarray(old[fids], np.float32).reshape(-1, self.manifest.dim)
        if self.table is not None and "vector" in self.table.schema.names:
            return vectors_of(self.rows(fids, ["vector"]), self.manifest.dim)
        if len(fids) == 0 or self.table is None:
            return np.empty((0, self.manifest.dim), np.float32)
        name = self.columns.vectors.file.path.name
        raise StoreError(
            f"{self.db}: {name} is missing or short, and only it holds the vectors; re-index with --rebuild"
        )

    def vector_blocks(self, block: int = 65536, fine: bool = True):
        """(first fid, float32 vectors) of every committed chip, ``block`` rows at a time (bounded memory).

        Each block is decoded from the memory map of ``vectors.i8`` (a whole-archive pass reads each stored vector
        once, straight from the page cache, a quarter of the bytes of float32), and ``vectors.lo4`` if ``fine``."""
        for start in range(0, len(self), block):
            yield start, self.vectors(np.arange(start, min(start + block, len(self)), dtype=np.int64), fine)

    def filter_columns(self) -> FilterColumns:
        """The filter matrix of every chip by name (``chips.FilterColumns``).

        Held in memory column by column (Fortran order), once per committed version: a filter reads four columns,
        ~1.7 ms at 1M chips this way against ~5 ms through the row-major file.
        """
        count = self.manifest.count
        if self._filters[0] != count or self._filters[1] is None:
            mapped = self._view(self.columns.bounds)
            if mapped is None and self.table is not None:  # an index written before the column existed
                mapped = filter_matrix(
                    self.table.search().select(list(self.columns.bounds.columns)).limit(None).to_arrow()
                )
            matrix = mapped if mapped is not None else np.empty((0, len(FILTER_FIELDS)))
            self._filters = (count, FilterColumns.of(np.asfortranarray(matrix)))
        return self._filters[1]

    def chips(self, fids: np.ndarray | list[int]) -> list[Chip]:
        """The chip records of ``fids``, in order (from ``records/``, else from LanceDB)."""
        found = self.columns.records.file.values(fids, self.manifest.count, parsed=True)
        return chips_from_values(found) if found is not None else chips_from_table(self.rows(fids))

    def records(self, fids: np.ndarray | list[int], columns: list[str] | None = None) -> pa.Table:
        """The record columns (``chips.RECORD_COLUMNS``, or ``columns``) of ``fids`` as an Arrow table, in order: what
        ``chips`` reads, without making ``Chip`` objects (exports of many chips)."""
        found = self.columns.records.file.read(fids, self.manifest.count, columns)
        return found if found is not None else self.rows(fids, columns)

    def footprints(self, fids: np.ndarray | list[int]) -> np.ndarray:
        """WGS84 footprints of ``fids`` as an array of shapely geometries, in order (the bbox as a rectangle for a
        chip stored without a footprint; None for a chip without georeference)."""
        import shapely

        fids = np.asarray(fids, np.int64)
        geometries = np.empty(len(fids), object)
        found = self.columns.records.file.footprints(fids, self.manifest.count)
        if found is None:  # from LanceDB
            found = shapely.from_geojson(
                np.asarray(self.rows(fids, ["footprint"]).column("footprint").to_pylist(), object)
            )
        geometries[:] = found
        missing = np.flatnonzero(shapely.is_missing(geometries))
        if len(missing):
            boxes = self.records(fids[missing], list(FILTER_FIELDS[:4]))
            columns = [boxes.column(name).to_numpy(zero_copy_only=False) for name in FILTER_FIELDS[:4]]
            bounds = np.column_stack(columns).astype(np.float64)
            placed = ~np.isnan(bounds).any(axis=1)
            geometries[missing[placed]] = shapely.box(*bounds[placed].T)
        return geometries

    def fids_of(self, chip_ids: list[str]) -> dict[str, int]:
        """fid of each of ``chip_ids`` that is in the index (ids not found are left out)."""
        wanted = sorted({chip_id for chip_id in chip_ids if is_chip_id(chip_id)})
        found: dict[str, int] = {}
        if self.table is None:
            return found
        for start in range(0, len(wanted), 1000):
            quoted = ", ".join(f"'{chip_id}'" for chip_id in wanted[start : start + 1000])
            rows = self.table.search().where(f"id IN ({quoted})").select(["id", "fid"]).limit(None).to_arrow()
            for chip_id, fid in zip(rows.column("id").to_pylist(), rows.column("fid").to_pylist(), strict=True):
                if fid < len(self):
                    found[chip_id] = int(fid)
        return found

    def where_fids(self, where: str) -> np.ndarray:
        """fids of the rows matching an SQL filter."""
        if self.table is None:
            return np.empty(0, np.int64)
        result = self.table.search().where(where).select(["fid"]).limit(None).to_arrow()
        return np.sort(result.column("fid").to_numpy())

    def fid_of(self, chip_id: str) -> int | None:
        """fid of a chip id, or None."""
        if self.table is None or not is_chip_id(chip_id):
            return None
        found = self.where_fids(f"id = '{chip_id}'")
        return int(found[0]) if len(found) else None

    def column(self, name: str) -> pa.ChunkedArray:
        """One column of the whole table."""
        if self.table is None:
            return pa.chunked_array([], pa.string())
        if name not in self.table.schema.names:  # a record column added after this index was written
            return pa.chunked_array([pa.nulls(len(self), RECORD_COLUMNS.get(name, pa.string()))])
        return self.table.search().select([name]).limit(None).to_arrow().column(name)

    def indexed_paths(self) -> set[str]:
        """Source files that have chips in the index."""
        return set(self.column("path").unique().to_pylist())

    def info(self) -> dict[str, Any]:
        """Counts and settings for ``rsretrieve info``.

        Healthy: rows == unique_ids == index_vectors == manifest_count, and every column file holds at least that
        many rows (more only after an interrupted batch, until the next writer cuts them).
        """
        rows = self.table.count_rows() if self.table is not None else 0
        described = ann.describe(self.index)
        manifest = self.manifest
        return {
            "db": str(self.db),
            "model": manifest.model,
            "architecture": manifest.architecture,
            "checkpoint": manifest.checkpoint,
            "dim": manifest.dim,
            "rows": rows,
            "unique_ids": len(self.column("id").unique()) if rows else 0,
            "index_vectors": described["ntotal"],
            "manifest_count": manifest.count,
            "column_rows": self.columns.rows(),
            "files": manifest.files,
            "index_type": described["index_type"],
            "index": described,
            "chip_size": manifest.chip_size,
            "overlap": manifest.overlap,
            "bands": manifest.bands,
            "imported_from": manifest.imported_from,
            "lance_version": manifest.lance_version,
            "format_version": manifest.format_version,
            "created": manifest.created,
            "updated": manifest.updated,
        }
