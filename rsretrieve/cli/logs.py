"""Library log records (``rsretrieve.*``, ``indexer.*``) as ``warning:`` / ``note:`` lines on stderr."""

from __future__ import annotations

import logging
import sys
from typing import ClassVar


class _LineHandler(logging.Handler):
    """Library log records as ``warning: ...`` / ``note: ...`` lines on stderr, written around progress bars."""

    PREFIX: ClassVar[dict[int, str]] = {logging.INFO: "note", logging.WARNING: "warning"}

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        prefix = self.PREFIX.get(record.levelno, record.levelname.lower())
        tqdm.write(f"{prefix}: {record.getMessage()}", file=sys.stderr)


def show_logs() -> None:
    """Route the library's log records (``rsretrieve.*``, ``indexer.*``) to stderr, once per process."""
    for name in ("rsretrieve", "indexer"):
        logger = logging.getLogger(name)
        if not any(isinstance(handler, _LineHandler) for handler in logger.handlers):
            logger.addHandler(_LineHandler())
            logger.setLevel(logging.INFO)
            logger.propagate = False
