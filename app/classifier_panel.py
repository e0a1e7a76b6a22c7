"""The classifier on the page: one run per press of "Find all" at the lowest threshold the slider offers, then the
slider filters the found chips in the browser session (no new run): a score-coloured map layer, the run's
cross-validated precision and recall, the best chips as a table, and GeoJSON / GeoParquet / CSV downloads."""

from __future__ import annotations

from pathlib import PurePath

import streamlit as st

from app.backend import Backend, Classified
from app.exports import FORMATS
from app.footprint_map import scored_deck
from rsretrieve.query import Filters

LOWEST, DEFAULT_THRESHOLD = 0.5, 0.8
LIMIT = 2000  # found chips kept for the layer and the downloads (the best by score)


def run(backend: Backend, name: str, filters: Filters) -> None:
    """Classify the archive for ``name`` and keep the run in the session (errors: one line)."""
    with st.spinner(f"Training on the “{name}” labels and scoring every chip…"):
        st.session_state.classified = (name, backend.classify(name, LOWEST, filters, LIMIT))


def quality(summary: dict) -> str:
    """The run's labels and cross-validated precision/recall in words."""
    counts = summary.get("labels", {})
    cv = summary.get("cv", {})
    trained = (
        f"trained on {counts.get('positive', 0)} ✓, {counts.get('negative', 0)} ✗ and "
        f"{counts.get('sampled_negative', 0)} sampled negatives"
    )
    if cv.get("folds"):
        return f"{trained}; cross-validated by area: precision {cv['precision']}, recall {cv['recall']}"
    return f"{trained}; no cross-validation ({cv.get('skipped', 'too few labels')})"


def show(area: object) -> None:
    """The kept run: threshold slider, summary, layer, table and downloads."""
    name, classified = st.session_state.classified
    assert isinstance(classified, Classified)
    st.subheader(f":material/travel_explore: “{name}” across the index")
    threshold = st.slider("Threshold", LOWEST, 0.99, DEFAULT_THRESHOLD, 0.01, key="threshold")
    found = [hit for hit in classified.hits if hit.score >= threshold]
    more = classified.total > len(classified.hits) and len(found) == len(classified.hits)
    count = f"{len(found):,}{'+' if more else ''}"
    st.caption(
        f"{count} of {classified.summary.get('chips_filtered', 0):,} chips score ≥ {threshold:.2f} · "
        f"{quality(classified.summary)}"
    )
    if not found:
        st.info("No chip scores this high: lower the threshold or label more examples.", icon=":material/search_off:")
        return
    deck = scored_deck(found, threshold, area)
    if deck is not None:
        st.pydeck_chart(deck, height=380, key="scored_map")
    with st.container(horizontal=True, horizontal_alignment="right"):
        for label, (render, suffix, mime) in FORMATS.items():
            st.download_button(
                label, lambda render=render: render(found), f"{name}-found.{suffix}", mime,
                key=f"found-{suffix}", icon=":material/download:", on_click="ignore",
            )  # fmt: skip
    rows = [
        {"rank": rank, "score": round(hit.score, 3), "date": str(hit.chip.date or ""),
         "file": PurePath(hit.chip.path).name, "chip": hit.chip.id}
        for rank, hit in enumerate(found[:200], 1)
    ]  # fmt: skip
    st.dataframe(rows, hide_index=True, height=240, key="found_table")
