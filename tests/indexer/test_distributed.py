"""``rsretrieve index --ray`` on a local Ray cluster: the same index as the single-process indexer, bad files
reported the same way, and a run killed with SIGKILL after its first commit resumes to every chip exactly once.

One local cluster (2 CPUs) serves the module; the CLI runs as a subprocess that joins it with ``--ray-address``
(so a killed run leaves no cluster behind).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from indexer.build import BadSourceError, ChipOptions, RunOptions, index_archive
from rsretrieve.raster import find_sources
from rsretrieve.store import MANIFEST, ChipStore
from rsretrieve.store.remote_db import local_db
from tests.conftest import unavailable, write_geotiff

QUIET = {"HF_HUB_OFFLINE": "1", "RUST_LOG": "error", "OMP_NUM_THREADS": "1"}
TINY = ["--model", "tiny-test", "--random-weights", "--chip-size", "64", "--quiet"]
LANDSAT_FILES = 3  # of ../shared/data/geotiff/landsat_peru, 66 chips each at 64 px
BAD_FILES = {"empty.tif": "empty file", "truncated.tif": "cannot read window", "all_nodata.tif": "nodata"}


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A local Ray cluster of 2 CPUs for the module (shut down after it); its address for ``--ray-address``."""
    try:
        import ray
    except ImportError:
        unavailable("ray is not installed (pip install -e '.[distributed]')")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def sources(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three real Landsat scenes, a scene with half its chips nodata, and three bad files."""
    folder = tmp_path_factory.mktemp("odd")
    dem = np.random.default_rng(3).uniform(100, 900, (1, 128, 128)).astype("float32")
    dem[:, :, :64] = -9999.0
    write_geotiff(folder / "half_nodata.tif", 128, 128, dtype="float32", nodata=-9999.0, data=dem)
    (folder / "empty.tif").write_bytes(b"")
    truncated = write_geotiff(folder / "truncated.tif", 256, 256, seed=7)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    write_geotiff(folder / "all_nodata.tif", 128, 128, nodata=0, data=np.zeros((3, 128, 128)))
    landsat = sorted((shared_data / "geotiff" / "landsat_peru").glob("*.tif"))[:LANDSAT_FILES]
    return find_sources([*landsat, folder])


@pytest.fixture(scope="module")
def reference(sources: list[Path], tiny_model, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The single-process index of ``sources`` and its summary."""
    db = tmp_path_factory.mktemp("reference") / "db"
    run = RunOptions(batch_size=64, workers=0, commit_chips=66)
    summary = index_archive(sources, db, tiny_model, ChipOptions(chip_size=64), run, show_progress=False)
    return {"db": db, "summary": summary.as_dict()}


def environment() -> dict[str, str]:
    """This process's environment now: after ``ray.init``, which sets how to authenticate to the cluster."""
    return {**os.environ, **QUIET}


def rsretrieve(*args: str | Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "rsretrieve.cli", *map(str, args)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment())


def ray_index(sources: list[Path], db: Path, ray_address: str, *extra: str) -> subprocess.Popen:
    return rsretrieve("index", *sources, "--db", db, *TINY, "--ray", "--ray-address", ray_address, *extra)


def chips_and_vectors(db: Path) -> tuple[list, np.ndarray]:
    store = ChipStore(db)
    info = store.info()
    assert info["rows"] == info["unique_ids"] == info["index_vectors"] == info["manifest_count"], info
    fids = np.arange(len(store))
    return store.chips(fids), store.vectors(fids)


def test_ray_run_builds_the_same_index_as_the_single_process_run(
    sources: list[Path], reference: dict, ray_address: str, tmp_path: Path
) -> None:
    db = tmp_path / "db"
    process = ray_index(sources, db, ray_address, "--json", "--commit-chips", "66")
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    summary = json.loads(stdout)
    expected = reference["summary"]
    for key in ("new_chips", "files_indexed", "files_failed", "nodata_chips", "total_chips"):
        assert summary[key] == expected[key], (key, summary, expected)
    assert sorted(summary["failures"]) == sorted(expected["failures"])
    assert summary["new_chips"] == LANDSAT_FILES * 66 + 2 and summary["nodata_chips"] == 2 + 4  # + all_nodata
    assert summary["files_failed"] == len(BAD_FILES)
    warnings = [line for line in stderr.splitlines() if "skipped" in line]
    for name, words in BAD_FILES.items():
        assert sum(name in line and words in line for line in warnings) == 1, stderr
    chips, vectors = chips_and_vectors(db)
    expected_chips, expected_vectors = chips_and_vectors(reference["db"])
    assert chips == expected_chips  # ids, paths, windows, bboxes, footprints, dates, CRSs, in the same order
    np.testing.assert_allclose(vectors, expected_vectors, atol=1e-5)


def test_a_killed_ray_run_resumes_to_every_chip_exactly_once(
    sources: list[Path], reference: dict, ray_address: str, tmp_path: Path
) -> None:
    db = tmp_path / "db"
    total = reference["summary"]["total_chips"]
    process = ray_index(sources, db, ray_address, "--commit-chips", "66")
    committed = 0
    deadline = time.monotonic() + 240
    while process.poll() is None and time.monotonic() < deadline:
        if (db / MANIFEST).exists():
            committed = json.loads((db / MANIFEST).read_text())["count"]
            if committed:
                process.send_signal(signal.SIGKILL)
                break
        time.sleep(0.02)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, stderr
    assert 0 < committed < total
    resumed = ray_index(sources, db, ray_address, "--json", "--commit-chips", "66")
    stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    summary = json.loads(stdout)
    chips, _ = chips_and_vectors(db)
    ids = [chip.id for chip in chips]
    assert len(ids) == len(set(ids)) == total
    assert sorted(ids) == sorted(chip.id for chip in chips_and_vectors(reference["db"])[0])
    assert summary["already_indexed"] + summary["new_chips"] == total
    assert summary["already_indexed"] >= committed


def test_strict_mode_stops_at_the_first_bad_file(sources: list[Path], ray_address: str, tiny_model, tmp_path) -> None:
    from indexer.distributed import index_archive_on_ray

    empty = next(path for path in sources if path.name == "empty.tif")
    source = {"name": "tiny-test", "checkpoint": None, "random_weights": True}
    run = RunOptions(strict=True, commit_chips=66)
    with pytest.raises(BadSourceError, match="empty file"):
        index_archive_on_ray([empty, sources[0]], tmp_path / "db", tiny_model, source, ChipOptions(64), run)
    import ray

    assert ray.is_initialized()  # a cluster this process had joined stays joined


def test_index_without_ray_never_imports_ray(shared_data: Path, tmp_path: Path) -> None:
    scene = sorted((shared_data / "geotiff" / "landsat_peru").glob("*.tif"))[0]
    args = ["index", str(scene), "--db", str(tmp_path / "db"), *TINY]
    code = f"import sys; from rsretrieve.cli import main; main({args!r}); print('ray' in sys.modules)"
    command = [sys.executable, "-c", code]
    result = subprocess.run(command, capture_output=True, text=True, env=environment(), timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_rows_arriving_out_of_order_are_reassembled_into_whole_files_in_order(tiny_model) -> None:
    """The driver's side alone (no Ray): rows of several files, shuffled, with a bad plan, nodata and a bad chip."""
    import pickle
    from types import SimpleNamespace

    from indexer.build import ArchiveIndexer, IndexSummary
    from indexer.distributed import FAILED, NODATA, READY, RayGroups, RayOptions
    from rsretrieve.chips import Chip, Window

    def chip(file: int, index: int) -> Chip:
        return Chip(f"{file}-{index}", f"/f{file}.tif", Window(64 * index, 0, 64, 64), None, None, None, None)

    counts = {0: 3, 2: 2, 3: 2}  # file 1 cannot be planned; file 3 has an unreadable chip
    rows = [{"file": 1, "chip": -1, "count": 0, "state": FAILED, "error": "/f1.tif: empty file"}]
    for file, count in counts.items():
        for index in range(count):
            state = NODATA if (file, index) == (0, 1) else FAILED if (file, index) == (3, 0) else READY
            error = "/f3.tif: cannot read window" if state == FAILED else ""
            rows.append({"file": file, "chip": index, "count": count, "state": state, "error": error})
    order = np.random.default_rng(0).permutation(len(rows))
    batches = []
    for part in np.array_split(order, 3):
        picked = [rows[i] for i in part]
        batches.append(
            {
                "file": np.array([row["file"] for row in picked]),
                "chip": np.array([row["chip"] for row in picked]),
                "count": np.array([row["count"] for row in picked]),
                "state": np.array([row["state"] for row in picked]),
                "error": np.array([row["error"] for row in picked], dtype=object),
                "item": np.array(
                    [pickle.dumps((None, chip(row["file"], max(row["chip"], 0)))) for row in picked], dtype=object
                ),
                "vector": np.array([[row["file"], row["chip"]] + [0.0] * 30 for row in picked], np.float32),
            }
        )
    summary = IndexSummary(db="x")
    indexer = ArchiveIndexer(tiny_model, ChipOptions(64), RunOptions(), summary)
    groups = RayGroups(tiny_model, {}, ChipOptions(64), RayOptions())
    todo = [Path(f"/f{i}.tif") for i in range(4)]
    progress = SimpleNamespace(update=lambda n: None)
    files = list(groups._reassemble(iter(batches), todo, indexer, progress, {}, {}))
    assert [file.path for file in files] == ["/f0.tif", "/f2.tif", "/f3.tif"]
    assert [chip.id for chip in files[0].chips] == ["0-0", "0-1", "0-2"]
    assert files[0].statuses == {1: ""} and files[2].statuses == {0: "/f3.tif: cannot read window"}
    np.testing.assert_array_equal(files[1].vectors[:, :2], [[2, 0], [2, 1]])
    rows_kept, vectors, good_files = indexer.keep_good(files)
    assert [chip.id for chip in rows_kept] == ["0-0", "0-2", "2-0", "2-1"] and good_files == 2
    np.testing.assert_array_equal(vectors[:, :2], [[0, 0], [0, 2], [2, 0], [2, 1]])
    assert summary.files_failed == 2 and summary.nodata_chips == 1
    assert summary.failures == ["/f1.tif: empty file", "/f3.tif: cannot read window"]


def test_a_ray_run_reads_s3_and_writes_an_index_on_s3(ray_address: str, s3_env, tmp_path: Path) -> None:
    """Sources and index on the loopback S3 server: the workers get its variables, the driver publishes."""
    uri = f"s3://archive/indexes/{tmp_path.name}.lance"
    source = "s3://archive/scenes/1985.tif"
    process = rsretrieve("index", source, "--db", uri, "--cache-dir", tmp_path, *TINY, "--ray", "--ray-address",
                         ray_address, "--json")  # fmt: skip
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert json.loads(stdout)["new_chips"] == 66
    with local_db(uri, tmp_path / "reader") as path:
        store = ChipStore(path)
        assert len(store) == 66 and set(store.column("path").to_pylist()) == {source}


def test_ray_tasks_fill_the_faiss_index_shard_by_shard_as_one_add_would(ray_address: str) -> None:
    """The writer of a --ray run fills a new IVF-PQ index with Ray tasks: the same lists and codes as one add."""
    import faiss

    from indexer.distributed import RayGroups
    from rsretrieve import ann, ann_shards
    from tests.rsretrieve.test_ann_shards import inverted_lists, unit_vectors

    vectors = unit_vectors(2000, 32, seed=4)
    trained = ann.new_index(32, ann.IndexParams(kind="ivfpq", nlist=8, m=8, nprobe=8))
    ann.train(trained, vectors)
    sequential, sharded = faiss.clone_index(trained), faiss.clone_index(trained)
    ann.add(sequential, vectors, np.arange(len(vectors)))
    blocks = [(first, vectors[first : first + 500]) for first in range(0, 2000, 500)]
    ann_shards.fill(sharded, blocks, RayGroups.shard_map)
    assert inverted_lists(sharded) == inverted_lists(sequential) and sharded.ntotal == 2000
