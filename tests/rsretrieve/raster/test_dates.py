"""Tests for rsretrieve/raster/dates.py: acquisition dates from tags, file names and TIFF's save time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import rasterio

from rsretrieve.raster import parse_date, plan_scene


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
    "stem",
    [
        "ortho_EPSG2056_tile12",  # a CRS code, not a year
        "tile_2048",  # a tile number: a year in the future cannot be an acquisition
        "mosaic_1920x1080",  # a size
        "v2019b",  # a version
    ],
)
def test_ambiguous_numbers_in_names_are_not_dates(stem: str) -> None:
    assert parse_date(stem) is None


def test_a_year_after_today_is_not_a_date() -> None:
    next_year = dt.date.today().year + 1
    assert parse_date(f"scene_{next_year}") is None
    assert parse_date(f"scene_{next_year}0101") is None
    assert parse_date(f"scene_{next_year - 1}") == dt.date(next_year - 1, 1, 1)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ortho_EPSG2056_tile12.tif", None),
        ("tile_2048.tif", None),
        ("mosaic_1920x1080.tif", None),
        ("scene_2015.tif", dt.date(2015, 1, 1)),
        ("2019.tif", dt.date(2019, 1, 1)),
        ("x_20200131.tif", dt.date(2020, 1, 31)),
        ("S2A_20200101T103021.tif", dt.date(2020, 1, 1)),
    ],
)
def test_dates_of_file_names(make_geotiff, tmp_path: Path, name: str, expected: dt.date | None) -> None:
    plan = plan_scene(make_geotiff(tmp_path / name, 32, 32))
    assert {chip.date for chip in plan.chips} == {expected}


@pytest.mark.parametrize("name", ["tile_2048.tif", "ortho_EPSG2056_tile12.tif", "mosaic_1920x1080.tif"])
def test_an_ambiguous_name_does_not_beat_the_save_time_tag(make_geotiff, tmp_path: Path, name: str) -> None:
    path = make_geotiff(tmp_path / name, 32, 32, tags={"TIFFTAG_DATETIME": "2017:05:04 10:00:00"})
    assert {chip.date for chip in plan_scene(path).chips} == {dt.date(2017, 5, 4)}


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
