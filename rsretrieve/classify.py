"""Find every chip of a labelled class: logistic regression on the stored embeddings, scored over the whole archive.

1. Training set: the class's labelled positives and negatives (``labels.resolve``). When there are fewer than
   ``negatives_per_positive`` (5) negatives per positive, the rest are sampled at random from the archive,
   leaving out the labelled chips: "background" negatives. A rare class makes a few unlabelled positives among
   them likely, which the model tolerates; the cross-validated precision is then a lower bound.
2. Model: standardised features + L2 logistic regression with balanced class weights (scikit-learn), folded into
   one linear function ``sigmoid(x·w + b)`` of the stored vector, so scoring is one matrix-vector product.
   ``score`` is the probability under balanced classes, not the class's share of the archive.
3. Cross-validation by area: folds are split by ``StratifiedGroupKFold`` on a grid cell of the chip's bbox centre
   (``cell_degrees``, 0.05° ≈ 5 km; chips without a bbox by source file), so a fold's test chips are never the
   training chips' neighbours. Reported: precision and recall at the threshold and average precision, pooled
   over the out-of-fold predictions. Needs positives in at least two cells.
4. Scoring: every stored vector, ``block`` rows at a time (``ChipStore.vector_blocks``: bounded memory), keeping the
   chips above the threshold that pass the filters (bbox, date, ``within``).
5. Sites (``sites``): the found chips' footprints, touching ones grouped (STRtree + connected components) and
   dissolved (``dissolve``: coverage union, else ``union_all``), with
   chip count, mean and max score and area in m² (equal-area EPSG:6933).
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rsretrieve.errors import UserError
from rsretrieve.query import Filters

log = logging.getLogger(__name__)
MIN_POSITIVES = 2
DISSOLVE_DEGREES = 2e-7  # footprints closer than this (≈2 cm; stored coordinates are rounded to 1e-7°) touch


class ClassifyError(UserError):
    """A classification that cannot be run (too few labels); one line for the user."""


@dataclass(frozen=True)
class ClassifierOptions:
    """Settings of ``classify``."""

    threshold: float = 0.8
    negatives_per_positive: float = 5.0
    seed: int = 0
    cell_degrees: float = 0.05
    folds: int = 5
    block: int = 65536
    regularisation: float = 1.0  # logistic regression C

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise ClassifyError(f"--threshold must be between 0 and 1 (got {self.threshold})")
        if self.negatives_per_positive < 0:
            raise ClassifyError("--negatives must not be negative")


@dataclass(frozen=True)
class LinearModel:
    """``sigmoid(x·weights + bias)`` of a stored vector."""

    weights: np.ndarray
    bias: float

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """Probabilities (float32) of rows of vectors."""
        logits = vectors @ self.weights + np.float32(self.bias)
        return (1.0 / (1.0 + np.exp(-np.clip(logits, -60, 60)))).astype(np.float32)


@dataclass
class Classification:
    """What ``classify`` found: fids and scores above the threshold (best first) and a summary."""

    fids: np.ndarray
    scores: np.ndarray
    summary: dict[str, Any]
    model: LinearModel
    timings: dict[str, float] = field(default_factory=dict)


def fit(vectors: np.ndarray, labels: np.ndarray, options: ClassifierOptions) -> LinearModel:
    """Standardise + logistic regression (balanced), folded into one linear model of the raw vector."""
    from sklearn.linear_model import LogisticRegression

    vectors = np.asarray(vectors, np.float64)
    mean = vectors.mean(axis=0)
    scale = vectors.std(axis=0)
    scale[scale < 1e-12] = 1.0
    model = LogisticRegression(C=options.regularisation, class_weight="balanced", max_iter=2000)
    model.fit((vectors - mean) / scale, labels)
    weights = model.coef_[0] / scale
    bias = float(model.intercept_[0] - np.dot(weights, mean))
    return LinearModel(weights.astype(np.float32), bias)


def spatial_groups(store: Any, fids: np.ndarray, cell_degrees: float) -> np.ndarray:
    """Area of each chip for the folds: the grid cell of its bbox centre (by source file without a bbox)."""
    columns = store.filter_columns()
    x = (columns.minx[fids] + columns.maxx[fids]) / 2
    y = (columns.miny[fids] + columns.maxy[fids]) / 2
    unplaced = np.flatnonzero(np.isnan(x) | np.isnan(y))
    cells_x = np.floor(np.nan_to_num(x) / cell_degrees).astype(np.int64)  # unplaced chips are named below
    cells_y = np.floor(np.nan_to_num(y) / cell_degrees).astype(np.int64)
    groups = np.array([f"{a}:{b}" for a, b in zip(cells_x.tolist(), cells_y.tolist(), strict=True)], object)
    if len(unplaced):
        groups[unplaced] = [f"file:{chip.path}" for chip in store.chips(fids[unplaced])]
    return groups


def cross_validate(
    vectors: np.ndarray, labels: np.ndarray, groups: np.ndarray, options: ClassifierOptions
) -> dict[str, Any]:
    """Precision, recall (at the threshold) and average precision over out-of-fold predictions, folds by area."""
    from sklearn.metrics import average_precision_score
    from sklearn.model_selection import StratifiedGroupKFold

    positive_areas = len(set(groups[labels == 1]))
    folds = min(options.folds, positive_areas, len(set(groups[labels == 0])))
    if folds < 2:
        return {
            "folds": 0,
            "skipped": f"cross-validation needs labelled positives in at least 2 areas ({options.cell_degrees}° "
            f"cells); they are all in {positive_areas}: label chips elsewhere",
        }
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=options.seed)
    predicted = np.full(len(labels), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for train, test in splitter.split(vectors, labels, groups):
            if len(set(labels[train])) < 2:
                continue
            predicted[test] = fit(vectors[train], labels[train], options).scores(vectors[test])
    scored = ~np.isnan(predicted)
    truth, found = labels[scored] == 1, predicted[scored] >= options.threshold
    true_positives = int((truth & found).sum())
    return {
        "folds": folds,
        "grouping": f"{options.cell_degrees}° cells of the chip bbox centre",
        "areas": len(set(groups)),
        "precision": round(float(true_positives / found.sum()), 4) if found.any() else None,
        "recall": round(float(true_positives / truth.sum()), 4) if truth.any() else None,
        "average_precision": round(float(average_precision_score(truth, predicted[scored])), 4)
        if truth.any()
        else None,
        "threshold": options.threshold,
    }


def sample_negatives(count: int, total: int, exclude: np.ndarray, seed: int) -> np.ndarray:
    """``count`` random fids of ``total`` not in ``exclude`` (fewer when the archive is small), sorted."""
    available = total - len(np.unique(exclude))
    count = int(min(count, max(available, 0)))
    if count <= 0:
        return np.empty(0, np.int64)
    rng = np.random.default_rng(seed)
    excluded = np.zeros(total, bool)
    excluded[exclude] = True
    chosen: list[np.ndarray] = []
    have = 0
    while have < count:  # rejection sampling: cheap while the labelled chips are a small share
        draw = np.unique(rng.integers(0, total, size=2 * (count - have) + 16))
        draw = draw[~excluded[draw]]
        excluded[draw] = True
        chosen.append(draw)
        have += len(draw)
    picked = np.concatenate(chosen)
    return np.sort(rng.permutation(picked)[:count])


def classify(
    store: Any,
    positives: np.ndarray,
    negatives: np.ndarray,
    filters: Filters | None = None,
    options: ClassifierOptions | None = None,
    class_name: str = "",
) -> Classification:
    """Train on the labelled fids (``labels.resolve``), cross-validate by area, score the archive (see module)."""
    options = options or ClassifierOptions()
    # imported before the clock starts: the first import (~1-2 s) is not the classifier's time
    import sklearn.linear_model
    import sklearn.metrics
    import sklearn.model_selection  # noqa: F401

    timings: dict[str, float] = {}
    started = time.perf_counter()
    positives = np.unique(np.asarray(positives, np.int64))
    negatives = np.setdiff1d(np.asarray(negatives, np.int64), positives)
    if len(positives) < MIN_POSITIVES:
        raise ClassifyError(
            f"class {class_name!r} has {len(positives)} positive label{'s' * (len(positives) != 1)} in the index; "
            f"label at least {MIN_POSITIVES} chips (rsretrieve label add --positive ID ...)"
        )
    wanted = int(np.ceil(options.negatives_per_positive * len(positives))) - len(negatives)
    sampled = sample_negatives(wanted, len(store), np.concatenate([positives, negatives]), options.seed)
    fids = np.concatenate([positives, negatives, sampled])
    labels = np.concatenate([np.ones(len(positives), int), np.zeros(len(negatives) + len(sampled), int)])
    if len(fids) == len(positives):
        raise ClassifyError(f"class {class_name!r}: no negatives (label some, or index more chips)")
    vectors = store.vectors(fids)
    groups = spatial_groups(store, fids, options.cell_degrees)
    timings["prepare_s"] = time.perf_counter() - started
    mark = time.perf_counter()
    cv = cross_validate(vectors, labels, groups, options)
    timings["cv_s"] = time.perf_counter() - mark
    if cv.get("skipped"):
        log.warning("%s", cv["skipped"])
    mark = time.perf_counter()
    model = fit(vectors, labels, options)
    timings["train_s"] = time.perf_counter() - mark

    mark = time.perf_counter()
    allowed = None
    filters = filters or Filters()
    if filters.active:
        allowed = np.zeros(len(store), bool)
        allowed[filters.matching(store.filter_columns(), store)] = True
    timings["filter_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    found_fids, found_scores = [], []
    for first, block in store.vector_blocks(options.block):
        scores = model.scores(block)
        keep = scores >= options.threshold
        if allowed is not None:
            keep &= allowed[first : first + len(block)]
        rows = np.flatnonzero(keep)
        found_fids.append(rows + first)
        found_scores.append(scores[rows])
    timings["score_s"] = time.perf_counter() - mark
    found = np.concatenate(found_fids) if found_fids else np.empty(0, np.int64)
    scores = np.concatenate(found_scores) if found_scores else np.empty(0, np.float32)
    order = np.lexsort((found, -scores))
    found, scores = found[order], scores[order]
    summary = {
        "class": class_name,
        "threshold": options.threshold,
        "labels": {
            "positive": len(positives),
            "negative": len(negatives),
            "sampled_negative": len(sampled),
        },
        "cv": cv,
        "chips": len(store),
        "chips_filtered": int(allowed.sum()) if allowed is not None else len(store),
        "found": len(found),
        "labelled_positives_found": int(np.isin(positives, found).sum()),
    }
    timings["total_s"] = time.perf_counter() - started
    summary["timings"] = {key: round(value, 4) for key, value in timings.items()}
    return Classification(found, scores, summary, model, timings)


def classify_class(
    db: Any, store: Any, class_name: str, filters: Filters | None = None, options: ClassifierOptions | None = None
) -> Classification:
    """``classify`` on a class's labels in the index folder ``db`` (``rsretrieve classify``, ``POST /v1/classify``):
    the summary also counts the labels of chips no longer in the index (``labels.missing``)."""
    from rsretrieve.labels import check_class, resolve

    name = check_class(class_name)
    labelled = resolve(db, store, name)
    result = classify(store, labelled.positives, labelled.negatives, filters, options, name)
    result.summary["labels"]["missing"] = labelled.missing
    return result


def labelled_as(db: Any, class_name: str) -> dict[str, str]:
    """Chip id → label (positive / negative) of a class: the ``label`` of found chips."""
    from rsretrieve.labels import LabelStore

    return {label.id: label.label for label in LabelStore(db).labels(class_name)}


def class_sites(store: Any, result: Classification, class_name: str) -> tuple[list[dict[str, Any]], np.ndarray]:
    """``sites`` of a classification's found chips, each row with its class; the summary gets the number of sites
    and their total area."""
    rows, polygons = sites(store, result.fids, result.scores)
    for row in rows:
        row["class"] = class_name
    result.summary["sites"] = len(rows)
    result.summary["site_area_m2"] = round(sum(row["area_m2"] for row in rows), 1)
    return rows, polygons


# --- outputs --------------------------------------------------------------------------------------


def found_records(result: Classification, store: Any, class_name: str, labelled: dict[str, str]) -> tuple:
    """(records table, properties by name) of the found chips: score, class, and the chip's label when it has one."""
    records = store.records(result.fids)
    ids = records.column("id").to_pylist()
    properties = {
        "score": np.round(result.scores.astype(np.float64), 6),
        "class": [class_name] * len(ids),
        "label": [labelled.get(chip_id) for chip_id in ids],
    }
    return records, properties


def sites(store: Any, fids: np.ndarray, scores: np.ndarray) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Sites: the footprints of ``fids`` dissolved where they touch (an edge or a corner, within ``DISSOLVE_DEGREES``)
    or overlap; per site (most chips first) its chip count, mean and max score and area in m²; and the site
    polygons (WGS84; a MultiPolygon where chips touch at a corner only)."""
    import shapely
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from rsretrieve.reproject import areas_m2

    fids = np.asarray(fids, np.int64)
    scores = np.asarray(scores, np.float64)
    footprints = store.footprints(fids) if len(fids) else np.empty(0, object)
    placed = ~shapely.is_missing(footprints) if len(fids) else np.zeros(0, bool)
    footprints, scores = footprints[placed], scores[placed]
    count = len(footprints)
    if count == 0:
        return [], np.empty(0, object)
    left, right = shapely.STRtree(footprints).query(footprints, predicate="dwithin", distance=DISSOLVE_DEGREES)
    graph = coo_matrix((np.ones(len(left), bool), (left, right)), shape=(count, count))
    total, site_of = connected_components(graph, directed=False)
    order = np.argsort(site_of, kind="stable")
    counts = np.bincount(site_of, minlength=total)
    members = np.split(order, np.cumsum(counts)[:-1])
    polygons = np.array([dissolve(footprints[rows]) for rows in members], object)
    sums = np.bincount(site_of, weights=scores, minlength=total)
    maxima = np.full(total, -np.inf)
    np.maximum.at(maxima, site_of, scores)
    areas = areas_m2(polygons)
    ranked = np.lexsort((-maxima, -counts))
    rows = [
        {
            "site": rank,
            "chips": int(counts[s]),
            "area_m2": round(float(areas[s]), 1),
            "mean_score": round(float(sums[s] / counts[s]), 6),
            "max_score": round(float(maxima[s]), 6),
        }
        for rank, s in enumerate(ranked, 1)
    ]
    return rows, polygons[ranked]


def dissolve(footprints: np.ndarray) -> Any:
    """The union of touching footprints: a coverage union (fast: chips of a grid share edges, ~15x quicker than a
    general union at 100k chips) when its result is valid — overlapping footprints make it invalid —, else
    shapely's ``union_all``."""
    import shapely

    if len(footprints) == 1:
        return footprints[0]
    try:
        merged = shapely.coverage_union_all(footprints)
        if shapely.is_valid(merged):
            return merged
    except shapely.errors.GEOSException:
        pass
    return shapely.union_all(footprints)
