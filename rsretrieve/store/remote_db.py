"""An index on object storage (``--db s3://bucket/index.lance``): a local working copy, published version by version.

The store itself works on a local folder. This module maps an ``s3://`` URI to a copy of the index in a cache
folder and keeps the two in step, generically over whatever files the folder holds:

- **Objects.** Every file is cut into blocks of ``BLOCK_SIZE`` bytes, stored under
  ``<uri>/_rsretrieve/blocks/<blake2b of the block>``: immutable keys (a key is never rewritten with other bytes,
  so a reader never reads a block while it changes), shared by versions (an appended file uploads its new blocks
  only), verified on download.
- **The pointer.** ``<uri>/_rsretrieve/HEAD.json`` lists the committed version's files (size and blocks). A writer
  uploads the blocks first, then replaces the pointer with a *conditional* write: ``IfMatch`` the ETag it synced
  from (``IfNoneMatch: *`` for a new index). Of two writers, one wins and the other gets 412 Precondition Failed
  (a one-line error: rerun). Readers read the pointer, then the blocks it lists: they only ever see committed
  versions, and a publish interrupted before the pointer write is invisible.
- **Garbage.** Blocks a new version no longer lists are kept as ``retired`` in the pointer with the time they
  left it, and deleted by a later publish once ``GRACE_SECONDS`` have passed (readers that read the previous
  pointer have finished by then). Blocks of a publish that never wrote its pointer (a writer killed in between)
  are swept when the next writer opens, once as old.
- **Working copies.** ``<cache>/<hash of the URI>/read/`` (queries, ``serve``, ``info``) and ``.../write/``
  (``index``, ``label``, ``upgrade``) are separate, so a serving process never sees a writer's uncommitted files.
  A sync writes changed files the way the local commit protocol does: appended blocks in place, other files to a
  temporary file renamed over the old one, ``manifest.json`` last, so a ``ChipStore`` opened on the copy (or the
  ``Searcher``'s reopen) sees whole versions. A writer's copy is reset to the pointer's version when it opens:
  a local commit that was never published (killed in between) is dropped and its chips are indexed again.

The S3 calls are in ``rsretrieve.store.object_store``.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rsretrieve.files import TEMPORARY_PATTERN, atomic_write
from rsretrieve.store.errors import StoreError
from rsretrieve.store.lock import WriteLock
from rsretrieve.store.manifest import MANIFEST
from rsretrieve.store.object_store import POINTER, POINTER_FORMAT, Bucket, Location, RemoteDbError, block_name
from rsretrieve.store.writer import COMMIT_HOOKS

log = logging.getLogger(__name__)
BLOCK_SIZE = 8 << 20
GRACE_SECONDS = 3600.0  # unlisted blocks are deleted this long after they left the pointer (or were uploaded)
TRANSFER_THREADS = 8
KEEP_OLD_SECONDS = 60.0  # a reading copy keeps the files of the previous version this long (as STALE_INDEX_SECONDS)
LOCK_WAIT_SECONDS = 30.0  # a reader waits this long for another process syncing the same copy
STATE = "state.json"  # beside the copy: the pointer it matches and the stat of each of its files


def is_remote_db(db: str | Path) -> bool:
    """Whether ``--db`` names an object-storage URI rather than a folder."""
    return isinstance(db, str) and "://" in db


def default_cache_dir() -> Path:
    """Where working copies live without ``--cache-dir``: $RSRETRIEVE_CACHE or ~/.cache/rsretrieve."""
    return Path(os.environ.get("RSRETRIEVE_CACHE") or Path.home() / ".cache" / "rsretrieve")


def file_blocks(path: Path) -> list[str]:
    """The block names of a local file (read once)."""
    names = []
    with path.open("rb") as handle:
        while data := handle.read(BLOCK_SIZE):
            names.append(block_name(data))
    return names


def _copy_files(folder: Path) -> Iterator[tuple[str, Path]]:
    """(relative name, path) of the files of a working copy: not its locks, not a killed writer's temporary files."""
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.name.endswith(".lock") and not fnmatch.fnmatch(path.name, TEMPORARY_PATTERN):
            yield path.relative_to(folder).as_posix(), path


def _write_blocks(path: Path, mode: str, offset: int, chunks: Iterator[bytes]) -> None:
    """Write ``chunks`` at ``offset`` (the file ends after them) and fsync."""
    with path.open(mode) as handle:
        handle.seek(offset)
        for chunk in chunks:
            handle.write(chunk)
        handle.truncate()
        os.fsync(handle.fileno())


def _stat(path: Path) -> list[int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return [stat.st_size, stat.st_mtime_ns, stat.st_ino]


# --- the working copy ------------------------------------------------------------------------------


def _live(pointer: dict[str, Any] | None) -> set[str]:
    return {name for entry in (pointer or {}).get("files", {}).values() for name in entry["blocks"]}


class RemoteDb:
    """An index at an s3:// URI and its local working copy (``path``) for reading or for writing."""

    def __init__(self, uri: str, cache_dir: Path | None = None, role: str = "read"):
        self.location = Location.parse(uri)
        self.role = role
        digest = hashlib.sha1(self.location.uri.encode()).hexdigest()[:16]
        self.root = Path(cache_dir or default_cache_dir()).expanduser() / digest / role
        self.path = self.root / (self.location.prefix.rstrip("/").rsplit("/", 1)[-1] or "index")
        self.bucket = Bucket(self.location)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RemoteDbError(f"cannot create the cache folder {self.root} ({error.strerror})") from error

    @property
    def uri(self) -> str:
        return self.location.uri

    def generation(self) -> int:
        """The version the copy was last synced to or published as (0: none yet)."""
        return (self._state().get("pointer") or {}).get("generation", 0)

    # -- state ------------------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        try:
            return json.loads((self.root / STATE).read_text())
        except (OSError, ValueError):
            return {"etag": None, "pointer": None, "stats": {}}

    def _save(self, state: dict[str, Any]) -> None:
        text = json.dumps(state)
        atomic_write(self.root / STATE, lambda tmp: tmp.write_text(text))

    @contextlib.contextmanager
    def _locked(self, wait: float) -> Iterator[None]:
        """The copy's write lock (what a local writer takes), waited for up to ``wait`` seconds."""
        lock = WriteLock(self.path)
        deadline = time.monotonic() + wait
        while True:
            try:
                lock.acquire()
                break
            except StoreError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)
        try:
            yield
        finally:
            lock.release()

    # -- reading ----------------------------------------------------------------------------------------
    def sync(self, lock_wait: float = LOCK_WAIT_SECONDS, require: bool = True) -> bool:
        """Bring the copy to the pointer's version (only changed blocks are fetched); whether it changed."""
        with self._locked(lock_wait):
            state = self._state()
            found = self.bucket.read_pointer(state["etag"] if self._intact(state) else None)
            if found is False:
                return False
            if found is None:
                if require:
                    raise RemoteDbError(
                        f"index not found: {self.uri} (no {POINTER}; "
                        f"build one with `rsretrieve index SOURCES --db {self.uri}`)"
                    )
                pointer, etag = {"files": {}}, None
            else:
                pointer, etag = found
            self._save({"etag": etag, "pointer": pointer if found else None, **self._apply(pointer, state)})
            log.debug("%s: local copy at version %s (%s)", self.uri, pointer.get("generation", 0), self.path)
            return True

    def _intact(self, state: dict[str, Any]) -> bool:
        """Whether the copy still holds exactly the files of the state's pointer (nothing written since)."""
        files = (state.get("pointer") or {}).get("files", {})
        local = {name: _stat(path) for name, path in _copy_files(self.path) if name not in state.get("leaving", {})}
        return local.keys() == files.keys() and all(state["stats"].get(name) == stat for name, stat in local.items())

    def _apply(self, pointer: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
        """Write the pointer's files into the copy (manifest last) and remove the others; the new state's parts.

        In a reading copy, a file of the previous version is removed ``KEEP_OLD_SECONDS`` after it left (another
        process may have opened that version and not loaded its FAISS file yet), as a local writer does."""
        known = (state.get("pointer") or {}).get("files", {})
        wanted = pointer.get("files", {})
        names = sorted(wanted, key=lambda name: name == MANIFEST)
        with ThreadPoolExecutor(TRANSFER_THREADS) as pool:
            for name in names:
                recorded = state["stats"].get(name)
                old = known.get(name) if recorded and recorded == _stat(self.path / name) else None
                self._write_file(self.path / name, wanted[name], old, pool)
        now, leaving = time.time(), {}
        for name, path in _copy_files(self.path):
            if name in wanted:
                continue
            since = state.get("leaving", {}).get(name, now)
            if (
                self.role == "read"
                and (name in known or name in state.get("leaving", {}))
                and since > now - KEEP_OLD_SECONDS
            ):
                leaving[name] = since
            else:
                path.unlink()
        return {"stats": {name: _stat(self.path / name) for name in wanted}, "leaving": leaving}

    def _write_file(self, path: Path, entry: dict[str, Any], old: dict[str, Any] | None, pool: ThreadPoolExecutor):
        """One file of a version: untouched, appended in place, or written beside it and renamed over it.

        Blocks stream to the file in order, at most ``TRANSFER_THREADS`` in memory at a time."""
        blocks = entry["blocks"]
        if old is not None and old["blocks"] == blocks and old["size"] == entry["size"]:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        start, first = self._append_from(path, old, entry)
        if start is None:
            atomic_write(path, lambda tmp: _write_blocks(tmp, "wb", 0, self._fetch(blocks, pool)))
            return
        chunks = self._fetch(blocks[start + (first is not None) :], pool)
        _write_blocks(path, "r+b", start * BLOCK_SIZE, itertools.chain([first] if first else [], chunks))

    def _append_from(
        self, path: Path, old: dict[str, Any] | None, entry: dict[str, Any]
    ) -> tuple[int | None, bytes | None]:
        """(first block to write in place, its bytes if fetched to check it) when the new file only appends to
        the old one; (None, None) when it must be replaced. The old last block may be partial: then its bytes must
        begin the new block at that place."""
        if old is None or old["size"] > entry["size"]:
            return None, None
        kept, blocks = old["blocks"], entry["blocks"]
        same = 0
        while same < min(len(kept), len(blocks)) and kept[same] == blocks[same]:
            same += 1
        if same >= len(kept):
            return same, None
        if same < len(kept) - 1:
            return None, None
        first = self.bucket.get_block(blocks[same])
        with path.open("rb") as handle:
            handle.seek(same * BLOCK_SIZE)
            return (same, first) if first.startswith(handle.read()) else (None, None)

    def _fetch(self, names: list[str], pool: ThreadPoolExecutor) -> Iterator[bytes]:
        """The blocks' bytes in order, fetched ``TRANSFER_THREADS`` at a time."""
        for first in range(0, len(names), TRANSFER_THREADS):
            yield from pool.map(self.bucket.get_block, names[first : first + TRANSFER_THREADS])

    # -- writing ----------------------------------------------------------------------------------------
    def publish(self, locked: bool = False) -> bool:
        """Upload the copy's committed version and point the URI at it (see the module); whether it was new.

        ``locked``: the caller holds the copy's write lock (a ``StoreWriter`` committing), else it is taken here."""
        with contextlib.nullcontext() if locked else self._locked(LOCK_WAIT_SECONDS):
            state = self._state()
            old = state.get("pointer") or {}
            files, stats = {}, {}
            for name, path in _copy_files(self.path):
                stat = _stat(path)
                recorded = old.get("files", {}).get(name)
                if recorded is None or state["stats"].get(name) != stat:
                    recorded = {"size": stat[0], "blocks": file_blocks(path)}
                files[name], stats[name] = recorded, stat
            if files == old.get("files", {}):  # nothing new (or nothing at all: no empty index is published)
                return False
            live, was_live = _live({"files": files}), _live(old)
            self._upload(sorted(live - was_live), files)
            now = time.time()
            retired = {name: when for name, when in old.get("retired", {}).items() if name not in live}
            retired |= {name: now for name in was_live - live}
            expired = [name for name, when in retired.items() if when < now - GRACE_SECONDS]
            pointer = {
                "format": POINTER_FORMAT,
                "generation": old.get("generation", 0) + 1,
                "published": now,
                "block_size": BLOCK_SIZE,
                "files": files,
                "retired": {name: when for name, when in retired.items() if name not in expired},
            }
            etag = self.bucket.write_pointer(pointer, state.get("etag"))
            self._save({"etag": etag, "pointer": pointer, "stats": stats})
            if expired:
                self.bucket.delete_blocks(expired)
            log.debug("%s: published version %d", self.uri, pointer["generation"])
            return True

    def _upload(self, names: list[str], files: dict[str, dict[str, Any]]) -> None:
        """Upload the named blocks, read from the files that hold them."""
        where = {}
        for name, entry in files.items():
            for number, block in enumerate(entry["blocks"]):
                where.setdefault(block, (self.path / name, number))

        def upload(block: str) -> None:
            path, number = where[block]
            with path.open("rb") as handle:
                handle.seek(number * BLOCK_SIZE)
                data = handle.read(BLOCK_SIZE)
            if block_name(data) != block:
                raise RemoteDbError(f"{path} changed while it was being published")
            self.bucket.put_block(block, data)

        with ThreadPoolExecutor(TRANSFER_THREADS) as pool:
            list(pool.map(upload, names))

    def sweep(self) -> int:
        """Delete blocks no pointer lists that are older than the grace period (a killed publish's); how many."""
        state = self._state()
        kept = _live(state.get("pointer")) | set((state.get("pointer") or {}).get("retired", {}))
        cutoff = time.time() - GRACE_SECONDS
        orphans = [name for name, when in self.bucket.blocks().items() if name not in kept and when < cutoff]
        if orphans:
            self.bucket.delete_blocks(orphans)
        return len(orphans)


# --- what the commands use ----------------------------------------------------------------------------


@contextlib.contextmanager
def local_db(db: str | Path, cache_dir: Path | None = None, write: bool = False) -> Iterator[Path]:
    """The local folder of ``--db``: the folder itself, or a working copy of an s3:// index.

    Reading: the copy is synced to the committed version. Writing: the copy is reset to the committed version,
    every commit of a ``StoreWriter`` on it is published at once, and what the block committed otherwise
    (labels) is published when it ends without an error."""
    if not is_remote_db(db):
        yield Path(db)
        return
    remote = RemoteDb(str(db), cache_dir, "write" if write else "read")
    remote.sync(lock_wait=0 if write else LOCK_WAIT_SECONDS, require=not write)  # writers do not queue
    if not write:
        yield remote.path
        return
    remote.sweep()
    key = remote.path.resolve()
    COMMIT_HOOKS[key] = lambda: remote.publish(locked=True)
    try:
        yield remote.path
    finally:
        COMMIT_HOOKS.pop(key, None)
    remote.publish()
    log.info("%s: at version %d (working copy %s)", remote.uri, remote.generation(), remote.path)


class Follower:
    """Keeps a reading copy at the newest committed version: syncs every ``seconds`` in a thread (``serve``)."""

    def __init__(self, remote: RemoteDb, seconds: float):
        self.remote, self.seconds = remote, seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"follow {remote.uri}", daemon=True)
        self._failing = False

    def start(self) -> Follower:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.seconds):
            try:
                self.remote.sync()
                self._failing = False
            except StoreError as error:
                if not self._failing:  # once per outage, not every few seconds
                    log.warning("%s (serving the cached version; retrying every %g s)", error, self.seconds)
                self._failing = True

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


__all__ = [
    "Follower",
    "RemoteDb",
    "RemoteDbError",
    "default_cache_dir",
    "is_remote_db",
    "local_db",
]
