"""The page's helpers: thumbnails, the footprint map and the index extent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.footprint_map import (
    SELECTED_COLOUR,
    footprint_deck,
    footprint_rows,
    graticule,
    grid_step,
    picked_id,
    union_bbox,
)
from rsretrieve.query import Query, QueryError
from rsretrieve.raster import ChipReader, plan_scene
from rsretrieve.search import Searcher
from rsretrieve.thumbnails import chip_pixels, chip_png


@pytest.mark.parametrize("name", ["utm/scene_20150601.tif", "wgs84/dem_2021.tif", "plain.jpg"])
def test_thumbnail_is_the_chip_the_indexer_read(small_archive: Path, name: str) -> None:
    plan = plan_scene(small_archive / name, chip_size=64)
    chip = plan.chips[-1]
    reader = ChipReader(max_nodata_fraction=1.0)
    expected = reader.read(plan, chip)
    reader.close()
    np.testing.assert_array_equal(chip_pixels(chip), expected)
    png = chip_png(chip)
    assert png is not None and png.startswith(b"\x89PNG")
    small = chip_png(chip, size=32)
    assert small is not None and len(small) < len(png)


def test_footprint_rows_draw_the_selected_result_last_in_its_colour(result) -> None:
    rows = footprint_rows([result("a"), result("b"), result("c", georeferenced=False)], selected_id="a")
    assert [row["rank"] for row in rows] == [2, 1]  # no row for the chip without footprint
    assert rows[-1]["line"] == SELECTED_COLOUR and rows[-1]["selected"]


def test_a_click_on_a_footprint_or_its_dot_names_the_chip(result) -> None:
    rows = footprint_rows([result("a"), result("b")], selected_id=None)
    assert {row["id"] for row in rows} == {"a", "b"}
    assert picked_id({"indices": {}, "objects": {}}) is None
    assert picked_id({"indices": {"centres": [1]}, "objects": {"centres": [rows[1]]}}) == rows[1]["id"]
    assert picked_id({"objects": {"graticule": [{"path": []}], "footprints": [rows[0]]}}) == rows[0]["id"]


def test_map_fits_the_results_and_needs_a_footprint(result) -> None:
    assert footprint_deck([result("c", georeferenced=False)], None) is None
    assert union_bbox([result("a"), result("c", georeferenced=False)]) == (10.0, 50.0, 11.0, 51.0)
    deck = footprint_deck([result("a")], "a")
    assert deck is not None
    view = deck.initial_view_state
    assert (view.longitude, view.latitude) == (10.5, 50.5) and 6 < view.zoom < 9
    spec = json.loads(deck.to_json())
    # no basemap, so no tile server to reach: Streamlit adds Carto's when mapStyle is missing or null,
    # but not for pydeck's "no style given" sentinel without a map provider
    assert "mapProvider" not in spec and spec["mapStyle"] == "__MAP_STYLE__"


def test_graticule_has_round_lines_around_the_bbox() -> None:
    bbox = (10.0, 50.0, 11.0, 51.0)
    assert grid_step(bbox) == 0.5
    lines, labels = graticule(bbox)
    assert {"path": [[10.5, 47.0], [10.5, 54.0]]} in lines
    assert {"position": [10.0, 50.5], "text": "50.5°N"} in labels


def test_an_upload_that_is_not_an_image_is_named_in_the_error(page_db: Path, tiny_model) -> None:
    from rsretrieve.query import Part

    searcher = Searcher(page_db, tiny_model)
    with pytest.raises(QueryError) as error:
        searcher.search(Query((Part("image", b"not an image", label="broken.png"),)))
    assert "broken.png" in str(error.value) and "/tmp" not in str(error.value)


def test_index_extent_covers_every_chip(page_db: Path, tiny_model) -> None:
    extent = Searcher(page_db, tiny_model).extent()
    assert extent.start.isoformat() == "2015-06-01" and extent.end.isoformat() == "2021-01-01"
    assert (extent.chips, extent.undated, extent.unplaced) == (31, 1, 1)  # the plain JPEG
    minx, miny, maxx, maxy = extent.bbox
    assert -75.01 < minx < maxx < -74.9 and 39.9 < miny < maxy < 40.7
