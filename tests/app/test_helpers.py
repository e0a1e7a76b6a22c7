"""The page's helpers: thumbnails, the footprint map and the index extent."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
import shapely

from app.backend import Hit
from app.basemap import border_paths
from app.footprint_map import (
    SELECTED_COLOUR,
    area_rows,
    footprint_deck,
    footprint_rows,
    graticule,
    grid_step,
    picked_id,
    score_colour,
    scored_deck,
    scored_rows,
    union_bbox,
)
from rsretrieve.chips import Chip, Window
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


def hit_at(chip_id: str, x: float = 10.0, y: float = 50.0, score: float = 0.5, day: int = 1) -> Hit:
    """A result whose 1° footprint has its lower left corner at (x, y)."""
    ring = [[x, y], [x + 1, y], [x + 1, y + 1], [x, y + 1], [x, y]]
    footprint = {"type": "Polygon", "coordinates": [ring]}
    chip = Chip(chip_id, f"/archive/{chip_id}.tif", Window(0, 0, 64, 64), "EPSG:4326", (x, y, x + 1, y + 1), footprint,
                dt.date(2020, 1, day))  # fmt: skip
    return Hit(score, chip)


def layer(deck, layer_id: str) -> dict:
    """A layer of a deck's JSON by id."""
    return next(item for item in json.loads(deck.to_json())["layers"] if item["id"] == layer_id)


def test_results_of_one_place_are_one_footprint_with_their_count() -> None:
    hits = [hit_at("a"), hit_at("b", 12.0), hit_at("c", day=2), hit_at("d", day=3)]
    rows = footprint_rows(hits, selected_id="b", first=11)
    assert [(row["id"], row["rank"], row["count"], row["stack"]) for row in rows] == [
        ("a", 11, 3, "×3"),  # the best-ranked of the stack stands for it
        ("b", 12, 1, ""),  # the selected place last: drawn on top
    ]
    assert rows[-1]["line"] == SELECTED_COLOUR and rows[-1]["selected"]
    assert rows[0]["date"] == "2020-01-01, 2020-01-02, 2020-01-03"
    stacked = footprint_rows(hits, selected_id="c")
    assert [(row["id"], row["rank"]) for row in stacked if row["count"] == 3] == [("c", 3)]  # selected shows


def test_a_click_on_a_footprint_or_its_dot_names_the_chip() -> None:
    rows = footprint_rows([hit_at("a"), hit_at("b", 12.0)], selected_id=None)
    assert {row["id"] for row in rows} == {"a", "b"}
    assert picked_id({"indices": {}, "objects": {}}) is None
    assert picked_id({"indices": {"centres": [1]}, "objects": {"centres": [rows[1]]}}) == rows[1]["id"]
    assert picked_id({"objects": {"graticule": [{"path": []}], "footprints": [rows[0]]}}) == rows[0]["id"]


def test_map_fits_the_results_and_needs_a_footprint() -> None:
    unplaced = Hit(0.5, Chip("c", "/archive/c.jpg", Window(0, 0, 64, 64)))
    assert footprint_deck([unplaced], None) is None
    assert union_bbox([hit_at("a"), unplaced]) == (10.0, 50.0, 11.0, 51.0)
    deck = footprint_deck([hit_at("a")], "a")
    assert deck is not None
    view = deck.initial_view_state
    assert (view.longitude, view.latitude) == (10.5, 50.5) and 6 < view.zoom < 9
    spec = json.loads(deck.to_json())
    # no basemap, so no tile server to reach: Streamlit adds Carto's when mapStyle is missing or null,
    # but not for pydeck's "no style given" sentinel without a map provider
    assert "mapProvider" not in spec and spec["mapStyle"] == "__MAP_STYLE__"


def test_map_draws_thumbnails_area_and_borders_offline() -> None:
    png = b"\x89PNG fake"
    area = (9.0, 49.0, 14.0, 52.0)
    deck = footprint_deck([hit_at("a"), hit_at("b", 12.0)], "a", {"a": png, "b": None}, area)
    bitmap = layer(deck, "chip-a")
    assert bitmap["@@type"] == "BitmapLayer" and bitmap["bounds"] == [10.0, 50.0, 11.0, 51.0]
    assert bitmap["image"].startswith("data:image/png;base64,")  # a literal, not an expression: nothing to fetch
    assert not any(item["id"] == "chip-b" for item in json.loads(deck.to_json())["layers"])  # no image: no layer
    assert layer(deck, "area")["data"] == [
        {"path": [[9.0, 49.0], [14.0, 49.0], [14.0, 52.0], [9.0, 52.0], [9.0, 49.0]]}
    ]
    view = deck.initial_view_state
    assert view.longitude == 11.5  # the map holds the search area too
    borders = layer(deck, "borders")["data"]
    assert 0 < len(borders) < 60  # Germany's neighbours, not the whole world
    points = [point for row in borders for point in row["path"]]
    assert any(9 < x < 14 and 49 < y < 52 for x, y in points)
    polygon = shapely.Polygon([(0, 0), (1, 0), (1, 1), (0, 0)]).union(shapely.box(2, 2, 3, 3))
    assert len(area_rows(polygon)) == 2


def test_border_outlines_ship_with_the_page() -> None:
    near_peru = border_paths((-82.0, -19.0, -68.0, 0.0))
    coast = [point for row in near_peru for point in row["path"]]
    assert any(-82 < x < -75 and -19 < y < 0 for x, y in coast)  # Peru's Pacific coast
    assert len(border_paths((-180.0, -90.0, 180.0, 90.0))) > 150


def test_classifier_layer_colours_by_score() -> None:
    rows = scored_rows([hit_at("a", score=0.99), hit_at("b", 12.0, score=0.5)], low=0.5)
    assert rows[0]["fill"][:3] == score_colour(0.99, 0.5)[:3] != rows[1]["fill"][:3] and rows[1]["fill"][:3] == [
        254,
        217,
        118,
    ]
    deck = scored_deck([hit_at("a", score=0.9)], 0.5)
    assert layer(deck, "scored")["@@type"] == "PolygonLayer"


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
