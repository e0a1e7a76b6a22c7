"""benchmarks/speed.py: tiny runs through the real store, on synthetic vectors and on a user's .npy."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "speed.py"
KEYS = {
    "n", "dim", "index", "nprobe", "recall_at_10", "recall_at_10_filtered", "p50_ms", "p95_ms", "qps", "build_s",
    "bytes_per_vector", "device", "rerank_factor", "lancedb_write_s", "stored_vector_bytes", "nlist", "m",
    "filter_path", "filter_fraction", "p50_ms_filtered", "code_bytes_per_vector",
}  # fmt: skip


def run(tmp_path: Path, *args: str) -> tuple[list[dict], list[str]]:
    """Run the script; its JSON records and the lines it printed."""
    out = tmp_path / "speed.json"
    command = [sys.executable, str(SCRIPT), *args, "--queries", "20", "--workdir", str(tmp_path), "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text()), done.stdout.strip().splitlines()


def test_synthetic_run_measures_flat_and_ivfpq(tmp_path: Path) -> None:
    records, lines = run(
        tmp_path, "--sizes", "2000", "--dim", "32", "--index", "flat", "auto", "--flat-threshold", "1000",
        "--nprobe", "4", "64", "--rerank-factors", "2", "10", "--exact-filter-limit", "0",
        "--filter-fraction", "0.05", "0.3",
    )  # fmt: skip
    assert all(set(record) >= KEYS for record in records)
    nlist = records[1]["nlist"]
    assert [(r["index"], r["nprobe"], r["rerank_factor"]) for r in records] == [
        ("flat", None, None),
        ("ivfpq", 4, 2), ("ivfpq", 4, 10), ("ivfpq", nlist, 2), ("ivfpq", nlist, 10),
    ]  # fmt: skip
    assert {(r["n"], r["dim"], r["filter_path"], r["device"]) for r in records} == {(2000, 32, "faiss", "cpu")}
    flat, ivfpq = records[0], records[-1]
    assert flat["recall_at_10"] == flat["recall_at_10_filtered"] == 1.0
    assert ivfpq["recall_at_10"] >= 0.9 and ivfpq["bytes_per_vector"] < flat["bytes_per_vector"]
    assert 0.01 <= flat["filter_fraction"] <= 0.2
    for record in records:  # the first filter's figures are also the record's *_filtered keys
        first, wider = record["filters"]
        assert first["filter_fraction"] == record["filter_fraction"] < wider["filter_fraction"]
        assert first["recall_at_10_filtered"] == record["recall_at_10_filtered"] and wider["filter_matches"] > 0
    assert lines[0].startswith("| n | index | nprobe |") and len(lines) == 2 + len(records)


def test_own_vectors_hold_back_the_queries(tmp_path: Path) -> None:
    vectors = tmp_path / "vectors.npy"
    np.save(vectors, np.random.default_rng(0).normal(size=(1020, 16)).astype(np.float32))
    records, _ = run(tmp_path, "--vectors", str(vectors), "--index", "flat")
    assert [(r["n"], r["dim"], r["index"], r["data"]) for r in records] == [(1000, 16, "flat", str(vectors))]
    assert records[0]["recall_at_10"] == 1.0
