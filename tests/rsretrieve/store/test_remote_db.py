"""The index on object storage (``store.remote_db``) against a real S3 server on loopback (moto): commits are
published as whole versions, readers only see committed ones, a stale writer is refused, an interrupted publish is
invisible, old blocks are collected, faults are one line, and a follower picks up new versions."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from rsretrieve.store import ChipStore, StoreWriter, remote_db
from rsretrieve.store.remote_db import Follower, RemoteDb, RemoteDbError, local_db
from tests.rsretrieve.store.conftest import MODEL, make_chips, unit_vectors
from tests.servers import S3Server


def append(writer: StoreWriter, count: int, seed: int) -> None:
    start = len(writer)
    writer.append(make_chips(count, start), unit_vectors(count, seed=seed), new_files=count // 4)


@contextmanager
def remote_writer(uri: str, cache: Path) -> Iterator[StoreWriter]:
    """A StoreWriter on the working copy of ``uri`` (closed at the end, as the kernel drops a killed one's lock)."""
    with local_db(uri, cache, write=True) as path:
        writer = StoreWriter.open(path, MODEL)
        try:
            yield writer
        finally:
            writer.close()


def reader(uri: str, cache: Path) -> ChipStore:
    with local_db(uri, cache) as path:
        return ChipStore(path)


def test_each_commit_is_published_and_readers_fetch_only_what_changed(s3_bucket: str, tmp_path: Path, s3_env) -> None:
    uri = f"s3://{s3_bucket}/index.lance"
    with remote_writer(uri, tmp_path / "w") as writer:
        append(writer, 40, seed=1)
        first = reader(uri, tmp_path / "r")
        assert len(first) == 40 and first.info()["rows"] == 40
        append(writer, 40, seed=2)
    store = reader(uri, tmp_path / "r")
    assert len(store) == 80 and store.info()["index_vectors"] == 80 and store.info()["unique_ids"] == 80
    written = ChipStore(RemoteDb(uri, tmp_path / "w", role="write").path)
    np.testing.assert_array_equal(store.vectors(np.arange(80)), written.vectors(np.arange(80)))
    s3_env.stats.reset()
    assert RemoteDb(uri, tmp_path / "r").sync() is False  # unchanged: one conditional GET (304)
    assert s3_env.stats.requests == 1
    state = RemoteDb(uri, tmp_path / "r")
    assert state.generation() == 2 and state.path == store.db  # one version per commit


def test_a_stale_writer_is_refused_and_nothing_is_lost(s3_bucket: str, tmp_path: Path) -> None:
    uri = f"s3://{s3_bucket}/index.lance"
    with remote_writer(uri, tmp_path / "a") as writer:
        append(writer, 20, seed=1)
    stale = pytest.raises(RemoteDbError, match="another writer published a new version")
    with stale as refused, remote_writer(uri, tmp_path / "b") as writer_b:
        with remote_writer(uri, tmp_path / "a") as writer_a:  # a publishes after b synced
            append(writer_a, 20, seed=2)
        append(writer_b, 8, seed=3)  # b's conditional write names a version that is no longer current
    assert "\n" not in str(refused.value)
    assert len(reader(uri, tmp_path / "r")) == 40  # a's versions only
    with remote_writer(uri, tmp_path / "b") as writer:  # b again: its copy is reset to a's version first
        assert len(writer) == 40
        append(writer, 8, seed=3)
    store = reader(uri, tmp_path / "r")
    assert len(store) == 48 and store.info()["unique_ids"] == 48


def test_an_interrupted_publish_is_invisible_and_its_blocks_are_swept(
    s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"s3://{s3_bucket}/index.lance"
    with remote_writer(uri, tmp_path / "w") as writer:
        append(writer, 24, seed=1)
    before = set(RemoteDb(uri, tmp_path / "w").bucket.blocks())

    def killed(*args: object) -> None:
        raise KeyboardInterrupt  # the writer dies after uploading the blocks, before the pointer

    with monkeypatch.context() as patch:
        patch.setattr(remote_db.Bucket, "write_pointer", killed)
        with pytest.raises(KeyboardInterrupt), remote_writer(uri, tmp_path / "w") as writer:
            append(writer, 24, seed=2)
    orphans = set(RemoteDb(uri, tmp_path / "w").bucket.blocks()) - before
    assert orphans  # uploaded, never listed
    assert len(reader(uri, tmp_path / "r")) == 24  # the reader sees the last published version
    monkeypatch.setattr(remote_db, "GRACE_SECONDS", 0.0)
    with remote_writer(uri, tmp_path / "w") as writer:  # opens at the published version; sweeps orphans
        assert len(writer) == 24  # the unpublished local commit was dropped
        append(writer, 24, seed=2)
    remote = RemoteDb(uri, tmp_path / "w", role="write")
    pointer = remote._state()["pointer"]
    live = {name for entry in pointer["files"].values() for name in entry["blocks"]}
    stored = set(remote.bucket.blocks())
    assert stored == live | set(pointer["retired"])  # blocks retired before this version (grace 0) are gone...
    assert not (orphans - live) & stored  # ...and so are the interrupted publish's
    store = reader(uri, tmp_path / "r")
    assert len(store) == 48 and store.info()["unique_ids"] == 48


def test_object_store_faults_are_one_line_and_a_rerun_resumes(
    s3_bucket: str, tmp_path: Path, s3_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(RemoteDbError, match=r"^s3://no-such-bucket/i.lance: cannot read .*no such bucket"):
        reader("s3://no-such-bucket/i.lance", tmp_path / "r")
    with pytest.raises(RemoteDbError, match=rf"^index not found: s3://{s3_bucket}/none.lance"):
        reader(f"s3://{s3_bucket}/none.lance", tmp_path / "r")
    with pytest.raises(RemoteDbError, match="must be on s3://"):
        reader("gs://bucket/index.lance", tmp_path / "r")
    s3_env.deny.add(f"/{s3_bucket}/denied.lance/_rsretrieve/HEAD.json")
    try:
        with pytest.raises(RemoteDbError, match=r"denied.lance: cannot read the index pointer \(access denied"):
            reader(f"s3://{s3_bucket}/denied.lance", tmp_path / "r")
    finally:
        s3_env.deny.clear()

    server = S3Server().start()  # a server of its own, stopped after the first published commit
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
    server_uri = "s3://gone-mid-run/index.lance"
    import boto3

    boto3.client("s3", endpoint_url=server.url, region_name="us-east-1").create_bucket(Bucket="gone-mid-run")
    gone = pytest.raises(RemoteDbError, match=r"^s3://gone-mid-run/index.lance: cannot (upload|read|publish)")
    with gone as failed, remote_writer(server_uri, tmp_path / "w") as writer:
        append(writer, 16, seed=1)
        server.stop()  # the network is gone
        append(writer, 16, seed=2)
    assert "\n" not in str(failed.value)
    with S3Server(port=server.port):  # back (moto keeps the objects in this process)
        with remote_writer(server_uri, tmp_path / "w") as writer:
            assert len(writer) == 16  # the published commit is kept
            append(writer, 16, seed=2)
        store = reader(server_uri, tmp_path / "r")
        assert len(store) == 32 and store.info()["unique_ids"] == 32


def test_a_follower_keeps_a_searcher_at_the_newest_version(s3_bucket: str, tmp_path: Path) -> None:
    from rsretrieve.search import Searcher

    uri = f"s3://{s3_bucket}/index.lance"
    with remote_writer(uri, tmp_path / "w") as writer:
        append(writer, 16, seed=1)
        remote = RemoteDb(uri, tmp_path / "r")
        remote.sync()
        searcher = Searcher(remote.path, model=MODEL)
        follower = Follower(remote, 0.1).start()
        try:
            append(writer, 16, seed=2)
            deadline = time.monotonic() + 20
            while len(searcher.current()) != 32 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            follower.stop()
    store = searcher.current()
    assert len(store) == 32 and store.info()["unique_ids"] == 32


def test_any_files_sync_by_blocks_appends_in_place_and_replaces_the_rest(
    s3_bucket: str, tmp_path: Path, s3_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Generic over the folder's files: small blocks, an appended file, a rewritten one, a removed one, a new one."""
    monkeypatch.setattr(remote_db, "BLOCK_SIZE", 100)
    monkeypatch.setattr(remote_db, "KEEP_OLD_SECONDS", 0.0)
    uri = f"s3://{s3_bucket}/files.lance"
    writer, reading = RemoteDb(uri, tmp_path / "w", role="write"), RemoteDb(uri, tmp_path / "r")
    rng = np.random.default_rng(0)
    files = {"grows.bin": rng.bytes(250), "rewritten.json": b"{}" * 120, "gone.txt": b"x", "sub/keep.bin": b"k" * 300}
    for name, data in files.items():
        (writer.path / name).parent.mkdir(parents=True, exist_ok=True)
        (writer.path / name).write_bytes(data)
    assert writer.publish() and not writer.publish()  # nothing new the second time
    reading.sync()
    inodes = {name: (reading.path / name).stat().st_ino for name in ("grows.bin", "rewritten.json")}
    with (writer.path / "grows.bin").open("ab") as handle:
        handle.write(b"more" * 60)
    (writer.path / "rewritten.json").write_bytes(b"[]" * 130)
    (writer.path / "gone.txt").unlink()
    (writer.path / "sub" / "new.bin").write_bytes(b"n" * 10)
    s3_env.stats.reset()
    assert writer.publish()
    # grows.bin from its partial last block (3), rewritten.json's 2 distinct blocks of 3, new.bin, the pointer
    assert s3_env.stats.requests == 3 + 2 + 1 + 1
    s3_env.stats.reset()
    assert reading.sync()
    assert s3_env.stats.requests == 1 + 3 + 3 + 1  # the pointer, then the changed blocks only (keep.bin: none)
    local = {path.relative_to(reading.path).as_posix() for path in reading.path.rglob("*") if path.is_file()}
    assert local == {"grows.bin", "rewritten.json", "sub/keep.bin", "sub/new.bin"}
    for name in local:
        assert (reading.path / name).read_bytes() == (writer.path / name).read_bytes(), name
    assert (reading.path / "grows.bin").stat().st_ino == inodes["grows.bin"]  # appended in place
    assert (reading.path / "rewritten.json").stat().st_ino != inodes["rewritten.json"]  # replaced by a rename
