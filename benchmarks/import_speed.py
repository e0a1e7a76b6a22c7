"""Speed and memory of ``rsretrieve import-embeddings`` on a Major TOM-like embeddings GeoParquet file.

    python benchmarks/import_speed.py [--rows 100000] [--dim 1152] [--out FILE.json]

Writes one file in the layout of Major TOM's embedding expansions (``unique_id``, ``embedding`` as a list of
float32 — 1152-d like Core-S2RGB-SigLIP —, ``timestamp``, ``product_id``, ``grid_cell``, WKB ``geometry`` squares
of 0.01°, GeoParquet ``geo`` metadata) with pyarrow in another process, then imports it with ``--model none``
through ``indexer.import_embeddings`` (FAISS flat below 50,000 chips, IVF-PQ above). Reports: check_s (up to the
end of the first pass: every row read and checked), total_s, rows_per_s, peak RSS of this process in MB (the
file is read in record batches of at most 64 MB of vectors), the file's size, and the index type built. JSON to
``--out`` (default benchmarks/results/import-speed-cpu.json).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import tempfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

os.environ.setdefault("RUST_LOG", "error")

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely

from indexer.import_embeddings import import_embeddings
from rsretrieve.store import Manifest

RESULTS = Path(__file__).resolve().parent / "results"
STEP = 0.01
COLUMNS = 1000


def write_file(path: Path, rows: int, dim: int, seed: int = 0) -> None:
    """A Major TOM-like embeddings GeoParquet file of ``rows`` rows, written 50,000 rows at a time."""
    rng = np.random.default_rng(seed)
    geo = {"version": "1.0.0", "primary_column": "geometry",
           "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Polygon"]}}}  # fmt: skip
    writer = None
    for start in range(0, rows, 50_000):
        index = np.arange(start, min(rows, start + 50_000))
        x = 5.0 + (index % COLUMNS) * STEP
        y = 40.0 + (index // COLUMNS) * STEP
        vectors = rng.normal(size=(len(index), dim)).astype(np.float32)
        table = pa.table(
            {
                "unique_id": [hashlib.sha256(str(i).encode()).hexdigest() for i in index],
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim).cast(
                    pa.list_(pa.float32())
                ),
                "timestamp": [f"2021{1 + i % 12:02d}{1 + i % 28:02d}T101559" for i in index],
                "product_id": [f"S2A_MSIL2A_2021_R{i // 10_000:03d}" for i in index],
                "grid_cell": [f"{i // COLUMNS}U_{i % COLUMNS}R" for i in index],
                "geometry": shapely.to_wkb(shapely.box(x, y, x + STEP, y + STEP)),
            }
        ).replace_schema_metadata({"geo": json.dumps(geo)})
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1152)
    parser.add_argument("--out", type=Path, default=RESULTS / "import-speed-cpu.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "part_00001.parquet"
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:  # this process's peak RSS: the import
            pool.submit(write_file, path, args.rows, args.dim).result()
        summary = import_embeddings([path], Path(folder) / "db", "none", show_progress=False)
        manifest = Manifest.read(Path(folder) / "db")
        result = {
            "rows": args.rows,
            "dim": args.dim,
            "file_mb": round(path.stat().st_size / 1e6, 1),
            "check_s": round(summary.check_seconds, 2),
            "total_s": round(summary.seconds, 2),
            "rows_per_s": round(args.rows / summary.seconds, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "index_type": manifest.index.get("index_type"),
            "chips": summary.total_chips,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
            "threads": os.environ.get("OMP_NUM_THREADS"),
        }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
