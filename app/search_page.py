"""rsretrieve search page: text or image queries over an index, results as thumbnails, a table and a map; labels,
"refine with my labels" and a classifier layer for an analyst who looks at many results.

Started by ``rsretrieve app --db PATH [--checkpoint PATH]`` (the index opened in this process) or ``rsretrieve app
--server URL [--api-key-file F] [--index NAME]`` (a pure client of ``rsretrieve serve``: no torch, FAISS or
LanceDB here); the arguments come after Streamlit's ``--``. Either way the page talks to an ``app.backend``
backend, shared by every browser session of the process (it keeps no per-query state). Results are kept per
browser session and keyed by the index version, so a commit by an indexer shows on the next rerun.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePath

import streamlit as st

from app import classifier_panel
from app.area_drawing import combined_area, draw_area, drawn_area
from app.backend import Backend, Found, Hit, IndexFacts, LocalBackend, ServiceBackend
from app.exports import FORMATS
from app.footprint_map import coverage_deck, footprint_deck, picked_id
from app.labels_panel import MARKS, NEGATIVE, POSITIVE, mark, sidebar_labels
from rsretrieve.chips import Chip
from rsretrieve.errors import one_line
from rsretrieve.query import Filters, Part, Query

PAGE_SIZE = 24  # cards per page; the table lists every result
MAX_K = 1000
CARD_MIN_PX = 176  # narrowest card: the grid fits as many columns as the window holds, each at least this wide
THUMB_PX, MAP_THUMB_PX = 256, 64
PREFETCH_THREADS, MAX_THUMBNAILS = 8, 8192
UPLOAD_TYPES = ("jpg", "jpeg", "png", "tif", "tiff")
ICON = Path(__file__).with_name("icon.svg")  # a local file: a Material page icon would be fetched from Google
HOW_TO = """\
rsretrieve index SOURCES --db PATH      # GeoTIFF / JPEG / PNG files or folders
rsretrieve app --db PATH                # or: rsretrieve app --server http://HOST:PORT"""
STYLE = f"""<style>
.st-key-grid {{ display: grid !important; grid-template-columns: repeat(auto-fill, minmax({CARD_MIN_PX}px, 1fr));
  gap: 12px !important; }}
.st-key-grid > div, .st-key-grid > div > div {{ width: 100% !important; min-width: 0; }}
.st-key-grid > div > div {{ padding: 10px; }}
.st-key-grid [data-testid="stButton"] button {{ padding: 0 6px; }}
.st-key-grid [data-testid="stImage"] img {{ aspect-ratio: 1; object-fit: cover; image-rendering: pixelated; }}
[class*="st-key-meta-"] p {{ white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }}
</style>"""


def page_args(argv: list[str]) -> argparse.Namespace:
    """The page's arguments given after Streamlit's ``--`` (anything else is ignored)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--db")
    parser.add_argument("--checkpoint")
    parser.add_argument("--server")
    parser.add_argument("--api-key-file", type=Path)
    parser.add_argument("--index")
    return parser.parse_known_args(argv)[0]


@st.cache_resource(show_spinner="Loading the model…")
def open_local(db: str, checkpoint: str | None) -> LocalBackend:
    """One index (and model) per folder and checkpoint for the whole process."""
    return LocalBackend(db, checkpoint)  # an index built with random weights gets the same seeded model


@st.cache_resource(show_spinner=False)
def open_service(server: str, key_file: Path | None, index: str | None) -> ServiceBackend:
    """One client per service for the whole process."""
    return ServiceBackend.connect(server, key_file, index)


@st.cache_data(show_spinner=False)
def cached_extent(name: str, version: int, _backend: Backend):
    """The index's bbox and date range (None when the backend does not know it), read once per version."""
    return _backend.extent()


@st.cache_resource(show_spinner=False)
def png_store() -> dict[tuple[str, str, int], bytes | None]:
    """Chip PNGs by (index, chip id, size), shared by every browser session of the process."""
    return {}


def thumbnail_size(chip: Chip, size: int) -> int:
    """At most ``size`` px and never enlarged (the browser scales: a 64 px chip sent as 256 px was ~16× the
    bytes); ``size`` for a chip without a pixel window (an imported embedding: the backend finds no image)."""
    return size if chip.window is None else min(size, max(chip.window.width, chip.window.height))


def prefetch(chips: list[Chip], size: int) -> None:
    """Cut (or, from the service, fetch) the missing thumbnails of ``chips`` in parallel: one at a time, the
    first page of a query spent most of its time here (rasterio and HTTP both release the GIL)."""
    store, name, source = png_store(), st.session_state.index_name, backend()
    missing = [chip for chip in chips if (name, chip.id, thumbnail_size(chip, size)) not in store]
    if not missing:
        return
    if len(store) > MAX_THUMBNAILS:
        store.clear()
    with ThreadPoolExecutor(PREFETCH_THREADS) as pool:
        pngs = list(pool.map(lambda chip: source.chip_png(chip, thumbnail_size(chip, size)), missing))
    for chip, png in zip(missing, pngs, strict=True):
        store[(name, chip.id, thumbnail_size(chip, size))] = png


def backend() -> Backend:
    """The backend of this run (set by ``sidebar_index``)."""
    return st.session_state.backend_ref


def thumbnail(chip: Chip, size: int = THUMB_PX) -> bytes | None:
    """PNG of a result's chip (see ``thumbnail_size``); None when its source cannot be read."""
    key = (st.session_state.index_name, chip.id, thumbnail_size(chip, size))
    if key not in png_store():
        prefetch([chip], size)
    return png_store()[key]


# --- sidebar --------------------------------------------------------------------------------------


def sidebar_index(args: argparse.Namespace) -> tuple[Backend, IndexFacts] | None:
    """The index (path input, or the service) and its facts; None (after saying why) when there is none."""
    st.sidebar.header("Index")
    try:
        if args.server:
            opened: Backend = open_service(args.server, args.api_key_file, args.index)
        else:
            db = st.sidebar.text_input("Index folder", value=args.db or "", key="db", placeholder="./demo.lance")
            if not db.strip():
                st.info("No index is open yet. Build one, then open it here:", icon=":material/folder_open:")
                st.code(HOW_TO, language="bash")
                st.markdown("or type its folder in the sidebar. `rsretrieve demo` builds a small example index.")
                return None
            opened = open_local(db.strip(), args.checkpoint)
        facts = opened.facts()
    except Exception as error:  # shown as one line, never a traceback
        st.error(one_line(error))
        return None
    if args.server:
        st.sidebar.caption(f":material/cloud: {facts.name}")
    left, right = st.sidebar.columns(2)
    left.metric("Chips", f"{facts.chips:,}")
    right.metric("Files", f"{facts.files:,}")
    st.sidebar.caption(f"Model **{facts.model}** · {facts.dim}-d vectors · {facts.index_type} index")
    if facts.chips == 0:
        st.error(f"{facts.name} holds no chips yet: add some with `rsretrieve index SOURCES --db PATH`")
        return None
    st.session_state.backend_ref = opened
    st.session_state.index_name = facts.name
    return opened, facts


def sidebar_filters(extent) -> tuple[int, dict]:
    """k and the fields of ``Filters`` (which judges them); dates bounded by the index's range when it is known."""
    st.sidebar.header("Filters")
    k = st.sidebar.slider("Results (k)", 1, MAX_K, 12, key="k")
    bbox = None
    if st.sidebar.checkbox("Area (WGS84 bbox)", key="use_bbox"):
        bbox = _bbox_filter(extent.bbox if extent else None)
    st.sidebar.checkbox(
        "Area (drawn on a map)", key="use_drawn", help="Draw the area on a map above the results: click its corners"
    )
    within = None
    if st.sidebar.checkbox("Area (GeoJSON polygon)", key="use_within"):
        upload = st.sidebar.file_uploader("Polygon or MultiPolygon, WGS84", type=["geojson", "json"], key="within")
        within = upload.getvalue().decode("utf-8", "replace") if upload is not None else None
    start = end = None
    if extent is not None and extent.start is None:
        st.sidebar.caption("No chip of this index has an acquisition date.")
    elif st.sidebar.checkbox("Acquisition dates", key="use_dates"):
        left, right = st.sidebar.columns(2)
        limits = {"min_value": extent.start, "max_value": extent.end} if extent else {}
        limits["format"] = "YYYY-MM-DD"
        start = left.date_input("From", value=extent.start if extent else None, key="start", **limits)
        end = right.date_input("To", value=extent.end if extent else None, key="end", **limits)
        if extent and extent.undated:
            st.sidebar.caption(
                f"{extent.undated:,} of {extent.chips:,} chips have no date: a date filter leaves them out."
            )
    return k, {"bbox": bbox, "start": start, "end": end, "within": within}


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


VECTOR_ONLY = (
    "Text and image search are off: this index holds embeddings imported from another tool, made by a model "
    "rsretrieve cannot load. Search by a chip id, “Similar” on a result, or your labels."
)


def query_inputs(vector_only: bool) -> None:
    """Text box, image upload and chip id box, each with its search button; a submitted query becomes the active
    one. An index of imported embeddings (``vector_only``) gets the chip id box alone and one line saying why."""
    if vector_only:
        st.caption(f":material/block: {VECTOR_ONLY}")
        chip_id_input()
        return
    by_text, by_image, by_chip = st.tabs(
        [":material/text_fields: Describe it", ":material/image_search: Search by image",
         ":material/fingerprint: By chip id"]
    )  # fmt: skip
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
    with by_chip:
        chip_id_input()


def chip_id_input() -> None:
    """A chip id typed or pasted: "more like this chip", as ``rsretrieve query --like CHIP_ID``."""
    with st.form("chip_query", border=False):
        left, right = st.columns([6, 1], vertical_alignment="bottom")
        chip_id = left.text_input(
            "More like this chip (its id)",
            key="chip_id",
            placeholder="a chip id, e.g. from a result or an export",
            help="The id shown in the table view, the downloads or `rsretrieve query --json`",
        ).strip(" \t\n\"'")
        if right.form_submit_button("Search", key="chip_search", type="primary", width="stretch") and chip_id:
            set_query(Query((Part("like", chip_id, label=f"chip {short_id(chip_id)}"),)))


def short_id(chip_id: str, keep: int = 20) -> str:
    """A chip id short enough for a heading (Major TOM's are 64 characters): its head and tail around "…"."""
    return chip_id if len(chip_id) <= keep else f"{chip_id[: keep - 7]}…{chip_id[-6:]}"


def preview(column, data: bytes, caption: str | None = None) -> None:
    """An image as the browser can show it (a GeoTIFF or a broken file gets a note instead)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        column.image(data, width=120, caption=caption)
    except (UnidentifiedImageError, OSError, ValueError):
        column.caption("No preview for this file; it is read as the indexer reads rasters.")


def set_query(query: Query) -> None:
    """Make ``query`` the active one (no labelled class joins it)."""
    st.session_state.query = query
    st.session_state.refine_class = None


def like(hit: Hit, rank: int) -> None:
    """Button callback: "more like this" result becomes the active query."""
    label = f"result #{rank} ({PurePath(hit.chip.path).name})"
    set_query(Query((Part("like", hit.chip.id, label=label),)))
    st.session_state.like_chip = hit.chip
    st.session_state.selected = hit.chip.id


def select(chip_id: str) -> None:
    """Button callback: highlight a result on the map."""
    st.session_state.selected = chip_id


def respond(query: Query | None, refine: str | None, labelled: dict[str, str], k: int, filters: Filters) -> Found:
    """This session's results, searched again only when the request, the labels it uses or the index changed."""
    request = (st.session_state.index_name, st.session_state.version, query, refine, k, filters)
    request += (tuple(sorted(labelled.items())),) if refine else ()
    if st.session_state.get("request") != request:
        st.session_state.response = backend().search(query, k, filters, labels=refine)
        st.session_state.request = request
        st.session_state.page_no = 1
    return st.session_state.response


def describe(query: Query | None, refine: str | None, labelled: dict[str, str]) -> str:
    """The active request in words."""
    if refine:
        values = list(labelled.values())
        return f"my “{refine}” labels ({values.count(POSITIVE)} ✓, {values.count(NEGATIVE)} ✗)"
    return query.describe() if query else ""


def area_panel(extent) -> None:
    """The map to draw the search area on, with the footprints of the results."""
    response = st.session_state.get("response")
    st.markdown("**Search area** :gray[· click its corners on the map, then the first one again]")
    if draw_area(response.hits if response else [], extent.bbox if extent else None) is None:
        st.caption("No area drawn yet: the results are not limited by one.")


# --- results --------------------------------------------------------------------------------------


def like_chip(chip_id: str, hits: list[Hit]) -> Chip | None:
    """The chip of a "like" query: the result card it came from, or the result with its id (a typed id)."""
    chip = st.session_state.get("like_chip")
    if chip is not None and chip.id == chip_id:
        return chip
    return next((hit.chip for hit in hits if hit.chip.id == chip_id), None)


def query_preview(query: Query | None, hits: list[Hit]) -> None:
    """What is being searched for, above the results: the uploaded image or the "like" chip, with its words."""
    if query is None:
        return
    part = query.positives[0]
    png = None
    if part.kind == "image":
        png = part.value
    elif part.kind == "like" and (chip := like_chip(part.value, hits)) is not None:
        png = thumbnail(chip, 128)
    if png is not None:
        left, right = st.columns([1, 8], vertical_alignment="center")
        preview(left, png)
        right.markdown(f"**Query:** {query.describe()}")


def results_header(found: Found, what: str) -> None:
    """Count, request, latency, view switch and the downloads."""
    left, right = st.columns([3, 2], vertical_alignment="center")
    count = len(found.hits)
    left.markdown(f"#### {count} result{'s' * (count != 1)} for {what}")
    left.caption(
        f":material/timer: {found.search_ms:.1f} ms search ({found.path}) · {found.encode_ms:.0f} ms to embed the query"
    )
    with right.container(horizontal=True, horizontal_alignment="right", vertical_alignment="center"):
        st.segmented_control("View", ["Cards", "Table"], default="Cards", key="view", label_visibility="collapsed")
        with st.popover("Download", icon=":material/download:"):
            for label, (render, suffix, mime) in FORMATS.items():
                st.download_button(
                    label, lambda render=render: render(found.hits), f"results.{suffix}", mime,
                    on_click="ignore", width="stretch",
                )  # fmt: skip


def date_text(chip: Chip) -> str:
    """A chip's acquisition date with hyphens that do not break, or "no date"."""
    return chip.date.isoformat().replace("-", "\u2011") if chip.date else "no date"


def result_label(hit: Hit, rank: int) -> str:
    """Short label of a result: rank, score, date, file."""
    date = hit.chip.date.isoformat() if hit.chip.date else "no date"
    return f"#{rank} · {hit.score:.3f} · {date} · {PurePath(hit.chip.path).name}"


def highlight_picked() -> None:
    """Highlight the footprint clicked on the map (the selectbox follows)."""
    picked = picked_id(st.session_state.map.selection)
    if picked is not None:
        st.session_state.selected = picked


def map_panel(hits: list[Hit], first: int, area: object) -> None:
    """This page's results on a map (thumbnails at their footprints, the search area), the selected one with its
    details beside it."""
    ids = [hit.chip.id for hit in hits]
    if st.session_state.get("selected") not in ids:
        st.session_state.selected = ids[0]
    labels = {hit.chip.id: result_label(hit, rank) for rank, hit in enumerate(hits, first)}
    images = {hit.chip.id: thumbnail(hit.chip, MAP_THUMB_PX) for hit in hits}
    deck = footprint_deck(hits, st.session_state.selected, images, area, first)
    map_column, detail_column = st.columns([3, 1])
    with map_column:
        if deck is None:
            st.info("None of these chips is georeferenced, so there is nothing to map.", icon=":material/map:")
        else:
            st.pydeck_chart(deck, height=420, on_select=highlight_picked, selection_mode="single-object", key="map")
    with detail_column:
        st.selectbox("Highlighted on the map", ids, format_func=labels.get, key="selected")
        details(hits[ids.index(st.session_state.selected)].chip)


def centre(bbox: list[float]) -> str:
    """The centre of a WGS84 bbox as "47.0216° N, 99.1340° W"."""
    lon, lat = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
    return f"{abs(lat):.4f}° {'N' if lat >= 0 else 'S'}, {abs(lon):.4f}° {'E' if lon >= 0 else 'W'}"


def details(chip: Chip) -> None:
    """Where and when the highlighted chip is."""
    png = thumbnail(chip)
    if png is not None:
        st.image(png, width="stretch")
    window = chip.window
    st.markdown(f"**{PurePath(chip.path).name}**")
    lines = [
        f":material/calendar_today: {date_text(chip)}",
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
    lines.append(f":material/fingerprint: `{chip.id}`")  # for the chip id box, `--like` and labels files
    st.caption("  \n".join(lines))
    if png is not None:
        st.download_button("Chip PNG", png, f"{chip.id}.png", "image/png", key="png", icon=":material/download:",
                           on_click="ignore", type="tertiary")  # fmt: skip


def result_card(hit: Hit, rank: int, labelled: dict[str, str]) -> None:
    """Thumbnail, rank, score, date, source file, and the card's actions on one line."""
    chip = hit.chip
    current = labelled.get(chip.id)
    with st.container(border=True, gap="small"):
        png = thumbnail(chip)
        if png is None and chip.window is None:
            st.caption(":material/hub: imported embedding: no image")
        elif png is None:
            st.warning("source file unavailable", icon=":material/broken_image:")
        else:
            st.image(png, width="stretch")
        selected = st.session_state.get("selected") == chip.id
        rank_text = f":orange[**#{rank}**]" if selected else f"**#{rank}**"
        mark_text = " · :green[✓]" if current == POSITIVE else " · :red[✗]" if current == NEGATIVE else ""
        with st.container(key=f"meta-{chip.id}"):
            name = PurePath(chip.path).name
            st.markdown(f"{rank_text} · **{hit.score:.3f}**{mark_text}  \n{date_text(chip)} · :gray[{name}]")
        with st.container(horizontal=True, wrap=False, gap="small", vertical_alignment="center"):
            st.button("", key=f"like-{chip.id}", on_click=like, args=(hit, rank), icon=":material/image_search:",
                      help="More like this: search with this chip")  # fmt: skip
            for label, icon, words in ((POSITIVE, ":material/check:", "is"), (NEGATIVE, ":material/close:", "is not")):
                prefix = "pos" if label == POSITIVE else "neg"
                st.button(
                    "", key=f"{prefix}-{chip.id}", on_click=mark, args=(backend(), chip.id, label, current),
                    icon=icon, type="primary" if current == label else "secondary",
                    help=f"Label: this {words} one of the class chosen in the sidebar (again: unlabel)",
                )  # fmt: skip
            st.button("", key=f"map-{chip.id}", on_click=select, args=(chip.id,), icon=":material/location_on:",
                      help="Highlight on the map", type="tertiary")  # fmt: skip


def results_grid(hits: list[Hit], first: int, labelled: dict[str, str]) -> None:
    """Result cards in a CSS grid (``STYLE``): as many columns as the window's width holds at ``CARD_MIN_PX``
    each, the cards stretched to fill the row."""
    with st.container(horizontal=True, key="grid", gap="small"):
        for rank, hit in enumerate(hits, first):
            result_card(hit, rank, labelled)


def pick_row() -> None:
    """Highlight the result of the table row clicked."""
    rows = st.session_state.table.selection.rows
    if rows:
        st.session_state.selected = st.session_state.response.hits[rows[0]].chip.id
        st.session_state.page_no = rows[0] // PAGE_SIZE + 1


def results_table(hits: list[Hit], labelled: dict[str, str]) -> None:
    """Every result as one table row; a click on a row shows it on the map (on its page)."""
    rows = [
        {"rank": rank, "score": round(hit.score, 4), "date": hit.chip.date.isoformat() if hit.chip.date else "",
         "label": MARKS.get(labelled.get(hit.chip.id, ""), ""), "file": PurePath(hit.chip.path).name,
         "chip": hit.chip.id}
        for rank, hit in enumerate(hits, 1)
    ]  # fmt: skip
    st.dataframe(rows, hide_index=True, key="table", on_select=pick_row, selection_mode="single-row", height=420)


def pager(count: int) -> int:
    """Previous / next buttons when the results fill more than one page; the first rank of this page."""
    pages = math.ceil(count / PAGE_SIZE)
    page_no = min(max(st.session_state.get("page_no", 1), 1), pages)
    st.session_state.page_no = page_no
    if pages > 1:
        first, last = (page_no - 1) * PAGE_SIZE + 1, min(page_no * PAGE_SIZE, count)
        with st.container(horizontal=True, vertical_alignment="center", gap="small"):
            st.button("", key="prev-page", icon=":material/chevron_left:", disabled=page_no == 1,
                      on_click=turn, args=(-1,), help="Previous page")  # fmt: skip
            st.markdown(f"Results **{first}–{last}** of {count} · page {page_no} of {pages}")
            st.button("", key="next-page", icon=":material/chevron_right:", disabled=page_no == pages,
                      on_click=turn, args=(1,), help="Next page")  # fmt: skip
    return (page_no - 1) * PAGE_SIZE + 1


def turn(step: int) -> None:
    """Pager callback."""
    st.session_state.page_no = st.session_state.get("page_no", 1) + step


def show_results(k: int, filters: Filters, labelled: dict[str, str], facts: IndexFacts, extent) -> None:
    """Search with the active request (if any) and draw the results; before any, where the index is."""
    query, refine = st.session_state.get("query"), st.session_state.get("refine_class")
    if query is None and not refine:
        st.caption(
            "Give the id of a chip to find more like it." if facts.vector_only else
            "Describe a place in words, upload an image, give a chip id, or pick “Similar” on any result."
        )  # fmt: skip
        if extent is not None and extent.bbox is not None:
            st.caption(f"Where the {facts.chips:,} chips of this index are")
            area = filters.within if filters.within is not None else filters.bbox
            st.pydeck_chart(coverage_deck(extent.bbox, area), height=320, key="coverage")
        return
    found = respond(query, refine, labelled, k, filters)
    what = describe(query, refine, labelled)
    query_preview(query, found.hits)
    if not found.hits:
        st.info(f"No chips match {what} with these filters.", icon=":material/search_off:")
        return
    results_header(found, what)
    first = pager(len(found.hits))
    shown = found.hits[first - 1 : first - 1 + PAGE_SIZE]
    prefetch([hit.chip for hit in shown], THUMB_PX)
    prefetch([hit.chip for hit in shown], MAP_THUMB_PX)
    map_panel(shown, first, filters.within if filters.within is not None else filters.bbox)
    st.divider()
    if st.session_state.get("view") == "Table":
        results_table(found.hits, labelled)
    else:
        results_grid(shown, first, labelled)


# --- page -----------------------------------------------------------------------------------------


def main() -> None:
    """The whole page."""
    st.set_page_config(page_title="rsretrieve · search", page_icon=str(ICON), layout="wide")
    st.html(STYLE)
    args = page_args(sys.argv[1:])
    st.title(":material/satellite_alt: rsretrieve")
    st.caption("Search remote-sensing imagery by description or by example — RemoteCLIP · GeoRSCLIP · FAISS")
    opened = sidebar_index(args)
    if opened is None:
        return
    source, facts = opened
    st.session_state.version = facts.version
    if facts.random_weights:
        st.warning(
            "This index was built with **random weights**: the results are meaningless.", icon=":material/warning:"
        )
    if message := st.session_state.pop("flash", None):
        st.error(message)
    try:
        extent = cached_extent(facts.name, facts.version, source)
        k, fields = sidebar_filters(extent)
        labelled = sidebar_labels(source)
        query_inputs(facts.vector_only)
        drawing = st.container() if st.session_state.get("use_drawn") else None  # above the results, drawn after
        try:
            if drawing is not None:
                fields["within"] = combined_area(fields["within"], drawn_area())
            filters = Filters(**fields)
            if st.session_state.get("classify"):
                classifier_panel.run(source, st.session_state.label_class.strip(), filters)
            show_results(k, filters, labelled, facts, extent)
            if "classified" in st.session_state:
                st.divider()
                classifier_panel.show(filters.within if filters.within is not None else filters.bbox)
        finally:  # the drawing map every run, even after an error: a map not drawn in a run forgets its area
            if drawing is not None:
                with drawing:
                    area_panel(extent)
    except Exception as error:  # one line for the user, never a traceback
        st.error(one_line(error))


main()
