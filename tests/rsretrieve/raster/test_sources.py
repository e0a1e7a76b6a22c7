"""Tests for rsretrieve/raster/sources.py: files, folders and glob patterns → sorted absolute image paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from rsretrieve.raster import IMAGE_SUFFIXES, SourceError, find_sources


@pytest.fixture
def archive(make_geotiff, tmp_path: Path) -> Path:
    """A folder with nested images, a non-image, and hidden files."""
    root = tmp_path / "archive"
    for name in ("a.tif", "sub/b.TIF", "sub/deeper/c.png", ".hidden/d.tif", "sub/._e.tif"):
        make_geotiff(root / name, 8, 8)
    (root / "sub" / "notes.txt").write_text("not an image")
    return root


def test_find_sources_recurses_folders(archive: Path) -> None:
    found = find_sources([archive])
    assert found == sorted([archive / "a.tif", archive / "sub/b.TIF", archive / "sub/deeper/c.png"])
    assert all(p.is_absolute() for p in found)


def test_find_sources_globs_files_and_deduplicates(archive: Path, monkeypatch) -> None:
    monkeypatch.chdir(archive)
    assert find_sources(["*.tif"]) == [archive / "a.tif"]
    assert find_sources(["**/*.png"]) == [archive / "sub/deeper/c.png"]
    assert len(find_sources([archive, "a.tif", archive / "a.tif", "sub"])) == 3


def test_find_sources_errors(archive: Path, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"missing\.tif: no such file"):
        find_sources([tmp_path / "missing.tif"])
    with pytest.raises(SourceError, match="no file matches"):
        find_sources([str(tmp_path / "*.jpeg")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images found under"):
        find_sources([tmp_path / "empty"])


def test_image_suffixes() -> None:
    assert {".tif", ".tiff", ".jpg", ".jpeg", ".png"} == IMAGE_SUFFIXES
