"""Indexing memory does not grow with the scene: a 20,000² GeoTIFF against a 2,000² one (tiny model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from tests.reliability.conftest import TINY, json_summary

BLOCK = 512


def write_large_geotiff(path: Path, side: int) -> Path:
    """A tiled, ZSTD-compressed 3-band uint8 scene of smooth patterns, written one row of tiles at a time."""
    profile = {
        "driver": "GTiff", "width": side, "height": side, "count": 3, "dtype": "uint8",
        "crs": "EPSG:32618", "transform": from_origin(500_000, 4_500_000, 10, 10),
        "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK, "compress": "zstd", "zstd_level": 1,
    }  # fmt: skip
    x = np.arange(side, dtype=np.uint16)
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, side, BLOCK):
            y = np.arange(row, min(row + BLOCK, side), dtype=np.uint16)[:, None]
            strip = np.empty((3, len(y), side), np.uint8)
            strip[0] = x // 8 + y // 8  # wraps around: diagonal bands
            strip[1] = (x // 32) ^ (y // 32)
            strip[2] = y // 16
            dst.write(strip, window=Window(0, row, side, len(y)))
    return path


@pytest.mark.slow
def test_peak_memory_of_a_20000_pixel_scene_stays_near_that_of_a_2000_pixel_one(forked_cli, tmp_path: Path) -> None:
    peaks = {}
    for side, chips in [(2_000, 81), (20_000, 8_100)]:
        scene = write_large_geotiff(tmp_path / f"scene_{side}.tif", side)
        db, log = tmp_path / f"db_{side}", tmp_path / f"log_{side}"
        result = forked_cli.run("index", scene, "--db", db, *TINY, "--json", log=log)
        assert result["rc"] == 0, log.read_text()
        assert json_summary(log)["new_chips"] == chips
        peaks[side] = result["maxrss_kib"]
        scene.unlink()
    print(f"peak RSS: {peaks[2_000] / 1024:.0f} MiB (2,000²), {peaks[20_000] / 1024:.0f} MiB (20,000²)")
    assert peaks[20_000] <= 1.3 * peaks[2_000]
