"""Tests for rsretrieve/store/manifest.py: reading and validating manifest.json, model checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rsretrieve.store import FORMAT_VERSION, MANIFEST, ChipStore, Manifest, StoreError, StoreWriter, check_same_model
from rsretrieve.store.manifest import ModelIdentity
from tests.rsretrieve.store.conftest import MODEL, write_store


def test_folders_that_are_not_indexes(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="index not found"):
        ChipStore(tmp_path / "missing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("hello")
    with pytest.raises(StoreError, match="not an rsretrieve index"):
        ChipStore(tmp_path / "other")
    with pytest.raises(StoreError, match="not an rsretrieve index"):
        StoreWriter.open(tmp_path / "other", MODEL)
    db = tmp_path / "db"
    write_store(db, [1])
    manifest = json.loads((db / MANIFEST).read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (db / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="newer rsretrieve"):
        Manifest.read(db)
    del manifest["format_version"]
    (db / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="has no format_version"):
        Manifest.read(db)
    (db / MANIFEST).write_text("{not json")
    with pytest.raises(StoreError, match="unreadable manifest"):
        ChipStore(db)


def test_a_manifest_round_trips_and_names_its_model(tmp_path: Path) -> None:
    manifest = Manifest(MODEL.name, MODEL.architecture, MODEL.checkpoint, MODEL.dim, chip_size=64, overlap=16)
    manifest.write(tmp_path)
    again = Manifest.read(tmp_path)
    assert again == manifest and again.format_version == FORMAT_VERSION == 4
    assert again.model_identity() == ModelIdentity("tiny-test", "rsretrieve-tiny", "random-seed0", 8)
    assert again.built_with_random_weights
    data = json.loads((tmp_path / MANIFEST).read_text())
    (tmp_path / MANIFEST).write_text(json.dumps({**data, "added_later": True}))  # unknown keys are ignored
    assert Manifest.read(tmp_path) == manifest


def test_another_model_or_other_weights_are_named(tmp_path: Path) -> None:
    manifest = Manifest(MODEL.name, MODEL.architecture, MODEL.checkpoint, MODEL.dim)
    check_same_model(manifest, "tiny-test", None, tmp_path)
    check_same_model(manifest, "tiny-test", "random-seed0", tmp_path)
    with pytest.raises(StoreError, match="use --model tiny-test"):
        check_same_model(manifest, "remoteclip-vit-b-32", None, tmp_path)
    with pytest.raises(StoreError, match="other weights of 'tiny-test'"):
        check_same_model(manifest, "tiny-test", "0123456789abcdef", tmp_path)
