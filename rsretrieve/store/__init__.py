"""The index on disk: a LanceDB table ``chips``, a FAISS file, query-side columns and ``manifest.json``.

Layout of a ``--db`` folder (details in docs/architecture.md)::

    manifest.json          model, dim, count, committed LanceDB version, current FAISS file, format version
    chips.lance/           LanceDB table: one row per chip, its record (``chips.RECORD_COLUMNS``) and ``fid`` = row
                           offset = FAISS id; no vectors (format 3)
    index-<version>.faiss  FAISS index as written whole at LanceDB version <version>
    index-<version>.codes  IVF-PQ codes of a later batch, appended to it on load (``store.index_files``)
    vectors.i8             the vectors, stored once, 8-bit with a scale per row (``store.vector_codes``)
    bounds.f64, records/*.arrow
                           the query side's copies of table columns (``store.query_columns``)
    write.lock             pid of the indexer writing now, flock-ed while it runs (absent otherwise)

Commit protocol (one batch): append rows to LanceDB (new version V) → append to the query-side columns (fsync) →
write ``index-V.codes`` or ``index-V.faiss`` (tmp + rename) → replace ``manifest.json`` (tmp + rename). The manifest
is written last: readers open the LanceDB version, the FAISS file it names and the first ``count`` rows of the
columns, so they always see a whole batch or none of it, and a crash before the manifest leaves rows that the next
writer rolls back (LanceDB ``restore``, columns truncated) before appending. ``--rebuild`` first commits an empty
manifest, so a crash while starting over leaves an empty index, never a manifest naming a dropped table. A failed
write (disk full, read-only) is a StoreError; what was committed stays.

Modules: ``manifest`` (what is committed), ``index_files`` (the FAISS side of a commit), ``lock`` (one writer),
``table`` (LanceDB), ``query_columns`` (the query side's files), ``vector_codes`` (the vectors' 8-bit form),
``reader`` (``ChipStore``), ``writer`` (``StoreWriter``, which has a reader), ``remote_db`` (an index on s3://: a
local working copy whose commits are published with conditional writes) and ``object_store`` (its S3 calls: the
pointer object and the content-addressed blocks).
"""

from rsretrieve.store.errors import StoreError, reason, writing
from rsretrieve.store.lock import LOCK, WriteLock
from rsretrieve.store.manifest import FORMAT_VERSION, MANIFEST, Manifest, check_same_model, manifest_stamp
from rsretrieve.store.reader import ChipStore
from rsretrieve.store.writer import StoreWriter

__all__ = [
    "FORMAT_VERSION",
    "LOCK",
    "MANIFEST",
    "ChipStore",
    "Manifest",
    "StoreError",
    "StoreWriter",
    "WriteLock",
    "check_same_model",
    "manifest_stamp",
    "reason",
    "writing",
]
