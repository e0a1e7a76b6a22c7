"""Tests for rsretrieve/raster/plan.py: chip windows, stable chip ids, chip counts from headers."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from rsretrieve.chips import Window
from rsretrieve.raster import count_chips, plan_scene, plan_whole, plan_windows


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


# --- ids and counts ----------------------------------------------------------------------------


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


@pytest.mark.parametrize(
    ("crs", "chip_size", "overlap"), [("EPSG:32618", 64, 0), ("EPSG:32618", 64, 16), (None, 32, 0)]
)
def test_chip_counts_from_the_header_match_the_plan(make_geotiff, tmp_path: Path, crs, chip_size, overlap) -> None:
    path = make_geotiff(tmp_path / "scene.tif", 200, 100, crs=crs)
    assert count_chips(path, chip_size, overlap) == len(plan_scene(path, chip_size, overlap).chips)


def test_plan_whole_is_one_chip_over_the_scene(make_geotiff, tmp_path: Path) -> None:
    plan = plan_whole(make_geotiff(tmp_path / "big.tif", 900, 700, count=4), bands=[4, 3, 2])
    (chip,) = plan.chips
    assert chip.window == Window(0, 0, 900, 700) and plan.bands == (4, 3, 2)
