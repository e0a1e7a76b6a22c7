"""Speed of the analyst loop (issue 14): classifier training and whole-archive scoring, the polygon filter, exports.

    python benchmarks/analyst_speed.py [--sizes 100000 1000000] [--dim 512] [--out FILE.json]

Each size is written through the real store (``StoreWriter``, flat FAISS) as chips on a regular WGS84 grid of
0.005° chips with square footprints; 1 % of them, in 4 × 4-chip blocks at random places, are a planted class
(vector = normalise(noise + 1.5 · class direction)), the rest seeded noise on the unit sphere. Per size:

- read_vectors_s: one pass reading every stored vector (``ChipStore.vector_blocks``: blocks decoded from
  ``vectors.i8``; a column sum per block; page cache warm, the second of two passes; read_vectors_first_s: the
  first, which also maps the pages): the floor of any whole-archive scoring; score_s: the classifier's scoring pass
  (``classify``'s own timing: the same blocks, one matrix-vector product and a sigmoid each); score_to_read:
  their ratio (target ≤ 2);
- train_s, cv_s: fitting the final model and the 5-fold cross-validation by area, for 100 labelled positives and
  500 sampled negatives; classify_s: the whole ``classify`` call; found / recall / precision against the planted
  class at threshold 0.8;
- within_*: ``Filters(within=...)`` over the archive for a MultiPolygon (a 256-vertex disc with a hole, and a
  square) holding ~10 % of the chips: cold (footprints read from ``records/`` for the first time in the process)
  and warm; within_matches; bbox_prefilter_candidates (what the numpy prefilter leaves) and footprints_read (the
  chips whose bbox crosses the area's boundary: only those are tested on their footprint);
- export_*: 100,000 chips (the found ones, else the first 100,000: one contiguous block, the worst case for
  sites) written as GeoParquet and as GeoJSON (records read from the store included), as ``rsretrieve classify``
  writes them, and ``classify.sites`` over them (grouping, dissolve, areas);
- stream_*: ``rsretrieve query -k 100000 --geoparquet/--geojson/--csv FILE`` as the CLI runs it: ``Searcher.rank``
  of a vector query with k = 100,000 (rank_s, its path) and ``result_files.write_results`` of the three files in one
  pass, 10,000 records at a time (stream_write_s), with the growth of the process's peak RSS while writing
  (stream_peak_growth_mb; Linux: the peak is reset through /proc/self/clear_refs first).

The JSON list is written to ``--out`` (default benchmarks/results/analyst-speed-cpu.json) after each size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any

os.environ.setdefault("RUST_LOG", "error")

import numpy as np
import shapely

from rsretrieve.ann import AnnSettings
from rsretrieve.chips import Chip, Window
from rsretrieve.classify import ClassifierOptions, classify, sites
from rsretrieve.geoparquet import records_geojson, records_geotable, write_geoparquet
from rsretrieve.query import Filters, Query
from rsretrieve.result_files import write_results
from rsretrieve.search import Searcher
from rsretrieve.store import ChipStore, StoreWriter

RESULTS = Path(__file__).resolve().parent / "results"
CHIP_DEGREES = 0.005
ORIGIN = (5.0, 45.0)
BLOCK = 4  # planted blocks of BLOCK × BLOCK chips
PLANTED_SHARE = 0.01
STRENGTH = 1.5
APPEND_ROWS = 65536
EXPORT_ROWS = 100_000
LABELLED = 100


class Grid:
    """Chips on a side × side grid from ORIGIN (fid = row · side + column), the planted blocks."""

    def __init__(self, n: int, seed: int):
        self.n = n
        self.side = int(np.ceil(np.sqrt(n)))
        rng = np.random.default_rng(seed)
        blocks = int(n * PLANTED_SHARE / BLOCK**2)
        corners = rng.integers(0, self.side - BLOCK, (blocks, 2))
        mask = np.zeros((self.side, self.side), bool)
        for row, column in corners:
            mask[row : row + BLOCK, column : column + BLOCK] = True
        self.planted = mask.ravel()[:n]

    def chips(self, start: int, stop: int) -> list[Chip]:
        chips = []
        for fid in range(start, stop):
            row, column = divmod(fid, self.side)
            minx = round(ORIGIN[0] + column * CHIP_DEGREES, 7)
            miny = round(ORIGIN[1] + row * CHIP_DEGREES, 7)
            maxx, maxy = round(minx + CHIP_DEGREES, 7), round(miny + CHIP_DEGREES, 7)
            ring = [[minx, miny], [maxx, miny], [maxx, maxy], [minx, maxy], [minx, miny]]
            chips.append(
                Chip(
                    id=f"{fid:016x}",
                    path=f"/archive/scene_{row // 64:04d}_{column // 64:04d}.tif",
                    window=Window(column % 64 * 224, row % 64 * 224, 224, 224),
                    crs="EPSG:4326",
                    bbox=(minx, miny, maxx, maxy),
                    footprint={"type": "Polygon", "coordinates": [ring]},
                    date=date(2020, 1, 1),
                )
            )
        return chips

    def extent(self) -> tuple[float, float, float, float]:
        rows = -(-self.n // self.side)
        return (ORIGIN[0], ORIGIN[1], ORIGIN[0] + self.side * CHIP_DEGREES, ORIGIN[1] + rows * CHIP_DEGREES)


def vectors_for(planted: np.ndarray, dim: int, seed: int, direction: np.ndarray) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(size=(len(planted), dim)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    noise += STRENGTH * planted[:, None].astype(np.float32) * direction
    return noise / np.linalg.norm(noise, axis=1, keepdims=True)


def synthetic_model(dim: int) -> SimpleNamespace:
    """The identity the synthetic indexes are written with (no model is ever loaded)."""
    return SimpleNamespace(name="analyst-benchmark", architecture="synthetic", checkpoint="none", dim=dim)


def write(db: Path, grid: Grid, dim: int) -> float:
    model = synthetic_model(dim)
    direction = np.random.default_rng(99).normal(size=dim).astype(np.float32)
    direction /= np.linalg.norm(direction)
    started = time.perf_counter()
    writer = StoreWriter.open(db, model, AnnSettings(kind="flat"))
    try:
        for start in range(0, grid.n, APPEND_ROWS):
            stop = min(start + APPEND_ROWS, grid.n)
            vectors = vectors_for(grid.planted[start:stop], dim, start, direction)
            writer.append(grid.chips(start, stop), vectors, new_files=1)
        writer.finish()
    finally:
        writer.close()
    return time.perf_counter() - started


def area_of_interest(grid: Grid) -> Any:
    """A disc with a hole and a square, together ~10 % of the grid's chips."""
    minx, miny, maxx, maxy = grid.extent()
    width = maxx - minx
    centre = shapely.Point(minx + 0.35 * width, miny + 0.4 * (maxy - miny))
    disc = centre.buffer(0.16 * width, quad_segs=64).difference(centre.buffer(0.05 * width, quad_segs=16))
    square = shapely.box(
        minx + 0.7 * width, miny + 0.7 * (maxy - miny), minx + 0.85 * width, miny + 0.85 * (maxy - miny)
    )
    return shapely.MultiPolygon([disc, square])


def measure(n: int, dim: int, workdir: Path, seed: int) -> dict[str, Any]:
    grid = Grid(n, seed)
    db = workdir / f"analyst-{n}"
    record: dict[str, Any] = {"n": n, "dim": dim, "planted": int(grid.planted.sum())}
    record["write_s"] = round(write(db, grid, dim), 2)

    store = ChipStore(db)
    passes = []
    for _ in range(2):  # the first pass also maps the pages into this process; scoring comes after it
        started = time.perf_counter()
        for _, block in store.vector_blocks():
            block.sum(axis=0)  # every value read once (a streaming reduction): the floor of any pass over them
        passes.append(time.perf_counter() - started)
    record["read_vectors_first_s"] = round(passes[0], 4)
    record["read_vectors_s"] = round(passes[1], 4)

    import sklearn.linear_model  # noqa: F401  (its first import is not the classifier's time)

    planted = np.flatnonzero(grid.planted)
    positives = np.random.default_rng(seed).choice(planted, min(LABELLED, len(planted) // 2), replace=False)
    started = time.perf_counter()
    result = classify(store, positives, [], options=ClassifierOptions(threshold=0.8, seed=seed), class_name="bench")
    record["classify_s"] = round(time.perf_counter() - started, 3)
    timings = result.summary["timings"]
    record.update({key: timings[key] for key in ("prepare_s", "cv_s", "train_s", "filter_s", "score_s")})
    record["score_to_read"] = round(timings["score_s"] / record["read_vectors_s"], 3)
    record["train_and_score_to_read"] = round((timings["train_s"] + timings["score_s"]) / record["read_vectors_s"], 3)
    found = set(result.fids.tolist())
    hits = len(found & set(planted.tolist()))
    record.update(
        found=len(found),
        recall=round(hits / len(planted), 4),
        precision=round(hits / max(1, len(found)), 4),
        cv=result.summary["cv"],
    )

    area = area_of_interest(grid)
    filters = Filters(within=area)
    columns = store.filter_columns()
    cold = ChipStore(db)  # records not opened yet in this view
    started = time.perf_counter()
    matches = filters.matching(cold.filter_columns(), cold)
    record["within_cold_s"] = round(time.perf_counter() - started, 4)
    started = time.perf_counter()
    again = filters.matching(columns, store)
    record["within_warm_s"] = round(time.perf_counter() - started, 4)
    assert np.array_equal(matches, again)
    minx, miny, maxx, maxy = area.bounds
    prefilter = (columns.maxx >= minx) & (columns.minx <= maxx) & (columns.maxy >= miny) & (columns.miny <= maxy)
    rectangles = shapely.box(columns.minx[prefilter], columns.miny[prefilter], columns.maxx[prefilter],
                             columns.maxy[prefilter])  # fmt: skip
    shapely.prepare(area)
    crossing = shapely.intersects(area, rectangles) & ~shapely.contains_properly(area, rectangles)
    record.update(
        within_matches=len(matches),
        within_share=round(len(matches) / n, 4),
        bbox_prefilter_candidates=int(prefilter.sum()),
        footprints_read=int(crossing.sum()),
    )

    exported = result.fids if len(result.fids) >= EXPORT_ROWS else np.arange(min(EXPORT_ROWS, n))
    exported = exported[:EXPORT_ROWS]
    scores = np.full(len(exported), 0.9, np.float32)
    started = time.perf_counter()
    write_geoparquet(workdir / "export.parquet", *records_geotable(store.records(exported), {"score": scores}))
    record["export_rows"] = len(exported)
    record["export_geoparquet_s"] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    (workdir / "export.geojson").write_text(records_geojson(store.records(exported), {"score": scores.tolist()}))
    record["export_geojson_s"] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    site_rows, _ = sites(store, exported, scores)
    record["sites_s"] = round(time.perf_counter() - started, 3)
    record["sites"] = len(site_rows)
    record.update(stream(db, workdir, dim, min(EXPORT_ROWS, n)))
    return record


def peak_rss() -> tuple[int, int]:
    """(current, peak) resident memory of this process in bytes (Linux)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def stream(db: Path, workdir: Path, dim: int, k: int) -> dict[str, Any]:
    """Rank k results of a vector query and stream them to GeoParquet, GeoJSON and CSV in one pass."""
    searcher = Searcher(db, synthetic_model(dim))
    vector = searcher.current().vectors([0])[0]
    started = time.perf_counter()
    ranked = searcher.rank(Query.build(vectors=[vector], k=k))
    rank_s = time.perf_counter() - started
    outputs = [(form, workdir / f"stream.{form}") for form in ("geoparquet", "geojson", "csv")]
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS
    before, _ = peak_rss()
    started = time.perf_counter()
    write_results(ranked, outputs)
    write_s = time.perf_counter() - started
    growth = peak_rss()[1] - before
    return {
        "stream_results": len(ranked),
        "stream_path": ranked.path,
        "stream_rank_s": round(rank_s, 3),
        "stream_write_s": round(write_s, 3),
        "stream_peak_growth_mb": round(growth / 2**20, 1),
        "stream_file_mb": {form: round(path.stat().st_size / 2**20, 1) for form, path in outputs},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="where the indexes are written (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=RESULTS / "analyst-speed-cpu.json")
    args = parser.parse_args(argv)
    environment = {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
    }
    records = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as folder:
        for n in args.sizes:
            started = time.perf_counter()
            record = measure(n, args.dim, Path(folder), args.seed)
            record["run_s"] = round(time.perf_counter() - started, 1)
            record["environment"] = environment
            records.append(record)
            print(json.dumps(record), file=sys.stderr, flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(records, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
