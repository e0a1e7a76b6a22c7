"""Embeddings GeoParquet files as Major TOM and Clay publish them (written with geopandas), with a planted class.

The chips are the analyst tests' 50 × 40 grid of 0.01° squares (2,000 chips); the planted class sits in blocks of
the grid (about 10 %), its vectors drawn around one centre and the others around another, so the truth is known.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from tests.rsretrieve.analyst_fixtures import DEFAULT_BLOCKS, grid_chips, planted_blocks

DIM = 64
COLUMNS, ROWS = 50, 40


@dataclass(frozen=True)
class Planted:
    """What the files hold: ids, raw vectors, the planted mask and the footprints (shapely, WGS84), row-aligned."""

    ids: list[str]
    vectors: np.ndarray
    planted: np.ndarray
    footprints: np.ndarray

    def pick(self, mask: np.ndarray, count: int, seed: int = 0) -> list[str]:
        """``count`` ids of chips in ``mask``, spread over the grid (a seeded sample)."""
        rows = np.random.default_rng(seed).choice(np.flatnonzero(mask), count, replace=False)
        return [self.ids[i] for i in sorted(rows)]


def planted_class(seed: int = 0, spread: float = 0.9) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vectors, planted mask, footprints) of the grid: unscaled vectors around two centres (not unit length, as
    other tools publish them)."""
    chips = grid_chips(COLUMNS, ROWS)
    planted = planted_blocks(COLUMNS, ROWS, DEFAULT_BLOCKS)
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(2, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    noise = rng.normal(size=(len(chips), DIM)) * spread / np.sqrt(DIM)
    vectors = (centres[planted.astype(int)] + noise) * rng.uniform(2, 5, (len(chips), 1))
    footprints = np.array([shapely.geometry.shape(chip.footprint) for chip in chips], object)
    return vectors.astype(np.float32), planted, footprints


def write_major_tom(path: Path, rows: slice = slice(None), seed: int = 0) -> Planted:
    """A Major TOM embedding-expansion file (Core-S2L2A-SSL4EO layout) of the grid's ``rows``."""
    vectors, planted, footprints = planted_class(seed)
    index = np.arange(len(vectors))[rows]
    ids = [hashlib.sha256(f"chip-{i}".encode()).hexdigest() for i in index]
    frame = gpd.GeoDataFrame(
        {
            "unique_id": ids,
            "embedding": [vectors[i].tolist() for i in index],
            "timestamp": [f"2020{1 + i % 12:02d}{1 + i % 28:02d}T101559" for i in index],
            "product_id": [f"S2A_MSIL2A_2020_N0214_R{i // 100:03d}_T32UNA" for i in index],
            "grid_cell": [f"{i // COLUMNS}U_{i % COLUMNS}R" for i in index],
            "centre_lat": [footprints[i].centroid.y for i in index],
            "centre_lon": [footprints[i].centroid.x for i in index],
            "utm_crs": ["EPSG:32632"] * len(index),
            "pixel_bbox": [[0, 0, 224, 224]] * len(index),
        },
        geometry=list(footprints[index]),
        crs="EPSG:4326",
    )
    frame.to_parquet(path)
    return Planted(ids, vectors[index], planted[index], footprints[index])


def write_clay(path: Path, rows: slice = slice(None), seed: int = 0, crs: str = "EPSG:32632") -> Planted:
    """A Clay v0 embeddings file (source_url, date, embeddings, geometry), its footprints in ``crs``."""
    vectors, planted, footprints = planted_class(seed)
    index = np.arange(len(vectors))[rows]
    frame = gpd.GeoDataFrame(
        {
            "index": index,
            "source_url": [
                f"s3://clay-tiles-02/02/32UNA/claytile_32UNA_20200601_v02_{i // 100:04d}.tif" for i in index
            ],
            "date": pd.to_datetime(["2020-06-01"] * len(index)).date,
            "embeddings": list(vectors[index].astype(np.float64)),
        },
        geometry=list(footprints[index]),
        crs="EPSG:4326",
    ).to_crs(crs)
    frame.to_parquet(path)
    return Planted([f"{path.name.split('.')[0]}-{i}" for i in range(len(index))], vectors[index], planted[index],
                   footprints[index])  # fmt: skip
