"""The classifier: a planted class found by logistic regression, cross-validated by area, exported as chips/sites."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import shapely

from rsretrieve.classify import ClassifierOptions, ClassifyError, classify, sample_negatives, sites
from rsretrieve.labels import Label, LabelStore
from rsretrieve.query import Filters
from rsretrieve.store import ChipStore
from tests.rsretrieve.analyst_fixtures import STEP, run_cli, write_grid


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory):
    """2,000 chips (50 × 40 at 0.01°), 182 of them (9 %) planted in 8 blocks along a class direction."""
    return write_grid(tmp_path_factory.mktemp("classify") / "db", strength=1.0)


def labelled(grid, count: int = 20, seed: int = 1) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(np.flatnonzero(grid.planted), count, replace=False))


def test_the_planted_class_is_found(grid) -> None:
    store = ChipStore(grid.db)
    positives = labelled(grid)
    result = classify(store, positives, [], options=ClassifierOptions(threshold=0.8), class_name="solar-farm")
    summary = result.summary
    assert summary["labels"] == {"positive": 20, "negative": 0, "sampled_negative": 100}
    cv = summary["cv"]
    assert cv["folds"] == 5 and cv["areas"] > 20
    assert cv["precision"] >= 0.6 and cv["recall"] >= 0.4 and cv["average_precision"] >= 0.6
    found = set(result.fids.tolist())
    planted = set(np.flatnonzero(grid.planted).tolist())
    assert len(found & planted) / len(planted) >= 0.7  # most planted chips
    assert len(found & planted) / len(found) >= 0.9  # and few others
    assert (np.diff(result.scores) <= 0).all() and (result.scores >= 0.8).all()
    assert summary["labelled_positives_found"] >= 18
    # the model is one linear function: the same scores as scoring the vectors directly
    np.testing.assert_allclose(result.model.scores(store.vectors(result.fids)), result.scores, rtol=1e-5)


def test_labelled_negatives_and_filters(grid) -> None:
    store = ChipStore(grid.db)
    positives = labelled(grid)
    strays = np.setdiff1d(np.arange(len(store)), np.flatnonzero(grid.planted))[:150]
    area = shapely.box(10.0, 50.0, 10.25, 50.2)  # the south-west quarter
    result = classify(store, positives, strays, Filters(within=area), ClassifierOptions(threshold=0.5))
    assert result.summary["labels"]["sampled_negative"] == 0  # enough labelled negatives: none sampled
    assert shapely.intersects(store.footprints(result.fids), area).all()  # edge-touching chips included
    assert result.summary["chips_filtered"] == 26 * 21 and result.summary["found"] > 20


def test_too_few_labels_are_explained(grid) -> None:
    store = ChipStore(grid.db)
    with pytest.raises(ClassifyError, match="has 1 positive label in the index; label at least 2"):
        classify(store, labelled(grid, 1), [], class_name="solar-farm")
    # two positives in one 0.05° cell: trained, but no cross-validation, and it says why
    one_block = [2 * 50 + 2, 2 * 50 + 3]
    result = classify(store, one_block, [], class_name="solar-farm")
    assert result.summary["cv"]["folds"] == 0 and "at least 2 areas" in result.summary["cv"]["skipped"]


def test_sampled_negatives_leave_out_labelled_chips() -> None:
    picked = sample_negatives(50, 100, np.arange(0, 100, 2), seed=0)
    assert len(picked) == 50 and (picked % 2 == 1).all() and len(set(picked)) == 50
    assert len(sample_negatives(500, 100, np.arange(10), seed=0)) == 90


def test_sites_dissolve_touching_chips(grid) -> None:
    store = ChipStore(grid.db)
    block = [r * 50 + c for r in (2, 3) for c in (2, 3, 4)]  # a 3 × 2 block of chips
    corner = [5 * 50 + 5]  # a lone chip
    fids = np.array(block + corner)
    scores = np.linspace(0.99, 0.9, len(fids))
    rows, polygons = sites(store, fids, scores)
    assert [row["chips"] for row in rows] == [6, 1]
    assert shapely.equals(polygons[0], shapely.box(10.02, 50.02, 10.05, 50.04))
    expected = 3 * 2 * (STEP * 111_320 * np.cos(np.radians(50.03))) * (STEP * 111_000)  # ≈ 4.3 km²
    assert rows[0]["area_m2"] == pytest.approx(expected, rel=0.01)
    assert rows[0]["max_score"] == pytest.approx(0.99) and rows[1]["mean_score"] == pytest.approx(0.9)
    diagonal = [4 * 50 + 5]  # touches the block's north-east chip at a corner: the same site
    rows, polygons = sites(store, np.array(block + diagonal), np.full(7, 0.9))
    assert [row["chips"] for row in rows] == [7] and polygons[0].geom_type == "MultiPolygon"


def test_dissolve_overlapping_and_tiled_footprints() -> None:
    from rsretrieve.classify import dissolve

    tiles = np.array([shapely.box(0, 0, 1, 1), shapely.box(1, 0, 2, 1), shapely.box(0, 1, 1, 2)])
    assert shapely.equals(dissolve(tiles), shapely.union_all(tiles)) and dissolve(tiles).geom_type == "Polygon"
    overlapping = np.array([shapely.box(0, 0, 1, 1), shapely.box(0.5, 0, 1.5, 1)])  # chips with --overlap
    merged = dissolve(overlapping)
    assert merged.is_valid and merged.area == pytest.approx(1.5)


def test_cli_classify_writes_chips_sites_and_summary(grid, tmp_path: Path, capsys) -> None:
    import shutil

    db = tmp_path / "db"
    shutil.copytree(grid.db, db)
    ids = [grid.chips[fid].id for fid in labelled(grid)]
    LabelStore(db).add([Label(chip_id, "solar-farm", "positive") for chip_id in ids])
    chips, polygons = tmp_path / "chips.parquet", tmp_path / "sites.geojson"
    ran = run_cli(capsys, "classify", "--db", db, "--class", "solar-farm", "--geoparquet", chips,
                  "--polygons", polygons, "--json")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    summary = json.loads(ran.stdout)
    assert summary["found"] > 100 and summary["sites"] >= 8 and summary["cv"]["folds"] == 5
    from rsretrieve.geoparquet import read_geoparquet

    table, geometries = read_geoparquet(chips)
    assert table.num_rows == summary["found"] and set(table.column("label").to_pylist()) <= {"positive", None}
    assert len(geometries) == summary["found"]
    features = json.loads(polygons.read_text())["features"]
    assert len(features) == summary["sites"]
    assert {"site", "chips", "area_m2", "mean_score", "max_score", "class"} <= set(features[0]["properties"])
    assert sum(f["properties"]["chips"] for f in features) == summary["found"]
    as_geojson = tmp_path / "chips.geojson"
    ran = run_cli(capsys, "classify", "--db", db, "--class", "solar-farm", "--geojson", as_geojson)
    chip_features = json.loads(as_geojson.read_text())["features"]
    assert len(chip_features) == summary["found"]
    first = chip_features[0]
    chip = grid.chips[int(first["id"], 16)]
    assert first == chip.feature(score=first["properties"]["score"], **{"class": "solar-farm", "label": first[
        "properties"]["label"]})  # fmt: skip
    assert [f["properties"]["score"] for f in chip_features] == table.column("score").to_pylist()
    # people's output, and the one-line message for a class without labels
    ran = run_cli(capsys, "classify", "--db", db, "--class", "solar-farm", "--threshold", "0.9")
    assert "cross-validated by area (5 folds)" in ran.stdout and "chips score ≥ 0.9" in ran.stdout
    ran = run_cli(capsys, "classify", "--db", db, "--class", "quarry")
    assert ran.returncode == 1 and ran.stderr.startswith("error: no labels for class 'quarry'")
