"""Tests for rsretrieve/embedding.py: batching by device, order, statuses, and one pixel path for files and queries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rsretrieve.embedding import ImageFilePixels, collate, default_batch_size, default_workers, embed_dataset
from rsretrieve.images import load_rgb


@pytest.mark.parametrize(("device", "batch"), [("cpu", 64), ("cuda", 256), ("cuda:1", 256)])
def test_batches_are_larger_on_a_gpu(device: str, batch: int) -> None:
    assert default_batch_size(device) == batch


def test_workers_feed_a_gpu_and_leave_a_small_cpu_to_the_model(monkeypatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert default_workers("cpu") == 0 and default_workers("cuda") == 2
    monkeypatch.setattr("os.cpu_count", lambda: 32)
    assert default_workers("cpu") == 4 and default_workers("cuda") == 16


def test_collate_stacks_the_readable_items_and_keeps_the_statuses() -> None:
    pixels = np.full((3, 4, 4), 7, np.uint8)
    indices, stacked, statuses = collate([(0, pixels, ""), (1, None, "bad: broken"), (2, pixels, ""), (3, None, "")])
    assert indices == [0, 2] and tuple(stacked.shape) == (2, 3, 4, 4) and statuses == {1: "bad: broken", 3: ""}
    indices, stacked, statuses = collate([(5, None, "")])
    assert indices == [] and stacked.numel() == 0 and statuses == {5: ""}


def image_files(folder: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(7)
    paths = []
    for index in range(count):
        path = folder / f"image_{index}.png"
        Image.fromarray(rng.integers(0, 256, (40 + index, 50, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_images_are_embedded_in_order_as_query_images_are(tmp_path: Path, tiny_model) -> None:
    paths = image_files(tmp_path, 7)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    paths.insert(3, broken)
    batches = list(embed_dataset(tiny_model, ImageFilePixels(paths, tiny_model.image_size), batch_size=3, workers=0))
    assert [len(batch.indices) + len(batch.statuses) for batch in batches] == [3, 3, 2]
    indices = np.concatenate([batch.indices for batch in batches])
    vectors = np.concatenate([batch.vectors for batch in batches])
    statuses = {index: status for batch in batches for index, status in batch.statuses.items()}
    assert indices.tolist() == [0, 1, 2, 4, 5, 6, 7] and list(statuses) == [3] and "broken.png" in statuses[3]
    expected = tiny_model.encode_images([load_rgb(paths[index]) for index in indices])
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_a_progress_bar_counts_every_item(tmp_path: Path, tiny_model) -> None:
    class Counter:
        total = 0

        def update(self, count: int) -> None:
            self.total += count

    bar = Counter()
    paths = [*image_files(tmp_path, 4), tmp_path / "missing.png"]
    list(embed_dataset(tiny_model, ImageFilePixels(paths, tiny_model.image_size), workers=0, progress=bar))
    assert bar.total == 5
