"""Labels: kept beside the index through appends and reloads; CLI add/remove/list/export/import; --labels queries."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rsretrieve.labels import LabelError, LabelStore, check_ids, import_features, resolve
from rsretrieve.store import ChipStore, StoreWriter
from tests.conftest import assert_one_line_error
from tests.conftest import run_cli as rsretrieve
from tests.rsretrieve.analyst_fixtures import MODEL, grid_chips, run_cli, square, write_grid


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory):
    return write_grid(tmp_path_factory.mktemp("labels") / "db", columns=20, rows=10, blocks=[(2, 2, 3, 3)])


@pytest.fixture
def db(grid, tmp_path: Path) -> Path:
    """A fresh copy of the grid index (labels of one test do not leak into another)."""
    import shutil

    copy = tmp_path / "db"
    shutil.copytree(grid.db, copy)
    return copy


def test_labels_survive_appends_and_reloads(db: Path, grid) -> None:
    store = LabelStore(db)
    ids = [chip.id for chip in grid.chips]
    assert store.add([_label(ids[0], "solar-farm", "positive"), _label(ids[1], "solar-farm", "negative")]) == 2
    store.add([_label(ids[1], "solar-farm", "positive", note="second look")])  # relabelled: replaces
    store.add([_label(ids[5], "quarry", "positive")])
    assert store.classes() == {"solar-farm": {"positive": 2, "negative": 0}, "quarry": {"positive": 1, "negative": 0}}
    # an indexer appends a batch and rebuilds FAISS: the labels file is not touched
    before = (db / "labels.parquet").read_bytes()
    writer = StoreWriter.open(db, MODEL)
    extra = grid_chips(20, 11)[200:]
    writer.append(extra, np.eye(len(extra), MODEL.dim, dtype=np.float32), new_files=1)
    writer.retrain()
    writer.finish()
    writer.close()
    assert (db / "labels.parquet").read_bytes() == before
    reopened = LabelStore(db)
    assert reopened.ids("solar-farm") == ([ids[0], ids[1]], [])
    assert [label.note for label in reopened.labels("solar-farm")] == ["", "second look"]
    resolved = resolve(db, ChipStore(db), "solar-farm")
    assert resolved.positives.tolist() == [0, 1] and resolved.missing == 0
    assert reopened.remove("solar-farm", [ids[0]]) == 1 and reopened.remove("quarry") == 1
    assert reopened.classes() == {"solar-farm": {"positive": 1, "negative": 0}}


def _label(chip_id, class_name, label, note=""):
    from rsretrieve.labels import Label

    return Label(chip_id, class_name, label, note)


def test_unknown_ids_and_classes_are_clear(db: Path, grid) -> None:
    with pytest.raises(LabelError, match=r"2 unknown chip ids.*: nope, 00ff"):
        check_ids(ChipStore(db), [grid.chips[0].id, "nope", "00ff"])
    with pytest.raises(LabelError, match="no labels for class 'x'"):
        LabelStore(db).ids("x")


def test_import_labels_chips_under_polygons_and_points(db: Path, grid, tmp_path: Path) -> None:
    # a polygon over chips (2..4, 2..4) of the grid (0.01° chips from 10, 50), its edges on chip edges;
    # a negative point inside chip (10, 5); a feature without a label property takes the default
    features = [
        {"type": "Feature", "properties": {"class": "solar-farm", "label": "1"},
         "geometry": square(10.02, 50.02, 10.05, 50.05)},
        {"type": "Feature", "properties": {"class": "solar-farm", "label": "no", "note": "roof"},
         "geometry": {"type": "Point", "coordinates": [10.105, 50.055]}},
        {"type": "Feature", "properties": {"class": "quarry"}, "geometry": square(10.151, 50.001, 10.159, 50.009)},
    ]  # fmt: skip
    path = tmp_path / "sites.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    result = import_features(db, ChipStore(db), path)
    assert result.labels == {
        "solar-farm": {"positive": 9, "negative": 1},
        "quarry": {"positive": 1, "negative": 0},
    }
    positives, negatives = LabelStore(db).ids("solar-farm")
    fids = sorted(int(chip_id, 16) for chip_id in positives)
    assert fids == [row * 20 + column for row in (2, 3, 4) for column in (2, 3, 4)]  # touching chips left out
    assert negatives == [grid.chips[5 * 20 + 10].id]
    notes = {label.label: label.note for label in LabelStore(db).labels("solar-farm")}
    assert notes == {"positive": "sites.geojson", "negative": "roof"}


def test_cli_label_round_trip(db: Path, grid, tmp_path: Path, capsys) -> None:
    ids = [chip.id for chip in grid.chips]
    added = run_cli(capsys, "label", "add", "--db", db, "--class", "solar-farm", "--positive", ids[42], ids[43],
                       "--negative", ids[0], "--note", "first pass")  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "2 positive, 1 negative" in added.stderr
    assert_one_line_error(  # the real command (a subprocess); the rest runs in this process
        rsretrieve("label", "add", "--db", db, "--class", "solar-farm", "--positive", ids[1], "abc123"),
        "1 unknown chip id",
    )
    listed = json.loads(run_cli(capsys, "label", "list", "--db", db, "--json").stdout)
    assert [(row["id"], row["label"], row["note"]) for row in listed] == [
        (ids[42], "positive", "first pass"),
        (ids[43], "positive", "first pass"),
        (ids[0], "negative", "first pass"),
    ]
    exported = tmp_path / "solar.geojson"
    result = run_cli(capsys, "label", "export", "--db", db, "--class", "solar-farm", exported)
    assert result.returncode == 0, result.stderr
    collection = json.loads(exported.read_text())
    assert {f["properties"]["label"] for f in collection["features"]} == {"positive", "negative"}
    assert all(f["geometry"]["type"] == "Polygon" for f in collection["features"])
    parquet = tmp_path / "solar.parquet"
    assert run_cli(capsys, "label", "export", "--db", db, "--class", "solar-farm", parquet).returncode == 0
    # a QGIS-style round trip: the exported file imported into another class
    imported = run_cli(capsys, "label", "import", "--db", db, parquet, "--class", "copy", "--json")
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["labels"] == {"copy": {"positive": 2, "negative": 1}}
    removed = run_cli(capsys, "label", "remove", "--db", db, "--class", "copy")
    assert removed.returncode == 0 and "removed 3 labels" in removed.stderr
    refused = run_cli(capsys, "label", "remove", "--db", db)
    assert refused.returncode == 1 and refused.stderr.startswith("error: say what to remove")


def test_query_refined_by_labels(db: Path, grid, capsys) -> None:
    planted = grid.ids(grid.planted)
    LabelStore(db).add([_label(planted[0], "solar-farm", "positive"), _label(planted[4], "solar-farm", "positive")])
    result = run_cli(capsys, "query", "--labels", "solar-farm", "--db", db, "-k", "9", "--json")
    assert result.returncode == 0, result.stderr
    found = [record["id"] for record in json.loads(result.stdout)]
    assert len(set(found) & set(planted)) >= 6  # the 9 planted chips come first
    strays = [chip_id for chip_id in found if chip_id not in planted]
    if strays:  # marking a stray negative pushes it out of the top
        LabelStore(db).add([_label(strays[0], "solar-farm", "negative")])
        again = run_cli(capsys, "query", "--labels", "solar-farm", "--db", db, "-k", "9", "--json")
        assert strays[0] not in {record["id"] for record in json.loads(again.stdout)}
    refused = run_cli(capsys, "query", "--labels", "nothing", "--db", db)
    assert refused.returncode == 1 and "error: no labels for class 'nothing'" in refused.stderr
