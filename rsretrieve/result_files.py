"""Large result sets streamed to files: ``rsretrieve query -k 100000 --geoparquet FILE`` (or ``--geojson FILE``,
``--csv FILE``).

``write_results(ranked, outputs)`` reads the records of the ranked fids (``search.Ranked.blocks``) a block at a
time and appends each block to every output — GeoParquet 1.1 row groups (``geoparquet.GeoParquetWriter``), GeoJSON
features, CSV rows — so memory stays bounded at any k. Each file is written beside its name and renamed over it when
complete: a failure leaves the old file (or none), never a part of one. The files hold what the stdout formats hold:
``--geojson`` and ``--csv`` give the same bytes as ``render.as_geojson`` / ``render.as_csv`` of the same results.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa

from rsretrieve.chips import record_columns
from rsretrieve.errors import UserError
from rsretrieve.files import fsync_dir, temporary_name
from rsretrieve.search import RECORD_BLOCK, Ranked

log = logging.getLogger(__name__)

FORMATS = ("geojson", "geoparquet", "csv")


class ResultFileError(UserError):
    """A result file that cannot be written; one line for the user."""


class _Output:
    """One output file: written to a temporary file, renamed over ``path`` by ``commit``, removed by ``abort``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.tmp = temporary_name(self.path)

    def write(self, first: int, scores: np.ndarray, records: pa.Table) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Complete the temporary file (footer, close)."""
        raise NotImplementedError

    def commit(self) -> None:
        self.finish()
        with self.tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(self.tmp, self.path)
        fsync_dir(self.path.parent)

    def abort(self) -> None:
        try:
            self.finish()
        except Exception:  # already failing: the temporary file goes whatever state it is in
            log.debug("closing %s after a failure", self.tmp, exc_info=True)
        self.tmp.unlink(missing_ok=True)


class _TextOutput(_Output):
    def __init__(self, path: Path):
        super().__init__(path)
        self.handle: IO[str] = self.tmp.open("w", newline="", encoding="utf-8")

    def finish(self) -> None:
        if not self.handle.closed:
            self.handle.close()


class GeoJsonOutput(_TextOutput):
    """A FeatureCollection, a block of features at a time (``render.as_geojson``'s text)."""

    def __init__(self, path: Path):
        from rsretrieve.geoparquet import FEATURES_HEAD

        super().__init__(path)
        self.handle.write(FEATURES_HEAD)
        self.written = 0

    def write(self, first: int, scores: np.ndarray, records: pa.Table) -> None:
        from rsretrieve.geoparquet import records_features

        features = records_features(records, {"score": scores})
        if features:
            self.handle.write((", " if self.written else "") + ", ".join(features))
            self.written += len(features)

    def finish(self) -> None:
        from rsretrieve.geoparquet import FEATURES_TAIL

        if not self.handle.closed:
            self.handle.write(FEATURES_TAIL)
        super().finish()


class CsvOutput(_TextOutput):
    """``render.as_csv``'s rows, a block at a time, straight from the record columns."""

    def __init__(self, path: Path):
        from rsretrieve.render import CSV_COLUMNS

        super().__init__(path)
        self.writer = csv.writer(self.handle, lineterminator="\n")
        self.writer.writerow(CSV_COLUMNS)
        self.columns = CSV_COLUMNS[2:]  # after rank and score: record columns

    def write(self, first: int, scores: np.ndarray, records: pa.Table) -> None:
        ranks = range(first + 1, first + 1 + len(scores))
        columns = [records.column(name).to_pylist() for name in self.columns]
        self.writer.writerows(zip(ranks, scores.tolist(), *columns, strict=True))


class GeoParquetOutput(_Output):
    """GeoParquet 1.1: rank, score, the chip record, WKB footprint, bbox covering; a row group per block."""

    def __init__(self, path: Path):
        from rsretrieve.geoparquet import GeoParquetWriter

        super().__init__(path)
        self.writer = GeoParquetWriter(self.tmp)
        self.done = False

    @staticmethod
    def table(first: int, scores: np.ndarray, records: pa.Table) -> tuple[pa.Table, np.ndarray]:
        from rsretrieve.geoparquet import records_geotable

        ranks = np.arange(first + 1, first + 1 + len(scores), dtype=np.int64)
        return records_geotable(records, {"rank": ranks, "score": np.asarray(scores, np.float64)})

    def write(self, first: int, scores: np.ndarray, records: pa.Table) -> None:
        self.writer.write(*self.table(first, scores, records))

    def finish(self) -> None:
        if not self.done:
            self.done = True
            self.writer.close(self.table(0, np.empty(0), record_columns(pa.table({}))))


OUTPUTS: dict[str, type[_Output]] = {"geojson": GeoJsonOutput, "geoparquet": GeoParquetOutput, "csv": CsvOutput}


def write_results(ranked: Ranked, outputs: Sequence[tuple[str, Path]], block: int | None = None) -> dict[str, Any]:
    """Write every result of ``ranked`` to each (format, path) of ``outputs`` in one pass over its records, ``block``
    (``RECORD_BLOCK``) at a time; each file appears complete or not at all. What was written: results, files."""
    opened: list[_Output] = []
    try:
        for form, path in outputs:
            opened.append(OUTPUTS[form](path))
        for first, scores, records in ranked.blocks(block or RECORD_BLOCK):
            for output in opened:
                output.write(first, scores, records)
        for output in opened:
            output.commit()
    except BaseException as error:
        for output in opened:
            output.abort()  # a committed file stays; the others leave nothing behind
        if isinstance(error, OSError):
            where = error.filename or ", ".join(str(path) for _, path in outputs)
            raise ResultFileError(f"cannot write {where}: {error.strerror or error}") from error
        raise
    return {"results": len(ranked), "files": [str(path) for _, path in outputs]}
