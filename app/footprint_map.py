"""The map of result footprints: a pydeck PolygonLayer on a plain background (no tile server needed).

There is no basemap: ``map_provider=None`` with pydeck's default ``map_style`` (Streamlit draws a Carto
basemap for ``map_style=None``, which needs the network). A light graticule with degree labels stands in
for one, so the map still says where the chips are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

import pydeck as pdk

from rsretrieve.search import Hit

RESULT_COLOUR = [37, 99, 235]
SELECTED_COLOUR = [245, 124, 0]
GRID_COLOUR = [148, 163, 184, 110]
LABEL_COLOUR = [100, 116, 139]
GRID_STEPS = (45, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001)
MAP_WIDTH_PX, MAP_HEIGHT_PX = 700, 420  # approximate size of the chart, to fit the zoom
FILL = 0.75  # share of the chart that the results' bbox fills


def union_bbox(hits: list[Hit]) -> tuple[float, float, float, float] | None:
    """WGS84 bbox around every result with a footprint, or None when none has one."""
    boxes = [hit.chip.bbox for hit in hits if hit.chip.footprint and hit.chip.bbox]
    if not boxes:
        return None
    return min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)


def _zoom_to_fit(span_degrees: float, pixels: int) -> float:
    """Zoom at which span_degrees (of Web-Mercator x) fill FILL of pixels (the world is 512 px at zoom 0)."""
    return math.log2(FILL * pixels * 360 / (512 * span_degrees))


def fitted_view(bbox: tuple[float, float, float, float]) -> pdk.ViewState:
    """A view centred on bbox with a Web-Mercator zoom that shows all of it with a margin."""
    minx, miny, maxx, maxy = bbox
    latitude = (miny + maxy) / 2
    stretch = 1 / max(math.cos(math.radians(latitude)), 0.05)
    span_x = max(maxx - minx, 1e-6)
    span_y = max((maxy - miny) * stretch, 1e-6)
    zoom = min(_zoom_to_fit(span_x, MAP_WIDTH_PX), _zoom_to_fit(span_y, MAP_HEIGHT_PX))
    return pdk.ViewState(longitude=(minx + maxx) / 2, latitude=latitude, zoom=max(0.0, min(zoom, 19.0)))


def grid_step(bbox: tuple[float, float, float, float]) -> float:
    """A round graticule step in degrees giving a few lines across bbox."""
    span = max(bbox[2] - bbox[0], bbox[3] - bbox[1])
    return next((step for step in GRID_STEPS if span / step >= 2), GRID_STEPS[-1])


def _ticks(low: float, high: float, step: float, limit: float) -> list[float]:
    first, last = math.floor(low / step), math.ceil(high / step)
    return [round(i * step, 6) for i in range(first, last + 1) if abs(i * step) <= limit]


def graticule(bbox: tuple[float, float, float, float]) -> tuple[list[dict], list[dict]]:
    """Meridians and parallels around bbox (three spans beyond it), and their degree labels at its lower left."""
    step = grid_step(bbox)
    pad = 3 * max(bbox[2] - bbox[0], bbox[3] - bbox[1], step)
    west, south = max(bbox[0] - pad, -180), max(bbox[1] - pad, -85)
    east, north = min(bbox[2] + pad, 180), min(bbox[3] + pad, 85)
    lons, lats = _ticks(west, east, step, 180), _ticks(south, north, step, 85)
    lines = [{"path": [[x, south], [x, north]]} for x in lons] + [{"path": [[west, y], [east, y]]} for y in lats]
    labels = [{"position": [x, bbox[1]], "text": f"{abs(x):g}°{'E' if x >= 0 else 'W'}"} for x in lons]
    labels += [{"position": [bbox[0], y], "text": f"{abs(y):g}°{'N' if y >= 0 else 'S'}"} for y in lats]
    return lines, labels


def footprint_rows(hits: list[Hit], selected_id: str | None) -> list[dict]:
    """One row per result with a footprint, the selected one last so that it is drawn on top."""
    rows = []
    for rank, hit in enumerate(hits, 1):
        chip = hit.chip
        if not (chip.footprint and chip.bbox):
            continue
        selected = chip.id == selected_id
        rows.append(
            {
                "id": chip.id,
                "polygon": chip.footprint["coordinates"][0],
                "centre": [(chip.bbox[0] + chip.bbox[2]) / 2, (chip.bbox[1] + chip.bbox[3]) / 2],
                "rank": rank,
                "score": f"{hit.score:.3f}",
                "date": chip.date.isoformat() if chip.date else "no date",
                "file": PurePath(chip.path).name,
                "fill": [*(SELECTED_COLOUR if selected else RESULT_COLOUR), 150 if selected else 60],
                "line": SELECTED_COLOUR if selected else RESULT_COLOUR,
                "width": 3 if selected else 1,
                "selected": selected,
            }
        )
    return sorted(rows, key=lambda row: row["selected"])


def picked_id(selection: Mapping[str, Any]) -> str | None:
    """The chip id of the footprint or dot clicked on the map (``st.pydeck_chart``'s selection), if any."""
    for objects in selection.get("objects", {}).values():
        for picked in objects:
            if picked.get("id"):
                return picked["id"]
    return None


def footprint_deck(hits: list[Hit], selected_id: str | None) -> pdk.Deck | None:
    """The map of result footprints (None when no result has one)."""
    bbox = union_bbox(hits)
    if bbox is None:
        return None
    lines, labels = graticule(bbox)
    rows = footprint_rows(hits, selected_id)
    layers = [
        pdk.Layer("PathLayer", lines, get_path="path", get_color=GRID_COLOUR, width_min_pixels=1),
        pdk.Layer(
            "TextLayer", labels, get_position="position", get_text="text", get_color=LABEL_COLOUR, get_size=11,
            get_alignment_baseline="'top'",
            character_set="'auto'", get_text_anchor="'start'",
        ),
        pdk.Layer(
            "PolygonLayer", rows, id="footprints", get_polygon="polygon",
            get_fill_color="fill", get_line_color="line", get_line_width="width", line_width_units="'pixels'",
            stroked=True, filled=True, pickable=True, auto_highlight=True,
        ),
        pdk.Layer(  # a dot per footprint keeps far-apart results visible when zoomed out
            "ScatterplotLayer", rows, id="centres", get_position="centre", get_fill_color="line",
            radius_min_pixels=5, radius_max_pixels=5, pickable=True,
        ),
    ]  # fmt: skip
    tooltip = {"html": "<b>#{rank}</b> · score {score}<br/>{date}<br/>{file}"}
    view = fitted_view(bbox)
    return pdk.Deck(layers=layers, initial_view_state=view, map_provider=None, tooltip=tooltip)
