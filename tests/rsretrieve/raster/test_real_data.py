"""The raster package on the shared real data: NAIP, Landsat, RGBA/alpha/COG scenes and benchmark samples."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from rsretrieve.raster import ChipReader, find_sources, plan_scene
from tests.rsretrieve.raster.conftest import assert_georeferenced, read_all, source_pixels


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
