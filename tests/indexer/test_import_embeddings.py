"""Importing embeddings made elsewhere: Major TOM and Clay GeoParquet files with a planted class, searched by chip id,
labelled, classified, filtered by polygon and exported; bad files refused in one line with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely

from indexer.embedding_files import ColumnChoice
from indexer.import_embeddings import import_embeddings
from rsretrieve.imported import EncodingUnavailable
from rsretrieve.query import Filters, Query
from rsretrieve.render import BINARY_RENDERERS, RENDERERS
from rsretrieve.search import Searcher
from rsretrieve.store import ChipStore, Manifest
from rsretrieve.thumbnails import chip_png
from tests.conftest import assert_one_line_error, run_cli
from tests.indexer.embedding_fixtures import DIM, write_clay, write_major_tom
from tests.rsretrieve.analyst_fixtures import run_cli as run_here


@pytest.fixture(scope="module")
def major_tom(tmp_path_factory: pytest.TempPathFactory):
    """A Major TOM file of the 2,000-chip grid imported with --model none (in 4 committed batches)."""
    folder = tmp_path_factory.mktemp("major-tom")
    planted = write_major_tom(folder / "part_00001-00050.parquet")
    db = folder / "db"
    summary = import_embeddings([folder / "part_00001-00050.parquet"], db, "none", show_progress=False, batch_rows=500)
    assert (summary.new_chips, summary.layout, summary.dim, summary.text_search) == (2000, "Major TOM", DIM, False)
    return db, planted


def test_ids_footprints_dates_sources_and_unit_vectors_are_kept(major_tom) -> None:
    db, planted = major_tom
    store = ChipStore(db)
    manifest = store.manifest
    assert (manifest.model, manifest.checkpoint, manifest.dim, manifest.imported_from) == ("none", "imported", DIM,
                                                                                          "Major TOM")  # fmt: skip
    assert manifest.lance_version >= 4 and len(store) == 2000  # committed batch by batch
    fids = store.fids_of(planted.ids[:50])
    chips = store.chips([fids[chip_id] for chip_id in planted.ids[:50]])
    for row, chip in enumerate(chips):
        assert chip.window is None and chip.path.startswith("S2A_MSIL2A_2020") and chip.crs == "EPSG:4326"
        assert chip.date.isoformat() == f"2020-{1 + row % 12:02d}-{1 + row % 28:02d}"
        assert shapely.geometry.shape(chip.footprint).equals_exact(planted.footprints[row], 1e-7)
        assert chip.bbox == pytest.approx(planted.footprints[row].bounds)
    vectors = store.vectors([fids[chip_id] for chip_id in planted.ids[:50]])
    expected = planted.vectors[:50] / np.linalg.norm(planted.vectors[:50], axis=1, keepdims=True)
    half_step = np.abs(expected).max(axis=1, keepdims=True) / 254  # stored 8-bit with a scale per row (format 3)
    assert np.all(np.abs(vectors - expected) <= half_step * 1.001 + 1e-7)


def test_like_a_planted_chip_finds_the_planted_class(major_tom) -> None:
    db, planted = major_tom
    results = Searcher(db).search(Query.build(like=planted.pick(planted.planted, 1), k=100))
    truth = dict(zip(planted.ids, planted.planted, strict=True))
    assert sum(truth[hit.chip.id] for hit in results) >= 95  # 182 planted chips; the first 100 hits are of them


def test_labels_and_classifier_recover_the_planted_class(major_tom, tmp_path: Path, capsys) -> None:
    db, planted = major_tom
    positives, negatives = planted.pick(planted.planted, 20, 1), planted.pick(~planted.planted, 20, 1)
    ran = run_here(capsys, "label", "add", "--db", db, "--class", "planted", "--positive", *positives,
                   "--negative", *negatives)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    out = tmp_path / "found.parquet"
    ran = run_here(capsys, "classify", "--db", db, "--class", "planted", "--geoparquet", out, "--json")
    assert ran.returncode == 0, ran.stderr
    summary = json.loads(ran.stdout)
    assert summary["cv"]["folds"] >= 2 and summary["cv"]["precision"] >= 0.85 and summary["cv"]["recall"] >= 0.85
    found = gpd.read_parquet(out)
    truth = dict(zip(planted.ids, planted.planted, strict=True))
    hits = sum(truth[chip_id] for chip_id in found["id"])
    assert hits / len(found) >= 0.95 and hits / planted.planted.sum() >= 0.9  # precision, recall against the truth
    footprints = dict(zip(planted.ids, planted.footprints, strict=True))
    pairs = zip(found["id"], found.geometry, strict=True)
    assert all(geometry.equals_exact(footprints[chip_id], 1e-7) for chip_id, geometry in pairs)
    exported = tmp_path / "labels.geojson"
    assert run_here(capsys, "label", "export", exported, "--db", db, "--class", "planted").returncode == 0
    features = json.loads(exported.read_text())["features"]
    assert {feature["id"] for feature in features} == {*positives, *negatives}


def test_within_a_polygon_and_exports_round_trip(major_tom, tmp_path: Path) -> None:
    db, planted = major_tom
    area = shapely.Polygon([(10.1, 50.1), (10.3, 50.1), (10.3, 50.3), (10.1, 50.3)],
                           holes=[[(10.15, 50.15), (10.25, 50.15), (10.25, 50.25), (10.15, 50.25)]])  # fmt: skip
    inside = {chip_id for chip_id, footprint in zip(planted.ids, planted.footprints, strict=True)
              if footprint.intersects(area)}  # fmt: skip
    query = Query.build(like=planted.pick(planted.planted, 1), filters=Filters(within=area), k=2000)
    results = Searcher(db).search(query)
    assert {hit.chip.id for hit in results} == inside
    (tmp_path / "hits.parquet").write_bytes(BINARY_RENDERERS["geoparquet"](results.hits))
    frame = gpd.read_parquet(tmp_path / "hits.parquet")
    assert frame.crs.equals("OGC:CRS84") and set(frame["id"]) == inside and frame["col_off"].isna().all()
    assert frame.geometry.intersects(area).all()
    for name, render in RENDERERS.items():  # no pixel window: every format still renders
        assert planted.ids[0] in render(Searcher(db).search(Query.build(like=[planted.ids[0]], k=3)).hits), name
    assert chip_png(results.hits[0].chip) is None


def test_text_and_image_queries_are_refused_in_one_line(major_tom) -> None:
    db, _ = major_tom
    with pytest.raises(EncodingUnavailable, match="imported from Major TOM"):
        Searcher(db).search(Query.build(text="a solar farm"))
    assert_one_line_error(run_cli("query", "a solar farm", "--db", db), "text and image search need a model")


def test_service_refuses_text_and_has_no_chip_images(major_tom) -> None:
    from fastapi.testclient import TestClient

    from rsretrieve.service.app import create_app
    from rsretrieve.service.indexes import Indexes, ServeOptions
    from rsretrieve.service.metrics import Metrics

    db, planted = major_tom
    metrics = Metrics()
    with TestClient(create_app(Indexes([("imported", db)], ServeOptions(), metrics), metrics)) as client:
        text = client.post("/v1/search", json={"text": ["a solar farm"]})
        assert text.status_code == 400 and "text and image search need a model" in text.json()["error"]
        like = client.post("/v1/search", json={"like": [planted.ids[0]], "k": 3})
        assert like.status_code == 200 and like.json()["results"][0]["id"] == planted.ids[0]
        knn = client.post("/knn-service", json={"embedding_input": [1.0] * DIM, "num_images": 2})
        assert knn.status_code == 200 and [row["url"] for row in knn.json()] == [None, None]
        embed = client.post("/v1/embed", json={"text": ["a solar farm"]})
        assert embed.status_code == 400 and "imported from Major TOM" in embed.json()["error"]
        image = client.get(f"/v1/chips/{planted.ids[0]}/image")
        assert image.status_code == 404 and "has no image" in image.json()["error"]


def test_clay_in_utm_is_reprojected_and_appending_skips_present_ids(tmp_path: Path) -> None:
    clay = tmp_path / "32UNA_20200601_v001.gpq"
    first = write_clay(clay, slice(0, 1200))
    db = tmp_path / "db"
    summary = import_embeddings([clay], db, "none", show_progress=False)
    assert (summary.layout, summary.new_chips) == ("Clay", 1200)
    store = ChipStore(db)
    chip = store.chips([store.fid_of(first.ids[7])])[0]
    assert chip.path.startswith("s3://clay-tiles-02/") and chip.date.isoformat() == "2020-06-01"
    assert shapely.geometry.shape(chip.footprint).equals_exact(first.footprints[7], 1e-6)  # from EPSG:32632
    again = import_embeddings([clay], db, show_progress=False)  # --model: the index's
    assert (again.new_chips, again.already_indexed, again.total_chips) == (0, 1200, 1200)
    (tmp_path / "more").mkdir()
    write_major_tom(tmp_path / "more" / "part.parquet", slice(1000, None))
    more = import_embeddings([tmp_path / "more"], db, show_progress=False)
    assert (more.new_chips, more.total_chips, Manifest.read(db).imported_from) == (1000, 2200, "Clay and Major TOM")


def test_a_loadable_model_makes_text_search_work(tmp_path: Path, capsys, tiny_model) -> None:
    path = tmp_path / "tiny.parquet"
    write_major_tom(tmp_path / "64.parquet")
    table = pq.read_table(tmp_path / "64.parquet")
    vectors = np.random.default_rng(3).normal(size=(table.num_rows, 32)).astype(np.float32)
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), 32)
    pq.write_table(table.set_column(table.schema.get_field_index("embedding"), "embedding", embedding), path)
    ran = run_here(capsys, "import-embeddings", path, "--db", tmp_path / "db", "--model", "tiny-test",
                   "--random-weights", "--quiet", "--flat-threshold", "1000")  # fmt: skip
    assert ran.returncode == 0 and "text search works" in ran.stderr, ran.stderr
    manifest = Manifest.read(tmp_path / "db")
    assert (manifest.checkpoint, manifest.index["index_type"]) == ("random-seed0", "ivfpq")  # IVF-PQ above 1,000
    assert len(Searcher(tmp_path / "db", tiny_model).search(Query.build(text="a solar farm", k=5))) == 5
    wrong = run_here(capsys, "import-embeddings", tmp_path / "64.parquet", "--db", tmp_path / "db2", "--model",
                     "tiny-test", "--random-weights", "--quiet")  # fmt: skip
    assert wrong.returncode == 1 and "64-d embeddings but 'tiny-test' makes 32-d ones" in wrong.stderr
    assert not (tmp_path / "db2").exists()


# --- bad files: one error line, nothing written ------------------------------------------------------------------


def _rewrite(source: Path, target: Path, column: str, values: pa.Array | None, geo: bool = True) -> Path:
    """``source`` with ``column`` replaced by ``values`` (None: dropped), its metadata kept (``geo``) or not."""
    table = pq.read_table(source)
    position = table.schema.get_field_index(column)
    table = table.remove_column(position) if values is None else table.set_column(position, column, values)
    pq.write_table(table.replace_schema_metadata(pq.read_schema(source).metadata if geo else None), target)
    return target


def _embeddings(rows: list[list[float] | None]) -> pa.Array:
    return pa.array(rows, pa.list_(pa.float64()))


@pytest.fixture(scope="module")
def small_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bad") / "good.parquet"
    write_major_tom(path, slice(0, 1200))
    return path


def _with_row(small_file: Path, row: int, value: list[float] | None) -> pa.Array:
    rows = pq.read_table(small_file).column("embedding").to_pylist()
    rows[row] = value
    return _embeddings(rows)


BAD_FILES = {
    "no geometry": (lambda f, t: _rewrite(f, t, "geometry", None, geo=False), "has no geometry ('geo' metadata"),
    "geometry gone": (lambda f, t: _rewrite(f, t, "geometry", None), "has no column 'geometry'; its columns: "),
    "ragged": (lambda f, t: _rewrite(f, t, "embedding", _with_row(f, 1100, [0.5] * 63)), "ragged embeddings: row 1100"),
    "NaN": (lambda f, t: _rewrite(f, t, "embedding", _with_row(f, 1150, [float("nan")] * DIM)), "row 1150 has NaN"),
    "inf": (lambda f, t: _rewrite(f, t, "embedding", _with_row(f, 3, [float("inf")] * DIM)), "row 3 has NaN or inf"),
    "zeros": (
        lambda f, t: _rewrite(f, t, "embedding", _with_row(f, 9, [0.0] * DIM)),
        "row 9 has an embedding of zeros",
    ),
    "null": (lambda f, t: _rewrite(f, t, "embedding", _with_row(f, 5, None)), "row 5 has no embedding"),
    "missing column": (lambda f, t: _rewrite(f, t, "embedding", None), "has no embedding column"),
    "bad date": (
        lambda f, t: _rewrite(f, t, "timestamp", pa.array(["20201345T000000"] * 1200)),
        "'20201345T000000' in column 'timestamp' is not a date",
    ),
    "duplicate ids": (
        lambda f, t: _rewrite(f, t, "unique_id", pa.array([f"id{i % 1100}" for i in range(1200)])),
        "chip id 'id0' appears twice",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_file_is_one_error_line_and_nothing_is_written(case: str, small_file: Path, tmp_path: Path,
                                                              capsys) -> None:  # fmt: skip
    make, fragment = BAD_FILES[case]
    bad = make(small_file, tmp_path / "bad.parquet")
    ran = run_here(capsys, "import-embeddings", bad, "--db", tmp_path / "new", "--model", "none", "--quiet")
    errors = [line for line in ran.stderr.splitlines() if line.startswith("error:")]
    assert ran.returncode == 1 and len(errors) == 1 and fragment in errors[0], ran.stderr
    assert not (tmp_path / "new").exists()


def test_bad_files_leave_an_existing_index_as_it_was(small_file: Path, tmp_path: Path, capsys) -> None:
    db = tmp_path / "db"
    import_embeddings([small_file], db, "none", show_progress=False)
    before = (db / "manifest.json").read_text()
    other = tmp_path / "other.parquet"
    write_major_tom(tmp_path / "rest.parquet", slice(1200, None))
    _rewrite(tmp_path / "rest.parquet", other, "embedding", _embeddings(np.ones((800, 32)).tolist()))
    mixed = run_here(capsys, "import-embeddings", small_file, other, "--db", db, "--quiet")
    assert "mixed embedding dimensions" in mixed.stderr and "holds 64-d embeddings" in mixed.stderr
    smaller = run_here(capsys, "import-embeddings", other, "--db", db, "--quiet")
    assert f"error: the files hold 32-d embeddings; {db} holds 64-d ones" in smaller.stderr
    named = run_here(capsys, "import-embeddings", small_file, "--db", db, "--embedding-column", "vec", "--quiet")
    assert "has no column 'vec' (--embedding-column); its columns: unique_id, embedding" in named.stderr
    assert (db / "manifest.json").read_text() == before


def test_ids_may_come_from_rows_when_a_file_has_no_id_column(small_file: Path, tmp_path: Path) -> None:
    summary = import_embeddings([small_file], tmp_path / "db", "none", ColumnChoice(id="none"), show_progress=False)
    assert summary.new_chips == 1200 and ChipStore(tmp_path / "db").fid_of("good-1199") == 1199


def test_an_interrupted_import_resumes_with_every_chip_once(small_file: Path, tmp_path: Path, monkeypatch) -> None:
    from rsretrieve.store import StoreWriter

    append = StoreWriter.append
    calls = []

    def crash_on_the_third(self, chips, vectors, new_files):
        calls.append(len(chips))
        if len(calls) == 3:
            raise KeyboardInterrupt
        append(self, chips, vectors, new_files)

    monkeypatch.setattr(StoreWriter, "append", crash_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        import_embeddings([small_file], tmp_path / "db", "none", show_progress=False, batch_rows=300)
    assert len(ChipStore(tmp_path / "db")) == 600  # two batches committed
    monkeypatch.setattr(StoreWriter, "append", append)
    summary = import_embeddings([small_file], tmp_path / "db", show_progress=False, batch_rows=300)
    assert (summary.already_indexed, summary.new_chips, summary.total_chips) == (600, 600, 1200)
    ids = ChipStore(tmp_path / "db").column("id").to_pylist()
    assert len(set(ids)) == len(ids) == 1200


def test_info_says_where_the_embeddings_came_from_and_index_refuses_them(major_tom, tmp_path: Path, capsys) -> None:
    db, _ = major_tom
    info = run_here(capsys, "info", "--db", db)
    assert "none (imported embeddings rsretrieve cannot make, dim 64)" in info.stdout
    assert "imported: embeddings from Major TOM (no pixels)" in info.stdout
    (tmp_path / "scene.tif").write_bytes(b"")
    refused = run_here(capsys, "index", tmp_path / "scene.tif", "--db", db)
    assert refused.returncode == 1 and "add more with `rsretrieve import-embeddings" in refused.stderr
