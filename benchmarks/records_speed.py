"""Reading the records of search hits from ``records/`` (store format 3 against 4): time per hit and bytes per chip.

    python benchmarks/records_speed.py [--sizes 100000 1000000] [--hits 10] [--queries 300] [--out FILE.json]

The record files of N chips are written as an index writes them, one file per ``speed.APPEND_ROWS`` (262,144) chips:
in format 4 (``RecordFiles.append``: ``store.record_layout``, uncompressed, read from the map) and as format 3 wrote
them (LZ4-compressed Arrow batches of 512 rows), for two kinds of footprint: the speed benchmark's chips
(``speed.Layout``: squares that are their bbox) and the same chips with densified rings like those of indexed rasters
(41 points, rounded to 1e-7°, as ``raster.georef`` makes them). Each query reads ``--hits`` random chips as
``ChipStore.chips`` does (the records' values, then ``Chip`` objects), the page cache warm (a few queries first):
p50 wall and CPU milliseconds per query and per hit; bytes_per_chip: the record files over the chips.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import speed

from rsretrieve.chips import Chip, chips_from_values, record_table
from rsretrieve.store.query_columns import RecordFiles

FORMAT_3_BATCH_ROWS = 512
EDGE_POINTS = 10  # as raster.georef.FOOTPRINT_EDGE_POINTS
WARM_UP = 5


def densified(chip: Chip) -> Chip:
    """The chip with a 41-point footprint ring around its bbox, rounded to 1e-7° (an indexed raster's kind)."""
    minx, miny, maxx, maxy = chip.bbox
    t = np.linspace(0.0, 1.0, EDGE_POINTS, endpoint=False)
    xs = np.concatenate(
        [np.full_like(t, minx), minx + t * (maxx - minx), np.full_like(t, maxx), maxx - t * (maxx - minx)]
    )
    ys = np.concatenate(
        [maxy - t * (maxy - miny), np.full_like(t, miny), miny + t * (maxy - miny), np.full_like(t, maxy)]
    )
    ring = np.round(np.stack([xs, ys], 1), 7).tolist()
    return replace(chip, footprint={"type": "Polygon", "coordinates": [[*ring, ring[0]]]})


def write_format_3(path: Path, records: pa.Table) -> None:
    """One record file as store format 3 wrote it: LZ4 batches of 512 rows, marked ``rows_per_batch``."""
    records = records.replace_schema_metadata({b"rows_per_batch": str(FORMAT_3_BATCH_ROWS).encode()})
    options = pa.ipc.IpcWriteOptions(compression="lz4")
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, records.schema, options=options) as writer:
        writer.write_table(records, max_chunksize=FORMAT_3_BATCH_ROWS)


def write_records(folder: Path, n: int, footprints: str) -> dict[str, RecordFiles]:
    """Record files of n chips in each format, by format name."""
    layout = speed.Layout(n, seed=0)
    files = {"format 3": RecordFiles(folder / "format3"), "format 4": RecordFiles(folder / "format4")}
    files["format 3"].path.mkdir(parents=True)
    for start in range(0, n, speed.APPEND_ROWS):
        stop = min(start + speed.APPEND_ROWS, n)
        chips = layout.chips(start, stop)
        records = record_table([densified(chip) for chip in chips] if footprints == "densified" else chips)
        write_format_3(files["format 3"].path / f"{start:012d}-{stop:012d}.arrow", records)
        files["format 4"].append(records, start)
    return files


def measure(files: RecordFiles, n: int, hits: int, queries: int, seed: int) -> dict[str, Any]:
    """p50 wall and CPU ms of reading ``hits`` random chips a query, and the files' bytes per chip."""
    rng = np.random.default_rng(seed)
    wall, cpu = [], []
    for query in range(WARM_UP + queries):
        fids = rng.integers(0, n, hits)
        started, started_cpu = time.perf_counter(), time.process_time()
        chips = chips_from_values(files.values(fids, n, parsed=True))
        if query >= WARM_UP:
            wall.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
        assert [chip.id for chip in chips] == [f"{fid:016x}" for fid in fids]
    size = sum(path.stat().st_size for path in files.path.iterdir())
    p50, p50_cpu = float(np.median(wall)) * 1e3, float(np.median(cpu)) * 1e3
    return {
        "p50_ms": round(p50, 4),
        "p50_cpu_ms": round(p50_cpu, 4),
        "p50_ms_per_hit": round(p50 / hits, 4),
        "bytes_per_chip": round(size / n, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--hits", type=int, default=10, help="records read a query")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--workdir", type=Path, help="where the record files go (default: system temp)")
    parser.add_argument("--out", type=Path, default=speed.RESULTS / "records-speed-cpu.json")
    args = parser.parse_args()
    results = []
    for n in args.sizes:
        for footprints in ("benchmark squares", "densified"):
            with tempfile.TemporaryDirectory(prefix="rsretrieve-records-", dir=args.workdir) as folder:
                for name, files in write_records(Path(folder), n, footprints).items():
                    figures = measure(files, n, args.hits, args.queries, seed=n)
                    results.append({"n": n, "footprints": footprints, "records": name, "hits": args.hits, **figures})
                    print(json.dumps(results[-1]), flush=True)
                    args.out.write_text(
                        json.dumps({"machine": platform.machine(), "results": results}, indent=2) + "\n"
                    )


if __name__ == "__main__":
    main()
