"""benchmarks/analyst_speed.py: a tiny run through the real store gives every figure, plausibly."""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "analyst_speed.py"


def test_tiny_run(tmp_path: Path) -> None:
    out = tmp_path / "analyst.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RUST_LOG": "error"}
    command = [
        sys.executable,
        str(SCRIPT),
        "--sizes",
        "3600",
        "--dim",
        "16",
        "--out",
        str(out),
        "--workdir",
        str(tmp_path),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    [record] = json.loads(out.read_text())
    assert record["n"] == 3600 and record["planted"] > 0
    for key in ("read_vectors_s", "score_s", "train_s", "cv_s", "within_warm_s", "export_geoparquet_s", "sites_s"):
        assert record[key] >= 0, key
    assert record["found"] > 0 and record["recall"] > 0.5 and record["cv"]["folds"] >= 2
    assert 0 < record["within_matches"] <= record["bbox_prefilter_candidates"] <= record["n"]
    assert record["footprints_read"] < record["bbox_prefilter_candidates"]
    assert record["export_rows"] == 3600 and record["sites"] >= 1
    assert not list(tmp_path.glob("tmp*"))  # the temporary indexes are removed
