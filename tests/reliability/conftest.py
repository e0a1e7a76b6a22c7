"""Fixtures of the reliability tests: a warm forked CLI runner, archives of small and of bad files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio.shutil
from PIL import Image

from tests.conftest import write_geotiff

HERE = Path(__file__).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "RUST_LOG": "error", "OMP_NUM_THREADS": "1"}
TINY = ["--model", "tiny-test", "--random-weights", "--quiet", "--workers", "0"]


class ForkedCli:
    """Client of ``forked_cli.py``: runs ``rsretrieve`` commands in forked children of one warm process."""

    def __init__(self) -> None:
        command = [sys.executable, str(HERE / "forked_cli.py")]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV)
        assert json.loads(self.process.stdout.readline()) == {"ready": True}

    def run(
        self,
        *argv: str | Path,
        log: Path,
        kill_after: float | None = None,
        fault: tuple | None = None,
        out: Path | None = None,
    ) -> dict:
        """Run one command; its stderr (and its stdout, unless ``out``) goes to ``log``. See forked_cli.py."""
        job = {"argv": [str(arg) for arg in argv], "log": str(log), "kill_after": kill_after, "fault": fault}
        job["out"] = str(out) if out else None
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        """Stop the runner."""
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture(scope="session")
def forked_cli() -> Iterator[ForkedCli]:
    """A warm runner shared by the tests of this folder (imports are paid once)."""
    runner = ForkedCli()
    yield runner
    runner.close()


def json_summary(log: Path) -> dict:
    """The summary printed by ``index --json`` (the log's lines from a lone "{" on)."""
    lines = log.read_text().splitlines()
    return json.loads("\n".join(lines[lines.index("{") :]))


def write_scenes(folder: Path, count: int) -> Path:
    """``count`` seeded UTM scenes of 4 or 6 chips at 64 px (128×128 or 192×128)."""
    for i in range(count):
        write_geotiff(folder / f"scene_{i:02d}.tif", 128 + 64 * (i % 2), 128, seed=100 + i)
    return folder


def scene_chips(count: int) -> int:
    """Chips of ``write_scenes(folder, count)`` at 64 px."""
    return sum(6 if i % 2 else 4 for i in range(count))


@pytest.fixture(scope="session")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 small scenes (120 chips at 64 px)."""
    return write_scenes(tmp_path_factory.mktemp("scenes"), 24)


# --- bad files ---------------------------------------------------------------------------------

GOOD_FILES = {  # file → chips indexed at 64 px
    "jpeg_named.tif": 1,  # a JPEG with a .tif name: GDAL reads it by content, one plain chip
    "no_georeference.tif": 1,  # no CRS, no geotransform: one plain chip, no footprint
    "dem_float_nodata.tif": 8,  # left half nodata: the 8 right-hand chips of 16
    "sixteen_bit_4band.tif": 4,  # uint16 × 4 bands: bands 1-3, percentile stretch
    "rgba_transparent_border.tif": 4,  # transparent frame 64 px wide: the 4 inner chips of 16
    "smaller_than_a_chip.tif": 1,  # 40×30: one chip of its own size
}
BAD_FILES = {  # file → words of its warning
    "corrupt_tiles.tif": "cannot read window",
    "empty.tif": "empty file",
    "header_only.tif": "not a readable raster",
    "truncated.tif": "cannot read window",
    "all_nodata.tif": "nodata",
}


def _corrupt(path: Path, start: float, end: float) -> None:
    """Overwrite the bytes between two fractions of the file with seeded garbage."""
    data = bytearray(path.read_bytes())
    lo, hi = int(len(data) * start), int(len(data) * end)
    data[lo:hi] = np.random.default_rng(0).integers(0, 256, hi - lo, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def write_bad_archive(folder: Path) -> Path:
    """One file of each kind in GOOD_FILES and BAD_FILES."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(1).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "jpeg_named.tif", format="JPEG")
    write_geotiff(folder / "no_georeference.tif", 128, 96, crs=None, seed=2)
    dem = np.random.default_rng(3).uniform(100, 900, (1, 256, 256)).astype("float32")
    dem[:, :, :128] = -9999.0
    write_geotiff(folder / "dem_float_nodata.tif", 256, 256, dtype="float32", nodata=-9999.0, data=dem)
    write_geotiff(folder / "sixteen_bit_4band.tif", 128, 128, count=4, dtype="uint16", seed=4)
    write_geotiff(folder / "rgba_transparent_border.tif", 256, 256, alpha=True, seed=5)
    write_geotiff(folder / "smaller_than_a_chip.tif", 40, 30, seed=6)
    (folder / "empty.tif").write_bytes(b"")
    (folder / "header_only.tif").write_bytes(b"II*\x00" + bytes(60))
    write_geotiff(folder / "truncated.tif", 256, 256, seed=7)
    truncated = folder / "truncated.tif"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    plain = write_geotiff(folder / "plain_tiles.tmp", 256, 256, tiled=True, seed=8)
    rasterio.shutil.copy(plain, folder / "corrupt_tiles.tif", driver="GTiff", tiled=True, compress="deflate")
    plain.unlink()
    _corrupt(folder / "corrupt_tiles.tif", 0.5, 0.6)
    write_geotiff(folder / "all_nodata.tif", 128, 128, nodata=0, data=np.zeros((3, 128, 128)))
    return folder


@pytest.fixture(scope="session")
def bad_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated good and bad files (the real ones of shared/data are indexed beside them by the tests)."""
    return write_bad_archive(tmp_path_factory.mktemp("bad"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: runs for tens of seconds (deselect with -m 'not slow')")
