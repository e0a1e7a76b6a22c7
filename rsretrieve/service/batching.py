"""``MicroBatcher``: concurrent encodings become one model call.

Requests submit items (texts, pixel arrays) and await a future; one worker thread takes the first waiting item,
collects what else arrives within ``max_wait`` seconds (up to ``max_batch`` items) and makes one call of ``fn``
(``model.encode_text`` / ``model.encode_images``). So encoding never runs on the event loop, and N concurrent
queries cost one forward pass of N instead of N passes of one.

The wait is adaptive: an idle service (the last batch held one item and nothing else is queued) encodes at once,
so a lone client never pays the collection window; under load (batches of several) it lingers up to ``max_wait``.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 64
DEFAULT_MAX_WAIT = 0.005
_STOP = object()


class MicroBatcher:
    """Batches ``fn(items) -> results`` (one result per item, in order) over concurrent callers on one thread."""

    def __init__(
        self,
        fn: Callable[[list[Any]], Sequence[Any]],
        max_batch: int = DEFAULT_MAX_BATCH,
        max_wait: float = DEFAULT_MAX_WAIT,
        name: str = "encode",
        on_batch: Callable[[int, float], None] | None = None,
    ):
        if max_batch < 1 or max_wait < 0:
            raise ValueError("max_batch must be at least 1 and max_wait not negative")
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.on_batch = on_batch  # called with (batch size, seconds in fn) after each call
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._last_size = 1
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"rsretrieve-{name}", daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> Future:
        """Queue one item; the future resolves to its result (or the batch's exception)."""
        if self._closed:
            raise RuntimeError("the batcher is closed")
        future: Future = Future()
        self._queue.put((item, future))
        return future

    def map(self, items: Sequence[Any]) -> list[Any]:
        """Results of ``items`` (blocking; they may share batches with other callers)."""
        return [future.result() for future in [self.submit(item) for item in items]]

    async def run(self, items: Sequence[Any]) -> list[Any]:
        """Results of ``items``, awaited without blocking the event loop."""
        return list(await asyncio.gather(*(asyncio.wrap_future(self.submit(item)) for item in items)))

    def close(self, timeout: float = 5.0) -> None:
        """Finish the queued items and stop the worker."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def _collect(self, first: tuple[Any, Future]) -> tuple[list[tuple[Any, Future]], bool]:
        batch = [first]
        linger = self.max_wait if self._last_size > 1 or not self._queue.empty() else 0.0
        deadline = time.monotonic() + linger
        while len(batch) < self.max_batch:
            try:
                remaining = deadline - time.monotonic()
                entry = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if entry is _STOP:
                return batch, True
            batch.append(entry)
        return batch, False

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                break
            batch, stop = self._collect(first)
            batch = [(item, future) for item, future in batch if future.set_running_or_notify_cancel()]
            if not batch:
                continue
            self._last_size = len(batch)
            started = time.perf_counter()
            try:
                results = self.fn([item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} items")
            except BaseException as error:  # every waiting caller gets the error; the worker lives on
                for _, future in batch:
                    future.set_exception(error)
                continue
            if self.on_batch is not None:
                try:
                    self.on_batch(len(batch), time.perf_counter() - started)
                except Exception:
                    log.exception("batch callback failed")
            for (_, future), result in zip(batch, results, strict=True):
                future.set_result(result)
