"""STAC catalogues as sources: items become ``Scene``s (one asset each, read as a COG where it lives).

- a static catalogue (``catalog.json``, a collection, an item, or an ItemCollection / FeatureCollection file),
  local or over http(s), read with pystac and filtered here by collection, bbox and date;
- a STAC API (its landing page, or its ``/search`` endpoint) searched with pystac-client, every page followed.

Each item gives one scene: the asset named by ``asset`` (a key, else a role such as ``visual`` or ``data``;
without one: the ``visual`` role, then ``data``, then the first GeoTIFF/COG), its acquisition date (item
``datetime``, else ``start_datetime``; it overrides the file's tags), the item id and the collection. An item
without such an asset becomes a Scene with an ``error``, reported as a bad file when the indexer reaches it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rsretrieve.errors import UserError
from rsretrieve.raster.remote import is_remote
from rsretrieve.raster.sources import Scene

DEFAULT_ROLES = ("visual", "data")
RASTER_TYPES = ("image/tiff", "image/jp2")  # a GeoTIFF / COG / JPEG 2000 asset when no role says which
NOT_DATA_ROLES = {"thumbnail", "overview", "metadata"}


class StacError(UserError):
    """A catalogue or API that cannot be read; one line naming it and the reason."""


def _one_line(source: str, reason: object) -> StacError:
    return StacError(f"{source}: {' '.join(str(reason).split())}")


def is_static(source: str) -> bool:
    """A static catalogue file (local, or a URL of a .json file) rather than a STAC API."""
    return Path(source).expanduser().exists() or source.split("?", 1)[0].lower().endswith((".json", ".geojson"))


# --- items -> scenes -------------------------------------------------------------------------------


def item_date(item: Any) -> dt.date | None:
    """The item's acquisition date (UTC day): ``datetime``, else ``start_datetime``."""
    moment = item.datetime or item.common_metadata.start_datetime
    if moment is None:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC)
    return moment.date()


def pick_asset(item: Any, wanted: str | None) -> tuple[str, Any] | None:
    """(key, asset) chosen by key or role (see the module docstring), or None."""
    assets = item.assets
    if wanted is not None:
        if wanted in assets:
            return wanted, assets[wanted]
        return next(((key, a) for key, a in assets.items() if wanted in (a.roles or [])), None)
    for role in DEFAULT_ROLES:
        if found := next(((key, a) for key, a in assets.items() if role in (a.roles or [])), None):
            return found
    return next(
        (
            (key, a)
            for key, a in assets.items()
            if (a.media_type or "").startswith(RASTER_TYPES) and not NOT_DATA_ROLES & set(a.roles or [])
        ),
        None,
    )


def item_scene(item: Any, asset: str | None) -> Scene:
    """The scene of one item (a Scene with ``error`` when it has no such asset)."""
    collection = item.collection_id
    chosen = pick_asset(item, asset)
    if chosen is None:
        available = ", ".join(item.assets) or "none"
        wanted = f"asset '{asset}'" if asset else "raster asset (role visual or data, or a GeoTIFF)"
        label = f"STAC item {collection}/{item.id}" if collection else f"STAC item {item.id}"
        return Scene(label, item_date(item), item.id, collection, f"no {wanted} (available: {available})")
    href = chosen[1].get_absolute_href() or chosen[1].href
    if href.startswith("file://"):
        href = href[len("file://") :]
    path: str | Path = href if is_remote(href) else Path(href).expanduser().resolve()  # as find_sources makes it
    return Scene(path, item_date(item), item.id, collection)


def scenes_of(items: Iterable[Any], asset: str | None) -> list[Scene]:
    """Scenes of items, in order, without repeating an href (or an item id)."""
    scenes, seen = [], set()
    for item in items:
        scene = item_scene(item, asset)
        key = str(scene.path) if scene.error is None else f"item:{scene.collection}/{scene.item_id}"
        if key not in seen:
            seen.add(key)
            scenes.append(scene)
    return scenes


# --- static catalogues -----------------------------------------------------------------------------


def _intersects(a: Sequence[float] | None, b: Sequence[float] | None) -> bool:
    if a is None or b is None:
        return True
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def _within(item: Any, start: dt.date | None, end: dt.date | None) -> bool:
    """Whether the item's interval ([start_datetime, end_datetime] or its datetime) meets [start, end]."""
    if start is None and end is None:
        return True
    meta = item.common_metadata
    first = item.datetime or meta.start_datetime
    last = item.datetime or meta.end_datetime or first
    if first is None:
        return True
    return (end is None or first.date() <= end) and (start is None or last.date() >= start)


def static_items(source: str) -> list[Any]:
    """Every item of a static catalogue, collection, item or ItemCollection file."""
    import pystac

    href = str(Path(source).expanduser().resolve()) if Path(source).expanduser().exists() else source
    data = pystac.StacIO.default().read_json(href)
    kind = data.get("type")
    if kind == "FeatureCollection":
        return list(pystac.ItemCollection.from_dict(data, preserve_dict=False))
    if kind == "Feature":
        return [pystac.Item.from_file(href)]
    stac_object = pystac.read_file(href)
    return list(stac_object.get_items(recursive=True))


def _filtered(
    items: Iterable[Any],
    collections: Sequence[str] | None,
    bbox: Sequence[float] | None,
    start: dt.date | None,
    end: dt.date | None,
) -> list[Any]:
    return [
        item
        for item in items
        if (not collections or item.collection_id in collections)
        and _intersects(item.bbox, bbox)
        and _within(item, start, end)
    ]


# --- STAC APIs -------------------------------------------------------------------------------------


def _datetime_range(start: dt.date | None, end: dt.date | None) -> str | None:
    if start is None and end is None:
        return None
    return f"{start.isoformat() if start else '..'}/{end.isoformat() + 'T23:59:59Z' if end else '..'}"


def api_items(
    url: str,
    collections: Sequence[str] | None,
    bbox: Sequence[float] | None,
    start: dt.date | None,
    end: dt.date | None,
    max_items: int | None,
) -> list[Any]:
    """Items of a STAC API search, every page followed (``/search`` directly, or through the landing page)."""
    from pystac_client import Client, ItemSearch

    query = {
        "collections": list(collections) if collections else None,
        "bbox": list(bbox) if bbox else None,
        "datetime": _datetime_range(start, end),
        "max_items": max_items,
    }
    if url.split("?", 1)[0].rstrip("/").endswith("/search"):
        search = ItemSearch(url.split("?", 1)[0], **query)
    else:
        search = Client.open(url).search(**query)
    return list(search.items())


def stac_scenes(
    source: str,
    asset: str | None = None,
    collections: Sequence[str] | None = None,
    bbox: Sequence[float] | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
    max_items: int | None = None,
) -> list[Scene]:
    """The scenes of a static catalogue or a STAC API search (see the module docstring). Raises StacError."""
    try:
        if is_static(source):
            items = _filtered(static_items(source), collections, bbox, start, end)[:max_items]
        else:
            items = api_items(source, collections, bbox, start, end, max_items)
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as error:
        raise _one_line(source, f"cannot read the STAC catalogue ({error})") from error
    except Exception as error:  # pystac / pystac-client / requests errors share no base class
        raise _one_line(source, f"cannot read the STAC catalogue ({type(error).__name__}: {error})") from error
    if not items:
        raise StacError(f"{source}: no STAC items match")
    return scenes_of(items, asset)
