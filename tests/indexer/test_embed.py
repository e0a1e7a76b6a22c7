"""Tests for indexer/embed.py: chips of planned scenes embedded in order, with statuses, as query pixels are."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from rasterio.env import get_gdal_config

from indexer.embed import ChipPixels, embed_chips, limit_gdal_cache
from rsretrieve.embedding import SKIPPED
from rsretrieve.raster import plan_scene, read_window
from rsretrieve.raster.read import GDAL_CACHE_BYTES


def test_chips_are_embedded_in_order_with_their_statuses(make_geotiff, tmp_path: Path, tiny_model) -> None:
    framed = plan_scene(make_geotiff(tmp_path / "framed.tif", 128, 128, alpha=True), chip_size=32)  # 4 opaque of 16
    gone = plan_scene(make_geotiff(tmp_path / "gone.tif", 64, 32), chip_size=32)
    (tmp_path / "gone.tif").unlink()
    items = [(plan, chip) for plan in (framed, gone) for chip in plan.chips]
    batches = list(embed_chips(tiny_model, items, batch_size=5, workers=0))
    assert [len(batch.indices) + len(batch.statuses) for batch in batches] == [5, 5, 5, 3]
    indices = np.concatenate([batch.indices for batch in batches])
    statuses = {index: status for batch in batches for index, status in batch.statuses.items()}
    assert indices.tolist() == [5, 6, 9, 10]  # the inner 2 x 2 of the framed scene's 4 x 4 chips
    assert [index for index, status in statuses.items() if status == SKIPPED] == [
        i for i in range(16) if i not in (5, 6, 9, 10)
    ]
    assert all("gone.tif: no such file" in statuses[i] for i in (16, 17))  # an error line names the file
    vectors = np.concatenate([batch.vectors for batch in batches])
    expected = tiny_model.encode_images([read_window(framed, items[i][1].window) for i in indices])
    np.testing.assert_allclose(vectors, expected, atol=1e-5)  # the query path embeds the same pixels alike


def test_chip_pixels_travel_to_workers_and_come_at_the_model_size(make_geotiff, tmp_path: Path) -> None:
    plan = plan_scene(make_geotiff(tmp_path / "scene.tif", 100, 60), chip_size=64)
    dataset = ChipPixels([(plan, chip) for chip in plan.chips], 48, max_nodata_fraction=0.5)
    assert len(dataset) == 2
    clone = pickle.loads(pickle.dumps(dataset))  # as a DataLoader worker started by "spawn" gets it
    index, pixels, status = clone[1]
    assert (index, status) == (1, "") and pixels.shape == (3, 48, 48) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(dataset[1][1], pixels)
    dataset.close()
    clone.close()


def test_gdal_cache_is_capped_unless_the_user_set_it(monkeypatch) -> None:
    monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    limit_gdal_cache()
    assert int(get_gdal_config("GDAL_CACHEMAX")) == GDAL_CACHE_BYTES
