"""benchmarks/speed.py: tiny runs through the real store, on synthetic vectors and on a user's .npy."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from rsretrieve import ann
from rsretrieve.ann import AnnSettings
from rsretrieve.store import StoreWriter

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "speed.py"
K = 10
KEYS = {
    "n", "dim", "index", "nprobe", "recall_at_10", "recall_at_10_filtered", "p50_ms", "p95_ms", "qps", "build_s",
    "bytes_per_vector", "device", "rerank_factor", "lancedb_write_s", "stored_vector_bytes", "nlist", "m",
    "filter_path", "filter_fraction", "p50_ms_filtered", "code_bytes_per_vector", "train_s", "add_s", "retrain_s",
    "path", "candidates", "path_filtered", "candidates_filtered", "p50_ms_ann_stage", "p50_ms_stages",
    "index_bytes_per_chip", "index_folder_bytes", "index_file_bytes", "lancedb_bytes", "vector_file_bytes",
    "filter_and_record_bytes", "rss_mb", "p50_cpu_ms", "p50_cpu_ms_filtered",
}  # fmt: skip


@pytest.fixture(scope="module")
def speed():
    """The benchmark script as a module."""
    spec = importlib.util.spec_from_file_location("speed_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def run(tmp_path: Path, *args: str) -> tuple[list[dict], list[str]]:
    """Run the script; its JSON records and the lines it printed."""
    out = tmp_path / "speed.json"
    command = [sys.executable, str(SCRIPT), *args, "--queries", "20", "--workdir", str(tmp_path), "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text()), done.stdout.strip().splitlines()


def assert_plausible(record: dict) -> None:
    """Figures every record must have whatever the index: rates in [0, 1], positive times, consistent bytes."""
    for key in ("recall_at_10", "recall_at_10_filtered"):
        assert 0.0 <= record[key] <= 1.0, key
    for case in record["filters"]:
        assert 0.0 <= case["recall_at_10_filtered"] <= 1.0
        assert 0 < case["p50_ms_filtered"] <= case["p95_ms_filtered"]
    assert 0 < record["p50_ms"] <= record["p95_ms"] and record["qps"] > 0
    assert 0 < record["p50_ms_ann_stage"] == record["p50_ms_stages"]["ann"] < record["p50_ms"]
    assert record["lancedb_write_s"] > 0
    # the build is the writer's own timing of it, inside the retrain that committed it
    assert record["train_s"] >= 0 and record["add_s"] >= 0 and record["build_s"] <= record["retrain_s"]
    assert record["build_s"] == pytest.approx(record["train_s"] + record["add_s"], abs=0.002)
    # the whole folder: the FAISS file, LanceDB (chip records), vectors.i8 + .lo4 (the one copy), bounds.f64, records/…
    parts = ("index_file_bytes", "lancedb_bytes", "vector_file_bytes", "filter_and_record_bytes")
    assert record["index_folder_bytes"] > sum(record[key] for key in parts)
    assert record["vector_file_bytes"] == record["stored_vector_bytes"]
    assert record["index_bytes_per_chip"] == round(record["index_folder_bytes"] / record["n"], 2)
    stored = record["dim"] + 4 + record["dim"] // 2  # 8-bit, a float32 scale per row, 4 finer bits
    assert record["stored_vector_bytes"] == record["n"] * stored
    assert record["index_bytes_per_chip"] > stored + record["bytes_per_vector"]
    assert record["rss_mb"] > 10  # a fresh process that opened the index and answered the queries


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
    # the flat index rebuilt from the stored 8-bit vectors: near-ties of 32-d vectors may swap
    assert flat["recall_at_10"] >= 0.95 and flat["recall_at_10_filtered"] >= 0.95
    assert ivfpq["recall_at_10"] >= 0.9 and ivfpq["bytes_per_vector"] < flat["bytes_per_vector"]
    assert 0.01 <= flat["filter_fraction"] <= 0.2
    for record in records:  # the first filter's figures are also the record's *_filtered keys
        assert_plausible(record)
        first, wider = record["filters"]
        assert first["filter_fraction"] == record["filter_fraction"] < wider["filter_fraction"]
        assert first["recall_at_10_filtered"] == record["recall_at_10_filtered"] and wider["filter_matches"] > 0
        assert {case["path_filtered"] for case in record["filters"]} == {"faiss-filtered"}  # the limit is 0
    # the paths the searches took, and the IVF-PQ candidates they re-ranked (k × rerank when the lists hold them)
    assert (flat["path"], flat["candidates"], flat["candidates_filtered"]) == ("flat", 0, 0)
    for record in records[1:]:
        assert record["path"] == "ivfpq" and 0 < record["candidates"] <= K * record["rerank_factor"]
        assert 0 < record["candidates_filtered"] <= min(K * record["rerank_factor"], record["filter_matches"])
        # IVF-PQ at this size: a real k-means and PQ training, timed where the writer runs it
        assert record["train_s"] > 0 and record["add_s"] > 0 and record["build_s"] > 0
        assert (record["build_s"], record["train_s"]) == (ivfpq["build_s"], ivfpq["train_s"])
        assert "rerank" in record["p50_ms_stages"]
    assert [r["candidates"] for r in records[3:]] == [K * 2, K * 10]  # every list probed: all 2000 reachable
    assert "finish_s" in flat and "rerank" not in flat["p50_ms_stages"]
    assert lines[0].startswith("| n | index | nprobe |") and len(lines) == 2 + len(records)
    assert "| path |" in lines[0] and "| index bytes/chip |" in lines[0]


def test_own_vectors_hold_back_the_queries(tmp_path: Path) -> None:
    vectors = tmp_path / "vectors.npy"
    np.save(vectors, np.random.default_rng(0).normal(size=(1020, 16)).astype(np.float32))
    records, _ = run(tmp_path, "--vectors", str(vectors), "--index", "flat")
    assert [(r["n"], r["dim"], r["index"], r["data"]) for r in records] == [(1000, 16, "flat", str(vectors))]
    record = records[0]
    assert min(record["recall_at_10"], record["recall_at_10_filtered"]) >= 0.98  # scored from the 8-bit vectors
    assert_plausible(record)
    # at the default limit (4096 chips) every match of a 1000-chip index is scored exactly
    assert (record["path"], record["filter_path"], record["path_filtered"]) == ("flat", "exact", "exact-filtered")
    assert record["candidates"] == record["candidates_filtered"] == 0


@pytest.fixture
def loaded_store(speed, tmp_path: Path):
    """A 512-chip flat store written the way the benchmark writes it, and its writer."""
    n, dim = 512, 16
    vectors = speed.Mixture(dim, seed=0).sample(n, stream=1)
    source = speed.VectorSource(lambda start, stop: vectors[start:stop], vectors[:2], "test")
    model = SimpleNamespace(name="speed-benchmark", architecture="synthetic", checkpoint="none", dim=dim)
    seen = []
    writer, loaded = speed.write_store(
        tmp_path / "db",
        model,
        source,
        speed.Layout(n, seed=0),
        AnnSettings(kind="flat"),
        lambda block, start: seen.append(start),
    )
    assert seen == [0]  # every block shown to the ground truth as it is appended
    yield writer, loaded
    writer.close()


def test_build_times_come_from_the_writer(speed, loaded_store) -> None:
    writer, loaded = loaded_store
    assert loaded["lancedb_write_s"] > 0 and loaded["finish_s"] > 0
    built = speed.rebuild(writer, "ivfpq")
    assert built["train_s"] > 0 and built["add_s"] > 0 and built["build_s"] <= built["retrain_s"]
    assert writer.manifest.index["train_s"] == built["train_s"]


@pytest.mark.parametrize("recorded", [{}, {"train_s": 0.0, "add_s": 0.0}, {"train_s": 5.0, "add_s": 5.0}])
def test_implausible_build_times_stop_the_benchmark(speed, loaded_store, monkeypatch, recorded) -> None:
    """A writer that stops timing its build (or times something else) fails the run instead of reporting 0 s."""
    writer, _ = loaded_store
    build = StoreWriter._build_index

    def build_with_other_times(self: StoreWriter) -> None:
        build(self)
        self._build_seconds = dict(recorded)

    monkeypatch.setattr(StoreWriter, "_build_index", build_with_other_times)
    with pytest.raises(speed.ImplausibleFigures):
        speed.rebuild(writer, "ivfpq")


def test_blocks_of_vectors_and_their_top_k_match_the_whole_matrix(speed) -> None:
    """A 10M archive is made and searched exactly block by block: the same rows and top k as all at once."""
    mixture = speed.Mixture(16, seed=0)
    n = speed.CHUNK + 1000
    whole = mixture.sample(n, stream=1)
    for start, stop in [(0, 10), (speed.CHUNK - 5, speed.CHUNK + 7), (n - 3, n)]:
        np.testing.assert_array_equal(mixture.rows(start, stop, n, stream=1), whole[start:stop])
    queries = mixture.sample(5, stream=2)
    top = speed.TopK(queries, K)
    for start in range(0, n, 20_000):
        top.add(whole[start : start + 20_000], np.arange(start, min(start + 20_000, n)))
    scores, ids = ann.exact_search(whole, np.arange(n), queries, K)
    np.testing.assert_array_equal(top.ranking()[1], ids)
    np.testing.assert_allclose(top.ranking()[0], scores, rtol=1e-6)
