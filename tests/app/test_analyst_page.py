"""The analyst's page through Streamlit's AppTest on a copy of the test index: ✓ / ✗ labels on the cards, the
labels panel, "refine with my labels", the classifier layer, paging, the table view and a polygon area."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.test_search_page import assert_no_failure, card_buttons, open_page, results, search

ARCHIVE_CHIPS = 31


@pytest.fixture
def page(monkeypatch: pytest.MonkeyPatch, page_db: Path, tmp_path: Path) -> AppTest:
    """The page on a copy of the test index (labels are written beside it)."""
    db = tmp_path / "index.lance"
    shutil.copytree(page_db, db)
    return open_page(monkeypatch, "--db", db)


def choose_class(page: AppTest, name: str) -> AppTest:
    page.text_input(key="label_class").input(name)
    return page.run()


def sidebar_text(page: AppTest) -> str:
    return " ".join(markdown.value for markdown in page.sidebar.markdown)


def label_results(page: AppTest, positives: int, negatives: int) -> list[str]:
    """✓ on the first georeferenced results, ✗ on the next ones; their chip ids."""
    ids = [chip.id for chip in results(page) if chip.bbox]
    for chip_id in ids[:positives]:
        page.button(key=f"pos-{chip_id}").click().run()
    for chip_id in ids[positives : positives + negatives]:
        page.button(key=f"neg-{chip_id}").click().run()
    return ids


def test_card_buttons_label_results_in_the_chosen_class(page: AppTest) -> None:
    search(page, "farmland")
    first = results(page)[0].id
    page.button(key=f"pos-{first}").click().run()
    assert any("Choose or type a class" in error.value for error in page.error)  # no class yet: said, not done
    choose_class(page, "field")  # a new class, typed
    ids = label_results(page, 2, 1)
    assert_no_failure(page)
    assert "**field**: 2 ✓ · 1 ✗" in sidebar_text(page)
    assert page.button(key=f"pos-{ids[0]}").proto.type == "primary"  # the card shows its label
    assert any(":green[✓]" in markdown.value for markdown in page.markdown)
    page.button(key=f"pos-{ids[0]}").click().run()  # pressed again: unlabelled
    assert "**field**: 1 ✓ · 1 ✗" in sidebar_text(page)
    page.multiselect(key="remove_ids").set_value([ids[2]])
    page.button(key="remove").click().run()
    assert "**field**: 1 ✓ · 0 ✗" in sidebar_text(page)
    page.button(key="remove_class").click().run()
    assert_no_failure(page)
    assert "field" not in [option for pills in page.sidebar.get("button_group") for option in pills.proto.options]


def test_refine_searches_with_the_class_labels(page: AppTest) -> None:
    search(page, "farmland")
    choose_class(page, "field")
    ids = label_results(page, 2, 1)
    page.button(key="refine").click().run()
    assert_no_failure(page)
    assert page.session_state["refine_class"] == "field" and page.session_state["query"] is None
    assert results(page)[0].id in ids[:2]
    assert any("my “field” labels (2 ✓, 1 ✗)" in markdown.value for markdown in page.markdown)
    page.button(key=f"pos-{ids[3]}").click().run()  # a new label refines again
    assert any("(3 ✓, 1 ✗)" in markdown.value for markdown in page.markdown)


def test_find_all_draws_the_classifier_layer_and_filters_by_threshold(page: AppTest) -> None:
    page.slider(key="k").set_value(20)
    search(page, "farmland")
    choose_class(page, "field")
    label_results(page, 4, 4)
    page.button(key="classify").click().run()
    assert_no_failure(page)
    name, classified = page.session_state["classified"]
    assert name == "field" and classified.summary["labels"]["positive"] == 4
    assert any("across the index" in header.value for header in page.subheader)
    keys = {button.proto.id.split("-")[-1] for button in page.get("download_button") if "found-" in button.proto.id}
    assert keys == {"geojson", "parquet", "csv"}
    scores = sorted(hit.score for hit in classified.hits)
    threshold = page.slider(key="threshold")
    assert threshold.min == 0.5 and all(score >= 0.5 for score in scores)
    middle = round(scores[len(scores) // 2], 2) if scores else 0.8
    threshold.set_value(max(0.5, middle)).run()
    shown = [frame for frame in page.dataframe if "rank" in frame.value.columns and "chip" in frame.value.columns]
    assert len(shown[-1].value) == sum(score >= max(0.5, middle) for score in scores)  # filtered in the session
    charts = [chart for chart in page.get("deck_gl_json_chart") if '"scored"' in chart.proto.json]
    assert len(charts) == (1 if shown[-1].value.shape[0] else 0)


def test_large_k_pages_the_cards_and_lists_every_result_in_a_table(page: AppTest) -> None:
    page.slider(key="k").set_value(40)
    search(page, "farmland")
    assert len(results(page)) == ARCHIVE_CHIPS
    assert len(card_buttons(page, "like-")) == 24
    assert any("Results **1–24** of 31" in markdown.value for markdown in page.markdown)
    page.button(key="next-page").click().run()
    assert_no_failure(page)
    assert len(card_buttons(page, "like-")) == ARCHIVE_CHIPS - 24
    assert any("#25" in markdown.value for markdown in page.markdown)
    chart = page.get("deck_gl_json_chart")[0].proto.json
    assert f'"rank": {ARCHIVE_CHIPS}' in chart and '"rank": 1,' not in chart  # the map shows this page
    page.segmented_control(key="view").set_value("Table").run()
    assert_no_failure(page)
    assert not card_buttons(page, "like-")
    table = page.dataframe[-1].value
    assert len(table) == ARCHIVE_CHIPS and list(table["rank"])[:3] == [1, 2, 3]


def test_a_polygon_area_narrows_the_results_and_is_drawn(page: AppTest) -> None:
    page.slider(key="k").set_value(40)
    search(page, "farmland")
    page.checkbox(key="use_within").check().run()
    ring = [[-75.01, 39.9], [-74.98, 39.9], [-74.98, 40.01], [-75.01, 40.01], [-75.01, 39.9]]
    area = {"type": "Polygon", "coordinates": [ring]}
    page.sidebar.get("file_uploader")[0].set_value(("area.geojson", json.dumps(area).encode(), "application/json"))
    page.run()
    assert_no_failure(page)
    narrowed = results(page)
    assert 0 < len(narrowed) < ARCHIVE_CHIPS and all("/wgs84/" in chip.path for chip in narrowed)
    chart = json.loads(page.get("deck_gl_json_chart")[0].proto.json)
    outline = next(layer for layer in chart["layers"] if layer["id"] == "area")["data"]
    assert outline[0]["path"][0] == [-75.01, 39.9]


def test_similar_shows_the_query_chip_above_the_results(page: AppTest) -> None:
    search(page, "farmland")
    count = len(page.image)
    card_buttons(page, "like-")[1].click().run()
    assert_no_failure(page)
    assert len(page.image) == count + 1  # the "like" chip's thumbnail
    assert any(markdown.value.startswith("**Query:** chips like result #2") for markdown in page.markdown)
