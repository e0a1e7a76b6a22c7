"""Text-tower speed: the padded 77-token context against tokens trimmed to the batch's longest real sequence.

    python benchmarks/text_speed.py [--threads 2] [--repeats 5] [--out benchmarks/results/text-speed-cpu.json]

ViT-B-32-quickgelu (the RemoteCLIP / GeoRSCLIP B/32 text tower) with seeded random weights on the CPU: speed
does not depend on the weights. For one query and for a batch of 32 captions of mixed length it records the
median ms per call and texts/s of open_clip's ``encode_text`` on the padded tokens and of
``encode_text_trimmed`` (tokenising excluded), the largest absolute difference between the two (raw features
and L2-normalised embeddings), and the ms per call of the product's ``EmbeddingModel.encode_text``
(tokenising, length-sorted batches, normalising). The calls take turns, so other load falls on all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from indexer_speed import cpu_name

from rsretrieve.models import RANDOM_CHECKPOINT, EmbeddingModel, encode_text_trimmed, load_model, pooled_positions

QUERY = "a river crossing farmland"
CAPTIONS = [
    "many buildings and green trees are in a dense residential area",
    "an airport",
    "a bridge over a river",
    "several planes are parked next to the terminal building of a large airport with two long runways",
    "a baseball field",
    "farmland",
    "some boats are in a harbour near many buildings",
    "a playground with a red running track around a green football field is next to a school",
    "a dense forest",
    "a parking lot with many cars",
    "two tennis courts",
    "a church with a grey roof is surrounded by houses and trees",
    "a river runs through the green farmland and a few houses stand along a road beside it",
    "bare land",
    "a beach with white waves",
    "a desert",
    "an industrial area with large factories, storage tanks and a railway station next to the highway",
    "a pond",
    "a viaduct crosses the roads",
    "a stadium",
    "many storage tanks",
    "a meadow with some trees",
    "a commercial area with tall buildings, busy roads and a small park in the middle of the city",
    "a mountain",
    "a square",
    "a school with a playground and several teaching buildings surrounded by green trees",
    "a resort with a swimming pool",
    "a railway station",
    "a sparse residential area with some houses and many trees on both sides of a winding road",
    "a center",
    "a port",
    "a golf course with green grass, sand bunkers and several ponds between lines of trees near a lake",
]


def median_ms(calls: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median wall time in ms of each call over ``repeats`` rounds (after a warm-up round).

    The calls take turns within each round, so load from other processes on a shared machine falls on all.
    """
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(repeats + 1):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            if round_:
                times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) * 1000 for name, values in times.items()}


def measure(model: EmbeddingModel, texts: list[str], repeats: int) -> dict[str, Any]:
    """Padded vs trimmed timings and differences for one batch of texts."""
    tokens = model.tokenizer(texts)
    with torch.inference_mode():
        padded = model.model.encode_text(tokens)
        trimmed = encode_text_trimmed(model.model, tokens)
        ms = median_ms(
            {
                "padded": lambda: model.model.encode_text(tokens),
                "trimmed": lambda: encode_text_trimmed(model.model, tokens),
                "encode_text": lambda: model.encode_text(texts),
            },
            repeats,
        )
    normalised_diff = (F.normalize(padded, dim=-1) - F.normalize(trimmed, dim=-1)).abs().max()
    return {
        "texts": len(texts),
        "tokens_padded": tokens.shape[1],
        "tokens_trimmed": int(pooled_positions(model.model, tokens).max()) + 1,
        "padded_ms": round(ms["padded"], 1),
        "trimmed_ms": round(ms["trimmed"], 1),
        "padded_texts_per_s": round(len(texts) / ms["padded"] * 1000, 1),
        "trimmed_texts_per_s": round(len(texts) / ms["trimmed"] * 1000, 1),
        "speedup": round(ms["padded"] / ms["trimmed"], 2),
        "max_abs_diff_features": float((padded - trimmed).abs().max()),
        "max_abs_diff_normalised": float(normalised_diff),
        "encode_text_ms": round(ms["encode_text"], 1),
    }


def main() -> None:
    """Run both cases and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (median)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/text-speed-cpu.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model("remoteclip-vit-b-32", device="cpu", random_weights=True)
    result = {
        "architecture": model.architecture,
        "weights": RANDOM_CHECKPOINT,
        "device": f"cpu: {cpu_name()}",
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg()[0],
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "repeats": args.repeats,
        "trims_text": model.trims_text,
        "one_text": measure(model, [QUERY], args.repeats),
        "batch_32": measure(model, CAPTIONS, args.repeats),
    }
    result["load_average_at_end"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
