"""The LanceDB side of the store: the ``chips`` table (one row per chip; ``fid`` = row offset = FAISS id)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

TABLE = "chips"


def connect(db: Path) -> Any:
    """A LanceDB connection (imported here: it takes seconds, and error paths should not wait for it)."""
    os.environ.setdefault("RUST_LOG", "error")
    os.environ.setdefault("LANCEDB_LOG", "error")
    import lancedb

    return lancedb.connect(db)
