"""STAC sources (rsretrieve/raster/stac.py, ``index --stac``): a static catalogue written with pystac whose items
point at COGs on the loopback S3 and HTTP servers, a STAC API stand-in with two pages, and appending chips that
carry item ids to an index written before those columns existed."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pyarrow as pa
import pytest

from indexer.build import ChipOptions, RunOptions, index_archive
from rsretrieve.chips import chips_from_table
from rsretrieve.hits import Hit
from rsretrieve.raster.stac import StacError, stac_scenes
from rsretrieve.render import as_table
from rsretrieve.store import ChipStore

ROOT = Path(__file__).parents[2]
TINY = ["--model", "tiny-test", "--random-weights", "--quiet", "--workers", "0", "--chip-size", "64"]
PERU = [-75.0, -9.0, -74.0, -8.0]


def make_item(item_id: str, href: str | None, when: dt.datetime | None, collection: str = "landsat-peru", **extra):
    """A pystac Item over the Landsat scenes' area with a ``visual`` COG asset at ``href`` (none when None)."""
    import pystac

    props = {"start_datetime": extra.pop("start").isoformat()} if "start" in extra else {}
    if "start_datetime" in props:
        props["end_datetime"] = props["start_datetime"]
    item = pystac.Item(
        item_id, {"type": "Polygon", "coordinates": [[[-75, -9], [-74, -9], [-74, -8], [-75, -8], [-75, -9]]]},
        PERU, when, props, collection=collection,
    )  # fmt: skip
    if href is not None:
        item.add_asset("visual", pystac.Asset(href, media_type=pystac.MediaType.COG, roles=["visual"]))
    item.add_asset(
        "thumbnail", pystac.Asset("https://example.org/thumb.png", media_type="image/png", roles=["thumbnail"])
    )
    return item


def write_catalog(folder: Path, http_url: str) -> Path:
    """A static catalogue: collection landsat-peru with three items (s3, s3, http) and one without the asset."""
    import pystac

    catalog = pystac.Catalog("archive", "test archive")
    extent = pystac.Extent(
        pystac.SpatialExtent([PERU]), pystac.TemporalExtent([[dt.datetime(2001, 1, 1, tzinfo=dt.UTC), None]])
    )
    collection = pystac.Collection("landsat-peru", "Landsat over Peru", extent)
    catalog.add_child(collection)
    collection.add_item(
        make_item("LC-2001", "s3://archive/scenes/1985.tif", dt.datetime(2001, 2, 3, 23, tzinfo=dt.UTC))
    )
    collection.add_item(
        make_item("LC-2002", "s3://archive/scenes/1990.tif", None, start=dt.datetime(2002, 4, 5, tzinfo=dt.UTC))
    )
    collection.add_item(make_item("LC-2003", f"{http_url}/1990.tif", dt.datetime(2003, 6, 7, tzinfo=dt.UTC)))
    collection.add_item(make_item("LC-no-visual", None, dt.datetime(2004, 1, 1, tzinfo=dt.UTC)))
    catalog.normalize_hrefs(str(folder / "stac"))
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    return folder / "stac" / "catalog.json"


def test_static_catalogue_items_become_scenes(tmp_path: Path, http_server) -> None:
    catalog = write_catalog(tmp_path, http_server.url)
    scenes = stac_scenes(str(catalog), "visual")
    by_id = {scene.item_id: scene for scene in scenes}
    assert set(by_id) == {"LC-2001", "LC-2002", "LC-2003", "LC-no-visual"}
    assert by_id["LC-2001"].path == "s3://archive/scenes/1985.tif" and by_id["LC-2001"].date == dt.date(2001, 2, 3)
    assert by_id["LC-2002"].date == dt.date(2002, 4, 5)  # start_datetime when datetime is null
    assert all(scene.collection == "landsat-peru" for scene in scenes)
    missing = by_id["LC-no-visual"]
    assert missing.error == "no asset 'visual' (available: thumbnail)"
    assert missing.path == "STAC item landsat-peru/LC-no-visual"
    by_role = stac_scenes(str(catalog))  # no --asset: the visual role
    assert [s.path for s in by_role if s.error is None] == [s.path for s in scenes if s.error is None]
    assert [
        s.item_id for s in stac_scenes(str(catalog), "visual", start=dt.date(2002, 1, 1), end=dt.date(2002, 12, 31))
    ] == ["LC-2002"]
    assert stac_scenes(str(catalog), "visual", bbox=(-74.5, -8.5, -74.2, -8.2))  # intersects
    with pytest.raises(StacError, match="no STAC items match"):
        stac_scenes(str(catalog), "visual", collections=["sentinel-2-l2a"])
    with pytest.raises(StacError, match=r"^.*missing\.json: cannot read the STAC catalogue"):
        stac_scenes(str(tmp_path / "missing.json"))


def _cli(*argv: str | Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "rsretrieve.cli", *map(str, argv)]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=180)


def test_index_stac_catalogue_from_the_cli(tmp_path: Path, s3_server, http_server, capsys) -> None:
    catalog = write_catalog(tmp_path, http_server.url)
    env = {**os.environ, **s3_server.env(), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    db = tmp_path / "archive.lance"
    done = _cli("index", "--stac", catalog, "--asset", "visual", "--db", db, *TINY, "--json", env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["new_chips"] == 3 * 66 and summary["files_failed"] == 1
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: skipped")]
    assert warnings == [
        "warning: skipped STAC item landsat-peru/LC-no-visual: no asset 'visual' (available: thumbnail)"
    ]
    store = ChipStore(db)
    chips = store.chips(np.arange(len(store)))
    dates = {(c.item_id, c.collection, c.date, c.path) for c in chips}
    assert dates == {
        ("LC-2001", "landsat-peru", dt.date(2001, 2, 3), "s3://archive/scenes/1985.tif"),  # not 1985 (its name)
        ("LC-2002", "landsat-peru", dt.date(2002, 4, 5), "s3://archive/scenes/1990.tif"),
        ("LC-2003", "landsat-peru", dt.date(2003, 6, 7), f"{http_server.url}/1990.tif"),
    }
    from rsretrieve.cli import main

    assert main(["query", "fields", "--db", str(db), "--json", "-k", "3", "--start", "2003-01-01"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert {(r["item_id"], r["collection"], r["date"]) for r in records} == {("LC-2003", "landsat-peru", "2003-06-07")}
    assert as_table([Hit(0.5, chips[0])]).splitlines()[1].split()[5].startswith("landsat-peru/LC-")  # for people


def test_index_stac_errors_are_one_line(tmp_path: Path, tiny_model, s3_env, http_server, capsys) -> None:
    from indexer.build import BadSourceError
    from rsretrieve.cli import main

    catalog = write_catalog(tmp_path, http_server.url)
    scenes = stac_scenes(str(catalog), "visual")
    with pytest.raises(BadSourceError, match=r"^STAC item landsat-peru/LC-no-visual: no asset 'visual'"):
        options, run = ChipOptions(chip_size=64), RunOptions(workers=0, strict=True)
        index_archive(scenes[::-1], tmp_path / "strict", tiny_model, options, run, show_progress=False)
    for argv, message in (
        (["--stac", str(catalog), "--db", "gs://archive/index.lance"], "an index on object storage must be on s3://"),
        (["--db", str(tmp_path / "x"), "--asset", "visual", str(tmp_path)], "--asset applies to --stac sources only"),
        (["--db", str(tmp_path / "x")], "give sources to index"),
        (["--stac", str(tmp_path / "none.json"), "--db", str(tmp_path / "x")], "none.json: cannot read the STAC"),
    ):
        assert main(["index", *argv]) == 1
        assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_item_collection_file_with_local_hrefs(tmp_path: Path, cog_folder: Path) -> None:
    """A FeatureCollection of items whose assets are local files: paths made absolute as find_sources makes them."""
    items = [make_item("local-1", str(cog_folder / "1985.tif"), dt.datetime(2010, 5, 6, tzinfo=dt.UTC))]
    items.append(make_item("local-2", f"file://{cog_folder}/1990.tif", dt.datetime(2011, 5, 6, tzinfo=dt.UTC)))
    collection = {"type": "FeatureCollection", "features": [item.to_dict() for item in items]}
    (tmp_path / "items.geojson").write_text(json.dumps(collection))
    scenes = stac_scenes(str(tmp_path / "items.geojson"))  # no --asset: the visual role
    assert [s.path for s in scenes] == [(cog_folder / "1985.tif").resolve(), (cog_folder / "1990.tif").resolve()]
    assert [s.date for s in scenes] == [dt.date(2010, 5, 6), dt.date(2011, 5, 6)]
    assert [s.item_id for s in stac_scenes(str(tmp_path / "items.geojson"), max_items=1)] == ["local-1"]


# --- a STAC API stand-in: /search in two pages (GET and POST), a landing page -------------------------------


class StacApi:
    """A STAC API on 127.0.0.1 serving ``items`` one page of ``page`` items at a time; it keeps the queries."""

    def __init__(self, items: list[dict], page: int = 2):
        self.items, self.page, self.queries = items, page, []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _reply(self, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/geo+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path == "/search":
                    return self._reply(api.search({k: v[0] for k, v in parse_qs(parts.query).items()}, "GET"))
                self._reply(api.landing())

            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length", 0))
                self._reply(api.search(json.loads(self.rfile.read(size) or b"{}"), "POST"))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def landing(self) -> dict:
        return {
            "type": "Catalog", "id": "api", "description": "stand-in", "stac_version": "1.0.0",
            "conformsTo": ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search"],
            "links": [
                {"rel": "self", "href": f"{self.url}/"}, {"rel": "root", "href": f"{self.url}/"},
                {"rel": "search", "href": f"{self.url}/search", "type": "application/geo+json", "method": "GET"},
                {"rel": "search", "href": f"{self.url}/search", "type": "application/geo+json", "method": "POST"},
            ],
        }  # fmt: skip

    def search(self, query: dict, method: str) -> dict:
        self.queries.append((method, query))
        start = int(query.get("token", 0))
        body = {"type": "FeatureCollection", "features": self.items[start : start + self.page], "links": []}
        if start + self.page < len(self.items):
            token = str(start + self.page)
            link = {"rel": "next", "href": f"{self.url}/search?token={token}", "method": method}
            if method == "POST":
                link.update(href=f"{self.url}/search", body={**query, "token": token})
            body["links"].append(link)
        return body

    def __enter__(self) -> StacApi:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def test_stac_api_search_follows_pages(http_server) -> None:
    items = [
        make_item(f"S2-{i}", f"{http_server.url}/{name}", dt.datetime(2020, 1, 1 + i, tzinfo=dt.UTC), "sentinel-2-l2a")
        for i, name in enumerate(["1985.tif", "1990.tif", "cogeo.tif"])
    ]
    with StacApi([item.to_dict() for item in items]) as api:
        bbox = (-75, -9, -74, -8)
        scenes = stac_scenes(
            f"{api.url}/search", "visual", ["sentinel-2-l2a"], bbox, dt.date(2020, 1, 1), dt.date(2020, 1, 31)
        )
        assert [s.item_id for s in scenes] == ["S2-0", "S2-1", "S2-2"]  # two pages
        assert [s.date for s in scenes] == [dt.date(2020, 1, 1), dt.date(2020, 1, 2), dt.date(2020, 1, 3)]
        assert [s.collection for s in scenes] == ["sentinel-2-l2a"] * 3
        method, first = api.queries[0]
        assert first["collections"] in (["sentinel-2-l2a"], "sentinel-2-l2a")
        assert first["datetime"].startswith("2020-01-01") and "2020-01-31" in first["datetime"]
        sent = first["bbox"] if method == "POST" else first["bbox"].split(",")
        assert [float(v) for v in sent] == [-75, -9, -74, -8]
        assert len(api.queries) == 2
        through_landing = stac_scenes(f"{api.url}/", "visual", max_items=2)
        assert [s.item_id for s in through_landing] == ["S2-0", "S2-1"]


# --- an index written before item_id / collection existed ------------------------------------------------------


def make_old_schema(db: Path) -> None:
    """Drop the item_id and collection columns from an index (table and records files), as an older rsretrieve
    wrote it."""
    import lancedb

    table = lancedb.connect(db).open_table("chips")
    table.drop_columns(["item_id", "collection"])
    manifest = json.loads((db / "manifest.json").read_text())
    (db / "manifest.json").write_text(json.dumps({**manifest, "lance_version": table.version}))
    for path in (db / "records").glob("*.arrow"):
        with pa.memory_map(str(path)) as source:
            old = pa.ipc.open_file(source).read_all().drop_columns(["item_id", "collection"])
        tmp = path.with_suffix(".tmp")  # not over the mapped file
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, old.schema) as writer:
            writer.write_table(old)
        tmp.replace(path)


def test_stac_chips_append_to_an_index_without_the_new_columns(
    tmp_path: Path, tiny_model, cog_folder: Path, s3_env, http_server
) -> None:
    db = tmp_path / "old.lance"
    options, run = ChipOptions(chip_size=64), RunOptions(workers=0)
    index_archive([cog_folder / "1985.tif"], db, tiny_model, options, run, show_progress=False)
    make_old_schema(db)
    old = ChipStore(db)
    assert "item_id" not in old.table.schema.names
    assert {c.item_id for c in old.chips(np.arange(len(old)))} == {None}  # older indexes still open
    catalog = write_catalog(tmp_path, http_server.url)
    scenes = [s for s in stac_scenes(str(catalog), "visual") if s.item_id == "LC-2001"]
    summary = index_archive(scenes, db, tiny_model, options, run, show_progress=False)
    assert summary.new_chips == 66 and summary.already_indexed == 0
    store = ChipStore(db)
    assert "item_id" in store.table.schema.names  # added by the append
    chips = store.chips(np.arange(len(store)))
    assert [c.item_id for c in chips] == [None] * 66 + ["LC-2001"] * 66
    assert {c.collection for c in chips[66:]} == {"landsat-peru"}
    table_chips = chips_from_table(store.rows(np.arange(len(store))))  # straight from LanceDB
    assert [c.item_id for c in table_chips] == [c.item_id for c in chips]
    again = index_archive(scenes, db, tiny_model, options, run, show_progress=False)  # resumable as ever
    assert again.new_chips == 0 and again.files_skipped == 1
