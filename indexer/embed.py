"""Embedding the chips of planned scenes: read window by window in DataLoader workers (``rsretrieve.embedding``)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np
from rasterio.env import set_gdal_config
from torch.utils.data import Dataset

from rsretrieve.chips import Chip
from rsretrieve.embedding import SKIPPED, EmbeddedBatch, embed_dataset
from rsretrieve.images import fit_chw_to_model
from rsretrieve.models import EmbeddingModel
from rsretrieve.raster import ChipReader, ScenePlan, SourceError
from rsretrieve.raster.read import GDAL_CACHE_BYTES


class ChipPixels(Dataset):
    """(index, uint8 CHW pixels or None, status) for each (scene plan, chip) pair."""

    def __init__(self, items: Sequence[tuple[ScenePlan, Chip]], size: int, max_nodata_fraction: float):
        self.items = items
        self.size = size
        self.max_nodata_fraction = max_nodata_fraction
        self._reader: ChipReader | None = None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, str]:
        if self._reader is None:  # one reader per worker process, opened lazily after the fork
            limit_gdal_cache()  # also in workers started by "spawn", which do not inherit it
            self._reader = ChipReader(self.max_nodata_fraction)
        plan, chip = self.items[index]
        try:
            pixels = self._reader.read(plan, chip, channels_first=True)
        except SourceError as error:
            return index, None, str(error)
        if pixels is None:
            return index, None, SKIPPED
        return index, fit_chw_to_model(pixels, self.size), ""

    def close(self) -> None:
        """Close the datasets held open by this process's reader."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def limit_gdal_cache() -> None:
    """Cap GDAL's block cache at GDAL_CACHE_BYTES unless the GDAL_CACHEMAX environment variable is set.

    Otherwise decoded tiles fill 5 % of the RAM, so memory grows with the scene (by ~1 GiB on a 20,000² one);
    chips are read row by row, so 64 MiB holds the tiles under a row of chips of all but very wide scenes.
    """
    if "GDAL_CACHEMAX" not in os.environ:
        set_gdal_config("GDAL_CACHEMAX", GDAL_CACHE_BYTES)


def embed_chips(
    model: EmbeddingModel,
    items: Sequence[tuple[ScenePlan, Chip]],
    batch_size: int | None = None,
    workers: int | None = None,
    max_nodata_fraction: float = 0.5,
    progress: object | None = None,
) -> Iterator[EmbeddedBatch]:
    """Embed the chips of planned scenes in order (see ``embed_dataset``)."""
    dataset = ChipPixels(items, model.image_size, max_nodata_fraction)
    try:
        yield from embed_dataset(model, dataset, batch_size, workers, progress)
    finally:
        dataset.close()
