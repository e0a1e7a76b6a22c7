"""Results streamed to files block by block (``rsretrieve query ... --geojson/--csv/--geoparquet FILE``): the same
content as the stdout formats, GeoParquet read back by geopandas and DuckDB, atomic files, bounded memory at 100k."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from rsretrieve.ann import AnnSettings
from rsretrieve.store import StoreWriter
from tests.rsretrieve.analyst_fixtures import DIM, MODEL, Grid, grid_chips, run_cli, write_grid

RANDOM = ("--model", "tiny-test", "--random-weights")


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Grid:
    return write_grid(tmp_path_factory.mktemp("streamed") / "grid.lance", columns=30, rows=20)


def query(grid: Grid, *args: object) -> list[object]:
    return ["query", "--like", grid.chips[42].id, "--not", grid.chips[7].id, "--db", grid.db, *RANDOM, *args]


def test_files_hold_what_stdout_holds(grid: Grid, tmp_path: Path, capsys) -> None:
    import duckdb
    import geopandas

    files = {form: tmp_path / f"results.{form}" for form in ("geojson", "csv", "parquet")}
    ran = run_cli(capsys, *query(grid, "-k", "250", "--geojson", files["geojson"], "--csv", files["csv"],
                                 "--geoparquet", files["parquet"]))  # fmt: skip
    assert ran.returncode == 0 and ran.stdout == "", ran.stderr
    assert "wrote 250 results" in ran.stderr and "(flat)" in ran.stderr
    for form in ("geojson", "csv"):
        assert files[form].read_text() == run_cli(capsys, *query(grid, "-k", "250", f"--{form}")).stdout
    listed = json.loads(run_cli(capsys, *query(grid, "-k", "250", "--json")).stdout)
    frame = geopandas.read_parquet(files["parquet"])
    assert list(frame["id"]) == [r["id"] for r in listed] and list(frame["rank"]) == list(range(1, 251))
    assert list(frame["score"]) == [r["score"] for r in listed] and str(frame.crs) == "OGC:CRS84"
    with duckdb.connect() as connection:  # its own connection: the module's default one stays untouched
        sql = f"SELECT id, rank, ST_AsText(geometry) FROM read_parquet('{files['parquet']}') ORDER BY rank"
        found = connection.execute(sql).fetchall()
    assert [row[0] for row in found] == [r["id"] for r in listed] and found[0][2].startswith("POLYGON")
    assert not list(tmp_path.glob(".*tmp-*"))  # no temporary file left


def test_min_score_cuts_stdout_and_files(grid: Grid, tmp_path: Path, capsys) -> None:
    everything = json.loads(run_cli(capsys, *query(grid, "-k", "100", "--json")).stdout)
    cut = everything[30]["score"]
    above = json.loads(run_cli(capsys, *query(grid, "-k", "100", "--min-score", cut, "--json")).stdout)
    assert above == everything[:31]
    out = tmp_path / "above.csv"
    assert run_cli(capsys, *query(grid, "-k", "100000", "--min-score", cut, "--csv", out)).returncode == 0
    assert len(out.read_text().splitlines()) == 32  # header + 31 rows
    none = run_cli(capsys, *query(grid, "-k", "5", "--min-score", "2"))
    assert none.returncode == 0 and none.stdout == "no results\n"


def test_a_failed_write_leaves_no_file(grid: Grid, tmp_path: Path, capsys, monkeypatch) -> None:
    from rsretrieve import result_files

    old = tmp_path / "kept.geojson"
    old.write_text("old")
    calls = []

    def failing(self, first, scores, records) -> None:
        calls.append(first)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        self.handle.write("x")

    monkeypatch.setattr(result_files, "RECORD_BLOCK", 50)
    monkeypatch.setattr(result_files.GeoJsonOutput, "write", failing)
    new = tmp_path / "new.parquet"
    ran = run_cli(capsys, *query(grid, "-k", "200", "--geojson", old, "--geoparquet", new))
    errors = [line for line in ran.stderr.splitlines() if line.startswith("error:")]
    assert ran.returncode == 1 and len(errors) == 1 and "No space left on device" in errors[0], ran.stderr
    assert old.read_text() == "old" and not new.exists() and sorted(tmp_path.iterdir()) == [old]
    missing = run_cli(capsys, *query(grid, "--csv", tmp_path / "no" / "such" / "folder.csv"))
    assert missing.returncode == 1 and "error: cannot write" in missing.stderr and "Traceback" not in missing.stderr


def test_two_stdout_formats_are_refused(grid: Grid, capsys) -> None:
    with pytest.raises(SystemExit):
        run_cli(capsys, *query(grid, "--json", "--csv"))
    assert "already go to stdout as --json" in capsys.readouterr().err


MEASURE = """
import json, sys
from pathlib import Path
import numpy as np
from rsretrieve.query import Query
from rsretrieve.result_files import write_results
from rsretrieve.search import Searcher
from tests.rsretrieve.analyst_fixtures import MODEL

def status():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024

db, out = Path(sys.argv[1]), Path(sys.argv[2])
searcher = Searcher(db, MODEL)
vector = searcher.current().vectors([12345])[0]
growth = {}
for k in (2_000, 10_000, 100_000):  # the first: imports and first memory maps, not measured
    ranked = searcher.rank(Query.build(vectors=[vector], k=k))
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak RSS
    before, _ = status()
    write_results(ranked, [(form, out / f"all.{form}") for form in ("geojson", "csv", "geoparquet")])
    growth[k] = status()[1] - before
print(json.dumps({"results": len(ranked), "path": ranked.path, "growth": growth}))
"""


def test_streaming_100k_results_keeps_memory_bounded(tmp_path: Path) -> None:
    import duckdb
    import geopandas

    db = tmp_path / "big.lance"
    chips = grid_chips(400, 250)
    vectors = np.random.default_rng(0).normal(size=(len(chips), DIM)).astype(np.float32)
    writer = StoreWriter.open(db, MODEL, AnnSettings(kind="flat"))
    try:
        writer.append(chips, vectors / np.linalg.norm(vectors, axis=1, keepdims=True), new_files=1)
        writer.finish()
    finally:
        writer.close()
    del chips
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    ran = subprocess.run([sys.executable, "-c", textwrap.dedent(MEASURE), str(db), str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    measured = json.loads(ran.stdout)
    assert measured["results"] == 100_000 and measured["path"] == "flat"
    geojson = tmp_path / "all.geojson"
    growth = {int(k): v for k, v in measured["growth"].items()}
    # the peak memory of writing 100k results in blocks of 10k is that of 10k results (allocator noise aside), and
    # far below the 46 MB of GeoJSON text that holding the results would take before even counting their objects
    assert growth[100_000] < 1.5 * growth[10_000] + 8e6 and growth[100_000] < 64e6, growth
    assert geojson.stat().st_size > 40e6
    frame = geopandas.read_parquet(tmp_path / "all.geoparquet", columns=["rank", "id", "geometry"])
    assert len(frame) == 100_000 and (np.diff(frame["rank"]) == 1).all() and frame["id"].is_unique
    with duckdb.connect() as connection:
        sql = f"SELECT count(*), min(rank), max(rank) FROM read_parquet('{tmp_path / 'all.geoparquet'}')"
        count, first, last = connection.execute(sql).fetchall()[0]
    assert (count, first, last) == (100_000, 1, 100_000)
    assert sum(1 for _ in (tmp_path / "all.csv").open()) == 100_001
    with geojson.open() as handle:
        assert handle.read(45) == '{"type": "FeatureCollection", "features": [{"'
