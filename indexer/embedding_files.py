"""Embeddings GeoParquet files as Major TOM and Clay publish them, read record batch by record batch.

Layouts recognised without flags (the first column present in each list below is taken; a flag names another):

- **Major TOM** embedding expansions (``Major-TOM/Core-S2L2A-SSL4EO``, ``Core-S2RGB-SigLIP``, ``Core-S2RGB-DINOv2``,
  ...): ``unique_id`` (64 hex digits), ``embedding`` (list of floats), ``timestamp`` (``20230119T161811``),
  ``product_id`` (the Sentinel product), ``grid_cell``, ``geometry`` (WKB footprint, WGS84), ``centre_lat``/``lon``,
  ``utm_footprint``, ``utm_crs``, ``pixel_bbox``.
- **Clay** v0 (``*.gpq``: ``source_url``, ``date``, ``embeddings``, ``geometry``) and v1.5 (``embeddings`` or
  ``embedding``, ``geometry``, with ``chips_id`` and ``datetime`` in the Sentinel-2 release).

The geometry is the ``geo`` metadata's primary column (WKB), reprojected to WGS84 when its ``crs`` names another
CRS; a file without ``geo`` metadata needs a ``geometry`` column of WKB or WKT in WGS84. Without an id column,
chips are named ``<file name>-<row>`` (``--id-column none`` asks for that, e.g. when ids repeat across files).
Every problem is one ``EmbeddingFileError`` line naming the file and the row.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely

from rsretrieve.chips import CHIP_ID, Chip
from rsretrieve.errors import UserError
from rsretrieve.geoparquet import GeoParquetError, other_crs
from rsretrieve.raster.georef import FOOTPRINT_DECIMALS
from rsretrieve.reproject import to_wgs84

ID_COLUMNS = ("unique_id", "chips_id", "chip_id", "id")
EMBEDDING_COLUMNS = ("embedding", "embeddings")
TIME_COLUMNS = ("timestamp", "datetime", "date")
SOURCE_COLUMNS = ("source_url", "product_id", "path", "parquet_url")
GEOMETRY_COLUMN = "geometry"  # without ``geo`` metadata
WGS84 = "EPSG:4326"  # the CRS of the stored footprints (an imported chip has no raster of its own)
ROW_IDS = "none"  # ``--id-column none``: chips are named <file name>-<row>
SUFFIXES = (".parquet", ".geoparquet", ".gpq")
BATCH_BYTES = 64 << 20  # float32 vectors per record batch: 16,384 rows of 1,024-d (65,536 of 256-d)
DATE_PREFIX = r"^(?P<y>\d{4})-?(?P<m>\d{2})-?(?P<d>\d{2})"  # 2023-01-19..., 20230119T161811


class EmbeddingFileError(UserError):
    """An embeddings file that cannot be imported; one line naming it."""


@dataclass(frozen=True)
class ColumnChoice:
    """Columns the user named (None: recognise them; ``id`` may be ``ROW_IDS``)."""

    id: str | None = None
    embedding: str | None = None
    geometry: str | None = None
    time: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class EmbeddingRows:
    """One record batch: chip ids, L2-normalised vectors and where and when each chip is (WGS84)."""

    ids: list[str]
    vectors: np.ndarray
    bboxes: np.ndarray
    footprints: list[dict[str, Any]]
    dates: list[dt.date | None]
    paths: list[str]

    def chips(self, rows: np.ndarray) -> list[Chip]:
        """The chips of ``rows`` (no pixel window: see ``Chip``)."""
        return [
            Chip(
                self.ids[i],
                self.paths[i],
                None,
                WGS84,
                tuple(float(value) for value in self.bboxes[i]),  # type: ignore[arg-type]
                self.footprints[i],
                self.dates[i],
            )
            for i in rows
        ]


def find_embedding_files(sources: list[str | Path]) -> list[Path]:
    """The files to import: files as given, and the ``*.parquet``/``*.geoparquet``/``*.gpq`` files of folders."""
    files: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            found = sorted(path for path in source.rglob("*") if path.suffix.lower() in SUFFIXES and path.is_file())
            if not found:
                raise EmbeddingFileError(f"{source} holds no .parquet, .geoparquet or .gpq files")
            files += found
        elif source.is_file():
            files.append(source)
        else:
            raise EmbeddingFileError(f"file not found: {source}")
    return list(dict.fromkeys(files))


def _first(names: tuple[str, ...], present: list[str]) -> str | None:
    return next((name for name in names if name in present), None)


class EmbeddingFile:
    """One embeddings GeoParquet file: its columns resolved (``open``), read in record batches (``batches``)."""

    def __init__(self, path: Path, parquet: pq.ParquetFile, choice: ColumnChoice):
        self.path = path
        self.parquet = parquet
        schema = parquet.schema_arrow
        self.present = list(schema.names)
        self.layout = layout_name(self.present)
        self.embedding = self._column(choice.embedding, EMBEDDING_COLUMNS, "embedding")
        self.geometry, self.crs = self._geometry(choice.geometry, schema)
        self.id = None if choice.id == ROW_IDS else self._column(choice.id, ID_COLUMNS, "id", required=False)
        self.time = self._column(choice.time, TIME_COLUMNS, "time", required=False)
        self.source = self._column(choice.source, SOURCE_COLUMNS, "source", required=False)
        self.dim: int | None = _fixed_size(schema.field(self.embedding).type, self.where(self.embedding))
        if self.dim is None and self.rows:  # a plain list: its first row's length (every row is checked later)
            first = next(parquet.iter_batches(batch_size=1, columns=[self.embedding])).column(0)
            self.dim = int(pc.list_value_length(first)[0].as_py() or 0) or None

    @classmethod
    def open(cls, path: Path, choice: ColumnChoice) -> EmbeddingFile:
        """Open ``path`` and resolve its columns; one error line when it is not an embeddings GeoParquet."""
        try:
            parquet = pq.ParquetFile(path)
        except Exception as error:
            raise EmbeddingFileError(f"{path}: not a readable Parquet file ({' '.join(str(error).split())})") from None
        return cls(path, parquet, choice)

    @property
    def rows(self) -> int:
        """Rows in the file (from its footer)."""
        return self.parquet.metadata.num_rows

    def where(self, column: str) -> str:
        return f"{self.path}: column '{column}'"

    def available(self) -> str:
        return ", ".join(self.present)

    def _column(self, chosen: str | None, names: tuple[str, ...], role: str, required: bool = True) -> str | None:
        """The column for a role: the one named by its flag, else the first known name present."""
        if chosen is not None:
            if chosen not in self.present:
                raise EmbeddingFileError(
                    f"{self.path} has no column '{chosen}' (--{role}-column); its columns: {self.available()}"
                )
            return chosen
        found = _first(names, self.present)
        if found is None and required:
            raise EmbeddingFileError(
                f"{self.path} has no {role} column ({' or '.join(names)}); its columns: {self.available()}; "
                f"name it with --{role}-column"
            )
        return found

    def _geometry(self, chosen: str | None, schema: pa.Schema) -> tuple[str, str | None]:
        """The geometry column and its CRS (WKT when not WGS84), from the ``geo`` metadata or by name."""
        raw = (schema.metadata or {}).get(b"geo")
        geo = json.loads(raw) if raw else {}
        name = chosen or geo.get("primary_column") or (GEOMETRY_COLUMN if GEOMETRY_COLUMN in self.present else None)
        if name is None or name not in self.present:
            missing = f"no column '{name}'" if name else "no geometry ('geo' metadata or a 'geometry' column)"
            raise EmbeddingFileError(
                f"{self.path} has {missing}; its columns: {self.available()}; name it with --geometry-column"
            )
        column = geo.get("columns", {}).get(name, {})
        encoding = str(column.get("encoding", "WKB"))
        kind = schema.field(name).type
        kind = kind.storage_type if isinstance(kind, pa.ExtensionType) else kind  # geoarrow.wkb
        if encoding.upper() != "WKB" or not (
            pa.types.is_binary(kind)
            or pa.types.is_large_binary(kind)
            or pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
        ):
            raise EmbeddingFileError(f"{self.where(name)} is {encoding} {kind}; WKB or WKT geometries are read")
        try:
            return name, other_crs(column, self.path)
        except GeoParquetError as error:
            raise EmbeddingFileError(str(error)) from None

    def batches(self, rows: int) -> Iterator[EmbeddingRows]:
        """The file's rows, up to ``rows`` at a time (fewer for long vectors: ``BATCH_BYTES``), checked and
        converted (see ``convert``)."""
        columns = [name for name in (self.id, self.embedding, self.geometry, self.time, self.source) if name]
        rows = max(1, min(rows, BATCH_BYTES // (4 * (self.dim or 1))))
        batches = self.parquet.iter_batches(batch_size=rows, columns=list(dict.fromkeys(columns)))
        offset = 0
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except (OSError, pa.ArrowException) as error:
                raise EmbeddingFileError(f"{self.path}: cannot read it ({' '.join(str(error).split())})") from None
            yield self.convert(batch, offset)
            offset += batch.num_rows

    def convert(self, batch: pa.RecordBatch, offset: int) -> EmbeddingRows:
        """Ids, vectors, footprints, dates and paths of a batch whose first row is row ``offset`` of the file."""
        vectors = self._vectors(batch.column(self.embedding), offset)
        geometries = self._geometries(batch.column(self.geometry), offset)
        bboxes = shapely.bounds(geometries)
        footprints = [json.loads(text) for text in shapely.to_geojson(geometries)]
        count = batch.num_rows
        dates = self._dates(batch.column(self.time), offset) if self.time else [None] * count
        paths = [str(self.path)] * count
        if self.source:
            values = batch.column(self.source).cast(pa.string()).to_pylist()
            paths = [value if value else str(self.path) for value in values]
        return EmbeddingRows(self._ids(batch, offset), vectors, bboxes, footprints, dates, paths)

    def _ids(self, batch: pa.RecordBatch, offset: int) -> list[str]:
        if self.id is None:
            stem = re.sub(r"[^A-Za-z0-9_.-]", "_", self.path.name.split(".")[0]) or "row"
            return [f"{stem}-{offset + row}" for row in range(batch.num_rows)]
        column = batch.column(self.id)
        if pa.types.is_floating(column.type) or not (
            pa.types.is_integer(column.type) or pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
        ):
            raise EmbeddingFileError(f"{self.where(self.id)} is {column.type}; chip ids are text or integers")
        ids = column.cast(pa.string())
        good = pc.fill_null(pc.match_substring_regex(ids, CHIP_ID.pattern), False).to_numpy(zero_copy_only=False)
        if not good.all():
            row = int(np.flatnonzero(~good)[0])
            value = ids[row].as_py()
            problem = "has no id" if value is None else f"has id {value!r}: ids are letters, digits and _ . : -"
            raise EmbeddingFileError(f"{self.path}: row {offset + row} {problem} (column '{self.id}')")
        return ids.to_pylist()

    def _vectors(self, column: pa.Array, offset: int) -> np.ndarray:
        """(n, dim) float32 L2-normalised; ragged, null, NaN, infinite or all-zero embeddings are errors."""
        where = self.where(self.embedding)
        kind = column.type
        if not (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)):
            raise EmbeddingFileError(f"{where} is {kind}, not a list of numbers")
        if not (pa.types.is_floating(kind.value_type) or pa.types.is_integer(kind.value_type)):
            raise EmbeddingFileError(f"{where} holds {kind.value_type}, not numbers")
        if column.null_count:
            row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise EmbeddingFileError(f"{self.path}: row {offset + row} has no embedding")
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        if len(lengths) == 0:
            return np.empty((0, self.dim or 0), np.float32)
        self.dim = self.dim or int(lengths[0])
        if (lengths != self.dim).any():
            row = int(np.flatnonzero(lengths != self.dim)[0])
            raise EmbeddingFileError(
                f"{self.path}: ragged embeddings: row {offset + row} has {lengths[row]} numbers, others {self.dim}"
            )
        values = column.flatten()
        if values.null_count:
            row = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0]) // self.dim
            raise EmbeddingFileError(f"{self.path}: row {offset + row} has a missing number in its embedding")
        vectors = np.asarray(values.to_numpy(zero_copy_only=False), np.float32).reshape(-1, self.dim)
        finite = np.isfinite(vectors).all(axis=1)
        if not finite.all():
            row = int(np.flatnonzero(~finite)[0])
            raise EmbeddingFileError(f"{self.path}: row {offset + row} has NaN or infinite numbers in its embedding")
        norms = np.linalg.norm(vectors, axis=1)
        bad = ~(norms > 0) | ~np.isfinite(norms)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            problem = "an embedding of zeros" if norms[row] == 0 else "an embedding too large for float32"
            raise EmbeddingFileError(f"{self.path}: row {offset + row} has {problem}")
        return vectors / norms[:, None]

    def _geometries(self, column: pa.Array, offset: int) -> np.ndarray:
        """WGS84 shapely geometries (coordinates rounded as indexed footprints are); missing or empty ones are
        errors, as are coordinates outside longitude/latitude."""
        column = column.storage if isinstance(column, pa.ExtensionArray) else column  # geoarrow.wkb
        values = column.to_numpy(zero_copy_only=False)
        textual = pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
        try:
            geometries = shapely.from_wkt(values) if textual else shapely.from_wkb(values)
        except shapely.errors.ShapelyError as error:
            raise EmbeddingFileError(f"{self.where(self.geometry)} holds an unreadable geometry ({error})") from None
        missing = shapely.is_missing(geometries) | shapely.is_empty(geometries)
        if missing.any():
            row = int(np.flatnonzero(missing)[0])
            raise EmbeddingFileError(f"{self.path}: row {offset + row} has no geometry (column '{self.geometry}')")
        if self.crs is not None:
            geometries = to_wgs84(geometries, self.crs)
        bounds = shapely.bounds(geometries)
        outside = (bounds[:, 0] < -180) | (bounds[:, 2] > 180) | (bounds[:, 1] < -90) | (bounds[:, 3] > 90)
        if outside.any():
            row = int(np.flatnonzero(outside)[0])
            shown = ",".join(f"{value:.6g}" for value in bounds[row])
            raise EmbeddingFileError(
                f"{self.path}: row {offset + row}'s geometry is not longitude/latitude (bounds {shown}); "
                "the file's GeoParquet 'geo' metadata should name its crs"
            )
        return shapely.transform(geometries, lambda xy: np.round(xy, FOOTPRINT_DECIMALS))

    def _dates(self, column: pa.Array, offset: int) -> list[dt.date | None]:
        """Acquisition dates of a date, timestamp or text column (``2023-01-19...`` or ``20230119T161811``)."""
        kind = column.type
        if pa.types.is_date(kind) or pa.types.is_timestamp(kind):
            return pc.cast(column, pa.date32()).to_pylist()
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise EmbeddingFileError(f"{self.where(self.time)} is {kind}; give dates, timestamps or ISO text")
        column = column.cast(pa.string())
        parts = pc.extract_regex(column, DATE_PREFIX)
        unparsed = column.is_valid().to_numpy(zero_copy_only=False) & ~parts.is_valid().to_numpy(zero_copy_only=False)
        text = pc.binary_join_element_wise(*(pc.struct_field(parts, [i]) for i in range(3)), "-")
        try:
            if not unparsed.any():
                return pc.cast(text, pa.date32()).to_pylist()
        except pa.ArrowInvalid:
            pass
        row = int(np.flatnonzero(unparsed)[0]) if unparsed.any() else _bad_date(text.to_pylist())
        raise EmbeddingFileError(
            f"{self.path}: row {offset + row}: '{column[row].as_py()}' in column '{self.time}' is not a date"
        )


def _bad_date(texts: list[str | None]) -> int:
    """The first row whose YYYY-MM-DD text is not a calendar date."""
    for row, text in enumerate(texts):
        if text is not None:
            try:
                dt.date.fromisoformat(text)
            except ValueError:
                return row
    return 0


def _fixed_size(kind: pa.DataType, where: str) -> int | None:
    """The dimension of a fixed-size list column (None for a plain list: known from its first row)."""
    if pa.types.is_fixed_size_list(kind):
        if kind.list_size < 1:
            raise EmbeddingFileError(f"{where} holds empty embeddings")
        return kind.list_size
    return None


def layout_name(columns: list[str]) -> str:
    """Who published a file with these columns, for the index's record: Major TOM, Clay, or plain GeoParquet."""
    if "unique_id" in columns and ("grid_cell" in columns or "product_id" in columns):
        return "Major TOM"
    if "embeddings" in columns or "source_url" in columns or "chips_id" in columns:
        return "Clay"
    return "GeoParquet"
