"""The FAISS side of a commit: a whole index file, then code files appended to it (format 4).

Rewriting the whole FAISS file at every commit costs O(archive) per batch (722 MB a commit at 10M chips). An IVF-PQ
commit instead writes only its batch's codes, ``index-<version>.codes`` (ids and standalone codes: list number +
PQ code, ``ann.encode``), and the manifest lists them after the index file they extend. A reader loads the index
file and appends each code file (``ann.add_codes``): the same lists in the same order as one ``add``. The index
file is written whole again when the appended rows would pass ``APPEND_SHARE`` of those in it, or after
``MAX_APPENDED_FILES`` files, so writing stays linear in the archive and loading stays one file plus a few. A flat
index (small archives) is always written whole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rsretrieve import ann
from rsretrieve.files import atomic_write
from rsretrieve.store.errors import StoreError
from rsretrieve.store.manifest import Manifest

APPEND_SHARE = 0.5  # appended rows at most this share of the rows in the index file
MAX_APPENDED_FILES = 64
PATTERN = "index-*"  # every file of the FAISS side (index files and code files)


Added = tuple[np.ndarray, np.ndarray]  # (ids, codes) of a batch appended to an IVF-PQ


def commit(
    index: object, db: Path, manifest: Manifest, version: int, added: Added | None, changed: bool = True
) -> None:
    """Write the FAISS side of commit ``version`` and name it in ``manifest`` (written by the caller, last).

    ``added``: the (ids, codes) this commit appended to an IVF-PQ, or None when the index is new or flat;
    ``changed`` False: the index is as committed before (nothing to write).
    """
    if not changed:
        return
    if added is not None and _can_append(manifest, index.ntotal, len(added[0])):
        name = f"index-{version}.codes"
        ids, codes = added
        atomic_write(db / name, lambda tmp: _save_codes(tmp, ids, codes))
        manifest.index_appended = [*manifest.index_appended, {"file": name, "rows": len(ids)}]
        return
    name = f"index-{version}.faiss"
    ann.write_index(index, db / name)
    manifest.index_file, manifest.index_appended = name, []


def _can_append(manifest: Manifest, ntotal: int, rows: int) -> bool:
    """Whether a code file may extend the manifest's index file (see the module docstring)."""
    if manifest.index_file is None or len(manifest.index_appended) >= MAX_APPENDED_FILES:
        return False
    appended = sum(part["rows"] for part in manifest.index_appended) + rows
    return appended <= APPEND_SHARE * (ntotal - appended)


def _save_codes(path: Path, ids: np.ndarray, codes: np.ndarray) -> None:
    with path.open("wb") as handle:
        np.savez(handle, ids=np.ascontiguousarray(ids, np.int64), codes=np.ascontiguousarray(codes, np.uint8))


def files(manifest: Manifest) -> set[str]:
    """The FAISS-side files a manifest names."""
    return {name for name in [manifest.index_file, *(part["file"] for part in manifest.index_appended)] if name}


def load(db: Path, manifest: Manifest) -> object:
    """The committed FAISS index: its index file with the code files appended. StoreError if one is unreadable."""
    try:
        index = ann.read_index(db / manifest.index_file)
    except ann.AnnIndexError as error:
        raise StoreError(str(error)) from error
    for part in manifest.index_appended:
        path = db / part["file"]
        try:
            with np.load(path) as saved:
                ids, codes = saved["ids"], saved["codes"]
        except (OSError, ValueError, KeyError) as error:
            raise StoreError(f"cannot read the ANN index's appended codes {path}: {error}") from error
        if len(ids) != part["rows"]:
            raise StoreError(f"{path}: {len(ids)} rows, the manifest says {part['rows']}")
        ann.add_codes(index, codes, ids)
    return index
