"""Tests for indexer/read.py: real rasterio on synthetic GeoTIFFs (conftest) and on the shared real data."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from indexer.read import (
    IMAGE_SUFFIXES,
    ChipMeta,
    ChipReader,
    ScenePlan,
    SourceError,
    Window,
    find_sources,
    parse_date,
    plan_scene,
    plan_windows,
)
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.warp import transform_bounds
from rasterio.windows import Window as RioWindow
from rasterio.windows import bounds as window_bounds

# --- helpers -----------------------------------------------------------------------------------


def read_all(plan: ScenePlan, **reader_args: float) -> list[np.ndarray | None]:
    """Every chip of a plan, read with a fresh reader."""
    reader = ChipReader(**reader_args)
    try:
        return [reader.read(plan, chip) for chip in plan.chips]
    finally:
        reader.close()


def source_pixels(path: Path, bands: list[int], chip: ChipMeta) -> np.ndarray:
    """(h, w, bands) source values of a chip's window, read directly with rasterio."""
    w = chip.window
    with rasterio.open(path) as src:
        data = src.read(bands, window=RioWindow(w.col_off, w.row_off, w.width, w.height))
    return data.transpose(1, 2, 0)


def expected_bbox(path: str | Path, window: Window) -> tuple[float, ...]:
    """transform_bounds of a window's bounds to EPSG:4326, computed independently."""
    with rasterio.open(path) as src:
        rio = RioWindow(window.col_off, window.row_off, window.width, window.height)
        with warnings.catch_warnings():  # rasterio's own `transform * xy` under affine 3
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            bounds = window_bounds(rio, src.transform)
        return transform_bounds(src.crs, "EPSG:4326", *bounds, densify_pts=21)


def footprint_bounds(footprint: dict) -> tuple[float, float, float, float]:
    """Bounds of a GeoJSON Polygon."""
    xs, ys = zip(*footprint["coordinates"][0], strict=True)
    return min(xs), min(ys), max(xs), max(ys)


def signed_area(ring: list) -> float:
    """Shoelace area: positive for a counter-clockwise ring."""
    return 0.5 * sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in itertools.pairwise(ring))


def assert_georeferenced(plan: ScenePlan) -> None:
    """Every chip's bbox equals transform_bounds of its window; its footprint has the same extent."""
    for chip in plan.chips:
        assert chip.bbox == pytest.approx(expected_bbox(plan.path, chip.window), abs=1e-9)
        assert chip.footprint["type"] == "Polygon"
        ring = chip.footprint["coordinates"][0]
        assert len(ring) == 41 and tuple(ring[0]) == tuple(ring[-1])
        assert signed_area(ring) > 0
        assert footprint_bounds(chip.footprint) == pytest.approx(chip.bbox, abs=1e-6)


def covered(windows: list[Window], width: int, height: int) -> np.ndarray:
    """How many windows cover each pixel."""
    count = np.zeros((height, width), int)
    for w in windows:
        count[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] += 1
    return count


# --- window planning ---------------------------------------------------------------------------


def test_windows_shift_the_last_row_and_column_inward() -> None:
    windows = plan_windows(500, 300, 224)
    assert sorted({w.col_off for w in windows}) == [0, 224, 276]
    assert sorted({w.row_off for w in windows}) == [0, 76]
    assert {(w.width, w.height) for w in windows} == {(224, 224)}
    assert covered(windows, 500, 300).min() == 1


def test_scene_smaller_than_a_chip_is_one_window_of_its_own_size() -> None:
    assert plan_windows(100, 50, 224) == [Window(0, 0, 100, 50)]
    narrow = plan_windows(500, 100, 224)
    assert [(w.col_off, w.width, w.height) for w in narrow] == [(0, 224, 100), (224, 224, 100), (276, 224, 100)]


def test_overlap_sets_the_stride() -> None:
    assert [w.col_off for w in plan_windows(500, 224, 224, overlap=32)] == [0, 192, 276]
    for overlap in (-1, 224, 300):
        with pytest.raises(ValueError, match="overlap"):
            plan_windows(500, 224, 224, overlap=overlap)


@pytest.mark.parametrize("size", [1, 223, 224, 225, 447, 448, 449, 1000])
@pytest.mark.parametrize("overlap", [0, 16])
def test_windows_cover_every_pixel_and_stay_inside(size: int, overlap: int) -> None:
    windows = plan_windows(size, size // 2 + 1, 224, overlap)
    assert covered(windows, size, size // 2 + 1).min() >= 1
    assert all(w.col_off + w.width <= size and w.row_off + w.height <= size // 2 + 1 for w in windows)
    assert len(set(windows)) == len(windows)


def test_window_as_dict() -> None:
    assert Window(1, 2, 3, 4).as_dict() == {"col_off": 1, "row_off": 2, "width": 3, "height": 4}


# --- georeference ------------------------------------------------------------------------------


@pytest.mark.parametrize("crs", ["EPSG:32618", "EPSG:26914", "EPSG:4326", "EPSG:3857"])
def test_footprints_equal_transform_bounds_of_each_window(make_geotiff, tmp_path: Path, crs: str) -> None:
    path = make_geotiff(tmp_path / "scene.tif", 300, 250, crs=crs)
    plan = plan_scene(path, chip_size=128, overlap=8)
    assert plan.georeferenced and len(plan.chips) == 9
    assert {chip.crs for chip in plan.chips} == {crs}
    assert_georeferenced(plan)


def test_crs_without_epsg_code_is_kept_as_wkt(make_geotiff, tmp_path: Path) -> None:
    proj = "+proj=tmerc +lat_0=0 +lon_0=-75.3 +k=0.9996 +x_0=500000 +y_0=0 +ellps=WGS84 +units=m"
    plan = plan_scene(make_geotiff(tmp_path / "custom.tif", 64, 64, crs=proj))
    assert plan.chips[0].crs.startswith("PROJCS[")
    assert CRS.from_wkt(plan.chips[0].crs) == CRS.from_user_input(proj)
    assert_georeferenced(plan)


def test_plain_image_is_one_chip_without_footprint(make_geotiff, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NotGeoreferencedWarning must not escape
        plan = plan_scene(make_geotiff(tmp_path / "plain.tif", 500, 300, crs=None))
    assert not plan.georeferenced
    (chip,) = plan.chips
    assert chip.window == Window(0, 0, 500, 300)
    assert chip.crs is None and chip.bbox is None and chip.footprint is None
    assert read_all(plan)[0].shape == (300, 500, 3)


def test_large_plain_image_is_tiled_without_footprint(make_geotiff, tmp_path: Path) -> None:
    plan = plan_scene(make_geotiff(tmp_path / "plain.tif", 200, 100, crs=None), chip_size=32)
    assert len(plan.chips) == 7 * 4
    assert all(c.footprint is None and c.bbox is None for c in plan.chips)


def test_crs_with_identity_transform_is_not_georeferenced(make_geotiff, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = make_geotiff(tmp_path / "x.tif", 64, 64, transform=rasterio.Affine.identity())
    plan = plan_scene(path)
    assert not plan.georeferenced and plan.chips[0].footprint is None


# --- pixels: dtypes, bands, masks --------------------------------------------------------------


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


# --- dates and ids -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("m_4709963_se_14_1_20090818", dt.date(2009, 8, 18)),
        ("1985", dt.date(1985, 1, 1)),
        ("scene_2019-05-03_rgb", dt.date(2019, 5, 3)),
        ("scene_2019_05_03", dt.date(2019, 5, 3)),
        ("2009:08:18 10:11:12", dt.date(2009, 8, 18)),
        ("LC08_L1TP_042034_20170616_20170629_01_T1", dt.date(2017, 6, 16)),
        ("S2A_MSIL2A_20230105T103421_N0509", dt.date(2023, 1, 5)),
        ("landsat_2020", dt.date(2020, 1, 1)),
        ("scene_20191345", None),  # month 13
        ("scene_2019-02-30", None),  # not a real day, and not a lone year either
        ("18991231", None),
        ("tile_0512", None),
        ("4709963", None),
        ("image", None),
        ("1", None),
    ],
)
def test_parse_date(text: str, expected: dt.date | None) -> None:
    assert parse_date(text) == expected


@pytest.mark.parametrize(
    ("tags", "name", "expected"),
    [
        ({"TIFFTAG_DATETIME": "2015:06:01 10:00:00"}, "x_20090818.tif", dt.date(2009, 8, 18)),  # save time loses
        ({"TIFFTAG_DATETIME": "2015:06:01 10:00:00"}, "x.tif", dt.date(2015, 6, 1)),
        ({"ACQUISITIONDATE": "2018-07-16"}, "x.tif", dt.date(2018, 7, 16)),
        ({"acquisition_date": "20180716", "DATETIME": "2001:01:01 00:00:00"}, "x.tif", dt.date(2018, 7, 16)),
        ({"DATE_ACQUIRED": "2018-13-45"}, "x_20090818.tif", dt.date(2009, 8, 18)),  # bad tag ignored
        ({}, "1985.tif", dt.date(1985, 1, 1)),
        ({}, "scene.tif", None),
    ],
)
def test_date_from_acquisition_tags_name_save_time(make_geotiff, tmp_path: Path, tags, name, expected) -> None:
    plan = plan_scene(make_geotiff(tmp_path / name, 64, 64, tags=tags))
    assert {chip.date for chip in plan.chips} == {expected}


def test_date_from_another_tag_namespace(make_geotiff, tmp_path: Path) -> None:
    path = make_geotiff(tmp_path / "scene.tif", 32, 32)
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(ns="IMAGERY", ACQUISITIONDATE="2021-04-05")
    assert plan_scene(path).chips[0].date == dt.date(2021, 4, 5)


def test_chip_ids_are_stable_and_unique(make_geotiff, tmp_path: Path, monkeypatch) -> None:
    path = make_geotiff(tmp_path / "scene.tif", 300, 300)
    plan = plan_scene(path, chip_size=128)
    monkeypatch.chdir(tmp_path)
    again = plan_scene("scene.tif", chip_size=128)
    assert [c.id for c in plan.chips] == [c.id for c in again.chips]
    assert len({c.id for c in plan.chips}) == len(plan.chips)
    chip = plan.chips[4]
    key = f"{path.resolve()}|{chip.window.col_off},{chip.window.row_off},{chip.window.width},{chip.window.height}"
    assert chip.id == hashlib.sha1(key.encode()).hexdigest()[:16]
    assert chip.path == str(path.resolve()) == plan.path


# --- finding sources ---------------------------------------------------------------------------


@pytest.fixture
def archive(make_geotiff, tmp_path: Path) -> Path:
    """A folder with nested images, a non-image, and hidden files."""
    root = tmp_path / "archive"
    for name in ("a.tif", "sub/b.TIF", "sub/deeper/c.png", ".hidden/d.tif", "sub/._e.tif"):
        make_geotiff(root / name, 8, 8)
    (root / "sub" / "notes.txt").write_text("not an image")
    return root


def test_find_sources_recurses_folders(archive: Path) -> None:
    found = find_sources([archive])
    assert found == sorted([archive / "a.tif", archive / "sub/b.TIF", archive / "sub/deeper/c.png"])
    assert all(p.is_absolute() for p in found)


def test_find_sources_globs_files_and_deduplicates(archive: Path, monkeypatch) -> None:
    monkeypatch.chdir(archive)
    assert find_sources(["*.tif"]) == [archive / "a.tif"]
    assert find_sources(["**/*.png"]) == [archive / "sub/deeper/c.png"]
    assert len(find_sources([archive, "a.tif", archive / "a.tif", "sub"])) == 3


def test_find_sources_errors(archive: Path, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"missing\.tif: no such file"):
        find_sources([tmp_path / "missing.tif"])
    with pytest.raises(SourceError, match="no file matches"):
        find_sources([str(tmp_path / "*.jpeg")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images found under"):
        find_sources([tmp_path / "empty"])


def test_image_suffixes() -> None:
    assert {".tif", ".tiff", ".jpg", ".jpeg", ".png"} == IMAGE_SUFFIXES


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


# --- the real data -----------------------------------------------------------------------------


def test_real_naip(shared_data: Path) -> None:
    paths = find_sources([shared_data / "geotiff" / "naip"])
    assert len(paths) == 10
    reader = ChipReader()
    for path in paths:
        plan = plan_scene(path)
        assert plan.band_count == 4 and plan.bands == (1, 2, 3) and plan.stretch is None
        assert plan.width == 934 and plan.height in (723, 724)  # two dates are one row taller
        assert len(plan.chips) == 5 * 4
        assert {c.date for c in plan.chips} == {dt.date.fromisoformat(path.stem[-8:])}
        assert {c.crs for c in plan.chips} == {"EPSG:26914"}
        assert_georeferenced(plan)
        bbox = plan.chips[0].bbox
        assert -99.2 < bbox[0] < bbox[2] < -99.1 and 47.0 < bbox[1] < bbox[3] < 47.1
        pixels = reader.read(plan, plan.chips[-1])
        np.testing.assert_array_equal(pixels, source_pixels(path, [1, 2, 3], plan.chips[-1]))
    reader.close()


def test_real_landsat_peru(shared_data: Path) -> None:
    paths = find_sources([shared_data / "geotiff" / "landsat_peru" / "*.tif"])
    assert [p.stem for p in paths] == ["1985", "1990", "1995", "2000", "2005", "2010", "2015", "2020"]
    for path in paths:
        plan = plan_scene(path)
        assert plan.bands == (1, 2, 3) and plan.chips[0].crs == "EPSG:4326"
        assert {c.date for c in plan.chips} == {dt.date(int(path.stem), 1, 1)}
        assert_georeferenced(plan)
        assert sum(p is not None for p in read_all(plan)) == len(plan.chips) == 8


def test_real_rgba_and_nodata_scenes_skip_border_chips(shared_data: Path) -> None:
    misc = shared_data / "geotiff" / "misc"
    corners = [0, 3, 11, 15]  # the 4x4 grid's empty corners (the scene is a tilted Landsat footprint)
    for name in ("RGBA.byte.tif", "RGB.byte.tif"):
        plan = plan_scene(misc / name)
        assert plan.bands == (1, 2, 3) and plan.chips[0].crs == "EPSG:32618"
        skipped = [i for i, p in enumerate(read_all(plan)) if p is None]
        assert skipped == corners
        assert_georeferenced(plan)


def test_real_alpha_tif_keeps_only_its_opaque_corner(shared_data: Path) -> None:
    plan = plan_scene(shared_data / "geotiff" / "misc" / "alpha.tif")  # 98 % transparent
    assert plan.chips[0].crs == "EPSG:3857"
    assert all(p is None for p in read_all(plan))
    small = plan_scene(shared_data / "geotiff" / "misc" / "alpha.tif", chip_size=64)
    kept = [c.window for c, p in zip(small.chips, read_all(small), strict=True) if p is not None]
    assert kept and all(w.row_off >= 1120 - 64 and w.col_off < 248 for w in kept)


def test_real_misc_scenes(shared_data: Path) -> None:
    misc = shared_data / "geotiff" / "misc"
    cog = plan_scene(misc / "cogeo.tif")
    assert len(cog.chips) == 25 and cog.chips[0].crs == "EPSG:3857"
    assert all(p is not None for p in read_all(cog))
    rgb1 = plan_scene(misc / "rgb1.tif")  # a UTM CRS without an EPSG code
    assert rgb1.georeferenced and rgb1.chips[0].crs.startswith("PROJCS[")
    assert_georeferenced(cog)
    assert_georeferenced(rgb1)


def test_real_benchmark_samples_are_one_chip_each(shared_data: Path) -> None:
    paths = find_sources([shared_data / "samples"])
    assert len(paths) == 24
    reader = ChipReader()
    for path in paths:
        plan = plan_scene(path)
        (chip,) = plan.chips
        assert not plan.georeferenced and chip.footprint is None and chip.bbox is None and chip.crs is None
        pixels = reader.read(plan, chip)
        assert pixels.shape == (plan.height, plan.width, 3) and pixels.dtype == np.uint8
        # UC Merced files carry a Photoshop save time in TIFFTAG_DATETIME (2009); the others no date
        assert (chip.date is not None) == (path.parent.name == "ucm")
    reader.close()
