"""Published retrieval results (docs/architecture.md §6), to print beside measured ones.

RemoteCLIP's numbers come from the retrieval table of its paper, GeoRSCLIP's from the RS5M README; both
were computed with clip_benchmark's recall as ``retrieval_metrics`` computes it.
"""

from dataclasses import dataclass

KEYS = ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "mR")


@dataclass(frozen=True)
class Source:
    """Where a model's numbers were published, and whether they are zero-shot."""

    source: str
    zero_shot: bool
    note: str


_REMOTECLIP = Source(
    "RemoteCLIP paper (Liu et al., IEEE TGRS 2024), cross-modal retrieval table",
    zero_shot=False,
    note="not zero-shot: RemoteCLIP's training data includes the RSITMD and RSICD training splits",
)

SOURCES: dict[str, Source] = {
    "remoteclip-rn50": _REMOTECLIP,
    "remoteclip-vit-b-32": _REMOTECLIP,
    "remoteclip-vit-l-14": _REMOTECLIP,
    "georsclip-vit-b-32": Source("RS5M / GeoRSCLIP README", zero_shot=True, note="trained on RS5M only"),
    "georsclip-vit-b-32-ret2": Source(
        "RS5M / GeoRSCLIP README",
        zero_shot=False,
        note="not zero-shot: fine-tuned on the RSITMD and RSICD training splits (RET-2)",
    ),
    "georsclip-vit-h-14": Source("RS5M / GeoRSCLIP README", zero_shot=True, note="trained on RS5M"),
}


def _row(*numbers: float) -> dict[str, float]:
    """Name the seven published numbers: i2t R@1/5/10, t2i R@1/5/10, mR."""
    return dict(zip(KEYS, numbers, strict=True))


PUBLISHED: dict[tuple[str, str], dict[str, float]] = {
    ("remoteclip-vit-b-32", "rsitmd"): _row(27.88, 50.66, 65.71, 22.17, 56.46, 73.41, 49.38),
    ("remoteclip-vit-b-32", "rsicd"): _row(17.02, 37.97, 51.51, 13.71, 37.11, 54.25, 35.26),
    ("remoteclip-vit-l-14", "rsitmd"): _row(28.76, 52.43, 63.94, 23.76, 59.51, 74.73, 50.52),
    ("remoteclip-vit-l-14", "rsicd"): _row(18.39, 37.42, 51.05, 14.73, 39.93, 56.58, 36.35),
    ("remoteclip-rn50", "rsitmd"): _row(23.67, 47.57, 64.60, 19.29, 51.55, 70.58, 46.21),
    ("remoteclip-rn50", "rsicd"): _row(13.36, 32.94, 44.83, 10.76, 32.83, 48.75, 30.58),
    ("georsclip-vit-b-32", "rsitmd"): _row(17.92, 34.96, 46.02, 14.12, 41.46, 57.52, 35.33),
    ("georsclip-vit-b-32", "rsicd"): _row(12.17, 28.45, 38.61, 9.31, 26.51, 41.28, 26.06),
    ("georsclip-vit-b-32-ret2", "rsitmd"): _row(32.30, 53.32, 67.92, 25.04, 57.88, 74.38, 51.81),
    ("georsclip-vit-b-32-ret2", "rsicd"): _row(21.13, 41.72, 55.63, 15.59, 41.19, 57.99, 38.87),
    ("georsclip-vit-h-14", "rsitmd"): _row(23.45, 42.92, 53.32, 18.01, 44.60, 59.96, 40.38),
    ("georsclip-vit-h-14", "rsicd"): _row(14.27, 29.55, 40.44, 11.38, 30.80, 44.41, 28.48),
}
"""Published recall in percent, keyed (model name, dataset), with ``retrieval_metrics``'s keys."""


def compare_with_published(model: str, dataset: str, measured: dict[str, float]) -> dict | None:
    """Return published numbers, ``measured - published`` per shared key, source and note; or None."""
    published = PUBLISHED.get((model.lower(), dataset.lower()))
    if published is None:
        return None
    source = SOURCES[model.lower()]
    difference = {key: measured[key] - value for key, value in published.items() if key in measured}
    return {
        "published": dict(published),
        "difference": difference,
        "source": source.source,
        "note": source.note,
    }
