"""rsretrieve search page: text or image queries over an index, results as thumbnails and on a map.

Started by ``rsretrieve app --db PATH [--checkpoint PATH]`` (arguments after Streamlit's ``--``). Every
search goes through ``rsretrieve.search.Searcher``; the page only collects the query and draws the results.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import streamlit as st

from app.footprint_map import footprint_deck, picked_id
from app.query import UPLOAD_TYPES, Extent, Query, Response, index_extent, run_query, save_upload
from app.thumbnails import chip_png
from rsretrieve.errors import one_line
from rsretrieve.export import results_csv, results_geojson
from rsretrieve.search import Filters, Searcher, SearchResult

GRID_COLUMNS = 4
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
    return index_extent(_searcher.store)


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
    manifest = searcher.store.manifest
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
    """k, and the bbox / date filter fields for ``Filters`` (which judges them)."""
    st.sidebar.header("Filters")
    k = st.sidebar.slider("Results (k)", 1, 100, 12, key="k")
    bbox = _bbox_filter(extent.bbox) if st.sidebar.checkbox("Area (WGS84 bbox)", key="use_bbox") else None
    start = end = None
    if st.sidebar.checkbox("Acquisition dates", key="use_dates"):
        left, right = st.sidebar.columns(2)
        start = left.date_input("From", value=extent.start, key="start", format="YYYY-MM-DD")
        end = right.date_input("To", value=extent.end, key="end", format="YYYY-MM-DD")
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
    """Text box and image upload; a submitted query becomes the active one in session state."""
    by_text, by_image = st.tabs([":material/text_fields: Describe it", ":material/image_search: Search by image"])
    with by_text, st.form("text_query", border=False):
        left, right = st.columns([6, 1], vertical_alignment="bottom")
        text = left.text_input("Describe what you are looking for", key="text", placeholder="a river crossing farmland")
        if right.form_submit_button("Search", type="primary", width="stretch"):
            st.session_state.query = Query("text", text.strip(), text.strip()) if text.strip() else None
    with by_image:
        upload = st.file_uploader("Image (JPEG, PNG or GeoTIFF)", type=list(UPLOAD_TYPES), key="upload")
        if upload is not None and upload.file_id != st.session_state.get("upload_id"):
            st.session_state.upload_id = upload.file_id
            folder = Path(st.session_state.setdefault("upload_dir", tempfile.TemporaryDirectory()).name)
            path = save_upload(upload.name, upload.getvalue(), folder)
            st.session_state.query = Query("image", str(path), upload.name)


def like(result: SearchResult, rank: int) -> None:
    """Button callback: "more like this" result becomes the active query."""
    st.session_state.query = Query("like", result.id, f"result #{rank} ({Path(result.path).name})")
    st.session_state.selected = result.id


def select(chip_id: str) -> None:
    """Button callback: highlight a result on the map."""
    st.session_state.selected = chip_id


def respond(searcher: Searcher, query: Query, k: int, filters: Filters) -> Response:
    """The response for this request, searched again only when the query, k, filters or index changed."""
    request = (str(searcher.db), query, k, filters)
    if st.session_state.get("request") != request:
        st.session_state.response = run_query(searcher, query, k, filters)
        st.session_state.request = request
    return st.session_state.response


# --- results --------------------------------------------------------------------------------------


def describe(query: Query) -> str:
    """The query in words, for the results header."""
    if query.kind == "text":
        return f"“{query.label}”"
    if query.kind == "image":
        return f"images like {query.label}"
    return f"chips like {query.label}"


def results_header(query: Query, response: Response) -> None:
    """Count, query, latency and the export buttons."""
    left, right = st.columns([3, 2], vertical_alignment="center")
    count = len(response.results)
    left.markdown(f"#### {count} result{'s' * (count != 1)} for {describe(query)}")
    search_ms, total_ms = response.search_seconds * 1000, response.total_seconds * 1000
    left.caption(f":material/timer: {search_ms:.1f} ms search · {total_ms:.0f} ms in all (with the query's embedding)")
    exports = [
        ("GeoJSON", results_geojson(response.results), "results.geojson", "application/geo+json"),
        ("CSV", results_csv(response.results), "results.csv", "text/csv"),
    ]
    with right.container(horizontal=True, horizontal_alignment="right"):
        for label, data, file_name, mime in exports:
            st.download_button(label, data, file_name, mime, icon=":material/download:", on_click="ignore")


def result_label(result: SearchResult, rank: int) -> str:
    """Short label of a result: rank, score, date, file."""
    return f"#{rank} · {result.score:.3f} · {result.date or 'no date'} · {Path(result.path).name}"


def highlight_picked() -> None:
    """Highlight the footprint clicked on the map (the selectbox follows)."""
    picked = picked_id(st.session_state.map.selection)
    if picked is not None:
        st.session_state.selected = picked


def map_panel(results: list[SearchResult]) -> None:
    """Footprints on a map, the selected one highlighted, with its details beside it."""
    ids = [result.id for result in results]
    if st.session_state.get("selected") not in ids:
        st.session_state.selected = ids[0]
    labels = {result.id: result_label(result, rank) for rank, result in enumerate(results, 1)}
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


def thumbnail(result: SearchResult) -> bytes | None:
    """PNG of a result's chip, read with the bands the index was built with."""
    bands = st.session_state.get("bands")
    return chip_png(result.path, result.window, tuple(bands) if bands else None)


def details(result: SearchResult) -> None:
    """Where and when the highlighted chip is."""
    png = thumbnail(result)
    if png is not None:
        st.image(png, width="stretch")
    window = result.window
    st.markdown(f"**{Path(result.path).name}**")
    lines = [
        f":material/calendar_today: {result.date or 'no date'}",
        f":material/crop_free: {window['width']}×{window['height']} px at {window['col_off']}, {window['row_off']}",
        f":material/public: {result.crs or 'not georeferenced'}",
    ]
    if result.bbox:
        lines.append(f":material/location_on: {centre(result.bbox)}")
    st.caption("  \n".join(lines))


def result_card(result: SearchResult, rank: int) -> None:
    """Thumbnail, score, date, source file, and the card's actions."""
    with st.container(border=True):
        png = thumbnail(result)
        if png is None:
            st.warning("source file unavailable", icon=":material/broken_image:")
        else:
            st.image(png, width="stretch")
        selected = st.session_state.get("selected") == result.id
        rank_text = f":orange[**#{rank}**]" if selected else f"**#{rank}**"
        st.markdown(f"{rank_text} · score **{result.score:.3f}** · {result.date or 'no date'}")
        st.caption(Path(result.path).name)
        with st.container(horizontal=True, gap="small"):
            st.button(
                "More like this",
                key=f"like-{result.id}",
                on_click=like,
                args=(result, rank),
                icon=":material/image_search:",
            )
            st.button(
                "",
                key=f"map-{result.id}",
                on_click=select,
                args=(result.id,),
                icon=":material/location_on:",
                help="Highlight on the map",
                type="tertiary",
            )
            if png is not None:
                st.download_button(
                    "",
                    png,
                    f"{result.id}.png",
                    "image/png",
                    key=f"png-{result.id}",
                    icon=":material/download:",
                    help="Download the chip (PNG)",
                    on_click="ignore",
                    type="tertiary",
                )


def results_grid(results: list[SearchResult]) -> None:
    """Result cards, GRID_COLUMNS per row."""
    for start in range(0, len(results), GRID_COLUMNS):
        columns = st.columns(GRID_COLUMNS)
        for offset, result in enumerate(results[start : start + GRID_COLUMNS]):
            with columns[offset]:
                result_card(result, start + offset + 1)


def show_results(searcher: Searcher, k: int, filters: Filters) -> None:
    """Search with the active query (if any) and draw the results."""
    query = st.session_state.get("query")
    if query is None:
        st.caption("Describe a place in words, upload an image, or pick “More like this” on any result.")
        return
    st.session_state.bands = searcher.store.manifest.bands
    response = respond(searcher, query, k, filters)
    if not response.results:
        st.info(f"No chips match {describe(query)} with these filters.", icon=":material/search_off:")
        return
    results_header(query, response)
    map_panel(response.results)
    st.divider()
    results_grid(response.results)


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
        extent = cached_extent(str(searcher.db), searcher.store.manifest.lance_version, searcher)
        k, filter_fields = sidebar_filters(extent)
        query_inputs()
        show_results(searcher, k, Filters(**filter_fields))
    except Exception as error:  # one line for the user, never a traceback
        st.error(one_line(error))


main()
