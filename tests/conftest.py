"""Shared fixtures: seeded synthetic GeoTIFFs (torchgeo style) and the real data folder."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RUST_LOG", "error")

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning

SHARED_DATA = Path(__file__).parents[1].parent / "shared" / "data"
# Set by .ci/run: CI provides ../shared, chromium, mount and every extra, so a test that would skip for want of
# one of them fails there instead of passing quietly.
REQUIRE_ALL = os.environ.get("RSRETRIEVE_REQUIRE_ALL") == "1"


def unavailable(reason: str) -> NoReturn:
    """Skip a test for want of ``reason``'s resource — or fail it where CI must provide it (``REQUIRE_ALL``)."""
    if REQUIRE_ALL:
        pytest.fail(f"{reason}: required here (RSRETRIEVE_REQUIRE_ALL=1)")
    pytest.skip(reason)


def random_pixels(count: int, height: int, width: int, dtype: str, seed: int) -> np.ndarray:
    """Seeded random pixels spanning a typical range for the dtype."""
    rng = np.random.default_rng(seed)
    kind = np.dtype(dtype).kind
    if kind == "f":
        return rng.uniform(0.0, 1.0, (count, height, width)).astype(dtype)
    high = 256 if dtype == "uint8" else 10_000
    low = 1 if kind == "u" else -1000  # keep 0 free for nodata in unsigned rasters
    return rng.integers(low, high, (count, height, width)).astype(dtype)


def default_transform(crs: str | None) -> Affine:
    """A plausible north-up transform: 1e-4 degree pixels for geographic CRSs, 10 m otherwise."""
    if crs is None:
        return Affine.identity()
    if CRS.from_user_input(crs).is_geographic:
        return Affine(1e-4, 0.0, -75.0, 0.0, -1e-4, 40.0)
    return Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_500_000.0)


def border_alpha(height: int, width: int) -> np.ndarray:
    """Alpha band: opaque inside, transparent in a frame a quarter of the size wide."""
    alpha = np.zeros((height, width), np.uint8)
    alpha[height // 4 : height - height // 4, width // 4 : width - width // 4] = 255
    return alpha


def colour_interp(count: int, alpha: bool) -> list[ColorInterp]:
    """R, G, B (+ undefined extra bands) or gray, then alpha when there is one."""
    colour = [ColorInterp.red, ColorInterp.green, ColorInterp.blue] if count >= 3 else [ColorInterp.gray]
    colour += [ColorInterp.undefined] * (count - len(colour))
    return colour + ([ColorInterp.alpha] if alpha else [])


def write_geotiff(
    path: str | Path,
    width: int,
    height: int,
    count: int = 3,
    dtype: str = "uint8",
    crs: str | None = "EPSG:32618",
    nodata: float | None = None,
    transform: Affine | None = None,
    alpha: bool = False,
    tags: dict[str, str] | None = None,
    seed: int = 0,
    tiled: bool = False,
    data: np.ndarray | None = None,
    colorinterp: Sequence[ColorInterp] | None = None,
) -> Path:
    """Write a small seeded GeoTIFF; `data` (count, height, width) overrides the random pixels."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = random_pixels(count, height, width, dtype, seed) if data is None else np.asarray(data, dtype)
    count = pixels.shape[0]
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count + int(alpha),
        "dtype": dtype,
        "crs": crs,
        "transform": transform if transform is not None else default_transform(crs),
        "nodata": nodata,
    }
    if tiled:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    with warnings.catch_warnings():  # a plain (crs=None) image is intended
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        dst = rasterio.open(path, "w", **profile)
    with dst:
        dst.write(pixels, indexes=list(range(1, count + 1)))
        if alpha:
            dst.write(border_alpha(height, width).astype(dtype), count + 1)
        dst.colorinterp = list(colorinterp) if colorinterp else colour_interp(count, alpha)
        if tags:
            dst.update_tags(**tags)
    return path


@pytest.fixture
def make_geotiff() -> Callable[..., Path]:
    """Factory: make_geotiff(path, width, height, count=3, dtype="uint8", crs="EPSG:32618", ...) -> Path."""
    return write_geotiff


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder (``../shared/data`` beside the checkout); skips when absent (fails in CI)."""
    if not SHARED_DATA.is_dir():
        unavailable(f"shared data folder not found at {SHARED_DATA}")
    return SHARED_DATA


@contextlib.contextmanager
def captured_logs(name: str) -> Iterator[list[logging.LogRecord]]:
    """Records logged under logger ``name`` meanwhile (captured there: the CLI may stop their propagation)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger(name)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture(scope="session")
def tiny_model():
    """The tiny registered test model with seeded random weights, on the CPU."""
    from rsretrieve.models import load_model

    return load_model("tiny-test", device="cpu", random_weights=True)


def write_small_archive(folder: Path) -> Path:
    """Four dated scenes in two CRSs (two UTM, one WGS84, one 16-bit) plus a plain JPEG: 31 chips at 64 px."""
    write_geotiff(folder / "utm" / "scene_20150601.tif", 256, 192, seed=1)
    write_geotiff(folder / "utm" / "scene_20190715.tif", 256, 192, seed=2)
    write_geotiff(folder / "wgs84" / "tile_2018-03-02.tif", 128, 128, crs="EPSG:4326", seed=3)
    write_geotiff(folder / "wgs84" / "dem_2021.tif", 128, 64, count=1, dtype="uint16", crs="EPSG:4326", seed=4)
    from PIL import Image

    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)).save(folder / "plain.jpg")
    return folder


@pytest.fixture(scope="session")
def small_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of small synthetic scenes (see write_small_archive); index it with --chip-size 64."""
    return write_small_archive(tmp_path_factory.mktemp("archive"))


SQUARE_FOOTPRINT = {"type": "Polygon", "coordinates": [[[10, 50], [10, 51], [11, 51], [11, 50], [10, 50]]]}


@pytest.fixture
def result() -> Callable[..., object]:
    """Factory of search hits without a source file: result(chip_id, score=0.5, georeferenced=True)."""
    import datetime as dt

    from rsretrieve.chips import Chip, Window
    from rsretrieve.hits import Hit

    def make(chip_id: str, score: float = 0.5, georeferenced: bool = True) -> Hit:
        chip = Chip(
            id=chip_id,
            path=f"/archive/{chip_id}_20200101.tif",
            window=Window(0, 64, 64, 64),
            crs="EPSG:4326" if georeferenced else None,
            bbox=(10.0, 50.0, 11.0, 51.0) if georeferenced else None,
            footprint=SQUARE_FOOTPRINT if georeferenced else None,
            date=dt.date(2020, 1, 1),
        )
        return Hit(score, chip)

    return make


# --- remote archives (tests/servers.py): COGs on a loopback S3 server and a Range-capable HTTP server ----------

REMOTE_SCENES = ("landsat_peru/1985.tif", "landsat_peru/1990.tif", "misc/cogeo.tif")


def write_cog(source: Path, target: Path) -> Path:
    """A Cloud-Optimised GeoTIFF copy of ``source`` (256² tiles, deflate, overviews made by GDAL's COG driver)."""
    with rasterio.open(source) as src:
        profile = {k: v for k, v in src.profile.items() if k not in ("tiled", "blockxsize", "blockysize", "interleave")}
        profile.update(driver="COG", blocksize=256, compress="deflate")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(target, "w", **profile) as dst:
                dst.write(src.read())
                dst.colorinterp = src.colorinterp
    return target


@pytest.fixture(scope="session")
def cog_folder(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """COG copies of two Landsat scenes (dated by name) and the shared cogeo.tif: 66 + 66 + 256 chips at 64 px."""
    folder = tmp_path_factory.mktemp("cogs")
    for name in REMOTE_SCENES:
        write_cog(shared_data / "geotiff" / name, folder / Path(name).name)
    return folder


@pytest.fixture(scope="session")
def s3_server(cog_folder: Path):
    """A moto S3 server on 127.0.0.1 with the COGs under s3://archive/scenes/ (stopped after the session)."""
    from tests.servers import S3Server, upload

    with S3Server() as server:
        server.uris = upload(cog_folder, "archive", server.env(), prefix="scenes/")
        yield server


@pytest.fixture
def s3_env(s3_server, monkeypatch: pytest.MonkeyPatch):
    """The S3 server, with AWS_ENDPOINT_URL and test credentials in this process's environment."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server


@pytest.fixture
def s3_bucket(s3_env, tmp_path: Path) -> str:
    """A new, empty-but-for-a-readme bucket of its own on the S3 server (named after the test); its name."""
    from tests.servers import upload

    name = f"t-{tmp_path.name.lower().replace('_', '-')[-40:]}"
    (tmp_path / "seed").mkdir()
    (tmp_path / "seed" / "readme.txt").write_text("a bucket of this test")
    upload(tmp_path / "seed", name, s3_env.env())
    return name


@pytest.fixture(scope="session")
def http_server(cog_folder: Path):
    """The COG folder served with byte ranges on 127.0.0.1 (stopped after the session)."""
    from tests.servers import RangeServer

    with RangeServer(cog_folder) as server:
        yield server


CLI_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "RUST_LOG": "error"}


def run_cli(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``rsretrieve ARGS`` in a fresh interpreter (stdout and stderr captured as text)."""
    command = [sys.executable, "-m", "rsretrieve.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env or CLI_ENV, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    """A failed command that said why in exactly one ``error:`` line containing ``fragment``, without a traceback."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr
