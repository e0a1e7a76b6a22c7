"""benchmarks/remote_speed.py: a tiny run (two scenes, one repeat) through the loopback servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "remote_speed.py"


def test_remote_speed_reports_every_kind_with_server_counts(tmp_path: Path, shared_data: Path) -> None:
    out = tmp_path / "remote.json"
    argv = [sys.executable, str(SCRIPT), "--chip-size", "224", "--scenes", "2", "--repeat", "1", "--out", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    rows = {row["source"]: row for row in report["summary"]}
    assert set(rows) == {"local", "s3 (moto, loopback)", "http (Range server, loopback)"}
    assert len({row["chips"] for row in rows.values()}) == 1  # the same chips every way
    for name in ("s3 (moto, loopback)", "http (Range server, loopback)"):
        assert 0 < rows[name]["requests_per_chip"] < 1 and 0 < rows[name]["bytes_fetched_of_files"] <= 1.0
