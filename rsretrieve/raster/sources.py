"""Finding sources: files, folders (recursively) and glob patterns → image files."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

from rsretrieve.raster.dataset import SourceError, source_error

IMAGE_SUFFIXES: frozenset[str] = frozenset({".tif", ".tiff", ".jpg", ".jpeg", ".png"})


# --- finding sources ---------------------------------------------------------------------------


def _is_image(path: Path) -> bool:
    """A visible file with an image suffix (skips dot-files such as macOS "._x.tif")."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()


def _images_under(folder: Path) -> list[Path]:
    """Image files anywhere under a folder, skipping hidden folders."""
    return [
        p
        for p in folder.rglob("*")
        if _is_image(p) and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]


def _expand(item: str | Path) -> list[Path]:
    """One input (file, folder or glob pattern) as a list of image files."""
    path = Path(item).expanduser()
    if path.is_dir():
        return _images_under(path)
    if path.exists():
        return [path]  # a file named explicitly is taken as is; plan_scene judges it
    if not glob.has_magic(str(item)):
        raise source_error(item, "no such file or directory")
    matches = [Path(m) for m in glob.glob(str(path), recursive=True)]
    if not matches:
        raise source_error(item, "no file matches this pattern")
    return [f for m in matches for f in (_images_under(m) if m.is_dir() else [m]) if _is_image(f)]


def find_sources(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand files, folders (recursively) and glob patterns into sorted, unique absolute image paths.

    Raises SourceError for a missing path, a pattern matching nothing, or inputs holding no image.
    """
    found = {p.resolve() for item in inputs for p in _expand(item)}
    if not found:
        names = ", ".join(str(i) for i in inputs) or "(no inputs)"
        raise SourceError(f"no images found under {names}")
    return sorted(found)
