"""Retrieval benchmarks: reading their test splits, computing recall, and the published numbers."""

from rsretrieve.evaluation.datasets import DATASETS, BenchmarkError, RetrievalSplit, detect_format, load_split
from rsretrieve.evaluation.metrics import recall_from_ranked_ids, retrieval_metrics
from rsretrieve.evaluation.references import PUBLISHED, SOURCES, compare_with_published

__all__ = [
    "DATASETS",
    "PUBLISHED",
    "SOURCES",
    "BenchmarkError",
    "RetrievalSplit",
    "compare_with_published",
    "detect_format",
    "load_split",
    "recall_from_ranked_ids",
    "retrieval_metrics",
]
