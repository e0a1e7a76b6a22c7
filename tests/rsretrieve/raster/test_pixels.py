"""Tests for rsretrieve/raster/pixels.py through the chip reader: dtypes, bands, masks, stretch, palettes."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp

from rsretrieve.raster import SourceError, plan_scene
from rsretrieve.raster.pixels import to_uint8
from tests.rsretrieve.raster.conftest import read_all, source_pixels


@pytest.mark.parametrize("tiled", [False, True])
def test_uint8_passes_through(make_geotiff, tmp_path: Path, tiled: bool) -> None:
    path = make_geotiff(tmp_path / "rgb.tif", 300, 200, tiled=tiled)
    plan = plan_scene(path, chip_size=128)
    assert plan.stretch is None and plan.dtype == "uint8" and plan.bands == (1, 2, 3)
    for chip, pixels in zip(plan.chips, read_all(plan), strict=True):
        assert pixels.dtype == np.uint8 and pixels.flags.c_contiguous
        np.testing.assert_array_equal(pixels, source_pixels(path, [1, 2, 3], chip))


def test_rgbn_uses_the_first_three_bands(make_geotiff, tmp_path: Path) -> None:
    path = make_geotiff(tmp_path / "rgbn.tif", 100, 100, count=4)
    plan = plan_scene(path)
    assert plan.band_count == 4 and plan.bands == (1, 2, 3)
    np.testing.assert_array_equal(read_all(plan)[0], source_pixels(path, [1, 2, 3], plan.chips[0]))


def test_colour_interpretation_picks_the_bands(make_geotiff, tmp_path: Path) -> None:
    bgr = [ColorInterp.blue, ColorInterp.green, ColorInterp.red]
    path = make_geotiff(tmp_path / "bgr.tif", 64, 64, colorinterp=bgr)
    plan = plan_scene(path)
    assert plan.bands == (3, 2, 1)
    np.testing.assert_array_equal(read_all(plan)[0], source_pixels(path, [3, 2, 1], plan.chips[0]))


def test_single_band_is_repeated(make_geotiff, tmp_path: Path) -> None:
    path = make_geotiff(tmp_path / "gray.tif", 100, 80, count=1)
    plan = plan_scene(path)
    assert plan.bands == (1, 1, 1)
    pixels = read_all(plan)[0]
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 0] == pixels[..., 2]).all()
    np.testing.assert_array_equal(pixels[..., 0], source_pixels(path, [1], plan.chips[0])[..., 0])


def test_explicit_bands(make_geotiff, tmp_path: Path) -> None:
    path = make_geotiff(tmp_path / "rgbn.tif", 64, 64, count=4)
    assert plan_scene(path, bands=[4, 3, 2]).bands == (4, 3, 2)
    plan = plan_scene(path, bands=[4])
    assert plan.bands == (4, 4, 4)
    np.testing.assert_array_equal(read_all(plan)[0][..., 2], source_pixels(path, [4], plan.chips[0])[..., 0])
    with pytest.raises(SourceError, match="expected 1 or 3 band indexes"):
        plan_scene(path, bands=[1, 2])
    with pytest.raises(SourceError, match=r"band index 5 out of range 1\.\.4"):
        plan_scene(path, bands=[5, 1, 1])


@pytest.mark.parametrize("count", [1, 3])
def test_alpha_is_a_mask_and_transparent_border_chips_are_skipped(make_geotiff, tmp_path, count) -> None:
    path = make_geotiff(tmp_path / "alpha.tif", 128, 128, count=count, alpha=True)
    plan = plan_scene(path, chip_size=32)
    assert count + 1 not in plan.bands
    chips = read_all(plan)
    grid = np.array([p is None for p in chips]).reshape(4, 4)
    inner = np.zeros((4, 4), bool)
    inner[1:3, 1:3] = True
    np.testing.assert_array_equal(grid, ~inner)
    # half-transparent chip kept at a looser threshold, its transparent pixels black
    edge = read_all(plan, max_nodata_fraction=1.0)[1]
    assert edge is not None and not edge.any()


def test_alpha_band_not_used_by_gdal_masks_still_masks(make_geotiff, tmp_path: Path) -> None:
    path = make_geotiff(tmp_path / "rgbna.tif", 128, 128, count=4, alpha=True)  # 5 bands, alpha last
    plan = plan_scene(path, chip_size=32)
    assert plan.bands == (1, 2, 3)
    assert sum(p is not None for p in read_all(plan)) == 4


def test_all_nodata_raster_gives_no_chips(make_geotiff, tmp_path: Path) -> None:
    zeros = np.zeros((3, 100, 100))
    for dtype in ("uint8", "uint16", "float32"):
        path = make_geotiff(tmp_path / f"empty_{dtype}.tif", 100, 100, dtype=dtype, nodata=0, data=zeros)
        assert all(p is None for p in read_all(plan_scene(path, chip_size=48)))


def test_nodata_fraction_threshold(make_geotiff, tmp_path: Path) -> None:
    data = np.full((3, 64, 64), 7)
    data[:, :, :32] = 0  # exactly half nodata
    plan = plan_scene(make_geotiff(tmp_path / "half.tif", 64, 64, nodata=0, data=data))
    assert read_all(plan, max_nodata_fraction=0.5)[0] is not None
    assert read_all(plan, max_nodata_fraction=0.49)[0] is None


@pytest.mark.parametrize(
    ("dtype", "nodata"), [("uint16", 0), ("int16", -9999), ("float32", -9999.0), ("float64", np.nan)]
)
def test_stretch_spans_0_255_and_ignores_nodata(make_geotiff, tmp_path: Path, dtype: str, nodata) -> None:
    data = np.random.default_rng(3).integers(100, 4000, (3, 120, 200)).astype(dtype)
    data[:, :, :40] = nodata  # a nodata strip on the left
    plan = plan_scene(make_geotiff(tmp_path / "s.tif", 200, 120, dtype=dtype, nodata=nodata, data=data), 64)
    expected = np.percentile(data[0][:, 40:].astype(np.float64), [2, 98])
    assert plan.stretch[0] == pytest.approx(tuple(expected))
    pixels = read_all(plan, max_nodata_fraction=1.0)
    assert min(p.min() for p in pixels) == 0 and max(p.max() for p in pixels) == 255
    assert not pixels[0][:, :40].any()  # nodata is black
    assert read_all(plan)[0] is None  # 40 of its 64 columns are nodata


def test_neighbouring_chips_share_the_stretch(make_geotiff, tmp_path: Path) -> None:
    ramp = np.tile(np.arange(300, dtype=np.uint16) * 10, (3, 100, 1))
    plan = plan_scene(
        make_geotiff(tmp_path / "ramp.tif", 300, 100, dtype="uint16", data=ramp), chip_size=100, overlap=20
    )
    chips = read_all(plan)
    # columns 80..99 are in the first two chips (windows start at 0 and 80): identical output there
    np.testing.assert_array_equal(chips[0][:, 80:], chips[1][:, :20])
    assert len(set(plan.stretch)) == 1


def test_stretch_of_a_wide_scene_matches_full_percentiles(make_geotiff, tmp_path: Path) -> None:
    data = np.random.default_rng(1).normal(1000, 100, (3, 64, 2100)).clip(1, None)
    path = make_geotiff(tmp_path / "wide.tif", 2100, 64, dtype="uint16", data=data)
    plan = plan_scene(path, chip_size=224)  # statistics from a 700 x 22 decimated read
    full = np.percentile(data[0].astype(np.uint16), [2, 98])
    assert plan.stretch[0] == pytest.approx(tuple(full), rel=0.02)


def test_constant_band_does_not_divide_by_zero(make_geotiff, tmp_path: Path) -> None:
    data = np.stack([np.full((50, 50), 500), np.arange(2500).reshape(50, 50), np.full((50, 50), 7)])
    plan = plan_scene(make_geotiff(tmp_path / "flat.tif", 50, 50, dtype="uint16", data=data))
    assert plan.stretch[0] == (500.0, 500.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pixels = read_all(plan)[0]
    assert not pixels[..., 0].any() and pixels[..., 1].max() == 255


def test_nan_pixels_are_invalid(make_geotiff, tmp_path: Path) -> None:
    data = np.random.default_rng(2).uniform(0, 1, (3, 64, 128)).astype(np.float32)
    data[:, :, 64:] = np.nan  # right chip all NaN
    data[0, 0, 0] = np.nan  # one NaN in one band of the left chip
    plan = plan_scene(make_geotiff(tmp_path / "nan.tif", 128, 64, dtype="float32", data=data), chip_size=64)
    assert all(np.isfinite(v) for lo_hi in plan.stretch for v in lo_hi)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        left, right = read_all(plan)
    assert right is None
    assert left[0, 0, 0] == 0 and left.max() == 255


def test_paletted_band_is_expanded_to_rgb(tmp_path: Path) -> None:
    path = tmp_path / "palette.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=20,
        height=10,
        count=1,
        dtype="uint8",
        crs="EPSG:32618",
        transform=rasterio.Affine(10, 0, 5e5, 0, -10, 4.5e6),
    ) as dst:
        dst.write((np.arange(200, dtype=np.uint8) % 3).reshape(1, 10, 20))
        dst.write_colormap(1, {0: (255, 0, 0, 255), 1: (0, 255, 0, 255), 2: (0, 0, 255, 255)})
    pixels = read_all(plan_scene(path))[0]
    np.testing.assert_array_equal(pixels[0, :3], [[255, 0, 0], [0, 255, 0], [0, 0, 255]])


def stretched_by_formula(data: np.ndarray, valid: np.ndarray, stretch: list[tuple[float, float]]) -> np.ndarray:
    """(h, w, 3) uint8: the documented stretch computed in float64 value by value (invalid → 0)."""
    out = []
    for c, (lo, hi) in enumerate(stretch):
        scale = 255.0 / (hi - lo) if hi > lo else 255.0
        x = np.where(valid[c], data[c].astype(np.float64), lo)
        out.append(np.rint(np.clip((x - lo) * scale, 0, 255)).astype(np.uint8))
    return np.stack(out, axis=-1)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int32", "float32"])
def test_stretch_equals_the_formula_for_every_dtype(dtype: str) -> None:
    rng = np.random.default_rng(5)
    low, high = (np.iinfo(dtype).min, np.iinfo(dtype).max) if dtype != "float32" else (-5e4, 5e4)
    data = rng.uniform(low, high, (3, 40, 50)).astype(dtype)
    data[:, 0, :2] = [low, high]  # both ends of the dtype
    valid = rng.random((3, 40, 50)) > 0.2
    stretch = [(-100.0, 3000.0), (5.0, 5.0), (200.5, 900.25)]  # one constant band
    expected = stretched_by_formula(data, valid, stretch)
    np.testing.assert_array_equal(to_uint8(data, valid, stretch), expected)
    np.testing.assert_array_equal(to_uint8(data, valid, stretch, channels_first=True), expected.transpose(2, 0, 1))
    all_valid = np.ones_like(valid)
    np.testing.assert_array_equal(to_uint8(data, None, stretch), stretched_by_formula(data, all_valid, stretch))
