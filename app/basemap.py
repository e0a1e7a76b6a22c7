"""A light borders-and-coastlines layer that needs no network: Natural Earth 1:110m admin-0 country outlines.

``app/data/borders.json`` holds the outlines as lists of [lon, lat] paths (public domain, from Natural Earth's
``ne_110m_admin_0_countries`` as shipped with pyogrio's test data; simplified to 0.02° and rounded to 0.01°,
148 KB). Only the paths near the map's view travel to the browser.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np

BORDERS = Path(__file__).with_name("data") / "borders.json"


@cache
def _borders() -> tuple[list[list[list[float]]], np.ndarray]:
    """Every outline and its bbox (minx, miny, maxx, maxy) per row."""
    paths = json.loads(BORDERS.read_text())
    boxes = np.array([[*np.min(path, axis=0), *np.max(path, axis=0)] for path in paths])
    return paths, boxes


def border_paths(area: tuple[float, float, float, float]) -> list[dict]:
    """PathLayer rows of the outlines whose bbox meets ``area`` (WGS84 minx, miny, maxx, maxy)."""
    paths, boxes = _borders()
    near = (boxes[:, 2] >= area[0]) & (boxes[:, 0] <= area[2]) & (boxes[:, 3] >= area[1]) & (boxes[:, 1] <= area[3])
    return [{"path": paths[row]} for row in np.flatnonzero(near)]
