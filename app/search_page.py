"""rsretrieve search page: text or image queries over an index, results as thumbnails and on a map.

Started by ``rsretrieve app --db PATH [--checkpoint PATH]`` (arguments after Streamlit's ``--``). The page
builds a ``rsretrieve.query.Query``, runs it through the process's shared ``Searcher`` (safe across browser
sessions: it keeps no per-query state) and draws the ``Results``; results are kept per browser session and keyed
by the index version, so a commit by an indexer shows on the next rerun.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import sys
from pathlib import Path

import streamlit as st

from app.footprint_map import footprint_deck, picked_id
from rsretrieve.errors import one_line
from rsretrieve.query import Filters, Part, Query
from rsretrieve.render import as_csv, as_geojson
from rsretrieve.search import Extent, Hit, Results, Searcher
from rsretrieve.thumbnails import chip_png

GRID_COLUMNS = 4
UPLOAD_TYPES = ("jpg", "jpeg", "png", "tif", "tiff")
ICON = Path(__file__).with_name("icon.svg")  # a local file: a Material page icon would be fetched from Google
HOW_TO = """\
rsretrieve index SOURCES --db PATH      # GeoTIFF / JPEG / PNG files or folders
rsretrieve app --db PATH"""


def page_args(argv: list[str]) -> argparse.Namespace:
    """``--db`` and ``--checkpoint`` given after Streamlit's ``--`` (anything else is ignored)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--db")
    parser.add_argument("--checkpoint")
    return parser.parse_known_args(argv)[0]


@st.cache_resource(show_spinner="Loading the model…")
def open_searcher(db: str, checkpoint: str | None) -> Searcher:
    """One Searcher (and model) per index and checkpoint for the whole process."""
    return Searcher(db, checkpoint=checkpoint)  # an index built with random weights gets the same seeded model


@st.cache_data(show_spinner=False)
def cached_extent(db: str, version: int, _searcher: Searcher) -> Extent:
    """The index's bbox and date range, read once per committed version."""
    return _searcher.extent()


# --- sidebar --------------------------------------------------------------------------------------


def sidebar_index(default_db: str | None, checkpoint: str | None) -> Searcher | None:
    """Index path input and index facts; the open Searcher, or None (after saying why)."""
    st.sidebar.header("Index")
    db = st.sidebar.text_input("Index folder", value=default_db or "", key="db", placeholder="./demo.lance").strip()
    if not db:
        st.info("No index is open yet. Build one from your imagery, then open it here:", icon=":material/folder_open:")
        st.code(HOW_TO, language="bash")
        st.markdown("or type its folder in the sidebar. `rsretrieve demo` builds a small example index, `demo.lance`.")
        return None
    try:
        searcher = open_searcher(db, checkpoint)
    except Exception as error:  # shown as one line, never a traceback
        st.error(one_line(error))
        return None
    manifest = searcher.current().manifest
    left, right = st.sidebar.columns(2)
    left.metric("Chips", f"{manifest.count:,}")
    right.metric("Files", f"{manifest.files:,}")
    index_type = manifest.index.get("index_type", "?")
    st.sidebar.caption(f"Model **{manifest.model}** · {manifest.dim}-d vectors · {index_type} index")
    if manifest.count == 0:
        st.error(f"{db} holds no chips yet: add some with `rsretrieve index SOURCES --db {db}`")
        return None
    return searcher


def sidebar_filters(extent: Extent) -> tuple[int, dict]:
    """k and the filter fields for ``Filters``, which judges them (dates bounded by the index's date range)."""
    st.sidebar.header("Filters")
    k = st.sidebar.slider("Results (k)", 1, 100, 12, key="k")
    bbox = _bbox_filter(extent.bbox) if st.sidebar.checkbox("Area (WGS84 bbox)", key="use_bbox") else None
    start = end = None
    if extent.start is None:
        st.sidebar.caption("No chip of this index has an acquisition date.")
    elif st.sidebar.checkbox("Acquisition dates", key="use_dates"):
        left, right = st.sidebar.columns(2)
        limits = {"min_value": extent.start, "max_value": extent.end, "format": "YYYY-MM-DD"}
        start = left.date_input("From", value=extent.start, key="start", **limits)
        end = right.date_input("To", value=extent.end, key="end", **limits)
        if extent.undated:
            st.sidebar.caption(
                f"{extent.undated:,} of {extent.chips:,} chips have no date: a date filter leaves them out."
            )
    return k, {"bbox": bbox, "start": start, "end": end}


def _bbox_filter(default: tuple[float, float, float, float] | None) -> tuple[float, float, float, float]:
    minx, miny, maxx, maxy = default or (-180.0, -90.0, 180.0, 90.0)
    left, right = st.sidebar.columns(2)
    values = (
        left.number_input("West", -180.0, 180.0, minx, format="%.5f", key="minx"),
        right.number_input("South", -90.0, 90.0, miny, format="%.5f", key="miny"),
        left.number_input("East", -180.0, 180.0, maxx, format="%.5f", key="maxx"),
        right.number_input("North", -90.0, 90.0, maxy, format="%.5f", key="maxy"),
    )
    st.sidebar.caption("Chips whose bbox intersects this one. Defaults to the index's extent.")
    return values  # type: ignore[return-value]


# --- query ----------------------------------------------------------------------------------------


def query_inputs() -> None:
    """Text box and image upload, each with its search button; a submitted query becomes the active one."""
    by_text, by_image = st.tabs([":material/text_fields: Describe it", ":material/image_search: Search by image"])
    with by_text, st.form("text_query", border=False):
        left, right = st.columns([6, 1], vertical_alignment="bottom")
        text = left.text_input("Describe what you are looking for", key="text", placeholder="a river crossing farmland")
        if right.form_submit_button("Search", type="primary", width="stretch") and text.strip():
            set_query(Query((Part("text", text.strip()),)))
            st.session_state.upload_key = st.session_state.get("upload_key", 0) + 1  # the old upload is done with
    with by_image:
        key = f"upload-{st.session_state.get('upload_key', 0)}"
        upload = st.file_uploader("Image (JPEG, PNG or GeoTIFF)", type=list(UPLOAD_TYPES), key=key)
        if upload is not None:
            left, right = st.columns([1, 3], vertical_alignment="center")
            preview(left, upload.getvalue())
            if right.button("Search with this image", type="primary", icon=":material/image_search:"):
                set_query(Query((Part("image", upload.getvalue(), label=upload.name),)))


def preview(column, data: bytes) -> None:
    """The uploaded image as the browser can show it (a GeoTIFF or a broken file gets a note instead)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        column.image(data, width="stretch")
    except (UnidentifiedImageError, OSError, ValueError):
        column.caption("No preview for this file; it is read as the indexer reads rasters.")


def set_query(query: Query) -> None:
    """Make ``query`` the active one."""
    st.session_state.query = query


def like(hit: Hit, rank: int) -> None:
    """Button callback: "more like this" result becomes the active query."""
    label = f"result #{rank} ({Path(hit.chip.path).name})"
    set_query(Query((Part("like", hit.chip.id, label=label),)))
    st.session_state.selected = hit.chip.id


def select(chip_id: str) -> None:
    """Button callback: highlight a result on the map."""
    st.session_state.selected = chip_id


def respond(searcher: Searcher, query: Query) -> Results:
    """This session's results for ``query``, searched again only when the query or the index version changed."""
    request = (str(searcher.db), searcher.current().manifest.lance_version, query)
    if st.session_state.get("request") != request:
        st.session_state.response = searcher.search(query)
        st.session_state.request = request
    return st.session_state.response


# --- results --------------------------------------------------------------------------------------


def query_preview(query: Query) -> None:
    """What is being searched for: the uploaded image or the "like" chip above its description."""
    part = query.positives[0]
    png = None
    if part.kind == "image":
        png = part.value
    elif part.kind == "like" and isinstance(st.session_state.get("response"), Results):
        found = [hit for hit in st.session_state.response.hits if hit.chip.id == part.value]
        png = thumbnail(found[0]) if found else None
    if png is not None:
        st.image(png, width=120, caption="Query")


def results_header(results: Results) -> None:
    """Count, query, latency and the export buttons."""
    left, right = st.columns([3, 2], vertical_alignment="center")
    count = len(results)
    left.markdown(f"#### {count} result{'s' * (count != 1)} for {results.query.describe()}")
    search_ms, encode_ms = results.search_seconds * 1000, results.timings.get("encode", 0.0) * 1000
    left.caption(f":material/timer: {search_ms:.1f} ms search ({results.path}) · {encode_ms:.0f} ms to embed the query")
    exports = [
        ("GeoJSON", as_geojson(results.hits), "results.geojson", "application/geo+json"),
        ("CSV", as_csv(results.hits), "results.csv", "text/csv"),
    ]
    with right.container(horizontal=True, horizontal_alignment="right"):
        for label, data, file_name, mime in exports:
            st.download_button(label, data, file_name, mime, icon=":material/download:", on_click="ignore")


def date_text(hit: Hit) -> str:
    """A result's acquisition date, or "no date"."""
    return hit.chip.date.isoformat() if hit.chip.date else "no date"


def result_label(hit: Hit, rank: int) -> str:
    """Short label of a result: rank, score, date, file."""
    return f"#{rank} · {hit.score:.3f} · {date_text(hit)} · {Path(hit.chip.path).name}"


def highlight_picked() -> None:
    """Highlight the footprint clicked on the map (the selectbox follows)."""
    picked = picked_id(st.session_state.map.selection)
    if picked is not None:
        st.session_state.selected = picked


def map_panel(results: list[Hit]) -> None:
    """Footprints on a map, the selected one highlighted, with its details beside it."""
    ids = [hit.chip.id for hit in results]
    if st.session_state.get("selected") not in ids:
        st.session_state.selected = ids[0]
    labels = {hit.chip.id: result_label(hit, rank) for rank, hit in enumerate(results, 1)}
    deck = footprint_deck(results, st.session_state.selected)
    map_column, detail_column = st.columns([3, 1])
    with map_column:
        if deck is None:
            st.info("None of these chips is georeferenced, so there is nothing to map.", icon=":material/map:")
        else:
            st.pydeck_chart(deck, height=420, on_select=highlight_picked, selection_mode="single-object", key="map")
    with detail_column:
        st.selectbox("Highlighted on the map", ids, format_func=labels.get, key="selected")
        chosen = results[ids.index(st.session_state.selected)]
        details(chosen)


def centre(bbox: list[float]) -> str:
    """The centre of a WGS84 bbox as "47.0216° N, 99.1340° W"."""
    lon, lat = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
    return f"{abs(lat):.4f}° {'N' if lat >= 0 else 'S'}, {abs(lon):.4f}° {'E' if lon >= 0 else 'W'}"


def thumbnail(hit: Hit) -> bytes | None:
    """PNG of a result's chip, read with the bands the index was built with."""
    bands = st.session_state.get("bands")
    return chip_png(hit.chip, tuple(bands) if bands else None)


def details(hit: Hit) -> None:
    """Where and when the highlighted chip is."""
    png = thumbnail(hit)
    if png is not None:
        st.image(png, width="stretch")
    chip = hit.chip
    window = chip.window
    st.markdown(f"**{Path(chip.path).name}**")
    lines = [
        f":material/calendar_today: {date_text(hit)}",
        f":material/crop_free: {window.width}×{window.height} px at {window.col_off}, {window.row_off}"
        if window is not None
        else ":material/hub: imported embedding (no image)",
        f":material/public: {chip.crs or 'not georeferenced'}",
    ]
    if chip.bbox:
        lines.append(f":material/location_on: {centre(list(chip.bbox))}")
    if chip.item_id:  # from a STAC catalogue
        lines.append(f":material/dataset: {chip.collection or '-'} / {chip.item_id}")
    lines.append(f":material/folder_open: {chip.path}")  # the full path or URI
    st.caption("  \n".join(lines))


def result_card(hit: Hit, rank: int) -> None:
    """Thumbnail, score, date, source file, and the card's actions."""
    chip = hit.chip
    with st.container(border=True):
        png = thumbnail(hit)
        if png is None and chip.window is None:
            st.caption(":material/hub: imported embedding: no image")
        elif png is None:
            st.warning("source file unavailable", icon=":material/broken_image:")
        else:
            st.image(png, width="stretch")
        selected = st.session_state.get("selected") == chip.id
        rank_text = f":orange[**#{rank}**]" if selected else f"**#{rank}**"
        st.markdown(f"{rank_text} · score **{hit.score:.3f}** · {date_text(hit)}")
        st.caption(Path(chip.path).name)
        with st.container(horizontal=True, gap="small"):
            st.button(
                "More like this",
                key=f"like-{chip.id}",
                on_click=like,
                args=(hit, rank),
                icon=":material/image_search:",
            )
            st.button(
                "",
                key=f"map-{chip.id}",
                on_click=select,
                args=(chip.id,),
                icon=":material/location_on:",
                help="Highlight on the map",
                type="tertiary",
            )
            if png is not None:
                st.download_button(
                    "",
                    png,
                    f"{chip.id}.png",
                    "image/png",
                    key=f"png-{chip.id}",
                    icon=":material/download:",
                    help="Download the chip (PNG)",
                    on_click="ignore",
                    type="tertiary",
                )


def results_grid(results: list[Hit]) -> None:
    """Result cards, GRID_COLUMNS per row."""
    for start in range(0, len(results), GRID_COLUMNS):
        columns = st.columns(GRID_COLUMNS)
        for offset, result in enumerate(results[start : start + GRID_COLUMNS]):
            with columns[offset]:
                result_card(result, start + offset + 1)


def show_results(searcher: Searcher, k: int, filter_fields: dict) -> None:
    """Search with the active query (if any) and draw the results."""
    query = st.session_state.get("query")
    if query is None:
        st.caption("Describe a place in words, upload an image, or pick “More like this” on any result.")
        return
    st.session_state.bands = searcher.current().manifest.bands
    results = respond(searcher, dataclasses.replace(query, k=k, filters=Filters(**filter_fields)))
    query_preview(query)
    if not results.hits:
        st.info(f"No chips match {query.describe()} with these filters.", icon=":material/search_off:")
        return
    results_header(results)
    map_panel(results.hits)
    st.divider()
    results_grid(results.hits)


# --- page -----------------------------------------------------------------------------------------


def main() -> None:
    """The whole page."""
    st.set_page_config(page_title="rsretrieve · search", page_icon=str(ICON), layout="wide")
    args = page_args(sys.argv[1:])
    st.title(":material/satellite_alt: rsretrieve")
    st.caption("Search remote-sensing imagery by description or by example — RemoteCLIP · GeoRSCLIP · FAISS")
    searcher = sidebar_index(args.db, args.checkpoint)
    if searcher is None:
        return
    if searcher.model.random_weights:
        st.warning(
            "This index was built with **random weights**: the results are meaningless.", icon=":material/warning:"
        )
    try:
        extent = cached_extent(str(searcher.db), searcher.current().manifest.lance_version, searcher)
        k, filter_fields = sidebar_filters(extent)
        query_inputs()
        show_results(searcher, k, filter_fields)
    except Exception as error:  # one line for the user, never a traceback
        st.error(one_line(error))


main()
