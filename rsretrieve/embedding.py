"""Batched embedding of pixel datasets: DataLoader workers decode and fit images, the model embeds on the device.

Workers hand uint8 tensors at the model's input size to the main process (pinned when on CUDA); the model
normalises them on the device, under fp16 autocast on CUDA, and returns L2-normalised float32. The indexer
(chips of scenes) and evaluation (benchmark image files) both embed through ``embed_dataset``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from rsretrieve.images import ImageError, fit_to_model, load_rgb, to_chw
from rsretrieve.models import EmbeddingModel

SKIPPED = ""  # status of an item that holds nothing to embed (a chip that is mostly nodata)


@dataclass
class EmbeddedBatch:
    """Vectors for the chips at ``indices``; ``statuses`` names the others (SKIPPED or an error line)."""

    indices: np.ndarray
    vectors: np.ndarray
    statuses: dict[int, str]


def collate(
    items: list[tuple[int, np.ndarray | None, str]],
) -> tuple[list[int], torch.Tensor, dict[int, str]]:
    """Stack the readable chips; keep the status of the others."""
    indices = [index for index, pixels, _ in items if pixels is not None]
    stacked = [torch.from_numpy(pixels) for _, pixels, _ in items if pixels is not None]
    pixels = torch.stack(stacked) if stacked else torch.empty(0, dtype=torch.uint8)
    statuses = {index: status for index, pixels, status in items if pixels is None}
    return indices, pixels, statuses


def default_batch_size(device: str) -> int:
    """Chips per batch: 256 on a GPU (enough work per kernel launch, architecture.md §7), 64 on CPU (no gain beyond)."""
    return 256 if device.startswith("cuda") else 64


def default_workers(device: str) -> int:
    """DataLoader workers: many on a GPU (decoding is the limit), few on CPU (the model is the limit)."""
    cores = os.cpu_count() or 1
    if device.startswith("cuda"):
        return min(16, cores)
    return 0 if cores <= 2 else min(4, cores // 2)


class ImageFilePixels(Dataset):
    """(index, uint8 CHW pixels or None, status) for plain image files, decoded with Pillow."""

    def __init__(self, paths: Sequence[str | os.PathLike], size: int):
        self.paths = paths
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, str]:
        try:
            pixels = load_rgb(self.paths[index])
        except ImageError as error:
            return index, None, str(error)
        return index, to_chw(fit_to_model(pixels, self.size)), ""


def embed_dataset(
    model: EmbeddingModel,
    dataset: Dataset,
    batch_size: int | None = None,
    workers: int | None = None,
    progress: object | None = None,
) -> Iterator[EmbeddedBatch]:
    """Embed a pixel dataset in order, one batch at a time; ``progress`` (a tqdm bar) advances per item."""
    workers = default_workers(model.device) if workers is None else workers
    batch_size = batch_size or default_batch_size(model.device)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=model.device.startswith("cuda"),
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )
    for indices, pixels, statuses in loader:
        vectors = model.encode_pixels(pixels) if len(indices) else np.empty((0, model.dim), np.float32)
        if progress is not None:
            progress.update(len(indices) + len(statuses))
        yield EmbeddedBatch(np.asarray(indices, dtype=np.int64), vectors, statuses)
