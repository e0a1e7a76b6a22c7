"""Read archive files into chips: find sources, plan windows, read RGB uint8 chips (DESIGN.md §4).

Everything goes through rasterio (GeoTIFF, JPEG, PNG): headers and a decimated read when planning,
then one window per chip when reading, so a scene is never loaded whole. No torch here: this module
runs inside DataLoader workers and in light CLI paths.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import glob
import hashlib
import logging
import math
import re
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio._err import CPLE_BaseError  # GDAL errors not wrapped in RasterioError
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import DatasetReader
from rasterio.warp import transform, transform_bounds
from rasterio.windows import Window as RioWindow

from rsretrieve.errors import UserError

IMAGE_SUFFIXES: frozenset[str] = frozenset({".tif", ".tiff", ".jpg", ".jpeg", ".png"})

WGS84 = "EPSG:4326"
STRETCH_PERCENTILES = (2.0, 98.0)
STATS_MAX_SIDE = 1024  # long side of the decimated read used for stretch statistics
PLAIN_IMAGE_MAX_CHIPS = 4  # a plain image up to this many chips per side is one chip
FOOTPRINT_EDGE_POINTS = 10
FOOTPRINT_DECIMALS = 7
DATE_TAGS = (  # upper-cased tag names, most specific first
    "ACQUISITIONDATE",
    "ACQUISITION_DATE",
    "DATE_ACQUIRED",
    "EXIF_DATETIMEORIGINAL",
)
SAVE_TIME_TAGS = ("TIFFTAG_DATETIME", "DATETIME")  # often when a file was last saved, not acquired
_FULL_DATE = re.compile(r"(?<!\d)(\d{4})([-_:/]?)(\d{2})\2(\d{2})(?!\d)")
_YEAR = re.compile(r"(?<!\d)(\d{4})(?!\d)")
_GDAL_ERRORS: tuple[type[Exception], ...] = (RasterioError, CPLE_BaseError, OSError, ValueError)


class SourceError(UserError):
    """A source that cannot be indexed; str(e) is ONE line naming the file and the reason."""


def _error(path: str | Path, reason: object) -> SourceError:
    """A SourceError whose message is one line: "<path>: <reason>"."""
    return SourceError(f"{path}: {' '.join(str(reason).split())}")


def _gdal_message(exc: BaseException) -> str:
    """The most specific message of a GDAL error (rasterio often wraps it: "Read failed...")."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc)


# --- finding sources ---------------------------------------------------------------------------


def _is_image(path: Path) -> bool:
    """A visible file with an image suffix (skips dot-files such as macOS "._x.tif")."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()


def _images_under(folder: Path) -> list[Path]:
    """Image files anywhere under a folder, skipping hidden folders."""
    return [
        p
        for p in folder.rglob("*")
        if _is_image(p) and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]


def _expand(item: str | Path) -> list[Path]:
    """One input (file, folder or glob pattern) as a list of image files."""
    path = Path(item).expanduser()
    if path.is_dir():
        return _images_under(path)
    if path.exists():
        return [path]  # a file named explicitly is taken as is; plan_scene judges it
    if not glob.has_magic(str(item)):
        raise _error(item, "no such file or directory")
    matches = [Path(m) for m in glob.glob(str(path), recursive=True)]
    if not matches:
        raise _error(item, "no file matches this pattern")
    return [f for m in matches for f in (_images_under(m) if m.is_dir() else [m]) if _is_image(f)]


def find_sources(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand files, folders (recursively) and glob patterns into sorted, unique absolute image paths.

    Raises SourceError for a missing path, a pattern matching nothing, or inputs holding no image.
    """
    found = {p.resolve() for item in inputs for p in _expand(item)}
    if not found:
        names = ", ".join(str(i) for i in inputs) or "(no inputs)"
        raise SourceError(f"no images found under {names}")
    return sorted(found)


# --- plans -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """A pixel window of a source file."""

    col_off: int
    row_off: int
    width: int
    height: int

    def as_dict(self) -> dict[str, int]:
        """The window as a plain dict (for storage and JSON)."""
        return asdict(self)


@dataclass(frozen=True)
class ChipMeta:
    """Where and when one chip is: source path, pixel window, CRS, WGS84 bbox/footprint, date."""

    id: str
    path: str
    window: Window
    crs: str | None
    bbox: tuple[float, float, float, float] | None
    footprint: dict | None
    date: dt.date | None


@dataclass(frozen=True)
class ScenePlan:
    """How to read one source file: band mapping, stretch and every planned chip."""

    path: str
    width: int
    height: int
    band_count: int
    dtype: str
    bands: tuple[int, int, int]
    stretch: tuple[tuple[float, float], ...] | None
    georeferenced: bool
    chips: tuple[ChipMeta, ...]


def chip_id(path: str, window: Window) -> str:
    """Stable chip id: a hash of the source path and the pixel window."""
    key = f"{path}|{window.col_off},{window.row_off},{window.width},{window.height}"
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def _starts(size: int, chip: int, stride: int) -> list[int]:
    """Window offsets along one axis; the last window is shifted inward to end at the edge."""
    if size <= chip:
        return [0]
    starts = list(range(0, size - chip + 1, stride))
    if starts[-1] + chip < size:
        starts.append(size - chip)
    return starts


def plan_windows(width: int, height: int, chip_size: int, overlap: int = 0) -> list[Window]:
    """Row-major windows of chip_size covering every pixel (smaller where the scene is smaller)."""
    if chip_size < 1 or not 0 <= overlap < chip_size:
        raise ValueError(f"need chip_size >= 1 and 0 <= overlap < chip_size, got {chip_size}, {overlap}")
    stride = chip_size - overlap
    w, h = min(chip_size, width), min(chip_size, height)
    return [
        Window(col, row, w, h)
        for row in _starts(height, chip_size, stride)
        for col in _starts(width, chip_size, stride)
    ]


# --- dates -------------------------------------------------------------------------------------


def _valid_date(year: str, month: str = "01", day: str = "01") -> dt.date | None:
    """A real calendar date between 1900 and 2100, else None."""
    try:
        date = dt.date(int(year), int(month), int(day))
    except ValueError:
        return None
    return date if 1900 <= date.year <= 2100 else None


def parse_date(text: str) -> dt.date | None:
    """First valid YYYYMMDD / YYYY-MM-DD / YYYY_MM_DD / YYYY:MM:DD in text, else a lone year, else None."""
    for m in _FULL_DATE.finditer(text):
        if date := _valid_date(m[1], m[3], m[4]):
            return date
    for m in _YEAR.finditer(_FULL_DATE.sub(" ", text)):  # a lone year, not part of a bad date
        if date := _valid_date(m[1]):
            return date
    return None


def _tags(src: DatasetReader) -> dict[str, str]:
    """Dataset tags of every namespace except XML blobs, keys upper-cased (default namespace wins)."""
    namespaces = [ns for ns in src.tag_namespaces() if not ns.startswith("xml:")]
    tags: dict[str, str] = {}
    for ns in [*namespaces, None]:
        tags.update({k.upper(): v for k, v in src.tags(ns=ns).items()})
    return tags


def scene_date(src: DatasetReader, path: Path) -> dt.date | None:
    """Acquisition date from acquisition tags, else the file name, else TIFF's DateTime tag, else None.

    TIFFTAG_DATETIME is the time a file was written (UC Merced's images carry Photoshop's save time),
    so a date in the file name wins over it.
    """
    tags = _tags(src)
    for key in DATE_TAGS:
        if key in tags and (date := parse_date(tags[key])):
            return date
    if date := parse_date(path.stem):
        return date
    for key in SAVE_TIME_TAGS:
        if key in tags and (date := parse_date(tags[key])):
            return date
    return None


# --- bands and pixels --------------------------------------------------------------------------


def _alpha_band(src: DatasetReader) -> int | None:
    """1-based index of the band whose colour interpretation is alpha, if any."""
    return next((i + 1 for i, ci in enumerate(src.colorinterp) if ci == ColorInterp.alpha), None)


def _extra_alpha(src: DatasetReader) -> int | None:
    """The alpha band when GDAL's masks do not already use it (they do for gray+A and RGBA)."""
    alpha = _alpha_band(src)
    if alpha is None or MaskFlags.alpha in src.mask_flag_enums[0]:
        return None
    return alpha


def select_bands(src: DatasetReader, bands: Sequence[int] | None = None) -> tuple[int, int, int]:
    """Source bands (1-based) for R, G, B: explicit, else colour-interpreted RGB, else 1,2,3, else gray."""
    if bands is not None:
        return _checked_bands(src, bands)
    interp = list(src.colorinterp)
    rgb = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
    if all(ci in interp for ci in rgb):
        return tuple(interp.index(ci) + 1 for ci in rgb)  # type: ignore[return-value]
    alpha = _alpha_band(src)
    colour = [b for b in range(1, src.count + 1) if b != alpha] or [1]
    if len(colour) >= 3:
        return colour[0], colour[1], colour[2]
    return colour[0], colour[0], colour[0]


def _checked_bands(src: DatasetReader, bands: Sequence[int]) -> tuple[int, int, int]:
    """Validate explicit band indexes (1 or 3, each within 1..count)."""
    chosen = tuple(int(b) for b in bands)
    if len(chosen) not in (1, 3):
        raise _error(src.name, f"expected 1 or 3 band indexes, got {len(chosen)}: {chosen}")
    if bad := [b for b in chosen if not 1 <= b <= src.count]:
        raise _error(src.name, f"band index {bad[0]} out of range 1..{src.count}")
    return chosen * 3 if len(chosen) == 1 else chosen  # type: ignore[return-value]


def _unique(bands: Sequence[int]) -> list[int]:
    """Band indexes without repeats, in order."""
    return list(dict.fromkeys(bands))


def _read_valid(
    src: DatasetReader, indexes: list[int], alpha: int | None, **kwargs: object
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (bands, h, w) and per-band validity (dataset masks, extra alpha band, NaN/inf)."""
    data = src.read(indexes, **kwargs)
    valid = src.read_masks(indexes, **kwargs) > 0
    if alpha is not None:
        valid &= src.read(alpha, **kwargs)[None] > 0
    if data.dtype.kind in "fc":
        valid &= np.isfinite(data)
    return data, valid


def _stretch(src: DatasetReader, bands: tuple[int, int, int]) -> tuple[tuple[float, float], ...]:
    """2-98 % percentiles per output channel from a decimated read (GDAL uses overviews if any)."""
    factor = max(1, math.ceil(max(src.width, src.height) / STATS_MAX_SIDE))
    indexes = _unique(bands)
    shape = (len(indexes), math.ceil(src.height / factor), math.ceil(src.width / factor))
    data, valid = _read_valid(src, indexes, _extra_alpha(src), out_shape=shape, resampling=Resampling.nearest)
    limits = {}
    for i, band in enumerate(indexes):
        values = data[i][valid[i]].astype(np.float64)
        lo, hi = np.percentile(values, STRETCH_PERCENTILES) if values.size else (0.0, 0.0)
        limits[band] = (float(lo), float(hi))
    return tuple(limits[b] for b in bands)


def to_uint8(data: np.ndarray, valid: np.ndarray, stretch: Sequence[tuple[float, float]] | None) -> np.ndarray:
    """(3, h, w) source values -> (h, w, 3) uint8; invalid values become 0."""
    if stretch is None:
        out = np.where(valid, data, 0).astype(np.uint8)
    else:
        out = np.empty(data.shape, np.uint8)
        for c, (lo, hi) in enumerate(stretch):
            scale = 255.0 / (hi - lo) if hi > lo else 255.0  # constant band: no divide by zero
            x = np.where(valid[c], data[c].astype(np.float64), lo)
            out[c] = np.rint(np.clip((x - lo) * scale, 0, 255))
    return np.ascontiguousarray(out.transpose(1, 2, 0))


# --- georeference ------------------------------------------------------------------------------


def is_georeferenced(src: DatasetReader) -> bool:
    """True when the dataset has a CRS and a non-identity geotransform."""
    return src.crs is not None and not src.transform.is_identity


def crs_string(crs: CRS) -> str:
    """The CRS as "EPSG:nnnn" when it has an EPSG code, else as WKT."""
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def _pixel_rings(windows: Sequence[Window], points: int) -> np.ndarray:
    """(n, 4·points + 1, 2) closed rings (col, row) around each window, `points` per edge, counter-clockwise."""
    t = np.linspace(0.0, 1.0, points, endpoint=False)
    unit = np.concatenate(
        [np.stack([np.zeros_like(t), t], 1), np.stack([t, np.ones_like(t)], 1),
         np.stack([np.ones_like(t), 1 - t], 1), np.stack([1 - t, np.zeros_like(t)], 1), [[0.0, 0.0]]]
    )  # fmt: skip
    box = np.array([[w.col_off, w.row_off, w.width, w.height] for w in windows], np.float64)
    return box[:, None, :2] + unit[None] * box[:, None, 2:]


def _georeference(
    src: DatasetReader, windows: Sequence[Window]
) -> list[tuple[tuple[float, float, float, float], dict]]:
    """Per window: WGS84 bbox (transform_bounds of its bounds) and densified footprint polygon.

    The footprint rings of all windows are reprojected in one call; no antimeridian cutting. Coordinates are
    rounded to 1e-7° (1 cm): full float digits would make each stored footprint ~1.5× longer for nothing.
    """
    a, b, c, d, e, f = tuple(src.transform)[:6]
    rings = _pixel_rings(windows, FOOTPRINT_EDGE_POINTS)
    xs = a * rings[..., 0] + b * rings[..., 1] + c
    ys = d * rings[..., 0] + e * rings[..., 1] + f
    lons, lats = transform(src.crs, WGS84, xs.ravel(), ys.ravel())
    lonlat = np.round(np.stack([lons, lats], -1), FOOTPRINT_DECIMALS).reshape(rings.shape)
    out = []
    for corners_x, corners_y, ring in zip(xs, ys, lonlat, strict=True):
        bbox = transform_bounds(
            src.crs, WGS84, corners_x.min(), corners_y.min(), corners_x.max(), corners_y.max(), densify_pts=21
        )
        out.append((tuple(bbox), {"type": "Polygon", "coordinates": [ring.tolist()]}))
    return out


# --- planning ----------------------------------------------------------------------------------


@contextmanager
def _quiet() -> Iterator[None]:
    """A default rasterio.Env, no NotGeoreferencedWarning, and GDAL's warnings about odd but readable files
    (which rasterio.Env routes to the ``rasterio`` logger) kept below ERROR: bad files raise SourceError instead."""
    logger = logging.getLogger("rasterio")
    level = logger.level
    logger.setLevel(max(level, logging.ERROR))
    try:
        with rasterio.Env(), warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            yield
    finally:
        logger.setLevel(level)


def _checked_path(path: str | Path) -> Path:
    """Absolute path of an existing, non-empty file, else SourceError."""
    file = Path(path).expanduser().resolve()
    if not file.exists():
        raise _error(file, "no such file")
    if not file.is_file():
        raise _error(file, "not a file")
    if file.stat().st_size == 0:
        raise _error(file, "empty file (0 bytes)")
    return file


def _open(file: Path) -> DatasetReader:
    """Open a raster read-only, turning GDAL errors into SourceError."""
    try:
        with _quiet():
            src = rasterio.open(file)
    except _GDAL_ERRORS as exc:
        raise _error(file, f"not a readable raster ({_gdal_message(exc)})") from exc
    if src.count == 0:
        src.close()
        raise _error(file, "no raster bands")
    if any(np.dtype(d).kind == "c" for d in src.dtypes):
        src.close()
        raise _error(file, f"unsupported complex data type {src.dtypes[0]}")
    return src


def _chip_windows(src: DatasetReader, georeferenced: bool, chip_size: int, overlap: int) -> list[Window]:
    """Chip windows: one for a small plain image, else a tiling of the scene."""
    small = max(src.width, src.height) <= PLAIN_IMAGE_MAX_CHIPS * chip_size
    if not georeferenced and small:
        return [Window(0, 0, src.width, src.height)]
    return plan_windows(src.width, src.height, chip_size, overlap)


def _plan(src: DatasetReader, file: Path, chip_size: int, overlap: int, bands: Sequence[int] | None) -> ScenePlan:
    """Build the ScenePlan of an open dataset."""
    chosen = select_bands(src, bands)
    dtypes = {src.dtypes[b - 1] for b in chosen}
    georeferenced = is_georeferenced(src)
    crs = crs_string(src.crs) if georeferenced else None
    date = scene_date(src, file)
    windows = _chip_windows(src, georeferenced, chip_size, overlap)
    places = _georeference(src, windows) if georeferenced else [(None, None)] * len(windows)
    chips = [
        ChipMeta(chip_id(str(file), window), str(file), window, crs, bbox, footprint, date)
        for window, (bbox, footprint) in zip(windows, places, strict=True)
    ]
    return ScenePlan(
        path=str(file),
        width=src.width,
        height=src.height,
        band_count=src.count,
        dtype=src.dtypes[chosen[0] - 1],
        bands=chosen,
        stretch=None if dtypes == {"uint8"} else _stretch(src, chosen),
        georeferenced=georeferenced,
        chips=tuple(chips),
    )


def plan_scene(
    path: str | Path, chip_size: int = 224, overlap: int = 0, bands: Sequence[int] | None = None
) -> ScenePlan:
    """Open the header (and a decimated read for the stretch) and plan the chips. Raises SourceError."""
    plan_windows(1, 1, chip_size, overlap)  # validate the tiling arguments early
    file = _checked_path(path)
    src = _open(file)
    try:
        with _quiet():
            return _plan(src, file, chip_size, overlap, bands)
    except _GDAL_ERRORS as exc:
        raise _error(file, f"cannot read ({_gdal_message(exc)})") from exc
    finally:
        src.close()


def count_chips(path: str | Path, chip_size: int = 224, overlap: int = 0) -> int:
    """How many chips ``plan_scene`` cuts from a file, from its header alone (progress totals). Raises SourceError."""
    file = _checked_path(path)
    src = _open(file)
    try:
        with _quiet():
            return len(_chip_windows(src, is_georeferenced(src), chip_size, overlap))
    finally:
        src.close()


# --- reading -----------------------------------------------------------------------------------


@dataclass
class _Handle:
    """An open dataset and what the reader needs to know about it."""

    src: DatasetReader
    alpha: int | None  # alpha band that GDAL's masks do not already cover
    palette: dict[int, np.ndarray]  # band -> (256, 3) uint8 colour table, for paletted uint8 bands


def _palettes(src: DatasetReader) -> dict[int, np.ndarray]:
    """Colour tables of paletted uint8 bands, as lookup arrays."""
    tables = {}
    for band, ci in enumerate(src.colorinterp, start=1):
        if ci == ColorInterp.palette and src.dtypes[band - 1] == "uint8":
            lut = np.zeros((256, 3), np.uint8)
            for value, rgba in src.colormap(band).items():
                lut[value] = rgba[:3]
            tables[band] = lut
    return tables


class ChipReader:
    """Reads chips window by window, keeping a few datasets open (small LRU).

    Handles are opened lazily and dropped when pickled, so one reader per DataLoader worker is safe.
    """

    max_open = 8

    def __init__(self, max_nodata_fraction: float = 0.5) -> None:
        self.max_nodata_fraction = max_nodata_fraction
        self._handles: OrderedDict[str, _Handle] = OrderedDict()

    def __getstate__(self) -> dict[str, float]:
        return {"max_nodata_fraction": self.max_nodata_fraction}

    def __setstate__(self, state: dict[str, float]) -> None:
        self.max_nodata_fraction = state["max_nodata_fraction"]
        self._handles = OrderedDict()

    def _handle(self, path: str) -> _Handle:
        """The open dataset of path (opened on first use, least recently used closed beyond max_open)."""
        if path in self._handles:
            self._handles.move_to_end(path)
            return self._handles[path]
        src = _open(_checked_path(path))
        try:
            with _quiet():
                handle = _Handle(src, _extra_alpha(src), _palettes(src))
        except _GDAL_ERRORS as exc:
            src.close()
            raise _error(path, f"cannot read ({_gdal_message(exc)})") from exc
        self._handles[path] = handle
        while len(self._handles) > self.max_open:
            self._handles.popitem(last=False)[1].src.close()
        return handle

    def read(self, plan: ScenePlan, chip: ChipMeta) -> np.ndarray | None:
        """(height, width, 3) uint8 RGB of the chip, or None when too much of it is nodata.

        Raises SourceError when the pixels cannot be read (truncated file...).
        """
        handle = self._handle(plan.path)
        w = chip.window
        try:
            with _quiet():
                data, valid = _read_valid(
                    handle.src,
                    _unique(plan.bands),
                    handle.alpha,
                    window=RioWindow(w.col_off, w.row_off, w.width, w.height),
                )
        except _GDAL_ERRORS as exc:
            self._drop(plan.path)
            raise _error(plan.path, f"cannot read window {w.as_dict()} ({_gdal_message(exc)})") from exc
        if 1.0 - valid.any(axis=0).mean() > self.max_nodata_fraction:
            return None
        return self._to_rgb(handle, plan, data, valid)

    @staticmethod
    def _to_rgb(handle: _Handle, plan: ScenePlan, data: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Map the read bands to (h, w, 3) uint8 (palette lookup, stretch or pass-through)."""
        order = [_unique(plan.bands).index(b) for b in plan.bands]
        band = plan.bands[0]
        if len(set(plan.bands)) == 1 and band in handle.palette:
            rgb = handle.palette[band][data[0]]
            return np.where(valid[0][..., None], rgb, 0).astype(np.uint8)
        return to_uint8(data[order], valid[order], plan.stretch)

    def _drop(self, path: str) -> None:
        """Close and forget one dataset."""
        if handle := self._handles.pop(path, None):
            handle.src.close()

    def close(self) -> None:
        """Close every open dataset."""
        while self._handles:
            self._handles.popitem()[1].src.close()


WHOLE_SCENE = 1 << 30  # a chip size larger than any scene: planning yields one chip covering it


def plan_whole(path: str | Path, bands: Sequence[int] | None = None) -> ScenePlan:
    """A plan with one chip covering the whole image (band mapping and stretch as for any chip size)."""
    return plan_scene(path, chip_size=WHOLE_SCENE, bands=bands)


def read_window(plan: ScenePlan, window: Window | None = None) -> np.ndarray:
    """(h, w, 3) uint8 RGB of a window (default: the whole image), read exactly as the indexer reads chips."""
    chip = plan.chips[0] if window is None else dataclasses.replace(plan.chips[0], window=window)
    reader = ChipReader(max_nodata_fraction=1.0)
    try:
        pixels = reader.read(plan, chip)
    finally:
        reader.close()
    assert pixels is not None  # max_nodata_fraction=1.0 always returns pixels
    return pixels
