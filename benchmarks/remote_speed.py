"""Reading chips from COGs on object storage vs local disk (issue 15), in one run on the same files.

For each way of reaching the files — local disk, a loopback moto S3 server (``s3://``), a loopback HTTP server with
byte ranges (``http://``) — plans every scene and reads every chip window by window exactly as the indexer does
(``plan_scene`` + ``ChipReader``, no model), and reports chips/s, and the HTTP requests and bytes the server
answered per chip (counted on the server side: GDAL's own verbose log is too noisy to count from).

    python benchmarks/remote_speed.py [--chip-size 224] [--out benchmarks/results/remote-speed-cpu.json]

The servers are on 127.0.0.1: the figures show GDAL's request pattern and the per-request overhead of the
servers, not the latency of a real store (tens of ms per request): divide requests per chip into that latency to
estimate a real store (GDAL merges tile reads into a few large ranges per scene).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rsretrieve.raster import ChipReader, plan_scene  # noqa: E402
from tests.conftest import SHARED_DATA, write_cog  # noqa: E402
from tests.servers import RangeServer, S3Server, environment, upload  # noqa: E402

SCENES = [f"landsat_peru/{year}.tif" for year in range(1985, 2021, 5)] + ["misc/cogeo.tif", "misc/RGB.byte.tif"]


def read_all(sources: list, chip_size: int) -> tuple[int, float]:
    """Plan every source and read every chip; (chips, seconds)."""
    started = time.perf_counter()
    chips = 0
    reader = ChipReader()
    try:
        for source in sources:
            plan = plan_scene(source, chip_size)
            for chip in plan.chips:
                reader.read(plan, chip)
            chips += len(plan.chips)
    finally:
        reader.close()
    return chips, time.perf_counter() - started


def measure(name: str, sources: list, chip_size: int, stats=None, size: int = 0) -> dict:
    if stats is not None:
        stats.reset()
    chips, seconds = read_all(sources, chip_size)
    row = {"source": name, "files": len(sources), "chips": chips, "seconds": round(seconds, 3),
           "chips_per_second": round(chips / seconds, 1)}  # fmt: skip
    if stats is not None:
        row.update(
            requests=stats.requests,
            bytes=stats.bytes,
            requests_per_chip=round(stats.requests / chips, 3),
            bytes_per_chip=round(stats.bytes / chips),
            bytes_fetched_of_files=round(stats.bytes / size, 3),
        )
    print(json.dumps(row), file=sys.stderr)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chip-size", type=int, action="append", help="chip sizes (default: 224 and 64)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each kind (median reported)")
    parser.add_argument("--scenes", type=int, default=len(SCENES), help="use the first N scenes (tests)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "remote-speed-cpu.json")
    args = parser.parse_args()
    sizes = args.chip_size or [224, 64]
    os.environ.setdefault("GDAL_CACHEMAX", str(64 << 20))  # as the indexer (limit_gdal_cache)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in SCENES[: args.scenes]:
            write_cog(SHARED_DATA / "geotiff" / name, folder / name.replace("/", "_"))
        files = sorted(folder.glob("*.tif"))
        total = sum(f.stat().st_size for f in files)
        results = []
        runs = [(rep, size) for rep in range(args.repeat) for size in sizes]
        for rep, size in runs:  # one copy per run under its own URLs: GDAL's caches start cold for each
            (folder / f"run{size}-{rep}").mkdir()
            for f in files:
                os.link(f, folder / f"run{size}-{rep}" / f.name)
        with S3Server() as s3, RangeServer(folder) as http, environment(s3.env()):
            for rep, size in runs:
                upload(folder / f"run{size}-{rep}", "bench", s3.env(), prefix=f"run{size}-{rep}/")
            read_all(files, max(sizes))  # warm the page cache for the local runs
            for rep, size in runs:  # interleaved: the machine's load hits every kind alike
                run = f"run{size}-{rep}"
                for name, sources, stats in (
                    ("local", files, None),
                    ("s3 (moto, loopback)", [f"s3://bench/{run}/{f.name}" for f in files], s3.stats),
                    ("http (Range server, loopback)", [f"{http.url}/{run}/{f.name}" for f in files], http.stats),
                ):
                    row = measure(name, sources, size, stats, total)
                    results.append({"chip_size": size, "repeat": rep, **row})
    summary = []
    for size in sizes:
        for name in dict.fromkeys(r["source"] for r in results):
            rows = [r for r in results if r["chip_size"] == size and r["source"] == name]
            speeds = sorted(r["chips_per_second"] for r in rows)
            summary.append(
                {
                    "chip_size": size,
                    "source": name,
                    "chips": rows[0]["chips"],
                    "median_chips_per_second": speeds[len(speeds) // 2],
                    "runs_chips_per_second": [r["chips_per_second"] for r in rows],
                    **{
                        k: rows[0][k]
                        for k in ("requests_per_chip", "bytes_per_chip", "bytes_fetched_of_files")
                        if k in rows[0]
                    },
                }
            )
    import rasterio

    report = {
        "benchmark": "benchmarks/remote_speed.py",
        "what": "plan + read every chip (no model) of the same COGs from local disk, loopback S3 (moto) and HTTP",
        "files": SCENES[: args.scenes],
        "file_bytes": total,
        "cog": "GDAL COG driver, 256x256 tiles, deflate, overviews",
        "gdal": rasterio.__gdal_version__,
        "rasterio": rasterio.__version__,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "summary": summary,
        "load_average": os.getloadavg(),
        "results": results,
        "notes": (
            "Servers on 127.0.0.1 count requests and body bytes themselves. Each chip size reads its own copy under "
            "its own URLs, so GDAL's caches start cold for every remote run. Loopback hides network latency: on a "
            "real store each "
            "request costs a round trip (10-50 ms), so requests per chip, not bytes, set the remote speed."
        ),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
