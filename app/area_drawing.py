"""A search area drawn on a map: the page's own Streamlit component (``app/area_draw/index.html``, plain JS, no
build step, nothing from the network) and the Python side that turns what it returns into the ``within`` filter.

The component draws the country borders of ``app/data/borders.json`` near the view and the footprints of the
results on the page; clicks add corners, and closing the ring returns it as a GeoJSON Polygon (WGS84), which
feeds the same ``within`` filter as an uploaded GeoJSON file. "Clear" returns None.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import streamlit as st
import streamlit.components.v1 as components

from app.basemap import border_paths
from app.footprint_map import Box, surroundings, union_bbox
from rsretrieve.hits import Hit
from rsretrieve.query import Filters, QueryError

FRONTEND = Path(__file__).with_name("area_draw")
HEIGHT_PX = 360
KEY = "drawn_area"  # the component's key: its value (the area) in the session state
WORLD: Box = (-180.0, -60.0, 180.0, 75.0)

_component = components.declare_component("area_draw", path=str(FRONTEND))


def drawn_polygon(value: Any) -> dict | None:
    """The GeoJSON Polygon of a value the component returned (None: nothing drawn, cleared, or not a ring of at
    least three finite corners in WGS84 longitude and latitude)."""
    if not isinstance(value, dict) or value.get("type") != "Polygon":
        return None
    rings = value.get("coordinates")
    if not isinstance(rings, list) or len(rings) != 1 or not isinstance(rings[0], list):
        return None
    ring = rings[0]
    if len(ring) < 4 or not all(is_lon_lat(point) for point in ring):
        return None
    ring = [[float(lon), float(lat)] for lon, lat in ring]
    if ring[0] != ring[-1]:
        ring.append(ring[0])
    return {"type": "Polygon", "coordinates": [ring]}


def is_lon_lat(point: Any) -> bool:
    """Whether ``point`` is [longitude, latitude] in range."""
    return (
        isinstance(point, list | tuple)
        and len(point) == 2
        and all(isinstance(v, int | float) and math.isfinite(v) for v in point)
        and -180 <= point[0] <= 180
        and -90 <= point[1] <= 90
    )


def view_of(hits: Sequence[Hit], area: dict | None, extent: Box | None) -> Box:
    """What the map fits first: the results and the area drawn, else the index's extent, else the world."""
    bbox = union_bbox(hits, polygon_bbox(area) if area else None)
    return bbox or extent or WORLD


def polygon_bbox(polygon: dict) -> Box:
    """The bbox of a GeoJSON Polygon's outer ring."""
    lons, lats = zip(*polygon["coordinates"][0], strict=True)
    return min(lons), min(lats), max(lons), max(lats)


def drawn_area() -> dict | None:
    """The area drawn on the map (a GeoJSON Polygon) as this run starts, before the map is drawn again: the
    results it filters are then on the map with it."""
    return drawn_polygon(st.session_state.get(KEY))


def draw_area(hits: Sequence[Hit], extent: Box | None) -> dict | None:
    """The map to draw a search area on, with the results' footprints; the area drawn (a GeoJSON Polygon) or
    None."""
    area = drawn_area()
    view = view_of(hits, area, extent)
    footprints = [hit.chip.footprint["coordinates"][0] for hit in hits if hit.chip.footprint]
    borders = [row["path"] for row in border_paths(surroundings(view))]
    value = _component(
        borders=borders, footprints=footprints, area=area["coordinates"][0] if area else None, view=list(view),
        height=HEIGHT_PX, key=KEY, default=None,
    )  # fmt: skip
    return drawn_polygon(value)


def combined_area(uploaded: str | None, drawn: dict | None) -> Any:
    """The ``within`` filter's area: the uploaded one, the drawn one, or where they overlap when both are on."""
    if uploaded is None or drawn is None:
        return drawn if uploaded is None else uploaded
    overlap = Filters(within=uploaded).within.intersection(Filters(within=drawn).within)
    if overlap.is_empty:
        raise QueryError("the drawn area and the uploaded one do not overlap: clear one of them")
    return overlap
