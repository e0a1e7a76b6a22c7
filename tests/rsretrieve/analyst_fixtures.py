"""Synthetic index of the analyst-loop tests: chips on a WGS84 grid with square footprints, and a planted class."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from rsretrieve.chips import Chip, Window
from rsretrieve.store import StoreWriter

DIM = 32
# the tiny test model's identity: the CLI can open the index
MODEL = SimpleNamespace(name="tiny-test", architecture="rsretrieve-tiny", checkpoint="random-seed0", dim=DIM)
ORIGIN = (10.0, 50.0)  # lon, lat of the grid's south-west corner
STEP = 0.01  # chip size in degrees


@dataclass(frozen=True)
class Grid:
    """What was written: chips (row-major from the south-west), vectors, planted mask, columns and rows."""

    db: Path
    chips: list[Chip]
    vectors: np.ndarray
    planted: np.ndarray
    columns: int
    rows: int

    def ids(self, mask: np.ndarray) -> list[str]:
        return [self.chips[i].id for i in np.flatnonzero(mask)]


def square(minx: float, miny: float, maxx: float, maxy: float) -> dict:
    return {
        "type": "Polygon",
        "coordinates": [[[minx, miny], [maxx, miny], [maxx, maxy], [minx, maxy], [minx, miny]]],
    }


def grid_chips(columns: int, rows: int) -> list[Chip]:
    chips = []
    for row in range(rows):
        for column in range(columns):
            i = row * columns + column
            minx, miny = round(ORIGIN[0] + column * STEP, 7), round(ORIGIN[1] + row * STEP, 7)
            maxx, maxy = round(minx + STEP, 7), round(miny + STEP, 7)
            chips.append(
                Chip(
                    id=f"{i:016x}",
                    path=f"/archive/scene_{row // 10}_{column // 10}.tif",
                    window=Window(column * 64 % 640, row * 64 % 640, 64, 64),
                    crs="EPSG:4326",
                    bbox=(minx, miny, maxx, maxy),
                    footprint=square(minx, miny, maxx, maxy),
                    date=dt.date(2020, 1, 1) + dt.timedelta(days=i % 365),
                )
            )
    return chips


def planted_blocks(columns: int, rows: int, blocks: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Mask of the chips in blocks (column, row, width, height)."""
    mask = np.zeros((rows, columns), bool)
    for column, row, width, height in blocks:
        mask[row : row + height, column : column + width] = True
    return mask.ravel()


def class_vectors(planted: np.ndarray, seed: int = 0, strength: float = 0.6) -> np.ndarray:
    """Unit vectors: noise, plus ``strength`` along a fixed class direction for planted chips."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=DIM)
    direction /= np.linalg.norm(direction)
    noise = rng.normal(size=(len(planted), DIM))
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    vectors = noise + strength * planted[:, None] * direction
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


DEFAULT_BLOCKS = [(2, 2, 5, 4), (30, 5, 6, 5), (10, 25, 4, 6), (40, 30, 5, 4), (20, 12, 5, 5), (44, 2, 4, 6),
                  (3, 33, 6, 4), (25, 33, 3, 5)]  # fmt: skip


def write_grid(db: Path, columns: int = 50, rows: int = 40, blocks=None, seed: int = 0, strength: float = 0.6) -> Grid:
    """An index of columns × rows chips, the planted class in ``blocks`` (about 10 % by default)."""
    chips = grid_chips(columns, rows)
    planted = planted_blocks(columns, rows, DEFAULT_BLOCKS if blocks is None else blocks)
    vectors = class_vectors(planted, seed, strength)
    writer = StoreWriter.open(db, MODEL)
    try:
        half = len(chips) // 2
        writer.append(chips[:half], vectors[:half], new_files=1)
        writer.append(chips[half:], vectors[half:], new_files=1)
        writer.finish()
    finally:
        writer.close()
    return Grid(db, chips, vectors, planted, columns, rows)


@dataclass(frozen=True)
class Ran:
    """Outcome of an in-process CLI call."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(capsys, *args) -> Ran:
    """``rsretrieve ARGS`` in this process (no interpreter or torch start-up per call), output captured."""
    from rsretrieve.cli import main

    capsys.readouterr()
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return Ran(code, captured.out, captured.err)
