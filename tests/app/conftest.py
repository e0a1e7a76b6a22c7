"""Real indexes for the page tests: a small one built once by the real CLI, one of imported embeddings (no
loadable model: chip ids only), and ``rsretrieve serve`` serving a copy of the first and the second."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def page_db(tmp_path_factory: pytest.TempPathFactory, small_archive: Path) -> Path:
    """31 chips of 64 px (two UTM scenes, two WGS84 tiles, one plain JPEG) indexed with the tiny random model."""
    db = tmp_path_factory.mktemp("page") / "index.lance"
    command = [
        sys.executable, "-m", "rsretrieve.cli", "index", str(small_archive), "--db", str(db),
        "--model", "tiny-test", "--random-weights", "--chip-size", "64", "--device", "cpu", "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run(command, check=True, env=env, capture_output=True, timeout=300)
    return db


@pytest.fixture(scope="session")
def imported_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 chips of a Major TOM embeddings file imported with ``--model none``: a vector-only index."""
    from indexer.import_embeddings import import_embeddings
    from tests.indexer.embedding_fixtures import write_major_tom

    folder = tmp_path_factory.mktemp("imported")
    write_major_tom(folder / "part.parquet", slice(0, 200))
    import_embeddings([folder / "part.parquet"], folder / "db", "none", show_progress=False)
    return folder / "db"


@pytest.fixture(scope="session")
def served_db(tmp_path_factory: pytest.TempPathFactory, page_db: Path) -> Path:
    """A copy of the page's index for the service to label (the page tests' index stays unlabelled)."""
    db = tmp_path_factory.mktemp("served") / "index.lance"
    shutil.copytree(page_db, db)
    return db


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory, served_db: Path, imported_db: Path) -> Iterator[tuple]:
    """``rsretrieve serve`` with an API key over the copy (``fields``, the default) and the imported embeddings
    (``imported``); (server, key file)."""
    from tests.rsretrieve.service.test_server import KEY, Server

    logs = tmp_path_factory.mktemp("service-logs")
    key_file = logs / "key.txt"
    key_file.write_text(KEY + "\n")
    server = Server(logs / "serve.log", "--db", f"fields={served_db}", "--db", f"imported={imported_db}",
                    "--api-key-file", key_file)  # fmt: skip
    try:
        yield server.wait_ready(), key_file
    finally:
        assert "Traceback" not in server.stop()
