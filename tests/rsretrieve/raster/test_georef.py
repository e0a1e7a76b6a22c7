"""Tests for rsretrieve/raster/georef.py: CRS names, WGS84 bboxes and footprints of chips, plain images."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import rasterio
from rasterio.crs import CRS

from rsretrieve.chips import Window
from rsretrieve.raster import plan_scene
from tests.rsretrieve.raster.conftest import assert_georeferenced, read_all


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
