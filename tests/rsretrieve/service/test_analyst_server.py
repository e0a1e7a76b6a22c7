"""The analyst-loop endpoints of the real service (``rsretrieve serve`` in a subprocess, API key on) over a grid index
with a planted class (``analyst_fixtures``): labels, search with labels / within / pages, classify, bad input."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import shapely

from rsretrieve.labels import LabelStore
from tests.rsretrieve.analyst_fixtures import Grid, square, write_grid
from tests.rsretrieve.service.test_server import KEY, RANDOM, Server, local, rsretrieve

AUTH = {"Authorization": f"Bearer {KEY}"}
AREA = square(10.05, 50.02, 10.25, 50.15)


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Grid:
    return write_grid(tmp_path_factory.mktemp("analyst") / "grid.lance", columns=30, rows=20)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, grid: Grid) -> Iterator[Server]:
    logs = tmp_path_factory.mktemp("analyst-logs")
    key_file = logs / "key.txt"
    key_file.write_text(KEY)
    running = Server(logs / "server.log", "--db", f"grid={grid.db}", "--api-key-file", key_file, *RANDOM)
    try:
        yield running.wait_ready()
    finally:
        output = running.stop()
        assert "Traceback" not in output, output


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120, headers=AUTH) as http:
        yield http


@pytest.fixture
def fresh_labels(grid: Grid) -> Iterator[None]:
    LabelStore(grid.db).path.unlink(missing_ok=True)
    yield
    LabelStore(grid.db).path.unlink(missing_ok=True)


def error_of(response: httpx.Response, status: int, fragment: str) -> str:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert fragment in message and "\n" not in message and "Traceback" not in response.text
    return message


def test_labels_add_list_replace_remove(client: httpx.Client, grid: Grid, fresh_labels: None) -> None:
    positives, negatives = grid.ids(grid.planted)[:4], grid.ids(~grid.planted)[:3]
    added = client.post("/v1/labels", json={"class": "farm", "positive": positives, "negative": negatives, "note": "a"})
    assert added.json() == {"added": 7, "classes": {"farm": {"positive": 4, "negative": 3}}}
    again = client.post("/v1/labels", json={"class": "farm", "negative": positives[:1]}).json()  # replaces its label
    assert again["classes"]["farm"] == {"positive": 3, "negative": 4}
    client.post("/v1/labels", json={"class": "road", "positive": negatives[:2]})
    listed = client.get("/v1/labels", params={"class": "farm"}).json()
    assert listed["index"] == "grid" and set(listed["classes"]) == {"farm", "road"}
    assert {row["id"] for row in listed["labels"]} == {*positives, *negatives} and len(listed["labels"]) == 7
    assert {row["class"] for row in listed["labels"]} == {"farm"} and set(listed["labels"][0]) >= {"label", "time"}
    assert len(client.get("/v1/labels").json()["labels"]) == 9
    removed = client.post("/v1/labels/remove", json={"class": "farm", "ids": negatives[:2]}).json()
    assert removed == {
        "removed": 2,
        "classes": {"farm": {"positive": 3, "negative": 2}, "road": {"positive": 2, "negative": 0}},
    }
    assert client.post("/v1/labels/remove", json={"class": "road"}).json()["removed"] == 2
    assert LabelStore(grid.db).classes() == {"farm": {"positive": 3, "negative": 2}}  # what the CLI reads


def test_label_export_and_import(client: httpx.Client, grid: Grid, fresh_labels: None, tmp_path: Path) -> None:
    import geopandas

    positives = grid.ids(grid.planted)[:5]
    client.post("/v1/labels", json={"class": "farm", "positive": positives, "negative": grid.ids(~grid.planted)[:2]})
    as_geojson = client.get("/v1/labels/export", params={"class": "farm"})
    assert as_geojson.headers["content-type"].startswith("application/geo+json")
    features = as_geojson.json()["features"]
    assert len(features) == 7 and {f["properties"]["label"] for f in features} == {"positive", "negative"}
    as_parquet = client.get("/v1/labels/export", params={"class": "farm", "format": "geoparquet"})
    assert as_parquet.headers["content-type"] == "application/vnd.apache.parquet"
    frame = geopandas.read_parquet(io.BytesIO(as_parquet.content))
    assert sorted(frame["id"]) == sorted(f["id"] for f in features) and frame.crs.to_string() == "OGC:CRS84"

    body = client.post("/v1/labels/import", params={"class": "copy"}, content=as_geojson.content).json()
    assert body["added"] == 7 and body["classes"]["copy"] == {"positive": 5, "negative": 2}
    upload = client.post("/v1/labels/import", params={"class": "parquet"},
                         files={"file": ("farms.parquet", as_parquet.content)}).json()  # fmt: skip
    assert upload["classes"]["parquet"] == {"positive": 5, "negative": 2}
    drawn = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": square(10.0, 50.0, 10.02, 50.01), "properties": {"label": "no"}}]}  # fmt: skip
    hand = client.post("/v1/labels/import", params={"class": "drawn"}, json=drawn).json()
    assert hand["classes"]["drawn"] == {"positive": 0, "negative": 2}  # the two chips under the polygon


def test_concurrent_label_writes_all_land(client: httpx.Client, grid: Grid, fresh_labels: None) -> None:
    ids = [chip.id for chip in grid.chips[:24]]
    statuses: list[int] = []

    def label(chip_id: str) -> None:
        statuses.append(client.post("/v1/labels", json={"class": "busy", "positive": [chip_id]}).status_code)

    threads = [threading.Thread(target=label, args=(chip_id,)) for chip_id in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * len(ids)
    assert client.get("/v1/labels", params={"class": "busy"}).json()["classes"]["busy"]["positive"] == len(ids)


@pytest.mark.parametrize(
    ("method", "route", "kwargs", "status", "fragment"),
    [
        ("POST", "/v1/labels", {"json": {"class": "farm", "positive": ["ffffffffffffffff", "0badc0de"]}}, 404,
         "2 unknown chip ids in index 'grid': ffffffffffffffff, 0badc0de"),
        ("POST", "/v1/labels", {"json": {"class": "bad?name", "positive": ["0000000000000001"]}}, 400, "class name"),
        ("POST", "/v1/labels", {"json": {"class": "farm", "positive": ["0000000000000001"],
                                         "negative": ["0000000000000001"]}}, 400, "both positive and negative"),
        ("POST", "/v1/labels", {"json": {"class": "farm"}}, 400, "give chip ids"),
        ("POST", "/v1/labels", {"json": {"positive": ["0000000000000001"]}}, 400, "class"),
        ("POST", "/v1/labels", {"content": b"{oops"}, 400, "not valid JSON"),
        ("POST", "/v1/labels", {"json": {"class": "farm", "positive": ["1"], "index": "nope"}}, 404, "no index"),
        ("POST", "/v1/labels/remove", {"json": {"class": "a b c?"}}, 400, "class name"),
        ("GET", "/v1/labels", {"params": {"class": "!"}}, 400, "class name"),
        ("GET", "/v1/labels/export", {"params": {"class": "nothing"}}, 400, "no labels for class 'nothing'"),
        ("GET", "/v1/labels/export", {"params": {"class": "farm", "format": "shp"}}, 400, "geojson or geoparquet"),
        ("GET", "/v1/labels/export", {}, 400, "class"),
        ("POST", "/v1/labels/import", {"params": {"class": "farm"}, "content": b"not json"}, 400, "not GeoJSON"),
        ("POST", "/v1/labels/import", {"params": {"class": "farm"}, "json": {"type": "FeatureCollection",
                                                                             "features": []}}, 400, "no features"),
        ("POST", "/v1/labels/import", {"json": square(10, 50, 10.1, 50.1)}, 400, "no 'class' property"),
        ("POST", "/v1/labels/import", {"params": {"class": "farm", "label": "maybe"}, "json": square(10, 50, 11, 51)},
         400, "neither positive nor negative"),
        ("POST", "/v1/labels/import", {"params": {"class": "farm"}, "files": {"file": ("a.shp", b"x")}}, 400,
         ".geojson"),
        ("POST", "/v1/labels/import", {"params": {"class": "farm"}, "json": square(500, 50, 501, 51)}, 400, "WGS84"),
        ("POST", "/v1/classify", {"json": {"class": "nothing"}}, 400, "no labels for class"),
        ("POST", "/v1/classify", {"json": {"class": "farm", "threshold": 1.5}}, 400, "threshold"),
        ("POST", "/v1/classify", {"json": {"class": "farm", "limit": 0}}, 400, "limit"),
        ("POST", "/v1/classify", {"json": {"class": "farm", "within": {"type": "Point", "coordinates": [10, 50]}}},
         400, "Polygon or MultiPolygon"),
        ("POST", "/v1/search", {"json": {"text": "a", "within": {"type": "LineString"}}}, 400, "GeoJSON"),
        ("POST", "/v1/search", {"json": {"text": "a", "labels": "nothing"}}, 400, "no labels for class 'nothing'"),
        ("POST", "/v1/search", {"json": {"text": "a", "offset": -1}}, 400, "offset"),
        ("POST", "/v1/search", {"json": {"text": "a", "offset": 99_995, "k": 10}}, 400, "offset + k = 100,005"),
        ("POST", "/v1/search", {"json": {"text": "a", "min_score": "high"}}, 400, "min_score"),
    ],
)  # fmt: skip
def test_bad_requests_are_one_line_4xx(
    client: httpx.Client, fresh_labels: None, method: str, route: str, kwargs: dict, status: int, fragment: str
) -> None:
    error_of(client.request(method, route, **kwargs), status, fragment)


def test_oversize_import_and_auth(client: httpx.Client, server: Server) -> None:
    huge = client.post("/v1/labels/import", params={"class": "farm"}, content=b" " * (21 * 1024 * 1024))
    assert huge.status_code == 413 and "limit" in huge.json()["error"]
    with httpx.Client(base_url=server.url, timeout=60) as anonymous:
        routes = (("GET", "/v1/labels"), ("POST", "/v1/labels"), ("POST", "/v1/labels/remove"),
                  ("GET", "/v1/labels/export"), ("POST", "/v1/labels/import"), ("POST", "/v1/classify"))  # fmt: skip
        for method, route in routes:
            error_of(anonymous.request(method, route, json={"class": "farm"}), 401, "API key")
    assert client.get("/healthz").status_code == 200


def ids_and_scores(records: list[dict]) -> list[tuple[str, float]]:
    return [(record["id"], record["score"]) for record in records]


def test_search_with_labels_and_within_gives_the_cli_results(
    client: httpx.Client, server: Server, grid: Grid, fresh_labels: None, tmp_path: Path
) -> None:
    positives, negatives = grid.ids(grid.planted)[:3], grid.ids(~grid.planted)[:2]
    client.post("/v1/labels", json={"class": "farm", "positive": positives, "negative": negatives})
    area = tmp_path / "area.geojson"
    area.write_text(json.dumps({"type": "Feature", "geometry": AREA, "properties": {}}))
    like = grid.chips[100].id
    cli = json.loads(local("query", "--like", like, "--labels", "farm", "--within", area, "--db", grid.db,
                           "-k", "40", "--json", *RANDOM))  # fmt: skip
    served = client.post("/v1/search", json={"like": like, "labels": "farm", "within": AREA, "k": 40}).json()
    assert ids_and_scores(served["results"]) == ids_and_scores(cli) and len(cli) == 40
    inside = {chip.id for chip in grid.chips if shapely.intersects(shapely.geometry.shape(AREA),
                                                                   shapely.geometry.shape(chip.footprint))}  # fmt: skip
    assert {record["id"] for record in served["results"]} <= inside
    form = {"like": like, "labels": "farm", "within": json.dumps(AREA), "k": "40"}
    multipart = client.post("/v1/search", files={name: (None, value) for name, value in form.items()})
    assert ids_and_scores(multipart.json()["results"]) == ids_and_scores(cli)  # as an upload with an image sends it
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    remote = rsretrieve("query", "--like", like, "--labels", "farm", "--within", area, "-k", "40", "--json",
                        "--server", server.url, "--api-key-file", key_file)  # fmt: skip
    assert remote.returncode == 0 and json.loads(remote.stdout) == cli, remote.stderr
    plain = client.post("/v1/search", json={"like": like, "k": 40, "within": AREA}).json()
    assert ids_and_scores(plain["results"]) != ids_and_scores(cli)  # the labels changed the query
    client.post("/v1/labels", json={"class": "farm", "positive": grid.ids(grid.planted)[3:9]})
    refined = client.post("/v1/search", json={"like": like, "labels": "farm", "within": AREA, "k": 40}).json()
    assert ids_and_scores(refined["results"]) != ids_and_scores(served["results"])  # new labels seen at once


def test_pages_are_ranks_of_one_big_k(client: httpx.Client, grid: Grid) -> None:
    query = {"like": grid.chips[7].id, "not_text": "clouds"}
    whole = client.post("/v1/search", json={**query, "k": 95}).json()
    assert whole["offset"] == 0 and whole["next_offset"] == 95
    paged, offset = [], 0
    while offset is not None and offset < 95:
        page = client.post("/v1/search", json={**query, "k": min(20, 95 - offset), "offset": offset}).json()
        assert page["offset"] == offset
        paged += page["results"]
        offset = page["next_offset"]
    assert ids_and_scores(paged) == ids_and_scores(whole["results"])
    cut = whole["results"][60]["score"]
    above = client.post("/v1/search", json={**query, "k": 50, "offset": 40, "min_score": cut}).json()
    assert ids_and_scores(above["results"]) == ids_and_scores(whole["results"][40:61]) and above["next_offset"] is None
    last = client.post("/v1/search", json={**query, "k": 10, "offset": len(grid.chips) - 4}).json()
    assert len(last["results"]) == 4 and last["next_offset"] is None
    cli = json.loads(local("query", "--like", grid.chips[7].id, "--not-text", "clouds", "--min-score", cut,
                           "--db", grid.db, "-k", "95", "--json", *RANDOM))  # fmt: skip
    assert ids_and_scores(cli) == ids_and_scores(whole["results"][:61])


def test_classify_pages_sites_and_geojson(client: httpx.Client, grid: Grid, fresh_labels: None, capsys) -> None:
    from tests.rsretrieve.analyst_fixtures import run_cli

    rng = np.random.default_rng(1)
    positives = list(rng.choice(grid.ids(grid.planted), 30, replace=False))
    negatives = list(rng.choice(grid.ids(~grid.planted), 30, replace=False))
    assert client.post("/v1/labels", json={"class": "farm", "positive": positives[:1]}).status_code == 200
    error_of(client.post("/v1/classify", json={"class": "farm"}), 400, "label at least 2 chips")
    client.post("/v1/labels", json={"class": "farm", "positive": positives, "negative": negatives})
    first = client.post("/v1/classify", json={"class": "farm", "limit": 25}).json()
    cli = json.loads(run_cli(capsys, "classify", "--db", grid.db, "--class", "farm", "--json").stdout)
    summary = first["summary"]
    assert summary["found"] == cli["found"] == first["total"] and summary["cv"] == cli["cv"]
    assert summary["cv"]["precision"] > 0.5 and summary["cv"]["recall"] > 0.5  # reported, cross-validated by area
    assert first["index"] == "grid" and first["offset"] == 0 and first["next_offset"] == 25
    records = first["results"]
    assert len(records) == 25 and [r["score"] for r in records] == sorted((r["score"] for r in records), reverse=True)
    assert all(r["score"] >= 0.8 and r["footprint"]["type"] == "Polygon" for r in records)
    assert {r["label"] for r in records} <= {"positive", "negative", None}
    found, offset = [], 0
    while offset is not None:
        page = client.post("/v1/classify", json={"class": "farm", "limit": 40, "offset": offset}).json()
        found += page["results"]
        offset = page["next_offset"]
    assert len(found) == first["total"] and ids_and_scores(found[:25]) == ids_and_scores(records)
    planted = {grid.chips[i].id for i in np.flatnonzero(grid.planted)}
    assert sum(r["id"] in planted for r in found) / len(found) > 0.6  # mostly the planted class
    sites = client.post("/v1/classify", json={"class": "farm", "limit": 1, "polygons": True}).json()["sites"]
    assert sites["type"] == "FeatureCollection" and len(sites["features"]) >= 4
    assert {"chips", "area_m2", "mean_score", "max_score", "class"} <= set(sites["features"][0]["properties"])
    within = client.post("/v1/classify", json={"class": "farm", "within": AREA, "format": "geojson"})
    assert within.headers["content-type"].startswith("application/geo+json")
    collection = within.json()
    assert collection["type"] == "FeatureCollection" and 0 < collection["total"] < first["total"]
    assert all(feature["properties"]["bbox"][2] >= 10.05 for feature in collection["features"])
