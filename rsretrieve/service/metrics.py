"""Prometheus metrics of the service, kept in memory and written as the text exposition format by hand.

``rsretrieve_requests_total{endpoint,method,status}``, ``rsretrieve_errors_total{endpoint,status}`` (4xx/5xx),
``rsretrieve_requests_in_flight`` (requests being answered, the scrape included),
``rsretrieve_request_seconds{endpoint}`` (histogram), ``rsretrieve_search_stage_seconds{stage}`` (histogram of
each search stage: decode, encode, combine, filter, ann, rerank, records), ``rsretrieve_encode_batch_size{kind}``
(histogram of micro-batch sizes) and ``rsretrieve_index_chips{index}`` / ``rsretrieve_index_version{index}``.
Endpoints are route templates (``/v1/chips/{chip_id}``), so ids never become label values.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[tuple[str, str], ...]


class Histogram:
    """Cumulative-bucket histogram of one label set."""

    def __init__(self, buckets: Sequence[float]):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: Labels) -> Iterable[str]:
        running = 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts, strict=True):
            running += count
            le = "+Inf" if bound == float("inf") else _number(bound)
            yield f"{name}_bucket{_labels((*labels, ('le', le)))} {running}"
        yield f"{name}_sum{_labels(labels)} {_number(self.sum)}"
        yield f"{name}_count{_labels(labels)} {self.count}"


class Metrics:
    """Counters and histograms of the service; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[Labels, int] = defaultdict(int)
        self.errors: dict[Labels, int] = defaultdict(int)
        self.latency: dict[Labels, Histogram] = {}
        self.stages: dict[Labels, Histogram] = {}
        self.batches: dict[Labels, Histogram] = {}
        self.gauges: list[Callable[[], Iterable[tuple[str, str, Labels, float]]]] = []
        self.in_flight = 0  # requests being answered; changed on the event loop only (``Guard``)

    def request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        """Count one finished request."""
        with self._lock:
            self.requests[(("endpoint", endpoint), ("method", method), ("status", str(status)))] += 1
            if status >= 400:
                self.errors[(("endpoint", endpoint), ("status", str(status)))] += 1
            key = (("endpoint", endpoint),)
            if key not in self.latency:
                self.latency[key] = Histogram(LATENCY_BUCKETS)
            self.latency[key].observe(seconds)

    def stage(self, stage: str, seconds: float) -> None:
        """One search stage's duration."""
        with self._lock:
            key = (("stage", stage),)
            if key not in self.stages:
                self.stages[key] = Histogram(LATENCY_BUCKETS)
            self.stages[key].observe(seconds)

    def batch(self, kind: str, size: int) -> None:
        """One model call of ``size`` micro-batched items."""
        with self._lock:
            key = (("kind", kind),)
            if key not in self.batches:
                self.batches[key] = Histogram(BATCH_BUCKETS)
            self.batches[key].observe(size)

    def render(self) -> str:
        """The Prometheus text exposition of every metric."""
        lines: list[str] = []
        with self._lock:
            _counter(lines, "rsretrieve_requests_total", "HTTP requests by endpoint, method and status", self.requests)
            _counter(lines, "rsretrieve_errors_total", "HTTP responses with a 4xx or 5xx status", self.errors)
            _histograms(lines, "rsretrieve_request_seconds", "Request latency by endpoint", self.latency)
            _histograms(lines, "rsretrieve_search_stage_seconds", "Seconds per search stage", self.stages)
            _histograms(lines, "rsretrieve_encode_batch_size", "Items per micro-batched model call", self.batches)
        gauges: dict[str, tuple[str, list[tuple[Labels, float]]]] = {
            "rsretrieve_requests_in_flight": ("HTTP requests being answered", [((), self.in_flight)])
        }
        for source in self.gauges:
            for name, help_text, labels, value in source():
                gauges.setdefault(name, (help_text, []))[1].append((labels, value))
        for name, (help_text, samples) in gauges.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
            lines += [f"{name}{_labels(labels)} {_number(value)}" for labels, value in samples]
        return "\n".join(lines) + "\n"


def _counter(lines: list[str], name: str, help_text: str, values: dict[Labels, int]) -> None:
    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
    lines += [f"{name}{_labels(labels)} {value}" for labels, value in sorted(values.items())]


def _histograms(lines: list[str], name: str, help_text: str, values: dict[Labels, Histogram]) -> None:
    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    for labels, histogram in sorted(values.items(), key=lambda item: item[0]):
        lines += histogram.lines(name, labels)


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for _, value in labels)
    return "{" + ",".join(f'{key}="{value}"' for (key, _), value in zip(labels, escaped, strict=True)) + "}"


def _number(value: float) -> str:
    return (
        repr(float(value)) if not float(value).is_integer() else str(int(value)) if abs(value) < 1e15 else repr(value)
    )
