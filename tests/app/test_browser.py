"""The real page in a real browser: ``rsretrieve app`` driven by headless Chromium (benchmarks/screenshot_app.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import unavailable

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "screenshot_app.py"
CHROMIUM = "/usr/bin/chromium"


@pytest.mark.browser
def test_text_query_in_chromium(tmp_path: Path, shared_data: Path) -> None:
    """One Landsat scene cut into 66 chips: footprints far enough apart on the map to click one; labels, the
    classifier layer, the table, paging, a narrow window and a search area drawn by clicks in a real browser."""
    if not Path(CHROMIUM).is_file():
        unavailable(f"Chromium not installed at {CHROMIUM} (apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        unavailable("the playwright package is not installed")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    db = tmp_path / "landsat.lance"
    scene = shared_data / "geotiff" / "landsat_peru" / "2020.tif"
    index = [sys.executable, "-m", "rsretrieve.cli", "index", str(scene), "--db", str(db), "--chip-size", "64"]
    subprocess.run([*index, "--model", "tiny-test", "--random-weights", "--quiet"], check=True, env=env, timeout=300)
    shot, narrow = tmp_path / "page.png", tmp_path / "narrow.png"
    command = [sys.executable, str(SCRIPT), "--db", str(db), "--query", "farmland", "--out", str(shot)]
    command += ["--narrow-out", str(narrow), "--draw"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.splitlines()[-1])
    assert report["outside_requests"] == []  # no tile server, fonts or icons from the network
    assert report["highlighted"].startswith(f"#{report['clicked_rank']} ·")  # a click on a footprint selects it
    assert report["labels"] == "3 ✓ · 2 ✗"  # ✓ / ✗ on the cards counted in the sidebar
    assert "chips score ≥ 0.80" in report["classifier"] and report["maps"] == 2  # the classifier's own layer
    assert report["table"] and report["paged"].startswith("Results 25–48 of 66")  # k = 1000: pages of 24 cards
    assert report["card_columns"] == {"wide": 5, "narrow": 2}  # the grid fills the window: 176 px cards at least
    assert 0 < report["drawn_results"] == report["area_expected"] < 66  # an area drawn by clicks filters the results
    with Image.open(shot) as image:
        assert image.width == 1440 and image.height > 1500  # header, map and a grid of cards
    with Image.open(narrow) as image:
        assert image.width == 420
