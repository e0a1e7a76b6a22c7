"""Tests for rsretrieve/raster/read.py: the chip reader, bad files, whole windows and decimated previews."""

from __future__ import annotations

import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.env import get_gdal_config, set_gdal_config
from rasterio.windows import Window as RioWindow

from rsretrieve.raster import ChipReader, SourceError, plan_scene, plan_whole, read_preview, read_window
from tests.rsretrieve.raster.conftest import read_all, source_pixels

# --- bad files ---------------------------------------------------------------------------------


def assert_one_line_error(error: pytest.ExceptionInfo, path: Path) -> None:
    """A SourceError message is one line that starts with the path."""
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{path}: ")


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file") as error:
        plan_scene(tmp_path / "missing.tif")
    assert_one_line_error(error, tmp_path / "missing.tif")
    (tmp_path / "empty.tif").touch()
    with pytest.raises(SourceError, match=r"empty file \(0 bytes\)") as error:
        plan_scene(tmp_path / "empty.tif")
    assert_one_line_error(error, tmp_path / "empty.tif")


def test_text_file_named_tif(tmp_path: Path) -> None:
    (tmp_path / "text.tif").write_text("hello, not a raster\n")
    with pytest.raises(SourceError, match="not a readable raster") as error:
        plan_scene(tmp_path / "text.tif")
    assert_one_line_error(error, tmp_path / "text.tif")


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_truncated_tiff(make_geotiff, tmp_path: Path, dtype: str) -> None:
    path = make_geotiff(tmp_path / "full.tif", 512, 512, dtype=dtype)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(SourceError) as error:
        plan = plan_scene(path)  # fails here when the header or the decimated read is cut
        read_all(plan)  # else when reading the missing strips
    assert_one_line_error(error, path)


def test_file_removed_after_planning(make_geotiff, tmp_path: Path) -> None:
    plan = plan_scene(make_geotiff(tmp_path / "gone.tif", 32, 32))
    (tmp_path / "gone.tif").unlink()
    with pytest.raises(SourceError, match="no such file"):
        ChipReader().read(plan, plan.chips[0])


# --- the reader --------------------------------------------------------------------------------


def test_plans_and_reader_pickle_before_and_after_use(make_geotiff, tmp_path: Path) -> None:
    plan = plan_scene(make_geotiff(tmp_path / "scene.tif", 64, 64))
    assert pickle.loads(pickle.dumps(plan)) == plan  # plans travel to DataLoader workers
    reader = ChipReader(max_nodata_fraction=0.25)
    first = reader.read(plan, plan.chips[0])
    clone = pickle.loads(pickle.dumps(reader))
    assert clone.max_nodata_fraction == 0.25
    np.testing.assert_array_equal(clone.read(plan, plan.chips[0]), first)
    clone.close()
    reader.close()


def test_reader_keeps_a_few_datasets_open(make_geotiff, tmp_path: Path) -> None:
    plans = [plan_scene(make_geotiff(tmp_path / f"s{i}.tif", 16, 16, seed=i)) for i in range(12)]
    reader = ChipReader()
    for plan in plans + plans[:2]:
        assert reader.read(plan, plan.chips[0]) is not None
    assert len(reader._handles) == ChipReader.max_open
    reader.close()
    assert not reader._handles


def test_a_window_reads_as_the_indexer_reads_chips(make_geotiff, tmp_path: Path) -> None:
    data = np.zeros((3, 100, 160), np.uint16)
    data[:] = np.random.default_rng(4).integers(100, 4000, (3, 100, 160))
    data[:, :, :100] = 0  # mostly nodata on the left: the indexer skips that chip, a window read does not
    path = make_geotiff(tmp_path / "s.tif", 160, 100, dtype="uint16", nodata=0, data=data)
    plan = plan_scene(path, chip_size=64)
    chips = read_all(plan)
    assert chips[0] is None
    np.testing.assert_array_equal(read_window(plan, plan.chips[2].window), chips[2])
    assert not read_window(plan, plan.chips[0].window).any()
    whole = read_window(plan_whole(path))
    assert whole.shape == (100, 160, 3)
    np.testing.assert_array_equal(whole[64:, 96:], chips[-1][28:, :])  # one stretch for the scene


# --- decimated previews (query images) -----------------------------------------------------------

WIDE, HIGH = 6000, 4800
BLOCK = 256


def ramp(values: np.ndarray, size: int) -> np.ndarray:
    """0..255 over 0..size-1, as written (integer division)."""
    return (values * 255 // (size - 1)).astype(np.uint8)


@pytest.fixture(scope="module")
def large_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6000 × 4800 tiled RGB GeoTIFF (86 MB as an array, ~1 MB deflated), written one row of tiles at a time.

    Red ramps with the column, green with the row, blue is a one-pixel checkerboard of 0 and 200: a block
    average shows it as 100 everywhere, a nearest-pixel decimation as 0 or 200.
    """
    path = tmp_path_factory.mktemp("large") / "large.tif"
    profile = {
        "driver": "GTiff",
        "width": WIDE,
        "height": HIGH,
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:32618",
        "transform": Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_500_000.0),
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "compress": "deflate",
    }
    cols = np.arange(WIDE)
    with rasterio.open(path, "w", **profile) as dst:
        for top in range(0, HIGH, BLOCK):
            rows = np.arange(top, min(top + BLOCK, HIGH))
            red = np.broadcast_to(ramp(cols, WIDE), (len(rows), WIDE))
            green = np.broadcast_to(ramp(rows, HIGH)[:, None], (len(rows), WIDE))
            blue = (200 * ((rows[:, None] + cols[None, :]) % 2)).astype(np.uint8)
            dst.write(np.stack([red, green, blue]), window=RioWindow(0, top, WIDE, len(rows)))
    return path


def test_a_large_image_is_read_decimated_in_little_memory(large_scene: Path) -> None:
    tracemalloc.start()
    try:
        pixels = read_preview(large_scene, max_side=512)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    scale = WIDE / 512
    assert pixels.shape == (int(HIGH / scale), 512, 3) and pixels.dtype == np.uint8  # the aspect is kept
    assert peak < WIDE * HIGH * 3 / 4, f"{peak / 2**20:.1f} MiB of arrays for a {WIDE * HIGH * 3 / 2**20:.0f} MiB image"
    centre_col = (np.arange(pixels.shape[1]) + 0.5) * scale - 0.5  # each output pixel averages a block around it
    centre_row = (np.arange(pixels.shape[0]) + 0.5) * scale - 0.5
    red, green = np.meshgrid(centre_col * 255 / (WIDE - 1), centre_row * 255 / (HIGH - 1))
    np.testing.assert_allclose(pixels[..., 0], red, atol=2)
    np.testing.assert_allclose(pixels[..., 1], green, atol=2)
    assert np.abs(pixels[..., 2].astype(int) - 100).max() <= 3  # the checkerboard averaged, not sampled


def test_a_small_image_is_read_whole(make_geotiff, tmp_path: Path) -> None:
    path = make_geotiff(tmp_path / "small.tif", 300, 200, dtype="uint16")
    pixels = read_preview(path, max_side=512)
    np.testing.assert_array_equal(pixels, read_window(plan_whole(path)))
    assert read_preview(path, max_side=150).shape == (100, 150, 3)


def test_a_preview_keeps_the_band_choice(make_geotiff, tmp_path: Path) -> None:
    path = make_geotiff(tmp_path / "rgbn.tif", 120, 80, count=4)
    pixels = read_preview(path, bands=[4, 3, 2])
    np.testing.assert_array_equal(pixels, source_pixels(path, [4, 3, 2], plan_whole(path).chips[0]))
    with pytest.raises(SourceError, match="no such file"):
        read_preview(tmp_path / "missing.tif")


# --- layout and block cache --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rgb", "stretched-with-nodata", "alpha"])
def test_channels_first_reads_the_same_pixels(make_geotiff, tmp_path: Path, kind: str) -> None:
    args = {"rgb": {}, "stretched-with-nodata": {"dtype": "uint16", "nodata": 0}, "alpha": {"alpha": True}}[kind]
    plan = plan_scene(make_geotiff(tmp_path / f"{kind}.tif", 150, 100, **args), chip_size=64)
    reader = ChipReader(max_nodata_fraction=1.0)
    for chip in plan.chips:
        np.testing.assert_array_equal(
            reader.read(plan, chip, channels_first=True), reader.read(plan, chip).transpose(2, 0, 1)
        )
    reader.close()


@pytest.fixture
def gdal_cache_cap():
    """Set GDAL's block cache cap for a test (no GDAL_CACHEMAX variable), restored afterwards."""
    before = get_gdal_config("GDAL_CACHEMAX")  # rasterio reports GDAL's cap in bytes, also when unset
    yield lambda cap: set_gdal_config("GDAL_CACHEMAX", cap)
    set_gdal_config("GDAL_CACHEMAX", before)


def test_block_cache_grows_to_hold_a_row_of_chips(make_geotiff, tmp_path: Path, monkeypatch, gdal_cache_cap) -> None:
    monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    path = make_geotiff(tmp_path / "wide.tif", 2048, 300, count=4, dtype="uint16", tiled=True)  # 256² blocks
    plan = plan_scene(path, chip_size=100)
    gdal_cache_cap(1 << 20)
    ChipReader().read(plan, plan.chips[0])
    row_of_blocks = 256 * 2048 * 4 * 2  # bytes of one row of 256² blocks across the scene, 4 uint16 bands
    assert int(get_gdal_config("GDAL_CACHEMAX")) == 2 * row_of_blocks  # a 100-px chip row spans ≤ 2 block rows
    gdal_cache_cap(64 << 20)  # a larger cap is left alone
    ChipReader().read(plan, plan.chips[0])
    assert int(get_gdal_config("GDAL_CACHEMAX")) == 64 << 20


def test_block_cache_leaves_the_users_setting_alone(make_geotiff, tmp_path: Path, monkeypatch, gdal_cache_cap) -> None:
    path = make_geotiff(tmp_path / "wide.tif", 2048, 300, count=4, dtype="uint16", tiled=True)
    plan = plan_scene(path, chip_size=100)
    monkeypatch.setenv("GDAL_CACHEMAX", "1")
    gdal_cache_cap(1 << 20)
    ChipReader().read(plan, plan.chips[0])
    assert int(get_gdal_config("GDAL_CACHEMAX")) == 1 << 20
