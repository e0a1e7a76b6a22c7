"""STAC sources (rsretrieve/raster/stac.py, ``index --stac``): a static catalogue written with pystac whose items
point at COGs on the loopback S3 and HTTP servers, a STAC API stand-in with two pages, and appending chips that
carry item ids to an index written before those columns existed."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from indexer.build import ChipOptions, RunOptions, index_archive
from rsretrieve.raster.stac import StacError, stac_scenes
from rsretrieve.render import as_table
from rsretrieve.search import Hit
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
        (["--stac", str(catalog), "--db", "s3://archive/index.lance"], "--db on object storage is not supported yet"),
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
