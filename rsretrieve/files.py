"""Atomic file replacement: readers see the old content or the new, never a part of it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

TEMPORARY_PATTERN = ".*.tmp-*"  # glob of the temporary files a killed writer may leave behind


def temporary_name(path: Path) -> Path:
    """The hidden temporary file written beside ``path`` before it replaces it."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, fsync it, rename it over ``path``, fsync the folder."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        write(tmp)
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort where the file system cannot)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
