"""Labels on the page: the class being labelled (typed, or picked from the existing ones), the ✓ / ✗ card buttons'
callback, and the sidebar panel with the class's counts, its labelled chips, removal, "refine with my labels" and
"find them all" (the classifier, ``classifier_panel``)."""

from __future__ import annotations

import streamlit as st

from app.backend import Backend
from rsretrieve.errors import UserError, one_line

POSITIVE, NEGATIVE = "positive", "negative"
MARKS = {POSITIVE: "✓", NEGATIVE: "✗"}


def current_class() -> str | None:
    """The class the card buttons label (None until one is chosen or typed)."""
    name = st.session_state.get("label_class")
    return name.strip() if isinstance(name, str) and name.strip() else None


def flash(message: str) -> None:
    """Keep an error of a button callback for the page to show on its next run (callbacks run before it)."""
    st.session_state.flash = message


def mark(backend: Backend, chip_id: str, label: str, current: str | None) -> None:
    """Card button callback: label a chip of the current class; pressing the label it has removes it."""
    name = current_class()
    if name is None:
        flash("Choose or type a class under Labels in the sidebar first, then mark results ✓ or ✗.")
        return
    try:
        if current == label:
            backend.remove_labels(name, [chip_id])
        else:
            backend.add_labels(name, [chip_id] if label == POSITIVE else [], [chip_id] if label == NEGATIVE else [])
    except UserError as error:
        flash(one_line(error))


def pick_class() -> None:
    """Pills callback: an existing class becomes the one labelled."""
    if st.session_state.get("class_pick"):
        st.session_state.label_class = st.session_state.class_pick
    st.session_state.class_pick = None


def refine(name: str) -> None:
    """Button callback: search with the class's positives and negatives."""
    st.session_state.query = None
    st.session_state.refine_class = name


def remove(backend: Backend, name: str, everything: bool) -> None:
    """Button callback: remove the chosen labels of the class (or all of it)."""
    ids = None if everything else list(st.session_state.get("remove_ids") or [])
    if ids == []:
        return
    try:
        backend.remove_labels(name, ids)
    except UserError as error:
        flash(one_line(error))
    st.session_state.remove_ids = []


def sidebar_labels(backend: Backend) -> dict[str, str]:
    """The Labels panel; the current class's labels (chip id → positive/negative)."""
    st.sidebar.header("Labels")
    try:
        listing = backend.labels()
    except UserError as error:  # e.g. a service without the labels endpoints: the rest of the page still works
        st.sidebar.caption(f"Labels are not available: {one_line(error)}")
        return {}
    classes = listing["classes"]
    st.sidebar.text_input(
        "Class", key="label_class", placeholder="a class name, e.g. solar-farm",
        help="✓ / ✗ on a result labels it in this class (a new name starts a new class)",
    )  # fmt: skip
    if classes:
        st.sidebar.pills(
            "Classes", sorted(classes), key="class_pick", on_change=pick_class, label_visibility="collapsed"
        )
    name = current_class()
    if name is None:
        st.sidebar.caption("Mark results ✓ (is one) or ✗ (is not) to teach a class, then refine or find them all.")
        return {}
    labelled = {label["id"]: label["label"] for label in listing["labels"] if label["class"] == name}
    counts = classes.get(name, {POSITIVE: 0, NEGATIVE: 0})
    st.sidebar.markdown(f"**{name}**: {counts[POSITIVE]} ✓ · {counts[NEGATIVE]} ✗")
    if not labelled:
        st.sidebar.caption("No labels in this class yet: press ✓ or ✗ on a result.")
        return labelled
    left, right = st.sidebar.columns(2)
    left.button(
        "Refine", key="refine", on_click=refine, args=(name,), icon=":material/tune:", width="stretch",
        help="Search with this class's ✓ chips as the query and its ✗ chips as negatives",
    )  # fmt: skip
    right.button(
        "Find all", key="classify", icon=":material/travel_explore:", width="stretch", type="primary",
        help="Train a classifier on these labels and score every chip of the index",
    )  # fmt: skip
    with st.sidebar.expander(f"Labelled chips ({len(labelled)})"):
        st.dataframe(
            [{"chip": chip_id, "label": MARKS[label]} for chip_id, label in labelled.items()],
            hide_index=True, height=min(36 * (len(labelled) + 1) + 2, 220),
        )  # fmt: skip
        st.multiselect("Remove", list(labelled), key="remove_ids", placeholder="chips to unlabel")
        left, right = st.columns(2)
        left.button("Remove", key="remove", on_click=remove, args=(backend, name, False), width="stretch")
        right.button("Whole class", key="remove_class", on_click=remove, args=(backend, name, True), width="stretch")
    return labelled
