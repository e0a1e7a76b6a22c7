"""GeoParquet 1.1 output (and input) of chips, query results, labels, classifier chips and sites.

A file is an ordinary Parquet file with:

- ``geometry``: WKB (shapely), WGS84 longitude/latitude; null for a chip without georeference;
- ``bbox``: struct ``xmin, ymin, xmax, ymax`` (float64) per row, declared as the geometry's ``covering`` so readers
  (GDAL ≥ 3.9, DuckDB, Sedona) can skip row groups by area;
- the ``geo`` file metadata: ``version`` 1.1.0, ``primary_column`` geometry, its ``encoding`` WKB,
  ``geometry_types``, ``bbox`` of the whole file and ``covering``. The ``crs`` key is omitted on purpose: by the
  specification a missing ``crs`` means OGC:CRS84 (WGS84 with longitude first), which is exactly what is stored;
  geopandas reads it as OGC:CRS84 (equivalent to EPSG:4326 with x = longitude).

The other columns are the records (``Chip.record`` flattened: id, path, window, date, crs) and what the producer
adds in front (rank and score of a result, class and label, site statistics).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely

from rsretrieve.chips import ATTRIBUTE_COLUMNS, Chip, chips_from_table, record_columns, record_table
from rsretrieve.errors import UserError
from rsretrieve.files import atomic_write

GEO_VERSION = "1.1.0"
GEOMETRY = "geometry"
BBOX = "bbox"
BBOX_TYPE = pa.struct([(name, pa.float64()) for name in ("xmin", "ymin", "xmax", "ymax")])
MEDIA_TYPE = "application/vnd.apache.parquet"


class GeoParquetError(UserError):
    """A GeoParquet file that cannot be read; one line for the user."""


def chip_columns(chips: Sequence[Chip]) -> dict[str, Any]:
    """The record columns of chips (no footprint: that is the geometry)."""
    records = record_table(chips)
    return {name: records.column(name) for name in ATTRIBUTE_COLUMNS}


def chips_geotable(
    chips: Sequence[Chip], properties: Sequence[dict[str, Any]] | None = None
) -> tuple[pa.Table, np.ndarray]:
    """(attribute table, shapely footprints) of chips; ``properties`` (one dict per chip) become leading columns."""
    columns: dict[str, Any] = {}
    if properties:
        extra = pa.Table.from_pylist(list(properties))
        columns.update({name: extra.column(name) for name in extra.column_names})
    columns.update(chip_columns(chips))
    geometries = np.array(
        [shapely.geometry.shape(chip.footprint) if chip.footprint else None for chip in chips], object
    )
    return pa.table(columns), geometries


def records_geotable(records: pa.Table, properties: dict[str, Any] | None = None) -> tuple[pa.Table, np.ndarray]:
    """(attribute table, footprints) of a table of chip records (``ChipStore.records``), column-wise: the fast way
    for many chips. ``properties`` (name → array) become leading columns."""
    columns: dict[str, Any] = dict(properties or {})
    records = record_columns(records)
    for name in ATTRIBUTE_COLUMNS:
        columns[name] = records.column(name)
    footprints = records.column("footprint").to_numpy(zero_copy_only=False).astype(object)
    return pa.table(columns), shapely.from_geojson(footprints) if len(footprints) else np.empty(0, object)


def records_geojson(records: pa.Table, properties: dict[str, Any] | None = None) -> str:
    """A GeoJSON FeatureCollection of a table of chip records, as ``Chip.feature`` writes each feature (the stored
    footprint text goes in as it is: no parsing)."""
    return FEATURES_HEAD + ", ".join(records_features(records, properties)) + FEATURES_TAIL


FEATURES_HEAD = '{"type": "FeatureCollection", "features": ['
FEATURES_TAIL = "]}\n"


def records_features(records: pa.Table, properties: dict[str, Any] | None = None) -> list[str]:
    """The GeoJSON Feature texts of a table of chip records (``properties``: name → values, leading)."""
    extra = {name: list(values) for name, values in (properties or {}).items()}
    footprints = records.column("footprint").to_pylist()
    chips = chips_from_table(records.drop_columns(["footprint"]))  # the records; footprints stay text
    parts = []
    for row, chip in enumerate(chips):
        props = {**{name: values[row] for name, values in extra.items()}, **chip.record()}
        geometry = footprints[row] or "null"
        parts.append(
            f'{{"type": "Feature", "id": {json.dumps(chip.id)}, "geometry": {geometry}, '
            f'"properties": {json.dumps(props)}}}'
        )
    return parts


def hits_geotable(hits: Sequence[Any]) -> tuple[pa.Table, np.ndarray]:
    """(attribute table, footprints) of search hits: rank, score, then the chip record."""
    properties = [{"rank": rank, "score": float(hit.score)} for rank, hit in enumerate(hits, 1)]
    return chips_geotable([hit.chip for hit in hits], properties)


def geo_metadata(geometries: np.ndarray) -> dict[str, Any]:
    """The ``geo`` metadata of a geometry column (no ``crs``: OGC:CRS84, see the module docstring)."""
    present = geometries[~shapely.is_missing(geometries)] if len(geometries) else geometries
    types = {geometry.geom_type for geometry in present}
    return geo_column_metadata(types, shapely.total_bounds(present) if len(present) else None)


def geo_column_metadata(types: set[str], bbox: Sequence[float] | None) -> dict[str, Any]:
    """The ``geo`` metadata of a geometry column holding ``types`` within ``bbox`` (None: no geometry)."""
    column: dict[str, Any] = {
        "encoding": "WKB",
        "geometry_types": sorted(types),
        "covering": {BBOX: {key: [BBOX, key] for key in ("xmin", "ymin", "xmax", "ymax")}},
    }
    if bbox is not None:
        column["bbox"] = [float(value) for value in bbox]
    return {"version": GEO_VERSION, "primary_column": GEOMETRY, "columns": {GEOMETRY: column}}


class GeoParquetWriter:
    """A GeoParquet file written a block of rows at a time (``write(table, geometries)``), in bounded memory: each
    block is a row group; the ``geo`` metadata (geometry types, bbox of every block) goes in the footer on
    ``close``. The caller makes the file appear atomically (``rsretrieve.result_files``)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._writer: pq.ParquetWriter | None = None
        self._types: set[str] = set()
        self._bounds: np.ndarray | None = None

    def write(self, table: pa.Table, geometries: np.ndarray) -> None:
        """Append rows (the same columns every time) and their WGS84 geometries."""
        data = geo_table(table, geometries)
        geo = json.loads(data.schema.metadata[b"geo"])["columns"][GEOMETRY]
        self._types.update(geo["geometry_types"])
        if "bbox" in geo:
            box = np.asarray(geo["bbox"], np.float64)
            known = self._bounds
            self._bounds = (
                box if known is None else np.r_[np.minimum(known[:2], box[:2]), np.maximum(known[2:], box[2:])]
            )
        data = data.replace_schema_metadata(None)
        if self._writer is None:
            # no stored Arrow schema: readers then take the schema metadata from the footer, where ``geo`` goes last
            self._writer = pq.ParquetWriter(self.path, data.schema, compression="zstd", store_schema=False)
        self._writer.write_table(data.cast(self._writer.schema))

    def close(self, empty: tuple[pa.Table, np.ndarray]) -> None:
        """Write the footer with the ``geo`` metadata (``empty``: the columns of a file without rows)."""
        if self._writer is None:
            self.write(*empty)
        assert self._writer is not None
        metadata = geo_column_metadata(self._types, self._bounds)
        self._writer.add_key_value_metadata({"geo": json.dumps(metadata)})
        self._writer.close()


def geo_table(table: pa.Table, geometries: np.ndarray) -> pa.Table:
    """``table`` with the WKB ``geometry`` and the ``bbox`` covering columns and the ``geo`` metadata."""
    geometries = np.asarray(geometries, object)
    if len(geometries) != table.num_rows:
        raise ValueError(f"{len(geometries)} geometries for {table.num_rows} rows")
    missing = shapely.is_missing(geometries) if len(geometries) else np.zeros(0, bool)
    wkb = shapely.to_wkb(geometries, flavor="iso") if len(geometries) else np.zeros(0, object)
    bounds = shapely.bounds(geometries) if len(geometries) else np.zeros((0, 4))
    mask = pa.array(missing) if len(geometries) else None
    boxes = pa.StructArray.from_arrays(
        [pa.array(bounds[:, i], pa.float64()) for i in range(4)], fields=list(BBOX_TYPE), mask=mask
    )
    columns = {name: table.column(name) for name in table.column_names if name not in (GEOMETRY, BBOX)}
    columns[GEOMETRY] = pa.array(list(wkb), pa.binary())
    columns[BBOX] = boxes
    result = pa.table(columns)
    metadata = dict(result.schema.metadata or {})
    metadata[b"geo"] = json.dumps(geo_metadata(geometries)).encode()
    return result.replace_schema_metadata(metadata)


def write_geoparquet(path: str | Path, table: pa.Table, geometries: np.ndarray) -> None:
    """Write a GeoParquet file (tmp + rename)."""
    data = geo_table(table, geometries)
    atomic_write(Path(path), lambda tmp: pq.write_table(data, tmp, compression="zstd"))


def geoparquet_bytes(table: pa.Table, geometries: np.ndarray) -> bytes:
    """A GeoParquet file in memory (the page's download, the service)."""
    sink = io.BytesIO()
    pq.write_table(geo_table(table, geometries), sink, compression="zstd")
    return sink.getvalue()


def read_geoparquet(path: str | Path) -> tuple[pa.Table, np.ndarray]:
    """(attribute table, shapely geometries) of a GeoParquet file (its primary column; WKB), reprojected to WGS84
    when its ``crs`` is not."""
    try:
        table = pq.read_table(path)
    except Exception as error:
        raise GeoParquetError(f"cannot read {path}: {error}") from None
    raw = (table.schema.metadata or {}).get(b"geo")
    if raw is None:
        raise GeoParquetError(f"{path} is not GeoParquet (no 'geo' metadata)")
    geo = json.loads(raw)
    name = geo.get("primary_column", GEOMETRY)
    column = geo.get("columns", {}).get(name, {})
    if column.get("encoding", "WKB").upper() != "WKB":
        raise GeoParquetError(f"{path}: only WKB geometries are read (got {column.get('encoding')})")
    geometries = shapely.from_wkb(np.asarray(table.column(name).to_pylist(), object))
    source = other_crs(column, path)
    if source is not None:
        from rsretrieve.reproject import to_wgs84

        geometries = to_wgs84(geometries, source)
    covering = column.get("covering", {}).get(BBOX, {}).get("xmin", [None])[0]
    dropped = [c for c in (name, covering) if c in table.column_names]
    return table.drop_columns(dropped), geometries


def other_crs(column: dict[str, Any], path: str | Path) -> str | None:
    """The WKT of a geometry column's ``crs`` (its ``geo`` metadata) when it is not WGS84; None when it is (a
    missing ``crs`` means OGC:CRS84)."""
    crs = column.get("crs")
    if crs is None:
        return None
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        source = CRS.from_user_input(json.dumps(crs) if isinstance(crs, dict) else crs)
    except CRSError as error:
        raise GeoParquetError(f"{path}: the geometry's crs is not understood ({error})") from None
    return None if source.to_epsg() == 4326 else source.to_wkt()


def feature_collection(rows: Sequence[dict[str, Any]], geometries: np.ndarray) -> dict[str, Any]:
    """A GeoJSON FeatureCollection of rows (properties) and their WGS84 shapely geometries."""
    features = [
        {"type": "Feature", "geometry": json.loads(shapely.to_geojson(geometry)) if geometry else None,
         "properties": row}
        for row, geometry in zip(rows, geometries, strict=True)
    ]  # fmt: skip
    return {"type": "FeatureCollection", "features": features}


def write_features(path: str | Path, rows: Sequence[dict[str, Any]], geometries: np.ndarray) -> None:
    """Rows (flat dicts) and their WGS84 geometries as GeoJSON (``.geojson``/``.json``) or GeoParquet
    (``.parquet``), chosen by the file's suffix; written atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".geojson", ".json"):
        text = json.dumps(feature_collection(rows, geometries)) + "\n"
        atomic_write(path, lambda tmp: tmp.write_text(text))
    elif suffix in (".parquet", ".geoparquet"):
        write_geoparquet(path, pa.Table.from_pylist(list(rows)), geometries)
    else:
        raise GeoParquetError(f"write .geojson or .parquet (got {path.name})")
