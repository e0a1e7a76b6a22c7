"""A search area drawn on the page's map: what the drawing component returns becomes the ``within`` filter (the
JavaScript itself runs in a real browser in tests/app/test_browser.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import shapely
from streamlit.testing.v1 import AppTest

from app.area_drawing import KEY, WORLD, combined_area, drawn_polygon, view_of
from rsretrieve.query import QueryError
from tests.app.test_search_page import assert_no_failure, open_page, results, search

ARCHIVE_CHIPS = 31
RING = [[-75.01, 39.9], [-74.98, 39.9], [-74.98, 40.01], [-75.01, 40.01], [-75.01, 39.9]]  # the WGS84 tiles
AREA = {"type": "Polygon", "coordinates": [RING]}


def component_args(page: AppTest) -> dict:
    """The arguments the page gave the drawing component in its last run."""
    return json.loads(page.get("component_instance")[0].proto.json_args)


def test_what_the_component_returns_becomes_a_polygon() -> None:
    assert drawn_polygon(AREA) == AREA
    open_ring = {"type": "Polygon", "coordinates": [RING[:-1]]}  # closed here when the browser left it open
    assert drawn_polygon(open_ring) == AREA
    for value in (None, {}, {"type": "Point", "coordinates": [1, 2]}, {"type": "Polygon", "coordinates": [RING[:2]]},
                  {"type": "Polygon", "coordinates": [[[200, 0], [0, 1], [1, 1], [200, 0]]]},
                  {"type": "Polygon", "coordinates": [[["a", 0], [0, 1], [1, 1], ["a", 0]]]}):  # fmt: skip
        assert drawn_polygon(value) is None, value
    assert view_of([], None, None) == WORLD and view_of([], AREA, None) == (-75.01, 39.9, -74.98, 40.01)


def test_a_drawn_and_an_uploaded_area_overlap() -> None:
    east = {
        "type": "Polygon",
        "coordinates": [[[-74.99, 39.8], [-74.9, 39.8], [-74.9, 40.1], [-74.99, 40.1], [-74.99, 39.8]]],
    }
    assert combined_area(None, AREA) == AREA and combined_area(json.dumps(AREA), None) == json.dumps(AREA)
    overlap = combined_area(json.dumps(east), AREA)
    assert overlap.bounds[0] == pytest.approx(-74.99) and overlap.bounds[2] == pytest.approx(-74.98)
    far = {"type": "Polygon", "coordinates": [[[10, 10], [11, 10], [11, 11], [10, 10]]]}
    with pytest.raises(QueryError, match="do not overlap"):
        combined_area(json.dumps(far), AREA)


def test_a_drawn_area_filters_the_results(monkeypatch: pytest.MonkeyPatch, page_db: Path) -> None:
    page = open_page(monkeypatch, "--db", page_db)
    page.slider(key="k").set_value(40)
    search(page, "farmland")
    assert len(results(page)) == ARCHIVE_CHIPS
    page.checkbox(key="use_drawn").check().run()
    args = component_args(page)
    assert args["area"] is None and args["height"] > 0 and args["borders"]  # country outlines near the results
    assert len(args["footprints"]) == sum(1 for chip in results(page) if chip.footprint)
    assert any("No area drawn yet" in caption.value for caption in page.caption)
    page.session_state[KEY] = AREA  # what the component sends when the ring is closed in the browser
    page.run()
    assert_no_failure(page)
    narrowed = results(page)
    area = shapely.geometry.shape(AREA)
    assert 0 < len(narrowed) < ARCHIVE_CHIPS
    assert all(shapely.geometry.shape(chip.footprint).intersects(area) for chip in narrowed)
    args = component_args(page)
    assert args["area"] == RING and len(args["footprints"]) == len(narrowed)  # the filtered results on the map
    chart = json.loads(page.get("deck_gl_json_chart")[0].proto.json)
    assert next(layer for layer in chart["layers"] if layer["id"] == "area")["data"][0]["path"][0] == RING[0]
    page.session_state[KEY] = None  # "Clear"
    page.run()
    assert len(results(page)) == ARCHIVE_CHIPS
