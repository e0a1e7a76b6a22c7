"""The page's two backends on a real index: in process, and ``rsretrieve serve`` over HTTP (a real server).

The label and classify tests of ``ServiceBackend`` speak the contract of /work/SERVICE_ANALYST_API.md
(``/v1/labels``, ``/v1/labels/remove``, ``/v1/classify``, ``labels`` in ``/v1/search``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.backend import BackendError, LocalBackend, ServiceBackend, filter_fields, part_fields
from rsretrieve.query import Filters, Part, Query
from tests.rsretrieve.service.test_server import ENV, Server

PAGE = Path(__file__).parents[2] / "app" / "search_page.py"
TEXT = Query((Part("text", "farmland"),))


@pytest.fixture(scope="module")
def remote(service: tuple[Server, Path]) -> ServiceBackend:
    server, key_file = service
    return ServiceBackend.connect(server.url, key_file)


@pytest.fixture(scope="module")
def local(served_db: Path) -> LocalBackend:
    return LocalBackend(served_db)


def test_local_search_gives_hits_and_timings(local: LocalBackend) -> None:
    found = local.search(TEXT, 5, Filters())
    assert len(found.hits) == 5 and found.path and found.search_ms > 0
    assert [hit.score for hit in found.hits] == sorted((hit.score for hit in found.hits), reverse=True)
    facts = local.facts()
    assert (facts.chips, facts.model, facts.random_weights) == (31, "tiny-test", True)
    assert local.chip_png(found.hits[0].chip, 32).startswith(b"\x89PNG")


def test_service_search_matches_the_local_search(local: LocalBackend, remote: ServiceBackend) -> None:
    filters = Filters(bbox=(-75.01, 39.9, -74.98, 40.01))
    here, there = local.search(TEXT, 8, filters), remote.search(TEXT, 8, filters)
    assert [hit.chip for hit in there.hits] == [hit.chip for hit in here.hits]  # records round-trip into Chips
    assert [hit.score for hit in there.hits] == pytest.approx([hit.score for hit in here.hits], abs=1e-5)
    facts = remote.facts()
    assert (facts.chips, facts.model, facts.name.split(" @ ")[0]) == (31, "tiny-test", "fields")
    assert remote.extent() is None  # not served: the page offers unbounded inputs


def test_service_chip_image_and_query_image(local: LocalBackend, remote: ServiceBackend, small_archive: Path) -> None:
    query = Query((Part("image", (small_archive / "plain.jpg").read_bytes(), label="plain.jpg"),))
    top = remote.search(query, 1, Filters()).hits[0]
    assert top.chip.path.endswith("plain.jpg") and top.score == pytest.approx(1.0, abs=1e-3)
    png = remote.chip_png(top.chip, 48)
    assert png.startswith(b"\x89PNG") and png == local.chip_png(top.chip, 48)


def test_service_errors_are_one_line(service: tuple[Server, Path], remote: ServiceBackend) -> None:
    server, _ = service
    with pytest.raises(BackendError, match="answered 401"):
        ServiceBackend(server.url, key=None)
    with pytest.raises(BackendError, match="cannot reach"):
        ServiceBackend("http://127.0.0.1:9", key=None)
    with pytest.raises(BackendError, match="http:// or https://"):
        ServiceBackend("ftp://example.org")
    with pytest.raises(BackendError, match="answered 400") as error:
        remote.search(TEXT, 100_000, Filters())
    assert "\n" not in str(error.value)


def test_query_parts_become_service_fields() -> None:
    query = Query.build(text="a", images=[b"\x89PNG"], like=["c1", "c2"], not_text="cloud", weights={"like": 2.0})
    assert part_fields(query) == {
        "text": ["a"], "image": ["iVBORw=="], "like": ["c1", "c2"], "not_text": ["cloud"], "weights": {"like": 2.0},
    }  # fmt: skip


def test_filters_become_service_fields() -> None:
    import datetime as dt

    filters = Filters(bbox=(1.0, 2.0, 3.0, 4.0), start=dt.date(2020, 1, 1))
    assert filter_fields(filters) == {"bbox": [1.0, 2.0, 3.0, 4.0], "start": "2020-01-01"}
    within = filter_fields(filters, bbox=False)["within"]  # /v1/classify has no bbox: the same area as a polygon
    assert within["coordinates"][0][2] == [3.0, 4.0]


def test_local_labels_refine_and_classify(local: LocalBackend) -> None:
    hits = local.search(TEXT, 12, Filters()).hits
    ids = [hit.chip.id for hit in hits]
    added = local.add_labels("field", ids[:3], ids[3:5], note="page")
    assert added["classes"]["field"] == {"positive": 3, "negative": 2}
    listing = local.labels("field")
    assert {label["id"]: label["label"] for label in listing["labels"]} == {
        **dict.fromkeys(ids[:3], "positive"), **dict.fromkeys(ids[3:5], "negative"),
    }  # fmt: skip
    refined = local.search(None, 5, Filters(), labels="field")
    assert refined.hits[0].chip.id in ids[:3]  # a labelled positive is nearest its own class's query
    classified = local.classify("field", 0.5, Filters(), limit=5)
    assert classified.summary["labels"]["positive"] == 3 and len(classified.hits) <= 5
    assert all(hit.score >= 0.5 for hit in classified.hits)
    assert local.remove_labels("field", ids[:1])["classes"]["field"]["positive"] == 2
    assert local.remove_labels("field")["removed"] == 4
    with pytest.raises(Exception, match="unknown chip id"):
        local.add_labels("field", ["nope"], [])
    with pytest.raises(Exception, match="bad class name"):
        local.add_labels("?!", ids[:1], [])


# --- the analyst endpoints of the service (SERVICE_ANALYST_API.md) -----------------------------------------------


def test_service_labels_round_trip(remote: ServiceBackend, local: LocalBackend) -> None:
    ids = [hit.chip.id for hit in remote.search(TEXT, 6, Filters()).hits]
    answer = remote.add_labels("remote-field", ids[:2], ids[2:3], note="via the page")
    assert answer["classes"]["remote-field"] == {"positive": 2, "negative": 1}
    listing = remote.labels("remote-field")
    assert {label["id"] for label in listing["labels"]} == set(ids[:3])
    assert local.labels("remote-field")["classes"]["remote-field"] == {"positive": 2, "negative": 1}  # same folder
    assert remote.remove_labels("remote-field", ids[:1])["removed"] == 1
    assert remote.remove_labels("remote-field")["removed"] == 2
    assert "remote-field" not in remote.labels()["classes"]
    with pytest.raises(BackendError, match="answered 404"):
        remote.add_labels("remote-field", ["no-such-chip"], [])


def test_service_refine_and_classify_match_local(remote: ServiceBackend, local: LocalBackend) -> None:
    ids = [hit.chip.id for hit in remote.search(TEXT, 12, Filters()).hits]
    remote.add_labels("remote-class", ids[:3], ids[3:6])
    try:
        there = remote.search(None, 5, Filters(), labels="remote-class")
        here = local.search(None, 5, Filters(), labels="remote-class")
        assert [hit.chip.id for hit in there.hits] == [hit.chip.id for hit in here.hits]
        found = remote.classify("remote-class", 0.5, Filters(), limit=4)
        expected = local.classify("remote-class", 0.5, Filters(), limit=4)
        assert found.total == expected.total and len(found.hits) == min(4, expected.total)
        assert [hit.chip.id for hit in found.hits] == [hit.chip.id for hit in expected.hits]
        with pytest.raises(BackendError, match="answered 400"):
            remote.classify("no-such-class", 0.5, Filters(), limit=4)
    finally:
        remote.remove_labels("remote-class")


# --- the page as a pure client -------------------------------------------------------------------------------------

PURE_CLIENT = """
import json, sys
from streamlit.testing.v1 import AppTest
sys.argv = [sys.argv[1], "--server", sys.argv[2], "--api-key-file", sys.argv[3]]
page = AppTest.from_file(sys.argv[0], default_timeout=60).run()
page.text_input(key="text").input("farmland")
next(button for button in page.button if button.label == "Search").click()
page.run()
heavy = sorted(name for name in ("torch", "faiss", "lancedb", "open_clip") if name in sys.modules)
print(json.dumps({
    "heavy": heavy, "errors": [error.value for error in page.error], "exceptions": len(page.exception),
    "results": len(page.session_state["response"].hits), "images": len(page.image),
}))
"""


def test_the_page_with_server_imports_no_model_or_index_library(service: tuple[Server, Path]) -> None:
    server, key_file = service
    run = subprocess.run(
        [sys.executable, "-c", PURE_CLIENT, str(PAGE), server.url, str(key_file)],
        capture_output=True, text=True, timeout=120, env=ENV, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report == {"heavy": [], "errors": [], "exceptions": 0, "results": 12, "images": 12 + 1}


def test_both_backends_tell_a_vector_only_index_and_search_it_by_chip_id(
    service: tuple[Server, Path], imported_db: Path, remote: ServiceBackend, local: LocalBackend
) -> None:
    server, key_file = service
    there, here = ServiceBackend.connect(server.url, key_file, "imported"), LocalBackend(imported_db)
    assert there.facts().vector_only and here.facts().vector_only
    assert not remote.facts().vector_only and not local.facts().vector_only
    chip_id = here.searcher.current().chips([7])[0].id
    like = Query((Part("like", chip_id),))
    ids = [hit.chip.id for hit in here.search(like, 5, Filters()).hits]
    assert ids[0] == chip_id and [hit.chip.id for hit in there.search(like, 5, Filters()).hits] == ids
    with pytest.raises(BackendError, match="answered 400: no chip with id 'nope'"):
        there.search(Query((Part("like", "nope"),)), 5, Filters())
