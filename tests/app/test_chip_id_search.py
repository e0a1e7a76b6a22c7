"""Search by chip id on the page ("more like this" from a typed or pasted id), in process and through
``rsretrieve serve``, and on an index of imported embeddings, where it is the only query input."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.test_search_page import assert_no_failure, open_page, results, search

VECTOR_ONLY = "Text and image search are off"


def search_chip(page: AppTest, chip_id: str) -> AppTest:
    """Type (or paste) a chip id and press its Search button."""
    page.text_input(key="chip_id").input(chip_id)
    page.button(key="chip_search").click()
    return page.run()


def captions(page: AppTest) -> str:
    return " ".join(caption.value for caption in page.caption)


def assert_like(page: AppTest, chip_id: str) -> None:
    """The page searched for chips like ``chip_id``: it comes first, and the query says so."""
    assert_no_failure(page)
    part = page.session_state["query"].positives[0]
    assert (part.kind, part.value) == ("like", chip_id)
    assert results(page)[0].id == chip_id
    heading = f"chips like chip {chip_id if len(chip_id) <= 20 else chip_id[:13] + '…' + chip_id[-6:]}"
    assert any(heading in markdown.value for markdown in page.markdown)  # a long id shortened


def test_a_typed_chip_id_finds_more_like_it(monkeypatch: pytest.MonkeyPatch, page_db: Path) -> None:
    page = open_page(monkeypatch, "--db", page_db)
    assert VECTOR_ONLY not in captions(page) and page.text_input(key="text")  # a model index: every input
    search(page, "farmland")
    fourth = results(page)[3].id
    count = len(page.image)
    search_chip(page, f"  '{fourth}'\n")  # pasted with quotes and blanks
    assert_like(page, fourth)
    assert len(page.image) == count + 1  # the chip's thumbnail above the results
    search_chip(page, "no-such-chip")
    assert not page.exception and len(page.error) == 1
    assert page.error[0].value.startswith("no chip with id 'no-such-chip'") and "\n" not in page.error[0].value


def test_an_imported_index_offers_the_chip_id_box_alone(monkeypatch: pytest.MonkeyPatch, imported_db: Path) -> None:
    page = open_page(monkeypatch, "--db", imported_db)
    assert_no_failure(page)
    assert VECTOR_ONLY in captions(page)
    assert "text" not in [box.key for box in page.text_input] and not page.get("file_uploader")
    from rsretrieve.store import ChipStore

    chip_id = ChipStore(imported_db).chips([11])[0].id
    assert_like(search_chip(page, chip_id), chip_id)
    assert len(results(page)) == 12
    assert "imported embedding: no image" in captions(page)  # cards without pixels, and no failure


def test_chip_ids_through_the_service(monkeypatch: pytest.MonkeyPatch, service: tuple, imported_db: Path) -> None:
    server, key_file = service
    page = open_page(monkeypatch, "--server", server.url, "--api-key-file", key_file, "--index", "imported")
    assert_no_failure(page)
    assert VECTOR_ONLY in captions(page) and "text" not in [box.key for box in page.text_input]
    from rsretrieve.store import ChipStore

    chip_id = ChipStore(imported_db).chips([3])[0].id
    assert_like(search_chip(page, chip_id), chip_id)
    search_chip(page, "no-such-chip")
    assert not page.exception and len(page.error) == 1
    assert "answered 400: no chip with id 'no-such-chip'" in page.error[0].value
    fields = open_page(monkeypatch, "--server", server.url, "--api-key-file", key_file)  # the default, with a model
    assert VECTOR_ONLY not in captions(fields)
    search(fields, "farmland")
    second = results(fields)[1].id
    assert_like(search_chip(fields, second), second)
