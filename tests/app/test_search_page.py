"""The search page driven through Streamlit's AppTest against a real index (tests/app/conftest.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from rsretrieve.store import Manifest

PAGE = Path(__file__).parents[2] / "app" / "search_page.py"
ARCHIVE_CHIPS = 31


def open_page(monkeypatch: pytest.MonkeyPatch, *args: str | Path) -> AppTest:
    """The page as ``rsretrieve app`` starts it: page arguments after Streamlit's ``--``."""
    monkeypatch.setattr(sys, "argv", [str(PAGE), *map(str, args)])
    page = AppTest.from_file(str(PAGE), default_timeout=60)
    return page.run()


def search(page: AppTest, text: str) -> AppTest:
    """Type a text query and press Search."""
    page.text_input(key="text").input(text)
    next(button for button in page.button if button.label == "Search").click()
    return page.run()


def results(page: AppTest) -> list:
    """The chips of the results the page shows now."""
    return [hit.chip for hit in page.session_state["response"].hits]


def upload(page: AppTest, name: str, data: bytes) -> AppTest:
    """Upload an image and press its search button."""
    key = f"upload-{page.session_state['upload_key'] if 'upload_key' in page.session_state else 0}"  # noqa: SIM401 (AppTest's state has no get)
    page.file_uploader(key=key).set_value((name, data, "image/png"))
    page.run()
    next(button for button in page.button if button.label == "Search with this image").click()
    return page.run()


def card_buttons(page: AppTest, prefix: str) -> list:
    """The buttons of the result cards with a key prefix ("like-", "map-")."""
    return [button for button in page.button if button.key and button.key.startswith(prefix)]


def assert_no_failure(page: AppTest) -> None:
    assert not page.exception, [exception.message for exception in page.exception]
    assert not page.error, [error.value for error in page.error]


@pytest.fixture
def page(monkeypatch: pytest.MonkeyPatch, page_db: Path) -> AppTest:
    """The page opened on the test index."""
    return open_page(monkeypatch, "--db", page_db)


def test_opens_the_index_and_warns_about_random_weights(page: AppTest, page_db: Path) -> None:
    assert_no_failure(page)
    assert page.text_input(key="db").value == str(page_db)
    assert {metric.label: metric.value for metric in page.sidebar.metric}["Chips"] == str(ARCHIVE_CHIPS)
    assert any("tiny-test" in caption.value for caption in page.sidebar.caption)
    assert any("random weights" in warning.value for warning in page.warning)


def test_text_query_fills_the_grid_with_k_results(page: AppTest) -> None:
    page.slider(key="k").set_value(7)
    search(page, "a river crossing farmland")
    assert_no_failure(page)
    assert len(results(page)) == 7
    assert len(card_buttons(page, "like-")) == 7
    assert len(page.image) == 7 + 1  # card thumbnails and the highlighted chip
    assert any("7 results for “a river crossing farmland”" in markdown.value for markdown in page.markdown)
    assert any("ms search" in caption.value for caption in page.caption)
    assert [button.label for button in page.get("download_button")][:3] == ["GeoJSON", "GeoParquet", "CSV"]
    assert len(page.get("deck_gl_json_chart")) == 1


def test_empty_query_shows_no_error_and_no_results(page: AppTest) -> None:
    search(page, "   ")
    assert_no_failure(page)
    assert "query" not in page.session_state
    assert not card_buttons(page, "like-")
    coverage = page.get("deck_gl_json_chart")  # before any query: where the index is
    assert (
        len(coverage) == 1
        and '"id": "extent"' in coverage[0].proto.json
        and '"id": "borders"' in coverage[0].proto.json
    )
    assert any(f"{ARCHIVE_CHIPS:,} chips of this index" in caption.value for caption in page.caption)


def test_image_upload_searches_by_image(page: AppTest, small_archive: Path) -> None:
    buffer = io.BytesIO()
    Image.open(small_archive / "plain.jpg").save(buffer, format="PNG")
    page.file_uploader(key="upload-0").set_value(("query.png", buffer.getvalue(), "image/png"))
    assert len(page.run().image) == 1  # the upload is shown before searching
    upload(page, "query.png", buffer.getvalue())
    assert_no_failure(page)
    assert page.session_state["query"].positives[0].kind == "image"
    assert results(page)[0].path.endswith("plain.jpg")  # the same pixels score highest
    assert page.session_state["response"].hits[0].score == pytest.approx(1.0, abs=1e-3)
    assert any("images like query.png" in markdown.value for markdown in page.markdown)
    search(page, "farmland")  # a text search puts the upload away
    assert page.session_state["upload_key"] == 1 and page.session_state["query"].positives[0].kind == "text"


def test_undecodable_upload_is_one_error_line(page: AppTest) -> None:
    upload(page, "broken.png", b"not an image at all")
    assert not page.exception
    assert len(page.error) == 1
    message = page.error[0].value
    assert "broken.png" in message and "\n" not in message


def test_date_filter_narrows_the_results(page: AppTest) -> None:
    page.slider(key="k").set_value(40)
    search(page, "farmland")
    assert len(results(page)) == ARCHIVE_CHIPS
    page.checkbox(key="use_dates").check().run()
    page.date_input(key="start").set_value(dt.date(2015, 1, 1))
    page.date_input(key="end").set_value(dt.date(2015, 12, 31)).run()
    assert_no_failure(page)
    narrowed = results(page)
    assert 0 < len(narrowed) < ARCHIVE_CHIPS
    assert {str(chip.date) for chip in narrowed} == {"2015-06-01"}


def test_date_filter_spans_the_index_dates_and_counts_undated_chips(page: AppTest) -> None:
    page.slider(key="k").set_value(40)
    search(page, "farmland")
    page.checkbox(key="use_dates").check().run()
    start, end = page.date_input(key="start"), page.date_input(key="end")
    assert (start.min, end.max) == (dt.date(2015, 6, 1), dt.date(2021, 1, 1))  # bounded by the index, not ±10 years
    start.set_value(dt.date(2015, 6, 1))
    end.set_value(dt.date(2020, 12, 31)).run()
    assert_no_failure(page)
    assert {str(chip.date)[:4] for chip in results(page)} == {"2015", "2018", "2019"}
    assert any("1 of 31 chips have no date" in caption.value for caption in page.sidebar.caption)


def test_bbox_filter_narrows_the_results(page: AppTest) -> None:
    page.slider(key="k").set_value(40)
    search(page, "farmland")
    page.checkbox(key="use_bbox").check().run()
    for key, value in {"minx": -75.01, "miny": 39.9, "maxx": -74.98, "maxy": 40.01}.items():
        page.number_input(key=key).set_value(value)
    page.run()
    assert_no_failure(page)
    narrowed = results(page)
    assert 0 < len(narrowed) < ARCHIVE_CHIPS
    assert all("/wgs84/" in result.path for result in narrowed)


def test_bbox_defaults_to_the_index_extent(page: AppTest) -> None:
    page.checkbox(key="use_bbox").check().run()
    west, south = page.number_input(key="minx").value, page.number_input(key="miny").value
    assert -75.01 < west < -74.99 and 39.9 < south < 40.0


def test_bad_bbox_is_one_error_line(page: AppTest) -> None:
    search(page, "farmland")
    page.checkbox(key="use_bbox").check().run()
    page.number_input(key="minx").set_value(10.0)
    page.number_input(key="maxx").set_value(-10.0).run()
    assert not page.exception
    assert len(page.error) == 1
    assert "bbox" in page.error[0].value and "\n" not in page.error[0].value
    assert page.text_input(key="text").value == "farmland"  # the query box stays usable


def test_more_like_this_changes_the_query(page: AppTest) -> None:
    search(page, "farmland")
    second = results(page)[1]
    card_buttons(page, "like-")[1].click().run()
    assert_no_failure(page)
    part = page.session_state["query"].positives[0]
    assert (part.kind, part.value) == ("like", second.id)
    assert results(page)[0].id == second.id  # the chip itself comes first
    assert page.session_state["selected"] == second.id
    assert any("chips like result #2" in markdown.value for markdown in page.markdown)


def test_pin_button_highlights_a_result(page: AppTest) -> None:
    search(page, "farmland")
    third = results(page)[2]
    card_buttons(page, "map-")[2].click().run()
    assert page.selectbox(key="selected").value == third.id
    chart = page.get("deck_gl_json_chart")[0].proto
    assert '"selected": true' in chart.json and str(third.date) in chart.json
    assert list(chart.selection_mode)  # a click on the map highlights a result too (checked in a browser)


def test_no_index_says_how_to_build_one(monkeypatch: pytest.MonkeyPatch) -> None:
    page = open_page(monkeypatch)
    assert_no_failure(page)
    assert any("No index" in info.value for info in page.info)
    assert "rsretrieve index SOURCES --db PATH" in page.code[0].value


def test_index_path_can_be_chosen_in_the_page(monkeypatch: pytest.MonkeyPatch, page_db: Path) -> None:
    page = open_page(monkeypatch)
    page.text_input(key="db").input(str(page_db)).run()
    assert_no_failure(page)
    search(page, "farmland")
    assert len(results(page)) == 12


def test_a_folder_that_is_not_an_index_is_one_error_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    page = open_page(monkeypatch, "--db", tmp_path)
    assert not page.exception
    assert len(page.error) == 1
    assert "is not an rsretrieve index" in page.error[0].value


def test_an_empty_index_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, page_db: Path) -> None:
    empty = dataclasses.replace(Manifest.read(page_db), count=0, files=0, lance_version=0, index_file=None)
    empty.write(tmp_path)
    page = open_page(monkeypatch, "--db", tmp_path)
    assert not page.exception
    assert len(page.error) == 1
    assert "holds no chips" in page.error[0].value


def test_missing_source_file_shows_a_placeholder(page: AppTest, page_db: Path, tmp_path: Path) -> None:
    """Thumbnails are cut from the sources: a moved source leaves a card without an image, not a failure."""
    from rsretrieve import thumbnails

    search(page, "farmland")
    first = results(page)[0]
    assert thumbnails.chip_png(first) is not None
    assert thumbnails.chip_png(dataclasses.replace(first, path=str(tmp_path / "gone.tif"))) is None
    assert np.asarray(Image.open(io.BytesIO(thumbnails.chip_png(first)))).ndim == 3
