"""Planning a scene: open its header, choose bands and stretch, cut it into chip windows with their
georeference and date (docs/architecture.md §4: every pixel belongs to some chip; the last row/column shift inward)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from rasterio.io import DatasetReader

from rsretrieve.chips import Chip, Window
from rsretrieve.raster.dataset import GDAL_ERRORS, checked_source, gdal_message, open_raster, quiet
from rsretrieve.raster.dates import scene_date
from rsretrieve.raster.errors import source_error
from rsretrieve.raster.georef import crs_string, georeference, is_georeferenced
from rsretrieve.raster.pixels import select_bands, stretch_limits
from rsretrieve.raster.sources import Scene, Source

PLAIN_IMAGE_MAX_CHIPS = 4  # a plain image up to this many chips per side is one chip


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
    chips: tuple[Chip, ...]


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


def _chip_windows(src: DatasetReader, georeferenced: bool, chip_size: int, overlap: int) -> list[Window]:
    """Chip windows: one for a small plain image, else a tiling of the scene."""
    small = max(src.width, src.height) <= PLAIN_IMAGE_MAX_CHIPS * chip_size
    if not georeferenced and small:
        return [Window(0, 0, src.width, src.height)]
    return plan_windows(src.width, src.height, chip_size, overlap)


def _plan(
    src: DatasetReader, file: Source, chip_size: int, overlap: int, bands: Sequence[int] | None, scene: Scene
) -> ScenePlan:
    """Build the ScenePlan of an open dataset (a catalogue's date overrides the file's)."""
    chosen = select_bands(src, bands)
    dtypes = {src.dtypes[b - 1] for b in chosen}
    georeferenced = is_georeferenced(src)
    crs = crs_string(src.crs) if georeferenced else None
    date = scene.date or scene_date(src, file)
    windows = _chip_windows(src, georeferenced, chip_size, overlap)
    places = georeference(src, windows) if georeferenced else [(None, None)] * len(windows)
    chips = [
        Chip(chip_id(str(file), window), str(file), window, crs, bbox, footprint, date, scene.item_id, scene.collection)
        for window, (bbox, footprint) in zip(windows, places, strict=True)
    ]
    return ScenePlan(
        path=str(file),
        width=src.width,
        height=src.height,
        band_count=src.count,
        dtype=src.dtypes[chosen[0] - 1],
        bands=chosen,
        stretch=None if dtypes == {"uint8"} else stretch_limits(src, chosen),
        georeferenced=georeferenced,
        chips=tuple(chips),
    )


def _scene(source: Source | Scene) -> Scene:
    """A source as a Scene (a path or URI alone knows nothing from a catalogue); raises for a failed entry."""
    scene = source if isinstance(source, Scene) else Scene(source)
    if scene.error:
        raise source_error(scene.path, scene.error)
    return scene


def plan_scene(
    path: Source | Scene, chip_size: int = 224, overlap: int = 0, bands: Sequence[int] | None = None
) -> ScenePlan:
    """Open the header (and a decimated read for the stretch) and plan the chips. Raises SourceError.

    ``path`` is a local path, a URI (read remotely) or a ``Scene`` (its catalogue's date, item and collection).
    """
    plan_windows(1, 1, chip_size, overlap)  # validate the tiling arguments early
    scene = _scene(path)
    file = checked_source(scene.path)
    src = open_raster(file)
    try:
        with quiet(file):
            return _plan(src, file, chip_size, overlap, bands, scene)
    except GDAL_ERRORS as exc:
        raise source_error(file, f"cannot read ({gdal_message(exc)})") from exc
    finally:
        src.close()


def count_chips(path: Source | Scene, chip_size: int = 224, overlap: int = 0) -> int:
    """How many chips ``plan_scene`` cuts from a file, from its header alone (progress totals). Raises SourceError."""
    file = checked_source(_scene(path).path)
    src = open_raster(file)
    try:
        with quiet(file):
            return len(_chip_windows(src, is_georeferenced(src), chip_size, overlap))
    finally:
        src.close()


WHOLE_SCENE = 1 << 30  # a chip size larger than any scene: planning yields one chip covering it


def plan_whole(path: Source | Scene, bands: Sequence[int] | None = None) -> ScenePlan:
    """A plan with one chip covering the whole image (band mapping and stretch as for any chip size)."""
    return plan_scene(path, chip_size=WHOLE_SCENE, bands=bands)
