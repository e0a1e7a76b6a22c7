"""Labels: which chips an analyst marked as a class (``positive``) or not (``negative``), kept in the index folder.

``labels.parquet`` beside the index (columns ``LABEL_SCHEMA``: chip id, class, label, note, time), one row per
(chip id, class) — labelling a chip again replaces its label for that class. The file is replaced whole
(tmp + rename, ``files.atomic_write``) under its own lock (``labels.lock``), outside the chips' commit protocol:
the indexer never reads or writes it, so labels survive appends, FAISS rebuilds, ``--rebuild`` (chip ids are
derived from source path and window, so re-indexed chips keep their ids) and reloads. A label whose chip is no
longer in the index is kept and ignored when used (``resolve`` says how many).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rsretrieve.errors import UserError
from rsretrieve.files import atomic_write

log = logging.getLogger(__name__)

LABELS = "labels.parquet"
LABELS_LOCK = "labels.lock"
POSITIVE, NEGATIVE = "positive", "negative"
LABEL_VALUES = (POSITIVE, NEGATIVE)
LABEL_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("class", pa.string()),
        ("label", pa.string()),
        ("note", pa.string()),
        ("time", pa.timestamp("s", tz="UTC")),
    ]
)
CLASS_PATTERN = re.compile(r"^[\w][\w .:/+-]{0,63}$")
# spellings of a label read from imported features (QGIS attribute tables hold 1/0, yes/no, true/false ...)
LABEL_SPELLINGS = {
    **dict.fromkeys(("positive", "pos", "p", "1", "true", "yes", "y", "+"), POSITIVE),
    **dict.fromkeys(("negative", "neg", "n", "0", "false", "no", "-"), NEGATIVE),
}


class LabelError(UserError):
    """A labelling request that cannot be done; one line for the user."""


class UnknownChipsError(LabelError):
    """Chip ids that are not in the index (the service answers 404)."""


@dataclass(frozen=True)
class Label:
    """One chip's label for one class."""

    id: str
    class_name: str
    label: str
    note: str = ""
    time: dt.datetime | None = None

    def record(self) -> dict[str, Any]:
        """As JSON (``label list --json``)."""
        return {
            "id": self.id,
            "class": self.class_name,
            "label": self.label,
            "note": self.note,
            "time": self.time.isoformat() if self.time else None,
        }


def check_class(name: str) -> str:
    """The class name, stripped; raise LabelError unless it is 1-64 word characters, spaces or .:/+-."""
    name = (name or "").strip()
    if not CLASS_PATTERN.match(name):
        raise LabelError(f"bad class name {name!r}: use letters, digits, spaces and - _ . : / + (at most 64)")
    return name


def parse_label(value: Any) -> str:
    """``positive`` / ``negative`` from the usual spellings (1/0, true/false, yes/no, pos/neg)."""
    label = LABEL_SPELLINGS.get(str(value).strip().lower())
    if label is None:
        raise LabelError(f"label {value!r} is neither positive nor negative")
    return label


class LabelStore:
    """The labels of one index folder."""

    def __init__(self, db: str | Path):
        self.db = Path(db)
        self.path = self.db / LABELS

    # -- reading ---------------------------------------------------------------------------------
    def table(self) -> pa.Table:
        """Every label as an Arrow table (``LABEL_SCHEMA``; empty when nothing is labelled)."""
        if not self.path.is_file():
            return LABEL_SCHEMA.empty_table()
        try:
            return pq.read_table(self.path, schema=LABEL_SCHEMA)
        except Exception as error:
            raise LabelError(f"{self.path}: unreadable labels file ({error})") from error

    def labels(self, class_name: str | None = None) -> list[Label]:
        """Labels (of one class), oldest first."""
        rows = self.table().to_pylist()
        return [
            Label(row["id"], row["class"], row["label"], row["note"] or "", row["time"])
            for row in rows
            if class_name is None or row["class"] == class_name
        ]

    def classes(self) -> dict[str, dict[str, int]]:
        """Per class: how many positives and negatives."""
        counts: dict[str, dict[str, int]] = {}
        for label in self.labels():
            counts.setdefault(label.class_name, {POSITIVE: 0, NEGATIVE: 0})[label.label] += 1
        return counts

    def ids(self, class_name: str) -> tuple[list[str], list[str]]:
        """Chip ids labelled positive and negative for a class (LabelError when the class has no labels)."""
        labels = self.labels(class_name)
        if not labels:
            known = ", ".join(sorted(self.classes())) or "none yet"
            raise LabelError(f"no labels for class {class_name!r} in {self.db} (classes: {known})")
        return (
            [label.id for label in labels if label.label == POSITIVE],
            [label.id for label in labels if label.label == NEGATIVE],
        )

    # -- writing ---------------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One labels writer at a time (read-modify-write of the whole file)."""
        if not self.db.is_dir():
            raise LabelError(f"index not found: {self.db}")
        try:
            with (self.db / LABELS_LOCK).open("a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
        except OSError as error:  # read-only folder, disk full: nothing was changed
            raise LabelError(f"cannot write labels in {self.db}: {error.strerror or error}") from error

    def _write(self, table: pa.Table) -> None:
        atomic_write(self.path, lambda tmp: pq.write_table(table.cast(LABEL_SCHEMA), tmp))

    def add(self, labels: Iterable[Label]) -> int:
        """Add or replace labels (keyed by chip id and class); how many rows were written."""
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        new = {(label.id, label.class_name): label for label in labels}
        for label in new.values():
            if label.label not in LABEL_VALUES:
                raise LabelError(f"label {label.label!r} is neither positive nor negative")
        if not new:
            return 0
        with self._locked():
            kept = [row for row in self.table().to_pylist() if (row["id"], row["class"]) not in new]
            rows = kept + [
                {"id": l.id, "class": l.class_name, "label": l.label, "note": l.note or "", "time": l.time or now}
                for l in new.values()  # noqa: E741
            ]
            self._write(pa.Table.from_pylist(rows, schema=LABEL_SCHEMA))
        return len(new)

    def remove(self, class_name: str | None = None, ids: Iterable[str] = ()) -> int:
        """Remove the labels of ``ids`` (of one class, or of every class), or a whole class; how many went."""
        ids = set(ids)
        if class_name is None and not ids:
            raise LabelError("say what to remove: --class CLASS and/or chip ids")
        with self._locked():
            rows = self.table().to_pylist()

            def goes(row: dict[str, Any]) -> bool:
                return (class_name is None or row["class"] == class_name) and (not ids or row["id"] in ids)

            kept = [row for row in rows if not goes(row)]
            if len(kept) != len(rows):
                self._write(pa.Table.from_pylist(kept, schema=LABEL_SCHEMA))
        return len(rows) - len(kept)


def check_ids(store: Any, ids: Iterable[str]) -> dict[str, int]:
    """fid of every chip id; LabelError naming the unknown ones (one line)."""
    ids = list(dict.fromkeys(ids))
    found = store.fids_of(ids)
    unknown = [chip_id for chip_id in ids if chip_id not in found]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise UnknownChipsError(f"{len(unknown)} unknown chip id{'s' * (len(unknown) > 1)} in {store.db}: {shown}")
    return found


def label_chips(
    db: str | Path, store: Any, class_name: str, positive: Iterable[str], negative: Iterable[str], note: str = ""
) -> int:
    """Label chips by id (``label add``, ``POST /v1/labels``): every id must be in the index (nothing is written
    otherwise) and none both positive and negative; how many labels were written."""
    name = check_class(class_name)
    positive, negative = list(dict.fromkeys(positive)), list(dict.fromkeys(negative))
    if not positive and not negative:
        raise LabelError("give chip ids to label positive and/or negative")
    both = set(positive) & set(negative)
    if both:
        raise LabelError(f"chip {sorted(both)[0]} is given as both positive and negative")
    check_ids(store, [*positive, *negative])
    return LabelStore(db).add(
        [Label(chip_id, name, POSITIVE, note) for chip_id in positive]
        + [Label(chip_id, name, NEGATIVE, note) for chip_id in negative]
    )


def refine(
    db: str | Path, store: Any, class_name: str, like: Iterable[str], not_like: Iterable[str]
) -> tuple[list[str], list[str]]:
    """``like`` and ``not_like`` chip ids of a query plus a class's labelled positives and negatives that are in the
    index (``query --labels``, the service's ``labels``)."""
    labelled = resolve(db, store, check_class(class_name))
    like, not_like = list(like), list(not_like)
    return (
        like + [chip_id for chip_id in labelled.positive_ids if chip_id not in like],
        not_like + [chip_id for chip_id in labelled.negative_ids if chip_id not in not_like],
    )


@dataclass(frozen=True)
class Resolved:
    """A class's labelled chips that are in the index now: fids of positives and negatives, and how many labels
    name chips that are not (ignored)."""

    positives: np.ndarray
    negatives: np.ndarray
    missing: int
    positive_ids: list[str]
    negative_ids: list[str]


def resolve(db: str | Path, store: Any, class_name: str) -> Resolved:
    """The labelled chips of a class in ``store`` (a ``ChipStore``); a chip labelled both ways counts as positive."""
    labelled_positive, labelled_negative = LabelStore(db).ids(class_name)
    found = store.fids_of([*labelled_positive, *labelled_negative])
    positive_ids = [chip_id for chip_id in labelled_positive if chip_id in found]
    positive_set = set(positive_ids)
    negative_ids = [chip_id for chip_id in labelled_negative if chip_id in found and chip_id not in positive_set]
    missing = len(set(labelled_positive) | set(labelled_negative)) - len(positive_set | set(negative_ids))
    if missing:
        log.warning("%d labels of %r name chips that are no longer in the index; ignored", missing, class_name)
    return Resolved(
        np.array([found[i] for i in positive_ids], np.int64),
        np.array([found[i] for i in negative_ids], np.int64),
        missing,
        positive_ids,
        negative_ids,
    )


# --- import from vector files ---------------------------------------------------------------------


@dataclass(frozen=True)
class Imported:
    """What ``import_features`` did."""

    features: int
    labels: dict[str, dict[str, int]]  # class → label → chips
    conflicts: int  # chips under both a positive and a negative feature of a class (kept positive)


def import_features(
    db: str | Path,
    store: Any,
    path: str | Path,
    class_name: str | None = None,
    default_label: str = POSITIVE,
    note: str | None = None,
) -> Imported:
    """Label every chip under the features of a vector file (``label_features``; the note defaults to the file's
    name)."""
    from rsretrieve.geometry import read_features

    features = read_features(path)
    if not features:
        raise LabelError(f"{path} has no features with a geometry")
    return label_features(db, store, features, Path(path).name, class_name, default_label, note)


def label_features(
    db: str | Path,
    store: Any,
    features: list[Any],
    source: str,
    class_name: str | None = None,
    default_label: str = POSITIVE,
    note: str | None = None,
) -> Imported:
    """Label every chip whose footprint intersects a feature (``geometry.Feature``; polygons: interiors must
    overlap, a shared edge is not enough; points and lines: any contact).

    Class: ``class_name`` when given, else each feature's ``class`` property. Label: each feature's ``label``
    property (positive/negative, 1/0, yes/no ...), else ``default_label``. Note: ``note``, else the feature's
    ``note`` property, else ``source`` (where the features came from).
    """
    import shapely

    from rsretrieve.geometry import POLYGONAL

    if not features:
        raise LabelError(f"{source} has no features with a geometry")
    columns = store.filter_columns()
    chosen: dict[tuple[str, str], dict[int, str]] = {}  # (class, label) → fid → note
    for number, feature in enumerate(features, 1):
        props = feature.properties
        name = class_name or props.get("class")
        if not name:
            raise LabelError(f"{source} feature {number} has no 'class' property: give the class")
        name = check_class(str(name))
        label = parse_label(props["label"]) if props.get("label") not in (None, "") else default_label
        geometry = feature.geometry
        minx, miny, maxx, maxy = geometry.bounds
        candidates = np.flatnonzero(
            (columns.maxx >= minx) & (columns.minx <= maxx) & (columns.maxy >= miny) & (columns.miny <= maxy)
        )
        if len(candidates) == 0:
            continue
        shapes = store.footprints(candidates)
        hit = shapely.intersects(geometry, shapes)
        if geometry.geom_type in POLYGONAL:
            hit &= ~shapely.touches(geometry, shapes)
        text = note or str(props.get("note") or source)
        notes = chosen.setdefault((name, label), {})
        for fid in candidates[hit].tolist():
            notes.setdefault(fid, text)
    labels: list[Label] = []
    counts: dict[str, dict[str, int]] = {}
    conflicts = 0
    for (name, label), notes in sorted(chosen.items()):
        fids = set(notes)
        if label == NEGATIVE:
            both = fids & set(chosen.get((name, POSITIVE), {}))
            conflicts += len(both)
            fids -= both
        ordered = sorted(fids)
        ids = [chip.id for chip in store.chips(ordered)]
        labels += [Label(chip_id, name, label, notes[fid]) for chip_id, fid in zip(ids, ordered, strict=True)]
        counts.setdefault(name, {POSITIVE: 0, NEGATIVE: 0})[label] = len(ids)
    LabelStore(db).add(labels)
    return Imported(len(features), counts, conflicts)


EXPORT_FORMATS = {".geojson": "geojson", ".json": "geojson", ".parquet": "geoparquet", ".geoparquet": "geoparquet"}


def export_labels(db: str | Path, store: Any, class_name: str, path: str | Path) -> int:
    """Write a class's labelled chips with their footprints as GeoJSON (``.geojson``/``.json``) or GeoParquet
    (``.parquet``), atomically; how many features."""
    from rsretrieve.files import atomic_write

    path = Path(path)
    form = EXPORT_FORMATS.get(path.suffix.lower())
    if form is None:
        raise LabelError(f"export to .geojson or .parquet (got {path.name})")
    data, count = export_bytes(db, store, class_name, form)
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
    return count


def export_bytes(db: str | Path, store: Any, class_name: str, form: str) -> tuple[bytes, int]:
    """A class's labelled chips (footprint; class, label, note, time and the chip record) as a GeoJSON or
    GeoParquet file in memory, and how many features."""
    import json

    labels = {label.id: label for label in LabelStore(db).labels(class_name)}
    if not labels:
        raise LabelError(f"no labels for class {class_name!r} in {db}")
    found = store.fids_of(list(labels))
    ids = [chip_id for chip_id in labels if chip_id in found]
    chips = store.chips([found[chip_id] for chip_id in ids])
    properties = [
        {"class": labels[chip.id].class_name, "label": labels[chip.id].label, "note": labels[chip.id].note,
         "time": labels[chip.id].time.isoformat() if labels[chip.id].time else None}
        for chip in chips
    ]  # fmt: skip
    if form == "geojson":
        collection = {
            "type": "FeatureCollection",
            "features": [chip.feature(**props) for chip, props in zip(chips, properties, strict=True)],
        }
        return (json.dumps(collection) + "\n").encode(), len(chips)
    if form == "geoparquet":
        from rsretrieve.geoparquet import chips_geotable, geoparquet_bytes

        return geoparquet_bytes(*chips_geotable(chips, properties)), len(chips)
    raise LabelError(f"export as geojson or geoparquet (got {form!r})")
