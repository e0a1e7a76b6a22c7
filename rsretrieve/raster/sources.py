"""Finding sources: files, folders (recursively), glob patterns and URIs → image files and objects.

A source is a local ``Path`` or a URI string (``s3://bucket/key``, ``https://host/a.tif``, ``gs://``, ``az://``,
see ``rsretrieve.raster.remote``); an ``s3://`` prefix or pattern is listed. A ``Scene`` is a source with what a
catalogue (STAC) says about it: its date, item id and collection.
"""

from __future__ import annotations

import datetime as dt
import glob
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rsretrieve.raster.errors import SourceError, source_error
from rsretrieve.raster.remote import expand_remote, is_remote

Source = str | Path  # a local path, or a URI string kept as given


@dataclass(frozen=True)
class Scene:
    """A source to index with what its catalogue says: acquisition date (overrides the file's), STAC item and
    collection. ``error`` names why a catalogue entry cannot be indexed (e.g. an item without the asset): planning
    it raises SourceError with that reason, so it is reported as any bad file is."""

    path: Source
    date: dt.date | None = None
    item_id: str | None = None
    collection: str | None = None
    error: str | None = None


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


def find_sources(inputs: Sequence[str | Path]) -> list[Source]:
    """Expand files, folders (recursively), glob patterns and URIs into sorted, unique sources: absolute image
    paths, then object URIs as given (``s3://`` prefixes and patterns listed).

    Raises SourceError for a missing path, a pattern matching nothing, a prefix that cannot be listed, or inputs
    holding no image.
    """
    local = {p.resolve() for item in inputs if not is_remote(item) for p in _expand(item)}
    remote = {uri for item in inputs if is_remote(item) for uri in expand_remote(str(item))}
    if not local and not remote:
        names = ", ".join(str(i) for i in inputs) or "(no inputs)"
        raise SourceError(f"no images found under {names}")
    return [*sorted(local), *sorted(remote)]
