"""The index on object storage (``--db s3://``): time to publish, to open a fresh cache, to follow a new version.

Builds the demo archive's index locally (``rsretrieve/demo_archive``, chip size 224, the demo model with random
weights unless ``--model``), then against a loopback moto S3 server:

- **publish**: a writer's working copy holding that index is published (every block uploaded, then the pointer);
- **fresh cache**: a reader with an empty cache syncs it (pointer + every block) and opens it (``ChipStore``);
- **no change**: a reader's sync when nothing was published (one conditional GET, 304);
- **append**: one more scene indexed into the s3:// index (published per commit) and the reader's sync of that
  version (only the changed blocks: appended query-side columns, new LanceDB files, the FAISS file).

Requests and bytes (both ways) are counted by the server.

    python benchmarks/remote_db_speed.py [--model tiny-test] [--out benchmarks/results/remote-db-cpu.json]

Loopback hides network latency: on a real store add a round trip (10-50 ms) per request, in parallel batches of 8.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from indexer.build import ChipOptions, RunOptions, index_archive  # noqa: E402
from rsretrieve.models import load_model  # noqa: E402
from rsretrieve.raster import find_sources  # noqa: E402
from rsretrieve.store import ChipStore  # noqa: E402
from rsretrieve.store.remote_db import RemoteDb, local_db  # noqa: E402
from tests.conftest import SHARED_DATA  # noqa: E402
from tests.servers import S3Server, environment, upload  # noqa: E402

DEMO = ROOT / "rsretrieve" / "demo_archive"
EXTRA_SCENE = SHARED_DATA / "geotiff" / "landsat_peru" / "1990.tif"  # not in the demo archive


def timed(name: str, stats, action) -> dict:
    """Run ``action`` and report its seconds and the server's requests and bytes."""
    stats.reset()
    started = time.perf_counter()
    action()
    row = {"step": name, "seconds": round(time.perf_counter() - started, 3)}
    row.update(requests=stats.requests, bytes_downloaded=stats.bytes, bytes_uploaded=stats.uploaded)
    print(json.dumps(row), file=sys.stderr)
    return row


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="remoteclip-vit-b-32", help="model (random weights)")
    parser.add_argument("--scenes", type=int, help="use the first N demo scenes (tests)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "remote-db-cpu.json")
    args = parser.parse_args()
    model = load_model(args.model, device="cpu", random_weights=True)
    sources = find_sources([DEMO])[: args.scenes]
    with tempfile.TemporaryDirectory() as tmp, S3Server() as s3, environment(s3.env()):
        work = Path(tmp)
        (work / "seed").mkdir()
        (work / "seed" / "readme.txt").write_text("indexes")
        upload(work / "seed", "bench", s3.env())
        uri = "s3://bench/demo.lance"
        local = work / "local.lance"
        options = ChipOptions(chip_size=224)
        built = time.perf_counter()
        summary = index_archive(sources, local, model, options, RunOptions(workers=0), show_progress=False)
        index_seconds = time.perf_counter() - built
        writer = RemoteDb(uri, work / "writer", role="write")
        shutil.copytree(local, writer.path, dirs_exist_ok=True)
        rows = [timed("publish (whole index)", s3.stats, writer.publish)]
        reader = RemoteDb(uri, work / "reader")

        def open_newest() -> None:
            reader.sync()
            ChipStore(reader.path).index  # noqa: B018  (loads the FAISS file, as the first query does)

        rows.append(timed("fresh cache: sync + open", s3.stats, open_newest))
        rows.append(timed("sync, nothing new", s3.stats, reader.sync))

        def append() -> None:
            with local_db(uri, work / "writer", write=True) as path:
                index_archive([EXTRA_SCENE], path, model, options, RunOptions(workers=0), show_progress=False)

        rows.append(timed("index one more scene (published per commit)", s3.stats, append))
        rows.append(timed("sync the new version + open", s3.stats, open_newest))
        chips_after = len(ChipStore(reader.path))
        index_bytes = folder_bytes(local)
    report = {
        "benchmark": "benchmarks/remote_db_speed.py",
        "what": "publish the demo index to s3:// (moto on loopback), open it from a fresh cache, follow a new version",
        "model": f"{args.model} (random weights)",
        "chips": summary.new_chips,
        "chips_after_append": chips_after,
        "index_bytes": index_bytes,
        "index_seconds": round(index_seconds, 2),
        "steps": rows,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "load_average": os.getloadavg(),
        "notes": "Requests and bytes counted by the loopback server; a real store adds a round trip per request.",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
