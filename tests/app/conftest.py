"""A small real index for the search page tests, built once by the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
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
