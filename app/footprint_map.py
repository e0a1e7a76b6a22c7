"""The map of result footprints: pydeck layers on a plain background (no tile server needed).

There is no basemap: ``map_provider=None`` with pydeck's default ``map_style`` (Streamlit draws a Carto basemap for
``map_style=None``, which needs the network). Context comes from layers that travel with the page: country borders
and coastlines (``basemap``), a graticule with degree labels, the search area, and the chips themselves drawn as
small images at their footprints. Results of one place (several dates of a scene) share one footprint, drawn once
with their count. A classifier run is a layer of its own, coloured by score.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any

import pydeck as pdk

from app.backend import Hit
from app.basemap import border_paths

RESULT_COLOUR = [37, 99, 235]
SELECTED_COLOUR = [245, 124, 0]
AREA_COLOUR = [15, 23, 42]
BORDER_COLOUR = [100, 116, 139, 160]
GRID_COLOUR = [148, 163, 184, 110]
LABEL_COLOUR = [100, 116, 139]
EXTENT_FILL, EXTENT_LINE = [37, 99, 235, 28], [37, 99, 235, 200]  # the index's extent before any query
LOW_SCORE_COLOUR, HIGH_SCORE_COLOUR = (254, 217, 118), (189, 0, 38)
GRID_STEPS = (45, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001)
# the zoom fits a chart this size: about the narrowest the page draws the map, so the results stay in view
MAP_WIDTH_PX, MAP_HEIGHT_PX = 480, 420
FILL = 0.75  # share of the chart that the results' bbox fills
Box = tuple[float, float, float, float]


def union_bbox(hits: Sequence[Hit], area: Box | None = None) -> Box | None:
    """WGS84 bbox around every result with a footprint (and ``area``), or None when there is nothing to map."""
    boxes = [hit.chip.bbox for hit in hits if hit.chip.footprint and hit.chip.bbox]
    if area is not None:
        boxes.append(area)
    if not boxes:
        return None
    return min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)


def _zoom_to_fit(span_degrees: float, pixels: int) -> float:
    """Zoom at which span_degrees (of Web-Mercator x) fill FILL of pixels (the world is 512 px at zoom 0)."""
    return math.log2(FILL * pixels * 360 / (512 * span_degrees))


def fitted_view(bbox: Box) -> pdk.ViewState:
    """A view centred on bbox with a Web-Mercator zoom that shows all of it with a margin."""
    minx, miny, maxx, maxy = bbox
    latitude = (miny + maxy) / 2
    stretch = 1 / max(math.cos(math.radians(latitude)), 0.05)
    span_x = max(maxx - minx, 1e-6)
    span_y = max((maxy - miny) * stretch, 1e-6)
    zoom = min(_zoom_to_fit(span_x, MAP_WIDTH_PX), _zoom_to_fit(span_y, MAP_HEIGHT_PX))
    return pdk.ViewState(longitude=(minx + maxx) / 2, latitude=latitude, zoom=max(0.0, min(zoom, 19.0)))


def grid_step(bbox: Box) -> float:
    """A round graticule step in degrees giving a few lines across bbox."""
    span = max(bbox[2] - bbox[0], bbox[3] - bbox[1])
    return next((step for step in GRID_STEPS if span / step >= 2), GRID_STEPS[-1])


def _ticks(low: float, high: float, step: float, limit: float) -> list[float]:
    first, last = math.floor(low / step), math.ceil(high / step)
    return [round(i * step, 6) for i in range(first, last + 1) if abs(i * step) <= limit]


def surroundings(bbox: Box) -> Box:
    """bbox grown by three of its spans (or graticule steps) on every side, within the Web-Mercator world."""
    pad = 3 * max(bbox[2] - bbox[0], bbox[3] - bbox[1], grid_step(bbox))
    return max(bbox[0] - pad, -180), max(bbox[1] - pad, -85), min(bbox[2] + pad, 180), min(bbox[3] + pad, 85)


def graticule(bbox: Box) -> tuple[list[dict], list[dict]]:
    """Meridians and parallels around bbox (three spans beyond it), and their degree labels at its lower left."""
    step = grid_step(bbox)
    west, south, east, north = surroundings(bbox)
    lons, lats = _ticks(west, east, step, 180), _ticks(south, north, step, 85)
    lines = [{"path": [[x, south], [x, north]]} for x in lons] + [{"path": [[west, y], [east, y]]} for y in lats]
    labels = [{"position": [x, bbox[1]], "text": f"{abs(x):g}°{'E' if x >= 0 else 'W'}"} for x in lons]
    labels += [{"position": [bbox[0], y], "text": f"{abs(y):g}°{'N' if y >= 0 else 'S'}"} for y in lats]
    return lines, labels


def place_key(hit: Hit) -> tuple[float, ...]:
    """Results with the same key lie on the same footprint (to ~1 m)."""
    return tuple(round(value, 5) for value in hit.chip.bbox)


def footprint_rows(hits: Sequence[Hit], selected_id: str | None, first: int = 1) -> list[dict]:
    """One row per place with a footprint: the best-ranked result there (the selected one if it is there) and how
    many results share the place; the selected place last so that it is drawn on top. Ranks count from ``first``."""
    places: dict[tuple[float, ...], list[tuple[int, Hit]]] = {}
    for rank, hit in enumerate(hits, first):
        if hit.chip.footprint and hit.chip.bbox:
            places.setdefault(place_key(hit), []).append((rank, hit))
    rows = []
    for stack in places.values():
        selected = any(hit.chip.id == selected_id for _, hit in stack)
        rank, hit = next(((r, h) for r, h in stack if h.chip.id == selected_id), stack[0])
        chip = hit.chip
        dates = sorted({h.chip.date.isoformat() for _, h in stack if h.chip.date})
        rows.append(
            {
                "id": chip.id,
                "polygon": chip.footprint["coordinates"][0],
                "centre": [(chip.bbox[0] + chip.bbox[2]) / 2, (chip.bbox[1] + chip.bbox[3]) / 2],
                "rank": rank,
                "count": len(stack),
                "stack": f"×{len(stack)}" if len(stack) > 1 else "",
                "score": f"{hit.score:.3f}",
                "date": ", ".join(dates) if dates else "no date",
                "file": PurePath(chip.path).name,
                "fill": [*(SELECTED_COLOUR if selected else RESULT_COLOUR), 70 if selected else 25],
                "line": SELECTED_COLOUR if selected else RESULT_COLOUR,
                "width": 3 if selected else 1,
                "selected": selected,
            }
        )
    return sorted(rows, key=lambda row: row["selected"])


def score_colour(score: float, low: float) -> list[int]:
    """Yellow at ``low`` to dark red at 1."""
    t = min(max((score - low) / max(1 - low, 1e-6), 0.0), 1.0)
    return [round(a + (b - a) * t) for a, b in zip(LOW_SCORE_COLOUR, HIGH_SCORE_COLOUR, strict=True)] + [170]


def scored_rows(hits: Sequence[Hit], low: float) -> list[dict]:
    """Classifier layer rows: footprints coloured by score."""
    return [
        {
            "id": hit.chip.id,
            "polygon": hit.chip.footprint["coordinates"][0],
            "score": f"{hit.score:.3f}",
            "date": hit.chip.date.isoformat() if hit.chip.date else "no date",
            "file": PurePath(hit.chip.path).name,
            "rank": rank,
            "stack": "",
            "fill": score_colour(hit.score, low),
        }
        for rank, hit in enumerate(hits, 1)
        if hit.chip.footprint
    ]


def data_uri(png: bytes) -> str:
    """A PNG as a data: URI (the map fetches nothing)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def image_layers(hits: Sequence[Hit], images: Mapping[str, bytes | None]) -> list[pdk.Layer]:
    """One BitmapLayer per result with a thumbnail, stretched over its footprint's bbox (worst first, so that the
    best of a stack is drawn on top). The data URI is quoted: pydeck turns a bare string into a JS expression."""
    layers = []
    for hit in reversed(hits):
        png = images.get(hit.chip.id)
        if png is not None and hit.chip.bbox and hit.chip.footprint:
            bounds = list(hit.chip.bbox)
            layers.append(
                pdk.Layer("BitmapLayer", None, id=f"chip-{hit.chip.id}", image=f"'{data_uri(png)}'", bounds=bounds)
            )
    return layers


def area_rows(area: Any) -> list[dict]:
    """Outline rows of the search area: a bbox tuple or a shapely (Multi)Polygon (its exterior rings)."""
    if area is None:
        return []
    if isinstance(area, tuple):
        minx, miny, maxx, maxy = area
        return [{"path": [[minx, miny], [maxx, miny], [maxx, maxy], [minx, maxy], [minx, miny]]}]
    polygons = getattr(area, "geoms", [area])
    return [{"path": [list(xy) for xy in polygon.exterior.coords]} for polygon in polygons]


def area_bbox(area: Any) -> Box | None:
    """The bbox of the search area (a bbox tuple or a shapely geometry)."""
    if area is None:
        return None
    return area if isinstance(area, tuple) else tuple(area.bounds)


def picked_id(selection: Mapping[str, Any]) -> str | None:
    """The chip id of the footprint or dot clicked on the map (``st.pydeck_chart``'s selection), if any."""
    for objects in selection.get("objects", {}).values():
        for picked in objects:
            if picked.get("id"):
                return picked["id"]
    return None


def context_layers(bbox: Box, area: Any) -> list[pdk.Layer]:
    """Borders, graticule with labels, and the search area's outline."""
    lines, labels = graticule(bbox)
    return [
        pdk.Layer("PathLayer", lines, id="graticule", get_path="path", get_color=GRID_COLOUR, width_min_pixels=1),
        pdk.Layer(
            "PathLayer", border_paths(surroundings(bbox)), id="borders", get_path="path",
            get_color=BORDER_COLOUR, width_min_pixels=1,
        ),
        pdk.Layer(
            "TextLayer", labels, id="degrees", get_position="position", get_text="text", get_color=LABEL_COLOUR,
            get_size=11, get_alignment_baseline="'top'", character_set="'auto'", get_text_anchor="'start'",
        ),
        pdk.Layer(
            "PathLayer", area_rows(area), id="area", get_path="path", get_color=AREA_COLOUR, width_min_pixels=2,
            get_dash_array=[6, 4], dash_justified=True,
        ),
    ]  # fmt: skip


TOOLTIP = {"html": "<b>#{rank}</b> {stack} · score {score}<br/>{date}<br/>{file}"}


def footprint_deck(
    hits: Sequence[Hit],
    selected_id: str | None,
    images: Mapping[str, bytes | None] | None = None,
    area: Any = None,
    first: int = 1,
) -> pdk.Deck | None:
    """The map of result footprints (ranks from ``first``), their thumbnails and the search area (None when no
    result has a footprint)."""
    if union_bbox(hits) is None:
        return None
    bbox = union_bbox(hits, area_bbox(area))
    rows = footprint_rows(hits, selected_id, first)
    layers = [
        *context_layers(bbox, area),
        *image_layers(hits, images or {}),
        pdk.Layer(
            "PolygonLayer", rows, id="footprints", get_polygon="polygon",
            get_fill_color="fill", get_line_color="line", get_line_width="width", line_width_units="'pixels'",
            stroked=True, filled=True, pickable=True, auto_highlight=True,
        ),
        pdk.Layer(  # a dot per place keeps far-apart results visible when zoomed out
            "ScatterplotLayer", rows, id="centres", get_position="centre", get_fill_color="line",
            radius_min_pixels=4, radius_max_pixels=4, pickable=True,
        ),
        pdk.Layer(  # how many results share a place
            "TextLayer", [row for row in rows if row["count"] > 1], id="stacks", get_position="centre",
            get_text="stack", get_size=13, get_color=[15, 23, 42], get_pixel_offset=[0, -14],
            character_set="'auto'", font_weight=700, outline_width=2, outline_color=[255, 255, 255],
            font_settings={"sdf": True},
        ),
    ]  # fmt: skip
    return pdk.Deck(layers=layers, initial_view_state=fitted_view(bbox), map_provider=None, tooltip=TOOLTIP)


def coverage_deck(extent: Box, area: Any = None) -> pdk.Deck:
    """The index's extent (``Searcher.extent``'s bbox) with the borders and the search area, shown before the first
    query: where the archive is. It also has the browser load the map's code while the user types."""
    boxes = [extent] if area is None else [extent, area_bbox(area)]
    bbox = min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)
    minx, miny, maxx, maxy = extent
    outline = [{"polygon": [[minx, miny], [maxx, miny], [maxx, maxy], [minx, maxy]]}]
    layer = pdk.Layer(
        "PolygonLayer", outline, id="extent", get_polygon="polygon", get_fill_color=EXTENT_FILL,
        get_line_color=EXTENT_LINE, line_width_min_pixels=1, stroked=True, filled=True,
    )  # fmt: skip
    return pdk.Deck(
        layers=[*context_layers(bbox, area), layer], initial_view_state=fitted_view(bbox), map_provider=None
    )


def scored_deck(hits: Sequence[Hit], low: float, area: Any = None) -> pdk.Deck | None:
    """The classifier layer: found chips coloured by score from ``low`` (yellow) to 1 (dark red)."""
    if union_bbox(hits) is None:
        return None
    bbox = union_bbox(hits, area_bbox(area))
    layer = pdk.Layer(
        "PolygonLayer", scored_rows(hits, low), id="scored", get_polygon="polygon", get_fill_color="fill",
        get_line_color="fill", line_width_min_pixels=1, stroked=True, filled=True, pickable=True,
    )  # fmt: skip
    return pdk.Deck(
        layers=[*context_layers(bbox, area), layer], initial_view_state=fitted_view(bbox), map_provider=None,
        tooltip=TOOLTIP,
    )  # fmt: skip
