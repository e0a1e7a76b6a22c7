"""Raster reading shared by the indexer and the query side (query images, thumbnails).

Everything goes through rasterio/GDAL: headers and a decimated read when planning (``plan``), then one window
per chip when reading (``read``), so a scene is never loaded whole. No torch here: this package runs inside
DataLoader workers and in light CLI paths.
"""

from rsretrieve.raster.dates import parse_date, scene_date
from rsretrieve.raster.errors import SourceError
from rsretrieve.raster.plan import ScenePlan, chip_id, count_chips, plan_scene, plan_whole, plan_windows
from rsretrieve.raster.read import ChipReader, read_preview, read_window
from rsretrieve.raster.remote import is_remote, remote_options
from rsretrieve.raster.sources import IMAGE_SUFFIXES, Scene, Source, find_sources

__all__ = [
    "IMAGE_SUFFIXES",
    "ChipReader",
    "Scene",
    "ScenePlan",
    "Source",
    "SourceError",
    "chip_id",
    "count_chips",
    "find_sources",
    "is_remote",
    "parse_date",
    "plan_scene",
    "plan_whole",
    "plan_windows",
    "read_preview",
    "read_window",
    "remote_options",
    "scene_date",
]
