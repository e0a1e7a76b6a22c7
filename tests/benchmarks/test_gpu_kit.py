"""benchmarks/gpu: the proof kit's dry run on the CPU, and the plan of what its device calls carry."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

KIT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu"
MiB = 2**20


@pytest.fixture(scope="module")
def carry_plan():
    """benchmarks/gpu/carry_plan.py as a module."""
    spec = importlib.util.spec_from_file_location("carry_plan", KIT / "carry_plan.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the dry run (`run.sh --dry-run`) wrote its JSON to."""
    out = tmp_path_factory.mktemp("out")
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        ["bash", str(KIT / "run.sh"), "--dry-run"], capture_output=True, text=True, env=env, timeout=240, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_dry_run_measures_every_embedding_stage(dry_run: Path) -> None:
    result = json.loads((dry_run / "indexer-speed-dry-run.json").read_text())
    assert (result["kind"], result["dry_run"], result["finished"]) == ("indexer-speed", True, True)
    assert result["settings"]["model"] == "tiny-test" and result["settings"]["device"] == "cpu"
    assert {"gpu", "cpu", "cores", "python"} <= set(result["host"])
    assert {"torch", "cuda", "open_clip", "rasterio", "gdal"} <= set(result["versions"])
    chips = 4 * 8 * 8  # the dry run's scenes × chips per scene
    assert result["archive"]["chips"] == chips and result["archive"]["bytes"] > 0
    for stage in ("read", "input_pipeline"):
        figures = result[stage]
        assert (figures["chips"], figures["failed"], figures["complete"]) == (chips, 0, True)
        assert figures["chips_per_s"] > 0 and figures["chips_per_s_per_process"] > 0
        assert sum(d["chips"] for d in figures["by_dtype"].values()) == chips
    assert [(r["batch_size"], r["input"]) for r in result["tower"]] == [
        (64, "host"), (64, "device"), (128, "host"), (128, "device")
    ]  # fmt: skip
    assert all(r["chips"] >= r["batch_size"] and r["chips_per_s"] > 0 for r in result["tower"])
    e2e = result["end_to_end"]
    assert (e2e["chips"], e2e["failed"], e2e["complete"], e2e["vectors_unit_norm"]) == (chips, 0, True, True)
    assert e2e["chips_per_s"] > 0 and e2e["gpu_util"] is None and e2e["pin_memory"] is False
    assert result["targets"]["gpu_busy_met"] is None and result["scaled_down"] == []


def test_dry_run_measures_faiss_on_the_cpu(dry_run: Path) -> None:
    result = json.loads((dry_run / "faiss-speed-dry-run.json").read_text())
    assert (result["kind"], result["dry_run"], result["finished"]) == ("faiss-speed", True, True)
    settings = result["settings"]
    assert (settings["n"], settings["params"]["kind"], settings["fetch"]) == (5000, "ivfpq", 1000)
    assert 1 < settings["params"]["nlist"] <= 256 and settings["train_samples"] == 5000
    assert result["gpu"] == {} and result["gpu_error"] == "no GPU visible to FAISS"
    cpu = result["cpu"]
    assert cpu["train_s"] > 0 and cpu["add_s"] > 0
    search = cpu["search"]
    assert search["batch1_queries"] == 50 and search["batch_size"] == 1024
    assert search["batch1_p50_ms"] > 0 and search["batch1_qps"] > 0 and search["batched_qps"] > 0
    assert 0.3 <= search["recall_at_10"] <= 1.0
    assert set(result["speedups"].values()) == {None}
    assert result["targets"] == {"train_speedup": 10, "whole_gpu_met": None, "product_path_met": None}


def test_plan_fits_the_bundle_in_one_call_when_it_can(carry_plan) -> None:
    embed = {"rasterio.whl": 36 * MiB, "open_clip.whl": 2 * MiB}
    calls = carry_plan.plan_calls(2 * MiB, embed, 56 * MiB)
    assert [(call.number, call.mode) for call in calls] == [(1, "embed"), (2, "faiss")]
    assert calls[0].files == embed
    assert calls[1].files == {"faiss-site.tar.xz.part-01": 56 * MiB, "faiss-site.json": carry_plan.MANIFEST_ROOM}


def test_plan_splits_a_large_bundle_over_calls_under_the_target(carry_plan) -> None:
    tree, bundle = 3 * MiB, 135 * MiB
    calls = carry_plan.plan_calls(tree, {"a.whl": MiB}, bundle)
    assert [call.mode for call in calls] == ["embed", "stash", "stash", "faiss"]
    parts = [size for call in calls for name, size in call.files.items() if name.startswith("faiss-site.tar.xz.part")]
    assert sum(parts) == bundle and len(parts) == 3
    assert all(tree + sum(call.files.values()) <= carry_plan.TARGET for call in calls)
    assert [call.command() for call in calls][-1] == "bash benchmarks/gpu/run.sh faiss"


def test_plan_refuses_what_cannot_fit(carry_plan) -> None:
    with pytest.raises(carry_plan.PlanError, match="embedding wheels"):
        carry_plan.plan_calls(MiB, {"huge.whl": 70 * MiB}, MiB)
    with pytest.raises(carry_plan.PlanError, match="leaves no room"):
        carry_plan.plan_calls(carry_plan.TARGET, {}, MiB)
    calls = carry_plan.plan_calls(MiB, {"a.whl": MiB}, MiB)
    assert len(carry_plan.report(calls, {1: MiB, 2: MiB}, MiB)) == 2
    with pytest.raises(carry_plan.PlanError, match=re.escape("call 2 would carry 65.0 MiB")):
        carry_plan.report(calls, {1: MiB, 2: 64 * MiB}, MiB)


def test_parts_laid_out_and_restored_give_back_the_bundle(carry_plan, tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    (stage / "pkg").mkdir(parents=True)
    (stage / "pkg" / "data.bin").write_bytes(os.urandom(60_000))  # incompressible: several parts
    bundle = tmp_path / "faiss-site.tar.xz"
    assert carry_plan.bundle_folder(stage, bundle) is True
    assert carry_plan.bundle_folder(stage, bundle) is False  # unchanged files: not packed again
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "a.whl").write_bytes(b"wheel")
    calls = carry_plan.plan_calls(0, {"a.whl": 5}, bundle.stat().st_size, target=carry_plan.MANIFEST_ROOM + 25_000)
    assert [call.mode for call in calls] == ["embed", "stash", "stash", "faiss"]
    carry = tmp_path / "carry"
    carry_plan.lay_out(calls, wheels, bundle, carry)
    assert (carry / "call-1" / "a.whl").read_bytes() == b"wheel"
    parts = tmp_path / "parts"
    parts.mkdir()
    for file in sorted(carry.glob("call-[234]/faiss-site.*")):
        shutil.copy(file, parts)
    carry_plan.restore(parts, tmp_path / "site")
    assert (tmp_path / "site" / "pkg" / "data.bin").read_bytes() == (stage / "pkg" / "data.bin").read_bytes()
    (parts / "faiss-site.tar.xz.part-02").write_bytes(b"corrupt")
    with pytest.raises(carry_plan.PlanError, match=re.escape("corrupt parts: faiss-site.tar.xz.part-02")):
        carry_plan.restore(parts, tmp_path / "site")
    (parts / "faiss-site.tar.xz.part-02").unlink()
    with pytest.raises(carry_plan.PlanError, match=re.escape("missing faiss-site.tar.xz.part-02")):
        carry_plan.restore(parts, tmp_path / "site")
